"""Chunk accuracies: the trained readout restricted to random chunks of neurons, counted exactly.

For a chunk ``S`` and a sample ``x`` the logits are ``L_c = sum_{i in S} x_i w_ci + b_c`` (inputs
read as float32) and the prediction is the first class of largest logit, as ``argmax`` takes it,
over the logits correctly rounded to float32, ``R_c = fl32(L_c)``: the float32 computation with
no error beyond the final rounding. A plain float32 matrix product agrees with it except on
logits within a few float32 units of a tie, where its answer depends on the block size, the BLAS
and the number of threads; the counts here depend on none of them. A float32 product gives the
logits fast together with a rigorous bound on its rounding error, and the few (sample, chunk)
pairs whose margin lies within the bound are decided again exactly. The method is described in
docs/method.md ("Chunk accuracies: one pass, exact").

The fast pass
-------------
With ``u = 2^-24`` the float32 unit roundoff and ``gamma_n = n u / (1 - n u)``, any float32
evaluation of a sum of ``n`` products (in any order, with or without fused multiply-adds, terms
that are exactly 0 not counted) differs from the exact sum by at most ``gamma_n`` times the sum of
the absolute products (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., 3.1).
The bias enters as one more product ``1 * b_c``, so for a chunk of ``w`` neurons

    |L~_c - L_c| <= gamma_{w+1} A,   A = sum_i |x_i| max_c |w_ci| + max_c |b_c|,

where ``A`` (one number per sample, over all ``W`` neurons) bounds the chunk's own absolute sum
for every class. The margin ``D = max_{c != y} L_c - L_y`` of the sample's label ``y`` is computed
as ``D~ = fl(max_{c != y} L~_c - L~_y)``, so ``|D~ - D| <= 2 gamma_{w+2} A``, and rounding to
float32 moves each logit by at most ``u A``. With ``T = (4 gamma_{w+3} + 4 u) A`` (a factor 2 to
spare for the rounding of ``A`` and ``T`` themselves) plus ``4 (w+3) 2^-126`` for products and
logits that underflow (even where a BLAS flushes subnormal results to zero), ``D~ < -T`` proves
that ``R_y`` exceeds every other rounded logit: a correct prediction; ``D~ > T`` proves that some
``R_c`` exceeds ``R_y``: a wrong one. Rows with ``A > 2^100``, where a float32 partial sum might
overflow, get ``T = inf`` and are decided exactly.

Two implementations of the fast pass give the same counts:

* the compiled one (``redrep/core/_fastpass.c``, built by ``setup.py``), used wherever it was built: for
  each tile of 32 samples and each chunk it sums the chunk's own terms in registers, forms the margin
  there and compares it with ``T``, writing no logit and copying no neuron;
* the numpy one, where the extension is missing: masked float32 products for chunks of more than
  W/4 neurons, gathered rows for the smaller ones, then the margins.

The exact pass
--------------
The undecided pairs are recomputed in float64, where the products of float32 numbers are exact
and the sums err by at most ``gamma64_{W+1}`` of the absolute sum. Where the whole error interval
rounds to one float32 number, that is ``R_c``; otherwise (the logit lies within about 1e-13 of a
float32 rounding boundary) ``math.fsum`` of the exact products gives it, a float32 midpoint being
settled by the sign of the remainder.

One output
----------
A readout of one output (``C = 1``, weight (1, W), bias (1,)) is a sign classifier: class 1 where
the float32-rounded output ``R = fl32(L)`` is > 0, class 0 where it is <= 0 (an output that is 0,
or rounds to 0, predicts class 0). :func:`class_readout` turns it into the two-class readout with
a zero first row and a zero first bias, whose logits are ``R_0 = 0`` exactly and ``R_1 = R``: the
first-class tie rule of ``argmax`` then gives exactly that prediction, and everything above (bound
and exact pass) applies unchanged. :class:`redrep.core.analysis.ChunkAnalysis` expands the readout
once, before any accuracy path sees it; the functions here take the readout as an argmax over its rows.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import importlib.util
import math
import os
import threading
import warnings
from functools import cache

import numpy as np

from .blocks import iter_blocks
from .validation import exception_line

#: float32 unit roundoff.
_U32 = 2.0**-24
#: float64 unit roundoff.
_U64 = 2.0**-53
#: Smallest normal float32: a product or logit that underflows errs by less, even flushed to zero.
_TINY32 = 2.0**-126
#: Rows whose absolute-sum bound exceeds this may overflow in float32: decided exactly.
_OVERFLOW_GUARD = 2.0**100
#: Target size in bytes of the logits certified at a time (they stay in the CPU's caches from product to margins).
_LOGIT_BYTES = 8 * 2**20
#: Target size in bytes of the gathered rows of the chunks multiplied in one batched product.
_GATHER_BYTES = 4 * 2**20
#: Target size in bytes of a block of rows (transposed, as float32), which bounds the rows read at a time.
_BLOCK_BYTES = 8 * 2**20
#: Most rows in a block: larger blocks amortise the per-product overhead of the many small products.
_MAX_BLOCK_ROWS = 1024
#: Most class-by-chunk columns in one matrix product (bounds the stacked readouts with many classes).
_PANEL_COLUMNS = 8192
#: Chunks of at most W / _GATHER_DIVISOR neurons gather their rows; larger ones use a masked product with all W.
_GATHER_DIVISOR = 4
#: Undecided pairs recomputed exactly at a time (bounds the float64 buffers).
_EXACT_BATCH = 4096
#: Samples per tile of the transposed block the compiled fast pass reads (XT_TILE in _fastpass.c).
_FUSED_TILE = 32
#: Which copy of the compiled fast pass runs: -1 the best this CPU runs, or 4, 3, 0 (x86-64-v4, v3, base).
FASTPASS_LEVEL = -1


#: The calling convention this module expects of the compiled fast pass (redrep_fastpass_abi in _fastpass.c).
_FASTPASS_ABI = 2


@cache
def fastpass_library():
    """The compiled fast pass (``redrep/core/_fastpass.c``) as a :class:`ctypes.CDLL`, or None where it was not built.

    It is loaded with ctypes, not imported: its one function runs with the
    interpreter lock released and takes numpy buffers as they are. A file
    there that does not serve (one that does not load, one of another calling
    convention left from an older source, one lacking a function) is not used:
    a warning says so, and the numpy pass serves.
    """
    lib, problem = None, None
    for path in _fastpass_files():  # a usable build wins over a stale one that Python would find first
        lib, why = _load_fastpass(path=path)
        problem = problem or why
        if lib is not None:
            problem = None
            break
    problem = problem or _slower_copy_only(lib)
    if problem:
        warnings.warn(problem, RuntimeWarning, stacklevel=2)
    return lib


def _fastpass_files() -> list[str]:
    """The extension's files: the one Python imports first, then any other build beside it.

    An install upgraded in place keeps the build for one Python version made before the stable-ABI one, and
    Python finds that one first: it is tried, refused by its calling convention, and the next one serves.
    """
    spec = importlib.util.find_spec("redrep.core._fastpass")
    if spec is None or not spec.origin:
        return []
    folder = os.path.dirname(spec.origin)
    others = [os.path.join(folder, "_fastpass" + s) for s in importlib.machinery.EXTENSION_SUFFIXES]
    return [spec.origin] + [f for f in others if f != spec.origin and os.path.isfile(f)]


def _slower_copy_only(lib) -> str | None:
    """Why a build that holds only the plain x86-64 copy is slower on this CPU, or None."""
    if lib is None or lib.redrep_fastpass_has_levels() or lib.redrep_cpu_level() < 3:
        return None
    return (
        "the compiled fast pass was built without its x86-64-v3/v4 copies (they need GCC 11 or newer): it runs "
        "its plain x86-64 copy, about half as fast on this CPU; rebuild with GCC >= 11 (`pip install -e .`)"
    )


def _load_fastpass(abi: int = _FASTPASS_ABI, path: str | None = None):
    """``(library, None)``, ``(None, None)`` where it was not built, or ``(None, why not)`` where it is unusable.

    ``path``: a library file to load instead of the installed extension.
    Unusable is any file that does not serve: one that does not load as a
    library (empty, damaged, of another platform), one of another calling
    convention, or one of this convention that lacks one of its functions.
    """
    if path is None:
        try:
            spec = importlib.util.find_spec("redrep.core._fastpass")
        except ImportError:
            return None, None
        if spec is None or not spec.origin:
            return None, None
        path = spec.origin
    fallback = "using the numpy pass; rebuild with `pip install -e .`"
    try:
        lib = ctypes.CDLL(path)
    except OSError as exc:
        return None, f"{path}: expected the compiled fast pass, could not load it ({exception_line(exc)}): {fallback}"
    found = lib.redrep_fastpass_abi() if hasattr(lib, "redrep_fastpass_abi") else 0
    if found != abi:
        return None, (
            f"{path}: expected the compiled fast pass of calling convention {abi}, found {found} "
            f"(built from another version of the source): {fallback}"
        )
    p, n = ctypes.c_void_p, ctypes.c_long
    try:
        lib.redrep_block_counts_at.argtypes = [ctypes.c_int, p, n, n, n, p, n, p, p, n, p, p, p, p, p, n]
        lib.redrep_block_counts_at.restype = n
        for fn in (lib.redrep_fastpass_level, lib.redrep_fastpass_has_levels, lib.redrep_cpu_level):
            fn.argtypes = []
            fn.restype = ctypes.c_int
    except AttributeError as exc:  # the convention's number, without all of its functions
        return None, (
            f"{path}: expected the compiled fast pass of calling convention {abi} with all its functions, "
            f"found it without one ({exception_line(exc)}): {fallback}"
        )
    return lib, None


def fastpass_name(device: str = "cpu") -> str:
    """Which fast pass decides the accuracies on ``device``, for results.json: the counts are the same with each."""
    if device != "cpu":
        return f"torch ({device})"
    lib = fastpass_library()
    if lib is None:
        return "numpy"
    level = lib.redrep_fastpass_level() if FASTPASS_LEVEL < 0 else FASTPASS_LEVEL
    return "compiled (" + {4: "x86-64-v4", 3: "x86-64-v3"}.get(level, "base") + ")"


def class_readout(weight, bias):
    """The readout the accuracy paths count with: ``(weight, bias)`` unchanged for C >= 2 classes; a one-output
    readout (C = 1, a sign classifier) as the equivalent two-class readout.

    Parameters
    ----------
    weight : ndarray of shape (C, W)
    bias : ndarray of shape (C,)

    Returns
    -------
    (weight, bias) : ndarrays of shape (max(C, 2), W) and (max(C, 2),), the same dtype. With C = 1 the first
    row and bias are 0 and the second are the output's, so that ``argmax`` (first class of largest logit)
    predicts class 1 exactly where the float32-rounded output is > 0.
    """
    weight, bias = np.asarray(weight), np.asarray(bias)
    if weight.shape[0] != 1:
        return weight, bias
    return np.concatenate([np.zeros_like(weight), weight]), np.concatenate([np.zeros_like(bias), bias])


def readout_predictions(logits) -> np.ndarray:
    """Predicted classes of readout outputs of shape (N, C), as the chunk accuracies count them: the first class
    of largest logit; with one output (C = 1), class 1 where the output is > 0, class 0 where it is <= 0.

    Returns an int64 ndarray of shape (N,).
    """
    logits = np.asarray(logits)
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).astype(np.int64)
    return logits.argmax(axis=1)


def _gamma(n, u=_U32):
    """``gamma_n = n u / (1 - n u)``, elementwise."""
    n = np.asarray(n, dtype=np.float64)
    return n * u / (1.0 - n * u)


def _unique_chunks(chunks):
    """Sorted distinct chunks and, for each input chunk, the index of its distinct copy."""
    keys = {}
    index = np.empty(len(chunks), dtype=np.int64)
    uniq = []
    for i, c in enumerate(chunks):
        c = np.sort(np.asarray(c, dtype=np.int64))
        k = c.tobytes()
        if k not in keys:
            keys[k] = len(uniq)
            uniq.append(c)
        index[i] = keys[k]
    return uniq, index


class _Plan:
    """What every block needs: the masked readouts, the gathered groups and the error-bound constants."""

    def __init__(
        self,
        weight: np.ndarray,
        bias: np.ndarray,
        uniq: list,
        gather_divisor: int = _GATHER_DIVISOR,
        fused: bool | None = None,
    ):
        n_classes, width = weight.shape
        self.n_classes, self.width = n_classes, width
        self.weight, self.bias = weight, bias
        self.weight64, self.bias64 = weight.astype(np.float64), bias.astype(np.float64)
        self.omega64 = np.abs(self.weight64).max(axis=0)  # (W,)
        self.omega32 = self.omega64.astype(np.float32)
        self.bound_slack = 1.0 + 2.0 * float(_gamma(width))
        self.bias_max = float(np.abs(self.bias64).max())
        sizes = np.array([len(c) for c in uniq], dtype=np.int64)
        self.sizes = sizes
        self.member = np.zeros((len(uniq), width), dtype=bool)
        for k, c in enumerate(uniq):
            self.member[k, c] = True
        # rows per block: the transposed block stays within _BLOCK_BYTES
        self.rows_cap = int(max(64, min(_MAX_BLOCK_ROWS, _BLOCK_BYTES // (4 * (width + 1)))))
        self.fused = fastpass_library() is not None if fused is None else bool(fused)
        self.panels, self.groups = [], []
        if self.fused:  # the compiled pass: every chunk gathered, its bias term last
            self.fused_idx = np.concatenate([np.append(c, width) for c in uniq]).astype(np.int32)
            self.fused_off = np.concatenate([[0], np.cumsum(sizes + 1)]).astype(np.int64)
            self.fused_sizes, rows = np.unique(sizes, return_inverse=True)
            self.fused_row = rows.astype(np.int32)  # each chunk's row of bounds: that of its size
            self.fused_coefs = [self._coef(int(w)) for w in self.fused_sizes]
            self.fused_wt = np.ascontiguousarray(np.concatenate([weight, bias[:, None]], axis=1).T)  # (W + 1, C)
            return
        # chunks per product: their logits (C x k x rows) stay within _LOGIT_BYTES, and within _PANEL_COLUMNS
        per_logits = max(1, min(_PANEL_COLUMNS // n_classes, _LOGIT_BYTES // (4 * n_classes * self.rows_cap)))
        dense = [k for k in range(len(uniq)) if gather_divisor * sizes[k] > width]
        # (chunk ids, stacked readouts of shape (C * k, W + 1), bound coefficient)
        for lo in range(0, len(dense), per_logits):
            ids = np.asarray(dense[lo : lo + per_logits])
            stacked = np.zeros((n_classes, len(ids), width + 1), dtype=np.float32)
            stacked[:, :, :width] = weight[:, None, :] * self.member[ids][None, :, :]
            stacked[:, :, width] = bias[:, None]
            self.panels.append((ids, stacked.reshape(n_classes * len(ids), width + 1), self._coef(sizes[ids].max())))
        by_size = {}
        for k in range(len(uniq)):
            if gather_divisor * sizes[k] <= width:
                by_size.setdefault(int(sizes[k]), []).append(k)
        w_ext = np.concatenate([weight, bias[:, None]], axis=1)  # (C, W + 1): the bias as one more neuron
        # (chunk ids, batches, coef): the logits of a group are certified together (at most per_logits chunks); each
        # batch (first, last, rows of the transposed block incl. the ones row, readouts (r, C, w + 1)) is one
        # product whose gathered rows (at most _GATHER_BYTES) stay in cache
        for size, ks in by_size.items():
            per_gather = max(1, _GATHER_BYTES // (4 * (size + 1) * self.rows_cap))
            for lo in range(0, len(ks), per_logits):
                ids = np.asarray(ks[lo : lo + per_logits])
                batches = []
                for a in range(0, len(ids), per_gather):
                    part = ids[a : a + per_gather]
                    idx = np.stack([uniq[k] for k in part])  # (r, w)
                    idx = np.concatenate([idx, np.full((len(part), 1), width)], axis=1)
                    wg = np.ascontiguousarray(w_ext[:, idx].transpose(1, 0, 2))  # (r, C, w + 1)
                    batches.append((a, a + len(part), idx, wg))
                self.groups.append((ids, batches, self._coef(size)))

    @staticmethod
    def _coef(size):
        """``(T / A, absolute term)`` of the bound for chunks of ``size`` neurons (see the module docstring)."""
        return float(4.0 * _gamma(size + 3) + 4.0 * _U32), float(4.0 * (size + 3) * _TINY32)

    def row_bound(self, block: np.ndarray) -> np.ndarray:
        """``A`` per row of ``block``, float64, with rows that might overflow set to inf."""
        # a float32 product, enlarged by twice its own worst rounding error (no overflow below the guard)
        a = (np.abs(block) @ self.omega32).astype(np.float64) * self.bound_slack + self.bias_max
        a[~(a <= _OVERFLOW_GUARD)] = np.inf
        return a


def _certify(logits, bounds, threshold):
    """Decide the correct predictions of a block whose margins are certain.

    Parameters
    ----------
    logits : ndarray (or view) of shape (C, K, b), float32; overwritten (scratch)
    bounds : sequence of C + 1 ints: the samples of label ``y`` are the columns ``bounds[y]:bounds[y + 1]``
    threshold : ndarray of shape (b,), float32, the bound ``T`` per sample

    Returns
    -------
    correct : ndarray of shape (K,), certain correct predictions per chunk
    undecided : tuple (chunk positions, sample positions) of the pairs left to the exact pass
    """
    n_classes, n_k, n_b = logits.shape
    own = np.empty((n_k, n_b), dtype=np.float32)
    for y in range(n_classes):  # the label's logit aside, -inf in its place: contiguous slices, the labels sorted
        lo, hi = bounds[y], bounds[y + 1]
        if hi > lo:
            own[:, lo:hi] = logits[y, :, lo:hi]
            logits[y, :, lo:hi] = -np.inf
    top = np.maximum(logits[0], logits[1]) if n_classes > 1 else logits[0].copy()
    for c in range(2, n_classes):
        np.maximum(top, logits[c], out=top)
    top -= own  # D~: best other class minus the label's
    np.negative(threshold, out=own[0])
    right = np.count_nonzero(top < own[0], axis=1)
    np.abs(top, out=top)
    near = top <= threshold
    guarded = np.isinf(threshold)
    if guarded.any():  # only these rows may overflow (NaN from inf - inf): all their pairs are undecided
        near[:, guarded] = True
    if not near.any():
        return right, (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64))
    return right, np.nonzero(near)


class _Scratch:
    """Buffers reused from block to block: a fresh array of megabytes is a fresh memory mapping, whose page faults
    cost about as much as the products written into it."""

    def __init__(self, plan: _Plan):
        rows = plan.rows_cap
        if plan.fused:  # rows padded to whole tiles: the last tile's extra samples are read, never counted
            tiles = -(-rows // _FUSED_TILE)
            self.thr = np.zeros((len(plan.fused_sizes), tiles * _FUSED_TILE), dtype=np.float32)
            self.lab = np.zeros(tiles * _FUSED_TILE, dtype=np.int32)
            self.pairs = np.empty((4096, 2), dtype=np.int32)
            # the block transposed tile by tile, each tile's W + 1 rows together (few pages, few cache sets)
            self.xt = np.zeros((tiles, plan.width + 1, _FUSED_TILE), dtype=np.float32)
            self.xt[:, plan.width] = 1.0  # the row of ones that carries the bias
            return
        self.xt = np.zeros((plan.width + 1, rows), dtype=np.float32)
        self.xt[plan.width] = 1.0
        most_chunks = max([len(p[0]) for p in plan.panels] + [len(g[0]) for g in plan.groups] + [1])
        most_gathered = max([b[2].size for g in plan.groups for b in g[1]] + [1])
        self.logits = np.empty(most_chunks * plan.n_classes * rows, dtype=np.float32)
        self.gathered = np.empty(most_gathered * rows, dtype=np.float32)


def _block_logits_numpy(plan: _Plan, block: np.ndarray, scratch: _Scratch):
    """Yield ``(chunk ids, logits of shape (C, K, b), coef)`` for every panel and group of ``block``.

    The logits are views of ``scratch``, overwritten by the next ones.
    """
    n_b, width = block.shape
    xt = scratch.xt[:, :n_b]  # the block transposed, with the row of ones for the bias
    xt[:width] = block.T
    for ids, stacked, coef in plan.panels:
        out = scratch.logits[: stacked.shape[0] * n_b].reshape(stacked.shape[0], n_b)
        np.matmul(stacked, xt, out=out)
        yield ids, out.reshape(plan.n_classes, len(ids), n_b), coef
    for ids, batches, coef in plan.groups:
        out = scratch.logits[: len(ids) * plan.n_classes * n_b].reshape(len(ids), plan.n_classes, n_b)
        for a, b, idx, wg in batches:  # one batched product each, its gathered rows in cache
            r, k = idx.shape
            rows = scratch.gathered[: r * k * n_b].reshape(r * k, n_b)
            np.take(xt, idx.ravel(), axis=0, out=rows, mode="clip")  # "clip": unbuffered (every index is valid)
            np.matmul(wg, rows.reshape(r, k, n_b), out=out[a:b])
        yield ids, out.transpose(1, 0, 2), coef


def _round32(terms) -> np.float32:
    """The exact sum of float64 ``terms``, correctly rounded to float32."""
    v = math.fsum(terms)
    with np.errstate(over="ignore"):
        f = np.float32(v)
    if np.isfinite(f) and float(f) != v:
        g = np.nextafter(f, np.float32(np.inf if v > float(f) else -np.inf))
        if (float(f) + float(g)) / 2 == v:  # v is a float32 midpoint: the rest of the exact sum decides
            rest = math.fsum([*terms, -v])
            if rest != 0.0:
                f = g if (rest > 0) == (float(g) > float(f)) else f
    return f


def _exact_correct(plan: _Plan, rows: np.ndarray, labels: np.ndarray, chunk_ids: np.ndarray) -> np.ndarray:
    """Whether the correctly rounded float32 logits of each (sample, chunk) pair predict its label.

    Ties between the rounded logits go to the first class, as with ``argmax``.

    Parameters
    ----------
    rows : ndarray of shape (m, W), float32 features of the pairs' samples
    labels : ndarray of shape (m,)
    chunk_ids : ndarray of shape (m,), the pairs' chunks (positions in ``plan.member``)

    Returns
    -------
    ndarray of shape (m,), bool.
    """
    out = np.empty(len(labels), dtype=bool)
    w64, b64 = plan.weight64, plan.bias64
    gamma = 4.0 * float(_gamma(plan.width + 2, _U64))
    for lo in range(0, len(labels), _EXACT_BATCH):
        sl = slice(lo, lo + _EXACT_BATCH)
        xm = rows[sl].astype(np.float64) * plan.member[chunk_ids[sl]]  # products with float32 weights stay exact
        logits = xm @ w64.T + b64  # (m, C), each within tol of the exact logit
        tol = gamma * (np.abs(xm) @ np.abs(w64).T + np.abs(b64))
        with np.errstate(over="ignore"):
            rounded = (logits - tol).astype(np.float32)
            unsure = rounded != (logits + tol).astype(np.float32)
        for i, c in zip(*np.nonzero(unsure)):  # within tol of a float32 rounding boundary: sum exactly
            rounded[i, c] = _round32([*(xm[i] * w64[c]).tolist(), b64[c]])
        out[sl] = rounded.argmax(axis=1) == labels[sl]
    return out


def _add_exact(correct: np.ndarray, plan: _Plan, rows: np.ndarray, labels: np.ndarray, chunk_ids: np.ndarray) -> None:
    """Add to ``correct`` (per distinct chunk) the undecided pairs that :func:`_exact_correct` finds correct."""
    np.add.at(correct, chunk_ids, _exact_correct(plan, rows, labels, chunk_ids))


def _block_counts(plan: _Plan, block: np.ndarray, lab: np.ndarray, scratch: _Scratch | None = None) -> np.ndarray:
    """Correct predictions of one block, per distinct chunk: shape (K,), int64."""
    if scratch is None:
        scratch = _Scratch(plan)
    if plan.fused:
        return _block_counts_fused(plan, block, lab, scratch)
    correct = np.zeros(len(plan.sizes), dtype=np.int64)
    order = np.argsort(lab, kind="stable")  # the samples of each label side by side: the margins need no gather
    block = np.asarray(block)[order].astype(np.float32, copy=False)
    lab = lab[order]
    bounds = np.searchsorted(lab, np.arange(plan.n_classes + 1)).tolist()
    bound = plan.row_bound(block)
    for ids, logits, (coef, tiny) in _block_logits_numpy(plan, block, scratch):
        threshold = (coef * bound + tiny).astype(np.float32)  # inf stays inf: the row goes to the exact pass
        sure, (k_pos, i_pos) = _certify(logits, bounds, threshold)
        correct[ids] += sure
        if k_pos.size:
            _add_exact(correct, plan, block[i_pos], lab[i_pos], ids[k_pos])
    return correct


def _block_counts_fused(plan: _Plan, block: np.ndarray, lab: np.ndarray, scratch: _Scratch) -> np.ndarray:
    """:func:`_block_counts` with the compiled fast pass: products, margins and bounds in one loop per tile."""
    n_b, width = block.shape
    block = np.asarray(block).astype(np.float32, copy=False)
    xt = scratch.xt
    if n_b > scratch.lab.shape[0]:
        raise ValueError(f"a block of {n_b} rows exceeds the fast pass's {scratch.lab.shape[0]}")
    full, rest = divmod(n_b, _FUSED_TILE)
    xt[:full, :width] = block[: full * _FUSED_TILE].reshape(full, _FUSED_TILE, width).transpose(0, 2, 1)
    if rest:
        xt[full, :width, :rest] = block[full * _FUSED_TILE :].T
    bound = plan.row_bound(block)
    for r, (coef, tiny) in enumerate(plan.fused_coefs):
        scratch.thr[r, :n_b] = coef * bound + tiny  # inf stays inf: the row goes to the exact pass
    scratch.lab[:n_b] = lab
    lib = fastpass_library()
    while True:
        correct = np.zeros(len(plan.sizes), dtype=np.int64)
        pairs = scratch.pairs
        n_pairs = lib.redrep_block_counts_at(
            FASTPASS_LEVEL,
            xt.ctypes.data,
            width + 1,
            scratch.lab.shape[0],
            n_b,
            plan.fused_wt.ctypes.data,
            plan.n_classes,
            plan.fused_idx.ctypes.data,
            plan.fused_off.ctypes.data,
            len(plan.sizes),
            plan.fused_row.ctypes.data,
            scratch.thr.ctypes.data,
            scratch.lab.ctypes.data,
            correct.ctypes.data,
            pairs.ctypes.data,
            pairs.shape[0],
        )
        if n_pairs == -1:
            raise MemoryError("the compiled fast pass could not allocate its counts")
        if n_pairs == -2:
            raise ValueError(f"this CPU cannot run level {FASTPASS_LEVEL} of the compiled fast pass")
        if n_pairs <= pairs.shape[0]:
            break
        scratch.pairs = np.empty((max(n_pairs, 2 * pairs.shape[0]), 2), dtype=np.int32)  # more room, again
    if n_pairs:
        i_pos = pairs[:n_pairs, 1]
        _add_exact(correct, plan, block[i_pos], np.asarray(lab)[i_pos], pairs[:n_pairs, 0].astype(np.int64))
    return correct


class AccuracyJob:
    """The chunk accuracies of one set of features, as tasks over blocks of rows (see :mod:`redrep.core.parallel`).

    Parameters are those of :func:`chunk_accuracy`; ``like``, a job of the
    same readout and chunks whose plan this one shares; ``check`` False leaves
    the check for NaN and Inf to another pass over the same rows.
    """

    def __init__(
        self,
        features,
        labels,
        weight,
        bias,
        chunks,
        *,
        block_rows: int = 8192,
        name: str = "features",
        like=None,
        check: bool = True,
    ):
        weight = np.ascontiguousarray(weight, dtype=np.float32)
        bias = np.ascontiguousarray(bias, dtype=np.float32)
        self.features, self.labels, self.name = features, np.asarray(labels, dtype=np.int64), name
        if like is not None:  # another job with the same readout and chunks: its plan serves
            self.uniq, self.index, self.plan = like.uniq, like.index, like.plan
        else:
            self.uniq, self.index = _unique_chunks(chunks)
            self.plan = _Plan(weight, bias, self.uniq)
        self.rows = max(1, min(int(block_rows), self.plan.rows_cap))
        self.check = check
        self._local = threading.local()

    def work(self) -> float:
        """Estimated multiply-adds of the job (see :class:`redrep.core.parallel.Pool`)."""
        if self.plan.fused:
            per_row = len(self.plan.fused_idx)
        else:
            per_row = sum(len(p[0]) * p[1].shape[1] for p in self.plan.panels)
            per_row += sum(b[2].size for g in self.plan.groups for b in g[1])
        return float(self.features.shape[0]) * self.plan.n_classes * per_row

    def tasks(self) -> list[tuple[int, int]]:
        """Row ranges, one block each."""
        n = self.features.shape[0]
        return [(lo, min(n, lo + self.rows)) for lo in range(0, n, self.rows)]

    def run(self, span) -> tuple[np.ndarray, int]:
        """Correct predictions per distinct chunk in rows ``span = (start, stop)``, and the number of rows."""
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = _Scratch(self.plan)
        start, stop = span
        correct = np.zeros(len(self.uniq), dtype=np.int64)
        # views: _block_counts copies the rows once (transposed in tiles, or sorted by label)
        blocks = iter_blocks(self.features, self.rows, None, self.name, start=start, stop=stop, check=self.check)
        for lo, rows in blocks:
            correct += _block_counts(self.plan, rows, self.labels[lo : lo + rows.shape[0]], scratch)
        return correct, stop - start

    def accuracies(self, correct: np.ndarray) -> np.ndarray:
        """The accuracy of every chunk given, from the summed counts of :meth:`run` (per distinct chunk)."""
        return correct[self.index] / self.features.shape[0]


def chunk_accuracy(
    features,
    labels,
    weight,
    bias,
    chunks,
    *,
    block_rows: int = 8192,
    name: str = "features",
    progress=None,
) -> np.ndarray:
    """Accuracy of the trained readout restricted to each chunk, from the exact logits.

    Parameters
    ----------
    features : ndarray of shape (N, W), possibly memory-mapped; read as float32
    labels : ndarray of shape (N,)
    weight : ndarray of shape (C, W); read as float32 (the prediction is an argmax over its rows: a one-output
        sign classifier goes through :func:`class_readout` first, as ChunkAnalysis does)
    bias : ndarray of shape (C,); read as float32
    chunks : sequence of integer index arrays (each a chunk of distinct neurons)
    block_rows : rows of ``features`` read at a time (at most)
    name : the features' name in error messages
    progress : optional callable ``progress(n_rows)`` called after each block

    Returns
    -------
    ndarray of shape (len(chunks),), float64 accuracies. The prediction is the
    first class of largest logit, the logits correctly rounded to float32; the
    counts do not depend on ``block_rows``, the BLAS or the workers, and equal
    those of :func:`redrep.core.cuda.count_correct` on a GPU.

    Notes
    -----
    All chunks are evaluated in one pass over the data; identical chunks
    (every chunk of size W, for instance) are evaluated once. The compiled
    fast pass sums each chunk's own terms in registers, so a chunk costs in
    proportion to its size; without it, chunks of more than W/4 neurons go
    through one float32 matrix product with the stacked, masked readouts and
    smaller ones gather their rows of the transposed block. Each margin
    comes with a rigorous bound on its rounding error; the pairs within it
    (near or exact ties) are decided exactly (see :mod:`redrep.core.accuracy`).
    Blocks of rows are counted by worker processes, one per core
    (:mod:`redrep.core.parallel`).
    """
    from .parallel import Pool

    job = AccuracyJob(features, labels, weight, bias, chunks, block_rows=block_rows, name=name)
    correct = np.zeros(len(job.uniq), dtype=np.int64)
    with Pool({"accuracy": job}, work=job.work()) as pool:
        for _, (counts, n_rows) in pool.imap_unordered(("accuracy", t) for t in job.tasks()):
            correct += counts
            if progress is not None:
                progress(n_rows)
    return job.accuracies(correct)
