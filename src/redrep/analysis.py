"""The chunk analysis: how much of a layer's information a random subset of its neurons carries.

For chunk sizes ``w_c`` and random chunks ``S`` of ``w_c`` distinct neurons:

* chunk accuracy: the trained readout restricted to ``S``
  (``X[:, S] @ weight[:, S].T + bias``), on the training and the test set;
* R^2 of a ridge regression (``alpha``, with intercept) of all ``W`` neurons
  on the chunk, and the mean absolute correlation of its residuals, on the
  test set, over all pairs of neurons (the published definition) and over the
  pairs outside the chunk.

The regression statistics come from one centred Gram matrix ``G = Fc^T Fc``
(exact algebra, no fit per chunk); both passes over the data go block by
block, so memory does not grow with the number of samples. See SPEC.md.
"""

from __future__ import annotations

import mmap
import os
import time
from dataclasses import dataclass

import numpy as np
import scipy.linalg
from scipy.linalg.blas import dsyrk, dtrsm
from threadpoolctl import threadpool_limits

from .accuracy import _count_correct_torch, chunk_accuracy  # noqa: F401  (re-exported)
from .validation import (
    RedrepError,
    check_chunk_sizes,
    check_finite,
    check_float,
    check_int,
)

#: Added to the denominator of the residual correlation, as in the reference definition.
CORR_EPS = 1e-8


def default_chunk_sizes(width: int) -> list[int]:
    """``W // 2**i`` for ``i = 0 .. floor(log2 W)``, ascending (W = 512: 1, 2, ..., 512)."""
    width = check_int(width, "width", min_value=1)
    return sorted({width >> i for i in range(width.bit_length())})


def draw_chunks(width: int, size: int, n_rep: int, rng: np.random.Generator) -> np.ndarray:
    """``n_rep`` uniformly random chunks of ``size`` distinct neurons out of ``width``.

    Returns
    -------
    ndarray of shape (n_rep, size), each row sorted.
    """
    out = np.empty((n_rep, size), dtype=np.int64)
    for r in range(n_rep):
        out[r] = np.sort(rng.choice(width, size, replace=False))
    return out


# --------------------------------------------------------------------------- streaming
def iter_blocks(arr: np.ndarray, block_rows: int, dtype=np.float32, name: str = "features"):
    """Yield ``(start, block)`` pairs over the rows of ``arr``, each block a finite ``dtype`` copy.

    Pages of a memory-mapped ``arr`` are released once their block is copied,
    so a file larger than memory streams through with bounded resident memory.
    Raises :class:`RedrepError` naming ``name`` and the row on NaN or Inf.
    """
    n = arr.shape[0]
    release = _page_releaser(arr)
    for start in range(0, n, block_rows):
        stop = min(n, start + block_rows)
        block = np.array(arr[start:stop], dtype=dtype, copy=True)
        if release is not None:
            release(start, stop)
        check_finite(block, name, offset=start)
        yield start, block


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


# --------------------------------------------------------------------------- accuracy
def resolve_device(device: str = "auto") -> str:
    """``"cpu"`` (numpy) or a torch CUDA device name for the chunk accuracies.

    ``"auto"`` takes the GPU when one is present. It looks for the NVIDIA
    device files first, so that a machine without a GPU never pays for
    importing torch.
    """
    if not isinstance(device, str):
        raise RedrepError(f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', found {device!r}")
    if device == "cpu":
        return "cpu"
    if device == "auto":
        if not os.path.exists("/dev/nvidiactl"):
            return "cpu"
        try:
            import torch
        except ImportError:
            return "cpu"
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        import torch

        if not torch.cuda.is_available():
            raise RedrepError(f"device: expected a CUDA GPU for {device!r}, found none (use --device cpu or auto)")
        if ":" in device and int(device[5:]) >= torch.cuda.device_count():
            raise RedrepError(f"device: expected one of {torch.cuda.device_count()} CUDA devices, found {device!r}")
        return device
    raise RedrepError(f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', found {device!r}")


# --------------------------------------------------------------------------- regression
def gram_matrix(features, *, block_rows: int = 8192, name: str = "features", progress=None):
    """Centred scatter matrix of the columns, accumulated block by block in float64.

    Returns
    -------
    G : ndarray of shape (W, W), ``Fc^T Fc`` with ``Fc`` the column-centred features
    mean : ndarray of shape (W,)
    n : int, number of rows

    Notes
    -----
    Blocks are shifted by the first block's mean before accumulation, which
    keeps the final centring free of cancellation when the means are large.
    """
    n, width = features.shape
    shift = None
    total = np.zeros(width)
    G = np.zeros((width, width))
    for _, block in iter_blocks(features, block_rows, np.float64, name):
        if shift is None:
            shift = block.mean(axis=0)
        block -= shift
        total += block.sum(axis=0)
        G += block.T @ block
        if progress is not None:
            progress(block.shape[0])
    d = total / n
    G -= n * np.outer(d, d)
    G = (G + G.T) / 2
    return G, shift + d, n


@dataclass
class RegressionStats:
    """Statistics of regressing all neurons on one chunk."""

    r2: float
    mean_corr: float
    mean_corr_outside: float


class _Workspace:
    """Buffers reused across chunks: fresh W x W arrays cost more in page faults than in arithmetic."""

    def __init__(self, G: np.ndarray):
        self.G = G
        self.trace_G = float(np.trace(G))
        self.diag_G = np.diag(G).copy()
        self.G_upper = np.asfortranarray(np.triu(G, 1))
        self.R = np.empty_like(self.G_upper, order="F")
        self.outer = np.empty_like(self.G_upper)


def chunk_regression(
    G: np.ndarray, n: int, chunk, alpha: float = 1e-8, *, work: _Workspace | None = None
) -> RegressionStats:
    """R^2 and residual mean correlations for one chunk, from the centred Gram matrix.

    With ``L`` the Cholesky factor of ``G_SS + alpha I``, ``V = L^-1 G_S:`` and
    ``B = L^-T V`` (the ridge coefficients), the residual scatter is
    ``R = G - V^T V - alpha B^T B``, one symmetric rank-2w update of ``G``.
    Entries of neurons inside the chunk use their exact form
    ``alpha^2 (G_SS + alpha I)^-1 B``, free of the cancellation in ``G - V^T V``.

    Parameters
    ----------
    G : ndarray of shape (W, W), centred scatter (see :func:`gram_matrix`)
    n : number of samples behind ``G``
    chunk : integer array of shape (w,), distinct neurons
    alpha : ridge penalty
    work : buffers from a previous call with the same ``G`` (internal)

    Returns
    -------
    RegressionStats; ``mean_corr_outside`` is NaN when fewer than two neurons lie outside.
    """
    if work is None or work.G is not G:
        work = _Workspace(G)
    S = np.asarray(chunk, dtype=np.int64)
    width, w = G.shape[0], len(S)
    A = G[np.ix_(S, S)]
    A[np.diag_indices(w)] += alpha
    try:
        L = scipy.linalg.cholesky(A, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        L = None
    R = work.R
    R[...] = work.G_upper
    if L is not None:
        # right-side triangular solves on G[:, S] (Fortran-ordered, no copies):
        # V^T L^T = G_:S, B^T L = V^T, and twice more for (K B)^T
        Vt = dtrsm(1.0, L, G[:, S], side=1, lower=1, trans_a=1)
        Bt = dtrsm(1.0, L, Vt, side=1, lower=1, trans_a=0)
        KB = dtrsm(1.0, L, dtrsm(1.0, L, Bt, side=1, lower=1, trans_a=1), side=1, lower=1, trans_a=0).T
        Ut = np.empty((width, 2 * w), order="F")
        Ut[:, :w] = Vt
        Ut[:, w:] = np.sqrt(alpha) * Bt
        # upper triangle of triu(G, 1) - (V^T V + alpha B^T B), in place
        R = dsyrk(-1.0, Ut, beta=1.0, c=R, overwrite_c=1)
    else:
        # numerically singular chunk (exactly collinear neurons with alpha = 0): least squares
        G_S = G[S]
        B = np.linalg.lstsq(A, G_S, rcond=None)[0]
        KB = np.linalg.lstsq(A, B, rcond=None)[0]
        R -= np.triu(G_S.T @ B + alpha * (B.T @ B))
    inside_exact = (alpha * alpha) * KB  # rows of R of the neurons inside the chunk, shape (w, W)
    # R holds -Q_ii on its diagonal, so diag(residual scatter) = diag(G) + diag(R)
    diag = work.diag_G + np.diagonal(R)
    diag[S] = inside_exact[np.arange(w), S]
    np.clip(diag, 0.0, None, out=diag)
    r2 = 1.0 - float(diag.sum()) / work.trace_G
    scale = 1.0 / (n - 1)
    sd = np.sqrt(diag * scale)
    # pairs of neurons both outside the chunk: the strict upper triangle of R
    np.fill_diagonal(R, 0.0)
    R[S] = 0.0
    R[:, S] = 0.0
    np.abs(R, out=R)
    outer = work.outer
    np.multiply.outer(sd, sd, out=outer)
    outer += CORR_EPS
    np.divide(R, outer, out=R)
    sum_out = float(R.sum()) * scale
    # pairs with at least one neuron inside the chunk, from the exact form
    Mi = np.abs(inside_exact) * scale / (outer[S])
    outside = np.ones(width, dtype=bool)
    outside[S] = False
    M_SS = Mi[:, S]
    sum_in = float(Mi[:, outside].sum()) + (float(M_SS.sum()) - float(np.trace(M_SS))) / 2
    n_pairs = width * (width - 1) / 2
    mean_corr = (sum_out + sum_in) / n_pairs if width > 1 else float("nan")
    m = width - w
    mean_out = sum_out / (m * (m - 1) / 2) if m >= 2 else float("nan")
    return RegressionStats(r2, mean_corr, mean_out)


# --------------------------------------------------------------------------- estimator
#: (metric, split) pairs reported by :class:`ChunkAnalysis`, in output order.
METRICS = (
    ("accuracy", "train"),
    ("accuracy", "test"),
    ("r2", "test"),
    ("mean_corr", "test"),
    ("mean_corr_outside", "test"),
)


class ChunkAnalysis:
    """Chunk statistics of a representation set, in the estimator style.

    Parameters
    ----------
    chunk_sizes : sequence of int or None
        Sizes to analyse; default :func:`default_chunk_sizes` of the width.
    acc_rep : int, default 100
        Random chunks per size for the accuracies.
    r2_rep : int, default 40
        Random chunks per size for R^2 and the residual correlations.
    alpha : float, default 1e-8
        Ridge penalty.
    block_rows : int, default 8192
        Rows read at a time; bounds memory whatever the number of samples.
    random_state : int or None, default 0
        Seed of the chunk draws; the same seed gives the same numbers.
        Accuracy and regression chunks come from independent streams, so
        changing ``acc_rep`` does not change the regression chunks.
    progress : bool, default False
        Show progress bars (tqdm) on stderr.
    device : {"auto", "cpu", "cuda", "cuda:N"}, default "auto"
        Where the chunk accuracies are computed: "cpu" is numpy; "cuda" is
        torch on the GPU; "auto" takes the GPU when one is present. The
        regression statistics are computed in float64 with numpy either way.

    Attributes
    ----------
    chunk_sizes_ : list of int
    acc_chunks_ : dict int -> ndarray of shape (acc_rep, size)
    r2_chunks_ : dict int -> ndarray of shape (r2_rep, size)
    values_ : dict (metric, split) -> ndarray of shape (n_sizes, reps), one value per chunk
    timings_ : dict of seconds per step
    width_ : int
    error_inf_ : float or None, copied from the set
    device_ : str, where the accuracies were computed
    """

    def __init__(
        self,
        chunk_sizes=None,
        acc_rep=100,
        r2_rep=40,
        alpha=1e-8,
        block_rows=8192,
        random_state=0,
        progress=False,
        device="auto",
    ):
        self.chunk_sizes = chunk_sizes
        self.acc_rep = acc_rep
        self.r2_rep = r2_rep
        self.alpha = alpha
        self.block_rows = block_rows
        self.random_state = random_state
        self.progress = progress
        self.device = device

    def _check_params(self, width):
        acc_rep = check_int(self.acc_rep, "acc_rep", min_value=1)
        r2_rep = check_int(self.r2_rep, "r2_rep", min_value=1)
        alpha = check_float(self.alpha, "alpha", min_value=0.0)
        block_rows = check_int(self.block_rows, "block_rows", min_value=1)
        if self.chunk_sizes is None:
            sizes = default_chunk_sizes(width)
        else:
            sizes = check_chunk_sizes(self.chunk_sizes, width)
        if self.random_state is not None:
            check_int(self.random_state, "random_state", min_value=0)
        return sizes, acc_rep, r2_rep, alpha, block_rows

    def fit(self, repset) -> ChunkAnalysis:
        """Run the analysis on a :class:`~redrep.repset.RepresentationSet`; returns self."""
        width = repset.width
        sizes, acc_rep, r2_rep, alpha, block_rows = self._check_params(width)
        if repset.n_test < 2:
            raise RedrepError(f"features_test: expected at least 2 rows for the regression, found {repset.n_test}")
        self.device_ = resolve_device(self.device)
        acc_seq, r2_seq = np.random.SeedSequence(self.random_state).spawn(2)
        acc_rng, r2_rng = np.random.default_rng(acc_seq), np.random.default_rng(r2_seq)
        self.chunk_sizes_ = sizes
        self.width_ = width
        self.error_inf_ = repset.error_inf
        self.acc_chunks_ = {w: draw_chunks(width, w, acc_rep, acc_rng) for w in sizes}
        self.r2_chunks_ = {w: draw_chunks(width, w, r2_rep, r2_rng) for w in sizes}
        names = repset.names
        timings = {}
        values = {}
        flat = [c for w in sizes for c in self.acc_chunks_[w]]
        for split in ("train", "test"):
            feats = getattr(repset, f"features_{split}")
            t0 = time.perf_counter()
            with _bar(self.progress, feats.shape[0], f"accuracy ({split})", "rows") as bar:
                acc = chunk_accuracy(
                    feats,
                    getattr(repset, f"labels_{split}"),
                    repset.weight,
                    repset.bias,
                    flat,
                    block_rows=block_rows,
                    name=names.get(f"features_{split}", f"features_{split}"),
                    progress=bar.update,
                    device=self.device_,
                )
            values[("accuracy", split)] = acc.reshape(len(sizes), acc_rep)
            timings[f"accuracy_{split}"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        with _bar(self.progress, repset.n_test, "gram matrix (test)", "rows") as bar:
            G, _, n = gram_matrix(
                repset.features_test,
                block_rows=block_rows,
                name=names.get("features_test", "features_test"),
                progress=bar.update,
            )
        timings["gram_test"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        work = _Workspace(G)
        if work.trace_G <= 0:
            raise RedrepError("features_test: expected neurons with nonzero variance, found every column constant")
        stats = np.empty((3, len(sizes), r2_rep))
        slots = {}  # unique chunk -> the (size index, repetition) places it fills
        for i, w in enumerate(sizes):
            for r, c in enumerate(self.r2_chunks_[w]):
                slots.setdefault(c.tobytes(), (c, []))[1].append((i, r))
        with _bar(self.progress, len(sizes) * r2_rep, "regression (test)", "chunks") as bar:
            for i_r, s in _map_chunks(G, n, [v[0] for v in slots.values()], alpha, work):
                for i, r in list(slots.values())[i_r][1]:
                    stats[:, i, r] = (s.r2, s.mean_corr, s.mean_corr_outside)
                    bar.update(1)
        values[("r2", "test")] = stats[0]
        values[("mean_corr", "test")] = stats[1]
        values[("mean_corr_outside", "test")] = stats[2]
        timings["regression_test"] = time.perf_counter() - t0
        self.values_ = values
        self.timings_ = timings
        return self

    def mean(self, metric: str, split: str = "test") -> np.ndarray:
        """Mean over chunks, one value per chunk size."""
        return _nanmean_rows(self.values_[(metric, split)])

    def to_rows(self) -> list[dict]:
        """Tidy rows: one per metric x split x chunk size, with mean, std, sem and n."""
        rows = []
        for metric, split in METRICS:
            vals = self.values_[(metric, split)]
            for w, v in zip(self.chunk_sizes_, vals):
                rows.append({"metric": metric, "split": split, "chunk_size": int(w), **summarize(v)})
        return rows


def summarize(v) -> dict:
    """Mean, standard deviation (ddof 1), standard error and count of the finite values of ``v``."""
    v = np.asarray(v, dtype=np.float64)
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return {"mean": float("nan"), "std": float("nan"), "sem": float("nan"), "n": 0}
    std = float(v.std(ddof=1)) if n > 1 else 0.0
    return {"mean": float(v.mean()), "std": std, "sem": std / np.sqrt(n), "n": n}


def _nanmean_rows(a):
    out = np.full(a.shape[0], np.nan)
    for i, row in enumerate(a):
        row = row[np.isfinite(row)]
        if row.size:
            out[i] = row.mean()
    return out


def _map_chunks(G, n, chunks, alpha, work):
    """Yield ``(index, RegressionStats)`` for every chunk.

    Chunks of up to 64 neurons run with a single-threaded BLAS: their calls are
    too small to split, and a multi-threaded BLAS spinning on them is several
    times slower, many times so when other processes share the cores. Larger
    chunks keep all BLAS threads.
    """
    small = [i for i, c in enumerate(chunks) if len(c) <= 64]
    large = [i for i, c in enumerate(chunks) if len(c) > 64]
    with threadpool_limits(limits=1, user_api="blas"):
        for i in small:
            yield i, chunk_regression(G, n, chunks[i], alpha, work=work)
    for i in large:
        yield i, chunk_regression(G, n, chunks[i], alpha, work=work)


class _NoBar:
    def update(self, n=1):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _bar(enabled, total, desc, unit):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)
