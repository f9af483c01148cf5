"""Blocks of rows: how every pass over a (possibly memory-mapped) feature matrix reads it.

Shared by the accuracies and the Gram matrices, so that both stream a set larger than memory
with bounded resident memory and check each block for NaN and Inf as they go.
"""

from __future__ import annotations

import mmap

import numpy as np

from .validation import RedrepError, check_finite


def iter_blocks(
    arr: np.ndarray,
    block_rows: int,
    dtype=np.float32,
    name: str = "features",
    *,
    reuse: bool = False,
    start: int = 0,
    stop: int | None = None,
    check: bool = True,
):
    """Yield ``(start, block)`` pairs over the rows ``start:stop`` of ``arr``, each block a finite ``dtype`` copy.

    Pages of a memory-mapped ``arr`` are released once their block is copied,
    so a file larger than memory streams through with bounded resident memory.
    With ``reuse``, every block is a view of one buffer, overwritten by the
    next: a fresh block of many megabytes is a fresh memory mapping, whose
    first touch of every page costs about as much as a float64 product on it.
    With ``dtype=None`` the blocks are views of ``arr`` itself, their pages
    released once the caller has moved on to the next one. Raises
    :class:`RedrepError` naming ``name`` and the row on NaN or Inf, unless
    ``check`` is False (another pass over the same rows checks them), and
    naming ``name`` when a memory-mapped file has been truncated since it was
    opened (reading its missing pages would kill the process with SIGBUS).
    """
    n = arr.shape[0] if stop is None else min(stop, arr.shape[0])
    release = _page_releaser(arr)
    mapped = _mapped_size(arr)
    view = dtype is None
    buf = np.empty((max(0, min(n - start, block_rows)),) + arr.shape[1:], dtype=dtype) if reuse and not view else None
    for lo in range(start, n, block_rows):
        hi = min(n, lo + block_rows)
        if mapped is not None:
            _check_not_truncated(arr, mapped, hi, name)
        if view:
            block = arr[lo:hi]
        elif buf is None:
            block = np.array(arr[lo:hi], dtype=dtype, copy=True)
        else:
            block = buf[: hi - lo]
            np.copyto(block, arr[lo:hi], casting="unsafe")
        if release is not None and not view:
            release(lo, hi)
        if check:
            check_finite(block, name, offset=lo)
        yield lo, block
        if release is not None and view:
            release(lo, hi)


def _mapped_size(arr):
    """A function giving the current size of the file mapped by ``arr`` (a memory-mapped array), or None."""
    base = getattr(arr, "base", None)
    if not (isinstance(arr, np.memmap) and isinstance(base, mmap.mmap) and arr.flags.c_contiguous):
        return None
    return base.size  # the size of the mapped file now (an fstat of it), not of the mapping


def check_mapped(arr, name: str = "features") -> None:
    """Raise a one-line :class:`RedrepError` naming ``name`` when the file behind a memory-mapped ``arr`` was cut
    short since it was mapped (its missing pages would kill a reader with SIGBUS); nothing for other arrays."""
    size = _mapped_size(arr)
    if size is not None:
        _check_not_truncated(arr, size, arr.shape[0], name)


def _check_not_truncated(arr, size, stop: int, name: str) -> None:
    """Raise when the file behind ``arr`` no longer holds its rows up to ``stop`` (it was cut short since mapped)."""
    need = int(getattr(arr, "offset", 0)) + stop * arr.strides[0]
    try:
        have = size()
    except (OSError, ValueError):  # closed or gone: the read below says what is wrong
        return
    if have < need:
        raise RedrepError(
            f"{name}: the file was truncated while it was read (rows up to {stop} need {need:,} bytes, the file "
            f"now has {have:,}); expected it unchanged during the analysis: restore or rewrite it, then run again"
        )


def _page_releaser(arr):
    """A function dropping the mapped pages of rows [start, stop) of a memory-mapped array, or None."""
    base = getattr(arr, "base", None)
    if not (isinstance(arr, np.memmap) and isinstance(base, mmap.mmap) and arr.flags.c_contiguous):
        return None
    if not hasattr(base, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return None
    row_bytes = arr.strides[0]
    delta = int(getattr(arr, "offset", 0)) % mmap.ALLOCATIONGRANULARITY
    page = mmap.PAGESIZE

    def release(start, stop):
        lo = (delta + start * row_bytes) // page * page
        hi = delta + stop * row_bytes
        if hi > lo:
            try:
                base.madvise(mmap.MADV_DONTNEED, lo, min(hi, len(base)) - lo)
            except (OSError, ValueError):
                pass  # releasing is an optimisation only

    return release
