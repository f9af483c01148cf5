"""The chunk analysis: how much of a layer's information a random subset of its neurons carries.

For chunk sizes ``w_c`` and random chunks ``S`` of ``w_c`` distinct neurons:

* chunk accuracy: the trained readout restricted to ``S``
  (``X[:, S] @ weight[:, S].T + bias``), on the training and the test set;
* R^2 of a ridge regression (``alpha``, with intercept) of all ``W`` neurons
  on the chunk, and the mean absolute correlation of its residuals, on the
  test set, over all pairs of neurons (the published definition) and over the
  pairs outside the chunk;
* the held-out R^2: the same regression fitted on the training set and
  scored on the test set.

The regression statistics come from centred Gram matrices ``G = Fc^T Fc``
(exact algebra, no fit per chunk); every pass over the data goes block by
block, so memory does not grow with the number of samples. The definitions and
the algebra: docs/method.md#the-algebra.
"""

from __future__ import annotations

import numbers
import os
import threading
import time
from dataclasses import dataclass

import numpy as np

from . import _lapack
from . import metrics as _metrics
from . import summary as _summary
from .accuracy import AccuracyJob, chunk_accuracy, class_readout, fastpass_name
from .blocks import check_mapped, iter_blocks
from .device import resolve_device  # noqa: F401  (the one device decision; re-exported)
from .parallel import Pool, SharedArrays
from .summary import describe_values  # noqa: F401  (the statistics of results.csv; re-exported)
from .validation import (
    RedrepError,
    check_chunk_sizes,
    check_float,
    check_int,
)

#: Added to the denominator of the residual correlation, as in the reference definition.
CORR_EPS = 1e-8
#: Largest ridge penalty: alpha^2 times a scatter of float32 features (at most about 1e83 per sample) stays finite.
MAX_ALPHA = 1e100


def check_reading_config(config) -> None:
    """Check the fields that every analysis-and-reading config shares: acc_rep, r2_rep, seed, refine, criterion."""
    check_int(config.acc_rep, "acc_rep", min_value=1, max_value=MAX_REP)
    check_int(config.r2_rep, "r2_rep", min_value=1, max_value=MAX_REP)
    check_int(config.seed, "seed", min_value=0)
    check_int(config.refine, "refine", min_value=0)
    if not isinstance(config.criterion, _summary.Criterion):
        found = type(config.criterion).__name__
        raise RedrepError(f"criterion: expected a redrep.core.summary.Criterion, found {found}")
    config.criterion.validated()


def default_chunk_sizes(width: int) -> list[int]:
    """``W // 2**i`` for ``i = 0 .. floor(log2 W)``, ascending (W = 512: 1, 2, ..., 512)."""
    width = check_int(width, "width", min_value=1)
    return sorted({width >> i for i in range(width.bit_length())})


def draw_chunks(width: int, size: int, n_rep: int, rng: np.random.Generator, progress=None) -> np.ndarray:
    """``n_rep`` uniformly random chunks of ``size`` distinct neurons out of ``width``.

    ``progress``, if given, is called with the number of chunks drawn since its last call.

    Returns
    -------
    ndarray of shape (n_rep, size), each row sorted.
    """
    out = np.empty((n_rep, size), dtype=np.int64)
    for r in range(n_rep):
        out[r] = np.sort(rng.choice(width, size, replace=False))
        if progress is not None and (r + 1) % _DRAW_STEP == 0:
            progress(_DRAW_STEP)
    if progress is not None and n_rep % _DRAW_STEP:
        progress(n_rep % _DRAW_STEP)
    return out


#: Most random chunks per size (``acc_rep``, ``r2_rep``).
MAX_REP = 1_000_000
#: What the chunk draws of an analysis hold, per repetition: the indices and their distinct copies, about this many
#: bytes per neuron drawn, plus, per chunk, a membership mask of 2 W bytes and this many bytes of Python objects
#: (measured: 27 kB per repetition at W = 512 and its 10 default sizes, 5.3 kB at W = 64; these constants say 39 kB
#: and 7.6 kB).
DRAW_BYTES_PER_NEURON = 24
DRAW_BYTES_PER_CHUNK = 400
#: Chunks drawn per progress update; draws of at least _DRAW_BAR_MIN chunks in all show a progress bar.
_DRAW_STEP = 1024
_DRAW_BAR_MIN = 200_000


def draw_bytes(width: int, sizes, acc_rep: int, r2_rep: int) -> int:
    """Bytes the chunk draws of an analysis hold, about (see :data:`DRAW_BYTES_PER_NEURON`)."""
    per_rep = DRAW_BYTES_PER_NEURON * sum(sizes) + len(sizes) * (2 * width + DRAW_BYTES_PER_CHUNK)
    return (acc_rep + r2_rep) * per_rep


def check_reps(acc_rep, r2_rep, width: int, sizes) -> tuple[int, int]:
    """``acc_rep`` and ``r2_rep`` checked: integers in [1, MAX_REP] whose chunk draws fit in half the memory.

    Raises
    ------
    RedrepError
        One line naming the parameter, the memory the draws would hold and what is available.
    """
    acc_rep = check_int(acc_rep, "acc_rep", min_value=1, max_value=MAX_REP)
    r2_rep = check_int(r2_rep, "r2_rep", min_value=1, max_value=MAX_REP)
    need, have = draw_bytes(width, sizes, acc_rep, r2_rep), _memory_budget()
    if have is not None and need > have:
        name = "acc_rep" if acc_rep >= r2_rep else "r2_rep"
        raise RedrepError(
            f"{name}: {acc_rep:,} and {r2_rep:,} random chunks per size (accuracies, R^2) of a layer of W = {width} "
            f"at {len(sizes)} sizes hold about {need / 1e9:,.1f} GB of chunk draws; expected at most "
            f"{have / 1e9:,.1f} GB (half this machine's memory): draw fewer chunks"
        )
    return acc_rep, r2_rep


def _memory_budget() -> int | None:
    """Half the machine's memory in bytes (what the chunk draws may hold); None where unknown."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) // 2
    except (ValueError, OSError, AttributeError):
        return None


def _draw_all(width, sizes, acc_rep, r2_rep, acc_rng, r2_rng, progress: bool) -> tuple[dict, dict]:
    """The accuracy and regression chunks of every size, with a progress bar when the draws are many."""
    total = (acc_rep + r2_rep) * len(sizes)
    with _bar(progress and total >= _DRAW_BAR_MIN, total, "chunk draws", "chunks") as bar:
        acc = {w: draw_chunks(width, w, acc_rep, acc_rng, bar.update) for w in sizes}
        r2 = {w: draw_chunks(width, w, r2_rep, r2_rng, bar.update) for w in sizes}
    return acc, r2


# --------------------------------------------------------------------------- regression
#: Partial sums behind a Gram matrix: at most this many contiguous ranges of rows, a number that depends on the width
#: only, so that the matrix is the same, bit for bit, whatever the workers that sum them.
GRAM_PARTS = 4
#: Most bytes of the partial sums of one Gram matrix held at once (each is a W x W float64 matrix).
GRAM_PARTS_BYTES = 64 * 2**20


def gram_parts(width: int) -> int:
    """How many partial sums make a Gram matrix of ``width`` columns."""
    return int(max(1, min(GRAM_PARTS, GRAM_PARTS_BYTES // (8 * max(1, width) ** 2))))


#: Most bytes of one float64 block of rows summed into a Gram matrix (a larger one gains nothing and costs memory).
GRAM_BLOCK_BYTES = 8 * 2**20


def gram_shift(features, block_rows: int = 8192) -> np.ndarray:
    """The mean of the first block of rows: every block is shifted by it before its products are summed."""
    return np.mean(features[:block_rows], axis=0, dtype=np.float64)


def _gram_block_rows(width: int, block_rows: int) -> int:
    return max(1, min(block_rows, GRAM_BLOCK_BYTES // (8 * max(1, width))))


def gram_ranges(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ranges of ``n`` rows (fewer if ``n`` is smaller), whose partial sums make a Gram matrix."""
    edges = np.linspace(0, n, min(parts, n) + 1).round().astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def gram_part(features, span, shift, *, block_rows: int = 8192, name: str = "features", out=None):
    """The shifted scatter of rows ``span = (start, stop)``: its upper triangle (Fortran order) and column sums.

    ``out``: a zeroed Fortran-ordered (W, W) float64 array to sum into (by default a new one).
    """
    width = features.shape[1]
    G = np.zeros((width, width), order="F") if out is None else out
    total = np.zeros(width)
    rows = _gram_block_rows(width, block_rows)
    for _, block in iter_blocks(features, rows, np.float64, name, reuse=True, start=span[0], stop=span[1]):
        block -= shift
        total += block.sum(axis=0)
        # the upper triangle of block^T block, in place: half the multiply-adds of a full product
        _lapack.syrk_update(G, block.T)
    return G, total


def gram_combine(parts, shift, n: int):
    """``(G, mean, n)`` from the results of :func:`gram_part` over :func:`gram_ranges`, summed in range order."""
    G, total = parts[0][0].copy(order="F"), parts[0][1].copy()
    for g, t in parts[1:]:
        G += g
        total += t
    G = np.triu(G) + np.triu(G, 1).T
    d = total / n
    G -= n * np.outer(d, d)
    return G, shift + d, n


def gram_matrix(features, *, block_rows: int = 8192, name: str = "features"):
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
    The rows are summed in :func:`gram_parts` contiguous ranges, as the
    workers of :class:`ChunkAnalysis` sum them, so both give the same matrix.
    """
    n = features.shape[0]
    shift = gram_shift(features, block_rows)
    spans = gram_ranges(n, gram_parts(features.shape[1]))
    parts = [gram_part(features, span, shift, block_rows=block_rows, name=name) for span in spans]
    return gram_combine(parts, shift, n)


class GramJob:
    """A Gram matrix as tasks over the ranges of :func:`gram_ranges` (see :mod:`redrep.core.parallel`).

    Each task sums its rows into its own matrix in memory shared with this
    process (a W x W matrix through a pipe costs about as much as its sum).
    """

    def __init__(self, features, *, block_rows: int = 8192, name: str = "features"):
        self.features, self.block_rows, self.name = features, block_rows, name
        check_mapped(features, name)  # before the first rows are read, here
        self.shift = gram_shift(features, block_rows)
        width = features.shape[1]
        self.spans = gram_ranges(features.shape[0], gram_parts(width))
        self.shared = SharedArrays({f"part{k}": (width, width) for k in range(len(self.spans))})
        _lapack.preload()  # in this process, so that forked workers share it and their BLAS limits cover it

    def tasks(self) -> list[int]:
        return list(range(len(self.spans)))

    def work(self) -> float:
        """Estimated multiply-adds (see :class:`redrep.core.parallel.Pool`)."""
        n, width = self.features.shape
        return n * width * (width + 1) / 2

    def run(self, k: int) -> np.ndarray:
        """Sum the rows of range ``k`` into its shared matrix; return their column sums."""
        out = self.shared[f"part{k}"].T  # Fortran-ordered view
        span = self.spans[k]
        return gram_part(self.features, span, self.shift, block_rows=self.block_rows, name=self.name, out=out)[1]

    def combine(self, totals: dict):
        """``(G, mean, n)`` from the column sums returned by the tasks (by task) and their shared matrices."""
        parts = [(self.shared[f"part{k}"].T, totals[k]) for k in self.tasks()]
        return gram_combine(parts, self.shift, self.features.shape[0])


@dataclass
class RegressionStats:
    """Statistics of regressing all neurons on one chunk."""

    r2: float
    mean_corr: float
    mean_corr_outside: float


#: Relative resolution of the Gram algebra: a residual variance (or a Cholesky pivot) below this fraction of the
#: neuron's own variance is rounding noise of ``G``, whose entries carry about 1e-16 of their size.
_RESOLVED = 512 * np.finfo(np.float64).eps


class _Workspace:
    """What every chunk of one Gram matrix shares: its diagonal, trace and strict upper triangle (Fortran order)."""

    def __init__(self, G: np.ndarray):
        self.G = G
        self.trace_G = float(np.trace(G))
        self.diag_G = np.diag(G).copy()
        self.G_upper = np.asfortranarray(np.triu(G, 1))


#: A bound below which the pairs with a neuron inside the chunk are left out of the mean correlation: their
#: correlations, in sum over all pairs, are provably smaller than this (see :func:`chunk_regression`).
_NEGLIGIBLE = 1e-13


def _block(G: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``G[np.ix_(rows, cols)]``, gathered twice along one axis (several times faster than fancy 2-d indexing)."""
    return np.take(np.take(G, rows, axis=0), cols, axis=1)


def _cross_block(G: np.ndarray, S: np.ndarray, Out: np.ndarray) -> np.ndarray:
    """``G[np.ix_(S, Out)]`` in Fortran order, for a symmetric ``G``.

    When the chunk is large, the transpose of the C-ordered ``G[np.ix_(Out, S)]``
    (the same numbers, ``G`` being symmetric) is gathered instead: it is
    already Fortran-ordered, which saves the strided copy of a transposition.
    """
    if 4 * len(S) >= G.shape[0]:
        return _block(G, Out, S).T
    return np.asfortranarray(_block(G, S, Out))


def _factor(G: np.ndarray, S: np.ndarray, alpha: float):
    """Cholesky factor ``L`` of ``A = G_SS + alpha I`` when every pivot is resolved, else None.

    Only the lower triangle of ``L`` is meaningful (its upper one is left as ``A``'s).
    """
    A = _block(G, S, S)
    diag_A = np.diagonal(A) + alpha
    A[np.diag_indices(len(S))] = diag_A
    L, info = _lapack.potrf(A)
    if info != 0:
        return None
    return L if bool(np.all(np.diagonal(L) ** 2 > _RESOLVED * diag_A)) else None


def _eigen_solves(G: np.ndarray, S: np.ndarray, alpha: float):
    """Ridge solves of a chunk holding neurons that are combinations of the others to within the rounding of ``G``.

    The directions of ``G_SS`` below its resolution are taken as exactly null
    (as they are in the data, up to rounding); the solves use the
    eigendecomposition ``G_SS = Q diag(lam) Q^T`` on the remaining ones.

    Returns
    -------
    Ut : ndarray of shape (r, W), with ``G_:S (A^-1 + alpha A^-2) G_S: = Ut^T Ut``
    B, K : ndarrays of shape (w, W), ``B = A^-1 G_S:`` and ``K = A^-1 B``
    coef : callable, ``coef(idx)`` the coefficients ``c`` of shape (w, len(idx)) with ``G_S,idx = G_SS c``
    """
    import scipy.linalg  # this rare path only: importing it takes 0.15 s

    w = len(S)
    lam, Q = scipy.linalg.eigh(G[np.ix_(S, S)], check_finite=False)
    keep = lam > 64 * w * np.finfo(np.float64).eps * max(float(lam[-1]), 0.0)
    lam, Q = lam[keep], Q[:, keep]
    P = Q.T @ G[S]  # (r, W): the chunk's neurons against all, in the eigenbasis
    Ut = P * (np.sqrt(lam + 2 * alpha) / (lam + alpha))[:, None]
    B = Q @ (P / (lam + alpha)[:, None])
    K = Q @ (P / ((lam + alpha) ** 2)[:, None])
    return Ut, B, K, lambda idx: Q @ (P[:, idx] / lam[:, None])


#: Side of the tiles of the residual scatter summed by :func:`_pair_sum` (256^2 float64: half a megabyte).
_PAIR_TILE = 256


def _pair_sum(M: np.ndarray, Lt: np.ndarray, Rt: np.ndarray, rs: np.ndarray, eps: float) -> float:
    """``sum_{k<l} min(|R_kl|, rs_k rs_l) / (rs_k rs_l + eps)`` over the strict upper triangle of ``R = M - Lt^T Rt``.

    ``M`` (Fortran-ordered) holds the strict upper triangle of a Gram block,
    ``Lt`` and ``Rt`` (Fortran-ordered, shape (k, m)) its low-rank update. The
    block is computed one square tile of the upper triangle at a time, each
    small enough to stay in cache through the element-wise steps and large
    enough for its product to run at the BLAS's speed, so no m x m residual
    scatter is ever held. Pairs with ``rs_k = 0`` add nothing.
    """
    m = M.shape[0]
    tile = min(m, _PAIR_TILE)
    strict = np.triu(np.ones((tile, tile)), 1).T.copy().T  # Fortran-ordered 0/1 mask of the strict upper triangle
    total = 0.0
    for a in range(0, m, tile):
        a2 = min(m, a + tile)
        for c in range(a, m, tile):
            c2 = min(m, c + tile)
            blk = _lapack.gemm_update(M[a:a2, c:c2], Lt[:, a:a2], Rt[:, c:c2])
            if c == a:  # a diagonal tile: its strict upper triangle only
                blk *= strict[: a2 - a, : c2 - c]
            np.abs(blk, out=blk)
            P = np.multiply.outer(rs[c:c2], rs[a:a2]).T  # Fortran-ordered like blk: element-wise steps run contiguously
            np.minimum(blk, P, out=blk)
            P += eps
            blk /= P
            total += float(blk.sum())
    return total


def chunk_regression(
    G: np.ndarray, n: int, chunk, alpha: float = 1e-8, *, work: _Workspace | None = None
) -> RegressionStats:
    """R^2 and residual mean correlations for one chunk, from the centred Gram matrix.

    With ``A = G_SS + alpha I`` and ``B = A^-1 G_S:`` (the ridge
    coefficients), the residual scatter of the neurons outside the chunk is
    ``R_OO = G_OO - B_O^T (G_SO + alpha B_O)``; it is summed one cache-sized
    panel at a time. Rows of neurons inside the chunk have the exact form
    ``alpha^2 A^-1 B``, free of the cancellation in that update; so do the rows
    of neurons outside the chunk that it reconstructs to within the rounding of
    ``G`` (residual variance below ``_RESOLVED`` of their variance, duplicates
    of chunk neurons for instance): such a neuron is taken as the exact
    combination ``F_S c`` of the chunk, whose residual is ``alpha F_S A^-1 c``
    and whose row is ``c^T alpha^2 A^-1 B``. A chunk with numerically
    dependent neurons (unresolved Cholesky pivots) is solved on the resolved
    directions of ``G_SS`` only (see :func:`_eigen_solves`).

    Correlations follow the published definition
    ``cov_ij / (sqrt(cov_ii cov_jj) + 1e-8)`` with ``cov = R / (n - 1)``, each
    ``|cov_ij|`` first bounded by ``sqrt(cov_ii cov_jj)`` (Cauchy-Schwarz,
    which only removes rounding), so that every correlation lies in [0, 1].
    The ``1e-8`` is absolute: it is compared with ``sqrt(cov_ii cov_jj)``, in
    the features' units squared, so it matters only for pairs whose residual
    standard deviations multiply to within a few orders of 1e-8 (neurons
    reconstructed almost exactly, or features of a tiny scale); for all other
    pairs a rescaling of the features changes no correlation.

    The pairs with a neuron inside the chunk have residual covariances of
    order ``alpha^2``: ``|alpha^2 (A^-1 B)_jk| <= alpha^2 sqrt((A^-1)_jj ||A^-1||) ||b_k||``
    (and ``alpha^2 sqrt((A^-1)_ii (A^-1)_jj)`` for two neurons inside). When
    these bounds, divided by ``(n - 1) 1e-8`` and summed into a bound on their
    share of the mean correlation, stay below ``_NEGLIGIBLE`` (1e-13), those
    correlations are taken as 0 and ``A^-1 B`` is not formed; otherwise they
    are computed. Either way the mean over pairs outside the chunk is exact.

    Parameters
    ----------
    G : ndarray of shape (W, W), centred scatter (see :func:`gram_matrix`)
    n : number of samples behind ``G``
    chunk : integer array of shape (w,), distinct neurons
    alpha : ridge penalty
    work : what a previous call with the same ``G`` computed (internal)

    Returns
    -------
    RegressionStats; ``mean_corr_outside`` is NaN when fewer than two neurons lie outside.
    """
    if work is None or work.G is not G:
        work = _Workspace(G)
    S = np.sort(np.asarray(chunk, dtype=np.int64))
    width, w = G.shape[0], len(S)
    outside = np.ones(width, dtype=bool)
    outside[S] = False
    Out = np.flatnonzero(outside)
    m = len(Out)
    eps = (n - 1) * CORR_EPS  # correlations as min(|R_kl|, rs_k rs_l) / (rs_k rs_l + (n - 1) 1e-8)
    n_pairs = width * (width - 1) / 2
    diag = work.diag_G.copy()
    L = _factor(G, S, alpha)
    if L is not None:
        GSO = _cross_block(G, S, Out)
        B = _lapack.trsm(L, _lapack.trsm(L, GSO), trans=True)  # L L^T B = G_SO, shape (w, m)
        Rt = GSO
        Rt += alpha * B  # G_SO + alpha B_O: R_OO = G_OO - B_O^T Rt
        Lt = B
        diag[Out] -= np.einsum("ij,ij->j", Lt, Rt)
    else:
        Ut, _, K, coef = _eigen_solves(G, S, alpha)
        Lt = Rt = np.asfortranarray(Ut[:, Out])
        diag[Out] -= np.einsum("ij,ij->j", Lt, Lt)
    # neurons the chunk reconstructs to within the rounding of G
    unresolved = outside & (diag <= _RESOLVED * work.diag_G)
    Un = np.flatnonzero(unresolved)
    in_x = ~outside | unresolved
    sum_x = sum_u = 0.0
    exact = L is None or len(Un) > 0
    if L is not None:
        Linv = _lapack.trtri(L, zero_upper=True)[0]
        ainv_diag = np.einsum("ij,ij->j", Linv, Linv)
        if not exact:
            ainv_norm = float(np.einsum("ij,ij->", Linv, Linv))  # >= ||A^-1||_2
            root = float(np.sqrt(ainv_diag).sum())
            bound_in_out = alpha**2 * np.sqrt(ainv_norm) * root * float(np.linalg.norm(B, axis=0).sum()) / eps
            bound_in_in = alpha**2 * root**2 / (2 * eps)
            exact = n_pairs > 0 and (bound_in_out + bound_in_in) / n_pairs > _NEGLIGIBLE
        if exact:
            K = np.empty((w, width))
            K[:, Out] = _lapack.trsm(L, _lapack.trsm(L, B), trans=True)
            Ainv = Linv.T @ Linv
            if alpha * float(np.linalg.norm(Ainv)) <= 0.5:
                K[:, S] = Ainv - alpha * (Ainv @ Ainv)  # A^-1 (I - alpha A^-1) = A^-1 B_SS
            else:  # the ridge dominates: A^-1 G_SS A^-1, free of the cancellation in the difference
                K[:, S] = Ainv @ (G[np.ix_(S, S)] @ Ainv)

            def coef(idx):
                # c = (I - alpha A^-1)^-1 b = b + alpha A^-1 b + O((alpha / lambda)^2), lambda >= the smallest pivot
                return B[:, np.searchsorted(Out, idx)] + alpha * K[:, idx]
        else:
            # the residual variances inside the chunk, alpha^2 (A^-1 - alpha A^-2)_jj, to first order
            diag[S] = alpha**2 * ainv_diag
    if exact:
        X = np.concatenate([S, Un])  # neurons whose rows take the exact form
        C = coef(Un) if len(Un) else np.zeros((w, 0))
        Rx = np.empty((len(X), width))  # rows of the residual scatter of X
        Rx[:w] = (alpha * alpha) * K
        Rx[w:] = C.T @ Rx[:w]
        diag[X] = Rx[np.arange(len(X)), X]
    np.clip(diag, 0.0, None, out=diag)
    r2 = 1.0 - float(diag.sum()) / work.trace_G
    rs = np.sqrt(diag)
    if exact:
        P = np.multiply.outer(rs[X], rs)
        Mx = np.minimum(np.abs(Rx), P) / (P + eps)
        Mxx = Mx[:, X]
        sum_x = float(Mx[:, ~in_x].sum()) + (float(Mxx.sum()) - float(np.trace(Mxx))) / 2
        Mu = Mx[w:]
        Muu = Mu[:, w:]
        sum_u = float(Mu[:, ~in_x].sum()) + (float(Muu.sum()) - float(np.trace(Muu))) / 2
    # pairs of neurons both outside the chunk and reconstructed within the resolution
    rs_rest = rs.copy()
    rs_rest[in_x] = 0.0
    if m < 2:
        sum_rest = 0.0
    elif 4 * w > width:  # few neurons outside: gather their block
        sum_rest = _pair_sum(_block(work.G_upper.T, Out, Out).T, Lt, Rt, rs_rest[Out], eps)
    else:  # the whole matrix, with zero updates and weights on the chunk's rows, saves the gather
        Lt_all = np.zeros((Lt.shape[0], width), order="F")
        Lt_all[:, Out] = Lt
        Rt_all = Lt_all
        if Rt is not Lt:
            Rt_all = np.zeros((Rt.shape[0], width), order="F")
            Rt_all[:, Out] = Rt
        sum_rest = _pair_sum(work.G_upper, Lt_all, Rt_all, rs_rest, eps)
    mean_corr = (sum_rest + sum_x) / n_pairs if width > 1 else float("nan")
    mean_out = (sum_rest + sum_u) / (m * (m - 1) / 2) if m >= 2 else float("nan")
    return RegressionStats(r2, mean_corr, mean_out)


class HeldOut:
    """What the held-out R^2 needs: the training scatter (the fit) and the test scatter (the score).

    Parameters
    ----------
    G_train : ndarray of shape (W, W), centred scatter of the training features
    mean_train : ndarray of shape (W,)
    G_test : ndarray of shape (W, W), centred scatter of the test features
    mean_test : ndarray of shape (W,)
    n_test : number of test rows

    Notes
    -----
    The ridge fitted on the training set predicts
    ``mean_train + (x_S - mean_train_S) B`` with ``B = (G_train,SS + alpha I)^-1 G_train,S:``.
    With ``D`` the test features centred at the *training* mean, its scatter
    is ``H = G_test + n_test d d^T``, ``d = mean_test - mean_train``, and the
    test residual sum of squares is ``tr(H) - 2 <H_S:, B> + <H_SS, B B^T>``.
    """

    def __init__(self, G_train, mean_train, G_test, mean_test, n_test):
        self.G_train = G_train
        d = np.asarray(mean_test, dtype=np.float64) - np.asarray(mean_train, dtype=np.float64)
        self.H = G_test + n_test * np.outer(d, d)
        self.diag_H = np.diag(self.H).copy()
        self.trace_H = float(np.trace(self.H))
        self.trace_test = float(np.trace(G_test))


def chunk_r2_heldout(heldout: HeldOut, chunk, alpha: float = 1e-8) -> float:
    """R^2 on the test set of the ridge regression (``alpha``, with intercept) of all neurons on ``chunk``, fitted on
    the training set: ``1 - sum_j SSres_j(test) / sum_j SStot_j(test)``, ``SStot`` around the test mean.

    Parameters
    ----------
    heldout : :class:`HeldOut` built from the training and test scatters
    chunk : integer array of shape (w,), distinct neurons
    alpha : ridge penalty

    Returns
    -------
    float, at most 1; negative when the fit predicts the test set worse than its mean.

    Notes
    -----
    The neurons inside the chunk have ``B_SS = I - alpha A^-1``, so their
    part of the residual sum is ``alpha^2 <H_SS, A^-2>``, exact and free of
    cancellation; it is left out when ``alpha^2 ||A^-1||^2 tr(H_SS)`` is below
    1e-15 of the test variance. The others take two triangular solves.
    """
    S = np.sort(np.asarray(chunk, dtype=np.int64))
    G1, H = heldout.G_train, heldout.H
    width = G1.shape[0]
    L = _factor(G1, S, alpha)
    if L is None:  # numerically dependent neurons in the chunk: the resolved directions only
        B = _eigen_solves(G1, S, alpha)[1]
        BBt = B @ B.T
        cross = float(np.einsum("ij,ij->", H[S], B))
        quad = float(np.einsum("ij,ij->", H[np.ix_(S, S)], BBt))
        return 1.0 - (heldout.trace_H - 2.0 * cross + quad) / heldout.trace_test
    outside = np.ones(width, dtype=bool)
    outside[S] = False
    Out = np.flatnonzero(outside)
    H_SS = _block(H, S, S)
    B = _lapack.trsm(L, _lapack.trsm(L, _cross_block(G1, S, Out)), trans=True)
    cross = float(np.einsum("ij,ij->", _block(H, S, Out), B))
    BBt = _lapack.syrk(B)  # upper triangle of B_O B_O^T, shape (w, w); its strict lower one is zero
    # <H_SS, BBt> with BBt symmetric: twice the sum over the upper triangle, less its diagonal counted twice
    quad = 2.0 * float(np.einsum("ij,ij->", H_SS, BBt)) - float(np.diagonal(H_SS) @ np.diagonal(BBt))
    ss_res = float(heldout.diag_H[Out].sum()) - 2.0 * cross + quad
    Linv = _lapack.trtri(L, zero_upper=True)[0]
    ainv_norm = float(np.einsum("ij,ij->", Linv, Linv))  # >= ||A^-1||_2
    if alpha**2 * ainv_norm**2 * float(np.trace(H_SS)) > 1e-15 * heldout.trace_test:
        Ainv = Linv.T @ Linv
        ss_res += alpha**2 * float(np.einsum("ij,ij->", H_SS @ Ainv, Ainv))
    return 1.0 - ss_res / heldout.trace_test


# --------------------------------------------------------------------------- estimator


class ChunkAnalysis:
    """Chunk statistics of a representation set, in the estimator style.

    Parameters
    ----------
    chunk_sizes : sequence of int or None
        Sizes to analyse; default :func:`default_chunk_sizes` of the width.
    acc_rep : int, default 100
        Random chunks per size for the accuracies. With ``r2_rep``, at most
        :data:`MAX_REP`, and the chunk draws must fit in half the memory
        (:func:`check_reps`).
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
    heldout : bool, default True
        Also compute ``r2_heldout`` (the regression fitted on the training set,
        scored on the test set). It costs a Gram matrix of the training
        features and about as much again as the test-set regression; when
        False its values are NaN.
    criterion : :class:`redrep.core.summary.Criterion` or None, default None
        The criterion of ``w_c*`` that :meth:`summary` and the refinement use;
        None is ``Criterion()`` (docs/method.md#critical-chunk-size).
    refine : int or None, default None
        After the first pass, analyse this many more sizes evenly spaced
        between the size below ``w_c*`` and ``w_c*``
        (docs/method.md#refined-chunk-sizes); their chunks come from streams of
        their own, so the first pass's numbers are unchanged. None is 3 with
        the default chunk sizes and 0 with sizes given.

    Attributes
    ----------
    chunk_sizes_ : list of int
    acc_chunks_ : dict int -> ndarray of shape (acc_rep, size)
    r2_chunks_ : dict int -> ndarray of shape (r2_rep, size)
    values_ : dict (metric, split) -> ndarray of shape (n_sizes, reps), one value per chunk
    timings_ : dict of seconds per part: the seconds its tasks took summed over the workers, divided by
        their number (its share of the time they ran side by side; the parts add up to about the analysis time)
    n_workers_ : int, worker processes (or threads) that ran the tasks
    width_ : int
    error_inf_ : float or None, copied from the set
    device_ : str, where the accuracies were computed
    accuracy_pass_ : str, the pass that counted the accuracies (:func:`redrep.core.accuracy.fastpass_name`)
    n_train_ : int, training samples (a training error times it is a number of misclassified samples)
    refinement_ : dict or None, the sizes the refinement added
        (:func:`redrep.core.summary.refinement_info`: ``between``, ``sizes``, ``step``)
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
        heldout=True,
        criterion=None,
        refine=None,
    ):
        self.chunk_sizes = chunk_sizes
        self.acc_rep = acc_rep
        self.r2_rep = r2_rep
        self.alpha = alpha
        self.block_rows = block_rows
        self.random_state = random_state
        self.progress = progress
        self.device = device
        self.heldout = heldout
        self.criterion = criterion
        self.refine = refine

    def _check_params(self, width):
        alpha = self.alpha
        if isinstance(alpha, numbers.Real) and not isinstance(alpha, bool) and not 0.0 <= float(alpha) <= MAX_ALPHA:
            raise RedrepError(f"alpha: expected a ridge penalty in [0, {MAX_ALPHA:g}], found {float(alpha)!r}")
        alpha = check_float(alpha, "alpha")
        block_rows = check_int(self.block_rows, "block_rows", min_value=1)
        if self.chunk_sizes is None:
            sizes = default_chunk_sizes(width)
        else:
            sizes = check_chunk_sizes(self.chunk_sizes, width)
        if self.random_state is not None:
            check_int(self.random_state, "random_state", min_value=0)
        acc_rep, r2_rep = check_reps(self.acc_rep, self.r2_rep, width, sizes)
        if self.refine is not None:
            check_int(self.refine, "refine", min_value=0)
        self._criterion()
        return sizes, acc_rep, r2_rep, alpha, block_rows

    def _criterion(self):
        crit = _summary.Criterion() if self.criterion is None else self.criterion
        if not isinstance(crit, _summary.Criterion):
            raise RedrepError(f"criterion: expected a redrep.core.summary.Criterion, found {type(crit).__name__}")
        return crit.validated()

    def _draw(self, width: int, sizes, acc_rep: int, r2_rep: int):
        """The accuracy and regression chunks of every size: two streams of the seed, drawn size by size."""
        acc_seq, r2_seq = np.random.SeedSequence(self.random_state).spawn(2)
        acc_rng, r2_rng = np.random.default_rng(acc_seq), np.random.default_rng(r2_seq)
        return _draw_all(width, sizes, acc_rep, r2_rep, acc_rng, r2_rng, self.progress)

    def fit(self, repset) -> ChunkAnalysis:
        """Run the analysis on a :class:`~redrep.storage.repset.RepresentationSet`; returns self."""
        width = repset.width
        sizes, acc_rep, r2_rep, alpha, block_rows = self._check_params(width)
        if repset.n_test < 2:
            raise RedrepError(f"features_test: expected at least 2 rows for the regression, found {repset.n_test}")
        self.device_ = resolve_device(self.device)
        self.accuracy_pass_ = fastpass_name(self.device_)
        self.chunk_sizes_ = sizes
        self.width_ = width
        self.error_inf_ = repset.error_inf
        self.n_train_ = repset.n_train
        self.acc_chunks_, self.r2_chunks_ = self._draw(width, sizes, acc_rep, r2_rep)
        names = repset.names
        timings = {}
        values = {}
        flat = [c for w in sizes for c in self.acc_chunks_[w]]
        slots = {}  # unique chunk -> the (size index, repetition) places it fills
        for i, w in enumerate(sizes):
            for r, c in enumerate(self.r2_chunks_[w]):
                slots.setdefault(c.tobytes(), (c, []))[1].append((i, r))
        places = [v[1] for v in slots.values()]
        split_names = {s: names.get(f"features_{s}", f"features_{s}") for s in ("train", "test")}
        gram_splits = ("test", "train") if self.heldout else ("test",)
        weight, bias = class_readout(repset.weight, repset.bias)  # one output: as two classes (docs/method.md)
        acc_args = {
            s: (getattr(repset, f"features_{s}"), getattr(repset, f"labels_{s}"), weight, bias, flat)
            for s in ("train", "test")
        }
        if self.device_ != "cpu":  # the accuracies on the GPU first, from this process
            for split in ("train", "test"):
                t0 = time.perf_counter()
                with _bar(self.progress, acc_args[split][0].shape[0], f"accuracy ({split})", "rows") as bar:
                    acc = chunk_accuracy(
                        *acc_args[split],
                        block_rows=block_rows,
                        name=split_names[split],
                        progress=bar.update,
                        device=self.device_,
                    )
                values[("accuracy", split)] = acc.reshape(len(sizes), acc_rep)
                timings[f"accuracy_{split}"] = time.perf_counter() - t0
        # Everything else runs as tasks of one pool of workers, forked once (see redrep.core.parallel): the Gram
        # matrices first, then the accuracies; the regressions are queued as soon as the Gram matrices are in.
        jobs = {}
        for split in gram_splits:
            feats = getattr(repset, f"features_{split}")
            jobs[f"gram_{split}"] = GramJob(feats, block_rows=block_rows, name=split_names[split])
        if self.device_ == "cpu":
            for split in ("train", "test"):
                jobs[f"accuracy_{split}"] = AccuracyJob(
                    *acc_args[split],
                    block_rows=block_rows,
                    name=split_names[split],
                    like=jobs.get("accuracy_train"),
                    check=split not in gram_splits,  # the Gram tasks read the same rows and check them
                )
        first = [(name, task) for name, job in jobs.items() for task in job.tasks()]  # Gram, then accuracies
        regression = jobs["regression_test"] = RegressionJob(
            width, repset.n_test, [v[0] for v in slots.values()], alpha, self.heldout
        )
        work = sum(job.work() for job in jobs.values())
        t0 = time.perf_counter()
        with Pool(jobs, work=work) as pool:
            reg_tasks = [("regression_test", b) for b in regression.tasks(pool.n)]
            gram_totals = {s: {} for s in gram_splits}  # column sums of the Gram tasks, by task
            correct = {s: 0 for s in ("train", "test")}
            stats = np.empty((4, len(sizes), r2_rep))
            with _bar(self.progress, len(first) + len(reg_tasks), "chunk analysis", "tasks") as bar:
                reg_stream = None
                for i, result in pool.imap_unordered(first):
                    name, payload = first[i]
                    job, split = name.split("_")
                    if job == "gram":
                        gram_totals[split][payload] = result
                    else:
                        correct[split] = correct[split] + result[0]
                    bar.update(1)
                    if reg_stream is None and all(
                        len(gram_totals[s]) == len(jobs[f"gram_{s}"].spans) for s in gram_splits
                    ):
                        grams = {s: jobs[f"gram_{s}"].combine(gram_totals[s]) for s in gram_splits}
                        regression.prepare(grams["test"], grams.get("train"))
                        del grams, gram_totals
                        reg_stream = pool.imap_unordered(reg_tasks)
                for _, batch in reg_stream:
                    for i_r, s, r2_ho in batch:
                        for i, r in places[i_r]:
                            stats[:, i, r] = (s.r2, s.mean_corr, s.mean_corr_outside, r2_ho)
                    bar.update(1)
        if self.device_ == "cpu":
            for split in ("train", "test"):
                acc = jobs[f"accuracy_{split}"].accuracies(correct[split])
                values[("accuracy", split)] = acc.reshape(len(sizes), acc_rep)
        # each part's worker-seconds over the workers: its share of the time the pool ran, the parts adding up to it
        for name, seconds in pool.seconds.items():
            timings[name] = seconds / pool.n
        self.n_workers_ = pool.n
        values[("r2", "test")] = stats[0]
        values[("mean_corr", "test")] = stats[1]
        values[("mean_corr_outside", "test")] = stats[2]
        values[("r2_heldout", "test")] = stats[3]
        self.values_ = values
        self.timings_ = timings
        self._refine(repset)
        return self

    def _refine(self, repset) -> None:
        """The refinement after the first pass (:func:`refine_pass`), when it is asked for."""
        self.refinement_ = None
        if self._refine_count() > 0:
            refine_pass(self, repset)

    def _refine_count(self) -> int:
        if self.refine is None:
            return _summary.REFINE if self.chunk_sizes is None else 0
        return int(self.refine)

    def mean(self, metric: str, split: str = "test") -> np.ndarray:
        """Mean over chunks, one value per chunk size (ascending, :attr:`chunk_sizes_`).

        ``metric`` is a name of ``results.csv`` (``"accuracy"``, ``"r2"``, ``"r2_heldout"``, ...) or
        ``"error"``: one minus the accuracy, as every table and figure shows it
        (``mean("error", split="train")`` is the chunks' training error).
        """
        if metric == "error":
            return 1.0 - _nanmean_rows(self.values_[("accuracy", split)])
        if (metric, split) not in self.values_:
            known = ", ".join(sorted({"error", *(m for m, _ in self.values_)}))
            found = f"{metric!r} on {split!r}"
            raise RedrepError(f"mean: expected a metric of this analysis ({known}) and its split, found {found}")
        return _nanmean_rows(self.values_[(metric, split)])

    def summary(self, criterion=None, *, replicates: int | None = None, level: float | None = None, seed=None):
        """The :class:`~redrep.core.summary.Summary` of this analysis, in memory (what ``results.json`` stores).

        Parameters
        ----------
        criterion : Criterion, default this analysis' ``criterion``
        replicates, level, seed : of the bootstrap over chunks (:func:`redrep.core.summary.summarize`)
        """
        kw = {k: v for k, v in (("replicates", replicates), ("level", level), ("seed", seed)) if v is not None}
        crit = self._criterion() if criterion is None else criterion
        return _summary.summarize(_summary.ChunkCurves.from_analysis(self), crit, **kw)

    def to_rows(self) -> list[dict]:
        """Tidy rows: one per metric x split x chunk size, with mean, std, sem and n."""
        rows = []
        # every declared metric this analysis computed (one declared ahead of its computation is skipped)
        for m in _metrics.METRICS:
            vals = self.values_.get(m.key)
            if vals is None:
                continue
            for w, v in zip(self.chunk_sizes_, vals):
                rows.append({"metric": m.name, "split": m.split, "chunk_size": int(w), **describe_values(v)})
        return rows


class _Refinement(ChunkAnalysis):
    """The refinement's analysis: the chunks of each size come from streams of their own, keyed by the size."""

    def _draw(self, width: int, sizes, acc_rep: int, r2_rep: int):
        acc, reg = {}, {}
        for w in sizes:
            # spawn keys (2, w) and (3, w): apart from the first pass's two streams, (0,) and (1,), and their children
            a = np.random.default_rng(np.random.SeedSequence(self.random_state, spawn_key=(2, int(w))))
            r = np.random.default_rng(np.random.SeedSequence(self.random_state, spawn_key=(3, int(w))))
            acc[w], reg[w] = draw_chunks(width, w, acc_rep, a), draw_chunks(width, w, r2_rep, r)
        return acc, reg


def refine_pass(analysis: ChunkAnalysis, repset) -> None:
    """Analyse sizes between the size below the first pass's ``w_c*`` and ``w_c*``, and merge them in.

    The sizes are :func:`redrep.core.summary.refine_sizes` of the analysis'
    criterion; their chunks come from streams of their own
    (docs/method.md#refined-chunk-sizes), so the first pass's chunks and
    numbers stay as they were. Sets ``analysis.refinement_``.
    """
    n = analysis._refine_count()
    w_star = analysis.summary(replicates=0).w_c_star
    sizes = _summary.refine_sizes(analysis.chunk_sizes_, w_star, n)
    analysis.refinement_ = _summary.refinement_info(analysis.chunk_sizes_, w_star, n, sizes)
    if not sizes:
        return
    t0 = time.perf_counter()
    sub = _Refinement(
        chunk_sizes=sizes,
        acc_rep=analysis.acc_rep,
        r2_rep=analysis.r2_rep,
        alpha=analysis.alpha,
        block_rows=analysis.block_rows,
        random_state=analysis.random_state,
        progress=analysis.progress,
        device=analysis.device_,
        heldout=analysis.heldout,
        criterion=analysis.criterion,
        refine=0,
    ).fit(repset)
    merged = list(analysis.chunk_sizes_) + list(sub.chunk_sizes_)
    order = np.argsort(merged, kind="stable")
    analysis.chunk_sizes_ = [int(merged[i]) for i in order]
    for key, v in analysis.values_.items():
        analysis.values_[key] = np.concatenate([v, sub.values_[key]])[order]
    for name in ("acc_chunks_", "r2_chunks_"):
        both = {**getattr(analysis, name), **getattr(sub, name)}
        setattr(analysis, name, {w: both[w] for w in analysis.chunk_sizes_})
    for k, v in sub.timings_.items():
        analysis.timings_[k] = analysis.timings_.get(k, 0.0) + v
    analysis.timings_["refine"] = time.perf_counter() - t0


def _nanmean_rows(a):
    out = np.full(a.shape[0], np.nan)
    for i, row in enumerate(a):
        row = row[np.isfinite(row)]
        if row.size:
            out[i] = row.mean()
    return out


class RegressionJob:
    """The chunk regressions of the test set, as tasks over batches of chunks (see :mod:`redrep.core.parallel`).

    The Gram matrices come after the workers are forked: :meth:`prepare`
    writes them into memory shared with the workers, each of which builds
    what the chunks share from them at its first task. Every chunk is
    computed the same way wherever it runs, so the numbers do not depend on
    the workers.
    """

    #: Batches per worker: enough to balance chunks of very different costs, few enough to keep the overhead small.
    BATCHES_PER_WORKER = 16

    def __init__(self, width: int, n_test: int, chunks, alpha: float, heldout: bool = True):
        self.width, self.n, self.chunks, self.alpha, self.heldout = width, n_test, chunks, alpha, heldout
        shapes = {"G": (width, width), "mean_test": (width,)}
        if heldout:
            shapes.update(G_train=(width, width), mean_train=(width,))
        self.shared = SharedArrays(shapes)
        self._state = None  # (pid, workspace, HeldOut or None), built in each process at its first task
        self._lock = threading.Lock()

    def prepare(self, gram_test, gram_train=None) -> None:
        """Hand the ``(G, mean, n)`` of the test (and training) features to the workers; before any task runs."""
        G, mean_test, _ = gram_test
        if float(np.trace(G)) <= 0:
            raise RedrepError("features_test: expected neurons with nonzero variance, found every column constant")
        self.shared["G"][...] = G
        self.shared["mean_test"][...] = mean_test
        if self.heldout:
            self.shared["G_train"][...] = gram_train[0]
            self.shared["mean_train"][...] = gram_train[1]

    def _built(self):
        with self._lock:
            if self._state is None or self._state[0] != os.getpid():
                sh = self.shared
                G = sh["G"]
                heldout = HeldOut(sh["G_train"], sh["mean_train"], G, sh["mean_test"], self.n) if self.heldout else None
                self._state = (os.getpid(), _Workspace(G), heldout)
            return self._state[1], self._state[2]

    def _costs(self) -> list[float]:
        width = self.width
        # measured: the element-wise pass over the W^2 pairs costs about as much as 100 W^2 multiply-adds
        return [100 * width**2 + len(c) ** 3 + 6 * width * len(c) ** 2 + width**2 * len(c) for c in self.chunks]

    def work(self) -> float:
        """Estimated multiply-adds (see :class:`redrep.core.parallel.Pool`)."""
        return float(sum(self._costs()))

    def tasks(self, n_workers: int) -> list[list[int]]:
        """Batches of chunk indices of about equal cost, the most expensive first."""
        cost = self._costs()
        order = sorted(range(len(self.chunks)), key=lambda i: -cost[i])
        target = sum(cost) / (self.BATCHES_PER_WORKER * max(1, n_workers))
        batches, batch, acc = [], [], 0.0
        for i in order:
            batch.append(i)
            acc += cost[i]
            if acc >= target:
                batches.append(batch)
                batch, acc = [], 0.0
        return batches + ([batch] if batch else [])

    def run(self, batch) -> list:
        """``(index, RegressionStats, held-out R^2 or NaN)`` for every chunk of ``batch``."""
        work, heldout = self._built()
        return [
            (i, chunk_regression(work.G, self.n, self.chunks[i], self.alpha, work=work),
             _heldout(heldout, self.chunks[i], self.alpha))
            for i in batch
        ]  # fmt: skip


def _heldout(heldout, chunk, alpha):
    return float("nan") if heldout is None else chunk_r2_heldout(heldout, chunk, alpha)


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
