"""The regression statistics of chunks, from centred Gram matrices: R^2, residual correlations, held-out R^2.

Every pass over the data goes block by block into float64 scatter matrices
``G = Fc^T Fc`` (:func:`gram_matrix`); each chunk's statistics then follow from
sub-blocks of ``G`` by exact algebra, with no fit per chunk
(:func:`chunk_regression`, :func:`chunk_r2_heldout`). The definitions and the
algebra: docs/method.md#the-algebra. :mod:`redrep.core.cuda` computes the same
statistics on a GPU, batched over the chunks of one size.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np

from . import _lapack
from .blocks import check_mapped, iter_blocks
from .parallel import SharedArrays
from .validation import RedrepError

#: Added to the denominator of the residual correlation, as in the reference definition.
CORR_EPS = 1e-8

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
    width = G.shape[0]
    outside = np.ones(width, dtype=bool)
    outside[S] = False
    Out = np.flatnonzero(outside)
    eps = (n - 1) * CORR_EPS  # correlations as min(|R_kl|, rs_k rs_l) / (rs_k rs_l + (n - 1) 1e-8)
    n_pairs = width * (width - 1) / 2
    diag = work.diag_G.copy()
    L, B, Lt, Rt, eigen = _outside_solves(G, S, Out, alpha, diag)
    # neurons the chunk reconstructs to within the rounding of G
    unresolved = outside & (diag <= _RESOLVED * work.diag_G)
    Un = np.flatnonzero(unresolved)
    in_x = ~outside | unresolved
    rows = _inside_rows(G, S, Out, L, B, alpha, eigen, len(Un) > 0, diag, eps, n_pairs)
    sum_x = sum_u = 0.0
    if rows is not None:  # the exact rows of the chunk's neurons and of those it reconstructs
        X, Rx = _exact_rows(S, Un, alpha, *rows, diag)
    np.clip(diag, 0.0, None, out=diag)
    r2 = 1.0 - float(diag.sum()) / work.trace_G
    rs = np.sqrt(diag)
    if rows is not None:
        sum_x, sum_u = _exact_pair_sums(Rx, rs, X, in_x, len(S), eps)
    # pairs of neurons both outside the chunk and reconstructed within the resolution
    rs_rest = rs.copy()
    rs_rest[in_x] = 0.0
    sum_rest = _outside_pair_sum(work, S, Out, Lt, Rt, rs_rest, eps)
    m = len(Out)
    mean_corr = (sum_rest + sum_x) / n_pairs if width > 1 else float("nan")
    mean_out = (sum_rest + sum_u) / (m * (m - 1) / 2) if m >= 2 else float("nan")
    return RegressionStats(r2, mean_corr, mean_out)


def _outside_solves(G, S, Out, alpha, diag):
    """The ridge solves of a chunk and the residual variances of the neurons outside it (into ``diag``, in place).

    Returns
    -------
    L : Cholesky factor of ``G_SS + alpha I`` (see :func:`_factor`), or None where it is unresolved
    B : ndarray of shape (w, m), the coefficients of the neurons outside (None without ``L``)
    Lt, Rt : ndarrays of shape (k, m), Fortran-ordered, with ``R_OO = G_OO - Lt^T Rt``
    eigen : ``(K, coef)`` of :func:`_eigen_solves` without ``L``, else None
    """
    L = _factor(G, S, alpha)
    if L is None:
        Ut, _, K, coef = _eigen_solves(G, S, alpha)
        Lt = Rt = np.asfortranarray(Ut[:, Out])
        diag[Out] -= np.einsum("ij,ij->j", Lt, Lt)
        return None, None, Lt, Rt, (K, coef)
    GSO = _cross_block(G, S, Out)
    B = _lapack.trsm(L, _lapack.trsm(L, GSO), trans=True)  # L L^T B = G_SO, shape (w, m)
    Rt = GSO
    Rt += alpha * B  # G_SO + alpha B_O: R_OO = G_OO - B_O^T Rt
    diag[Out] -= np.einsum("ij,ij->j", B, Rt)
    return L, B, B, Rt, None


def _inside_rows(G, S, Out, L, B, alpha, eigen, unresolved, diag, eps, n_pairs):
    """``(K, coef)`` for the exact rows (see :func:`chunk_regression`), or None where they are negligible.

    ``K = A^-1 B`` over all neurons, shape (w, W), and ``coef(idx)`` the
    coefficients of neurons ``idx`` on the chunk. Where the rows are
    negligible, the residual variances inside the chunk are written into
    ``diag`` to first order instead.
    """
    if L is None:
        return eigen
    w, width = len(S), G.shape[0]
    Linv = _lapack.trtri(L, zero_upper=True)[0]
    ainv_diag = np.einsum("ij,ij->j", Linv, Linv)
    exact = unresolved
    if not exact:
        ainv_norm = float(np.einsum("ij,ij->", Linv, Linv))  # >= ||A^-1||_2
        root = float(np.sqrt(ainv_diag).sum())
        bound_in_out = alpha**2 * np.sqrt(ainv_norm) * root * float(np.linalg.norm(B, axis=0).sum()) / eps
        bound_in_in = alpha**2 * root**2 / (2 * eps)
        exact = n_pairs > 0 and (bound_in_out + bound_in_in) / n_pairs > _NEGLIGIBLE
    if not exact:
        # the residual variances inside the chunk, alpha^2 (A^-1 - alpha A^-2)_jj, to first order
        diag[S] = alpha**2 * ainv_diag
        return None
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

    return K, coef


def _exact_rows(S, Un, alpha, K, coef, diag):
    """The neurons ``X`` (the chunk's, then ``Un``) whose rows take the exact form, and those rows ``Rx``.

    Their residual variances are written into ``diag`` (in place).
    """
    w, width = len(S), K.shape[1]
    X = np.concatenate([S, Un])
    C = coef(Un) if len(Un) else np.zeros((w, 0))
    Rx = np.empty((len(X), width))  # rows of the residual scatter of X
    Rx[:w] = (alpha * alpha) * K
    Rx[w:] = C.T @ Rx[:w]
    diag[X] = Rx[np.arange(len(X)), X]
    return X, Rx


def _exact_pair_sums(Rx, rs, X, in_x, w, eps):
    """The correlations summed over the pairs with a neuron of ``X``: all of them, and those without the chunk's."""
    P = np.multiply.outer(rs[X], rs)
    Mx = np.minimum(np.abs(Rx), P) / (P + eps)
    Mxx = Mx[:, X]
    sum_x = float(Mx[:, ~in_x].sum()) + (float(Mxx.sum()) - float(np.trace(Mxx))) / 2
    Mu = Mx[w:]
    Muu = Mu[:, w:]
    sum_u = float(Mu[:, ~in_x].sum()) + (float(Muu.sum()) - float(np.trace(Muu))) / 2
    return sum_x, sum_u


def _outside_pair_sum(work, S, Out, Lt, Rt, rs_rest, eps):
    """The correlations summed over the pairs of neurons outside the chunk (see :func:`_pair_sum`)."""
    width, m = work.G.shape[0], len(Out)
    if m < 2:
        return 0.0
    if 4 * len(S) > width:  # few neurons outside: gather their block
        return _pair_sum(_block(work.G_upper.T, Out, Out).T, Lt, Rt, rs_rest[Out], eps)
    # the whole matrix, with zero updates and weights on the chunk's rows, saves the gather
    Lt_all = np.zeros((Lt.shape[0], width), order="F")
    Lt_all[:, Out] = Lt
    Rt_all = Lt_all
    if Rt is not Lt:
        Rt_all = np.zeros((Rt.shape[0], width), order="F")
        Rt_all[:, Out] = Rt
    return _pair_sum(work.G_upper, Lt_all, Rt_all, rs_rest, eps)


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
        check_variance(float(np.trace(G)))
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


def check_variance(trace: float) -> None:
    """Refuse a test set whose every column is constant (``trace`` of its centred scatter not positive)."""
    if trace <= 0:
        raise RedrepError("features_test: expected neurons with nonzero variance, found every column constant")


def _heldout(heldout, chunk, alpha):
    return float("nan") if heldout is None else chunk_r2_heldout(heldout, chunk, alpha)
