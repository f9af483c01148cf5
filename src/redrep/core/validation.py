"""Input checks shared by the whole package.

Every check raises :class:`RedrepError` with one line that names the argument
or file, says what was expected and what was found. The CLI turns these into
a message on stderr and exit status 2.
"""

from __future__ import annotations

import numbers
from pathlib import Path

import numpy as np


class RedrepError(ValueError):
    """A user error: bad input, missing file, bad option.

    The message is a single line meant to be shown as it is.
    """


def exception_line(exc: BaseException) -> str:
    """An exception's message on one line (library errors can span many), or its type's name."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def describe_array(a) -> str:
    return f"shape {tuple(a.shape)} and dtype {a.dtype}"


def as_numpy(a, name: str) -> np.ndarray:
    """Return ``a`` as a numpy array without copying where possible.

    Accepts numpy arrays (memory-mapped ones stay memory-mapped), torch tensors
    and nested sequences.
    """
    if a is None:
        raise RedrepError(f"{name}: expected an array, found None")
    if type(a).__module__.startswith("torch"):
        a = a.detach().cpu().numpy()
    if not isinstance(a, np.ndarray):
        try:
            a = np.asarray(a)
        except (TypeError, ValueError) as exc:
            raise RedrepError(f"{name}: expected an array, found {type(a).__name__} ({exc})") from None
    return a


def check_matrix(a, name: str, *, rows: int | None = None, cols: int | None = None) -> np.ndarray:
    """Check a 2-D numeric (real floating or integer) array of nonzero size."""
    a = as_numpy(a, name)
    if a.ndim != 2:
        raise RedrepError(f"{name}: expected a 2-D array, found {describe_array(a)}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise RedrepError(f"{name}: expected a real numeric dtype, found {describe_array(a)}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise RedrepError(f"{name}: expected a non-empty array, found {describe_array(a)}")
    if rows is not None and a.shape[0] != rows:
        raise RedrepError(f"{name}: expected {rows} rows, found {describe_array(a)}")
    if cols is not None and a.shape[1] != cols:
        raise RedrepError(f"{name}: expected {cols} columns, found {describe_array(a)}")
    return a


def check_vector(a, name: str, *, length: int | None = None, integer: bool = False) -> np.ndarray:
    """Check a 1-D array (a column vector of shape (n, 1) is flattened)."""
    a = as_numpy(a, name)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise RedrepError(f"{name}: expected a 1-D array, found {describe_array(a)}")
    if a.shape[0] == 0:
        raise RedrepError(f"{name}: expected a non-empty array, found {describe_array(a)}")
    if integer and not np.issubdtype(a.dtype, np.integer):
        raise RedrepError(f"{name}: expected integer class ids, found {describe_array(a)}")
    if not integer and not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise RedrepError(f"{name}: expected a real numeric dtype, found {describe_array(a)}")
    if length is not None and a.shape[0] != length:
        raise RedrepError(f"{name}: expected length {length}, found {describe_array(a)}")
    return a


def check_finite(a: np.ndarray, name: str, *, offset: int = 0) -> None:
    """Raise if ``a`` holds NaN or Inf; ``offset`` shifts the reported row."""
    if np.issubdtype(a.dtype, np.integer):
        return
    bad = ~np.isfinite(a)
    if bad.any():
        where = np.argwhere(bad)[0]
        value = a[tuple(where)]
        pos = (int(where[0]) + offset,) + tuple(int(i) for i in where[1:])
        raise RedrepError(
            f"{name}: expected finite values, found {value} at index {pos} "
            f"({int(bad.sum())} non-finite values in this block)"
        )


def check_labels(labels: np.ndarray, n_classes: int, name: str) -> None:
    """Class ids in [0, n_classes); a one-output readout (n_classes 1, a sign classifier) takes labels 0 and 1."""
    lo, hi = int(labels.min()), int(labels.max())
    if n_classes == 1:
        if lo < 0 or hi > 1:
            bad = labels[(labels < 0) | (labels > 1)]
            raise RedrepError(
                f"{name}: expected labels 0 or 1 for a one-output readout (class 1 where the output is > 0), "
                f"found values in [{lo}, {hi}], e.g. {int(bad[0])}"
            )
        return
    if lo < 0 or hi >= n_classes:
        bad = labels[(labels < 0) | (labels >= n_classes)]
        raise RedrepError(
            f"{name}: expected class ids in [0, {n_classes}) (the readout has {n_classes} rows), "
            f"found values in [{lo}, {hi}], e.g. {int(bad[0])}"
        )


def check_int(value, name: str, *, min_value: int | None = None, max_value: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise RedrepError(f"{name}: expected an integer, found {value!r}")
    value = int(value)
    if min_value is not None and value < min_value:
        raise RedrepError(f"{name}: expected an integer >= {min_value}, found {value}")
    if max_value is not None and value > max_value:
        raise RedrepError(f"{name}: expected an integer <= {max_value}, found {value}")
    return value


def check_float(
    value, name: str, *, min_value: float | None = None, max_value: float | None = None, allow_none: bool = False
) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise RedrepError(f"{name}: expected a number, found {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise RedrepError(f"{name}: expected a finite number, found {value}")
    if min_value is not None and value < min_value:
        raise RedrepError(f"{name}: expected a number >= {min_value}, found {value}")
    if max_value is not None and value > max_value:
        raise RedrepError(f"{name}: expected a number <= {max_value}, found {value}")
    return value


def check_chunk_sizes(sizes, width: int, name: str = "chunk_sizes") -> list[int]:
    """Validate chunk sizes against the layer width; returns them sorted and unique."""
    try:
        sizes = list(sizes)
    except TypeError:
        raise RedrepError(f"{name}: expected a list of integers, found {sizes!r}") from None
    if not sizes:
        raise RedrepError(f"{name}: expected at least one chunk size, found none")
    out = []
    for s in sizes:
        s = check_int(s, name)
        if s < 1 or s > width:
            raise RedrepError(f"{name}: expected chunk sizes in [1, {width}] (the layer width), found {s}")
        out.append(s)
    return sorted(set(out))


def check_files_exist(paths, what: str) -> None:
    """Raise naming every missing file at once."""
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise RedrepError(f"{what}: missing {len(missing)} file(s): " + ", ".join(missing))
