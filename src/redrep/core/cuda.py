"""The whole chunk analysis on a CUDA device, in torch: Gram matrices, regressions and exact accuracies.

What runs where
---------------
Each split's features are read once, block by block, from the (possibly
memory-mapped) file by a reader thread into pinned host buffers, copied to the
device on a side stream while the device computes on the previous block
(double buffering), and checked there for NaN and Inf (the same one-line
error as the CPU's, naming the file, row and column). On the device, each
block adds its float64 shifted scatter to the Gram matrix of its split and
has every chunk's accuracy counted; only the counts, and the few
(sample, chunk) pairs that need an exact sum, come back. Then the
regressions run in float64 on the device, batched over the chunks of one
size: Cholesky factors, triangular solves and the residual scatter of every
chunk, as :func:`redrep.core.regression.chunk_regression` and
:func:`redrep.core.regression.chunk_r2_heldout` define them. The rare chunk
whose factor is unresolved (numerically dependent neurons) takes the CPU's
eigen path, on the device's Gram matrix. docs/method.md#the-analysis-on-a-gpu
sums this up.

The counts are the CPU's, bit for bit
-------------------------------------
The accuracies follow :mod:`redrep.core.accuracy`: float32 logits with
TF32 off, whose rounding error is bounded for IEEE float32 sums in any order,
decide every (sample, chunk) pair whose margin lies outside the bound; the
others are recomputed on the device in float64 (products of float32 numbers
are exact there), and those whose float64 interval still straddles a float32
rounding boundary go to the CPU's exact pass (``math.fsum``). A chunk of
``w`` neurons costs in proportion to ``w``: the chunks small against ``W``
gather their neurons' rows of the transposed block and multiply them by their
own readout columns in one batched product ``(k, C, w+1) x (k, w+1, b)``, with
a bound of their own neurons only; the others go through one product with
the stacked masked readouts and the bound over all ``W`` neurons. Two
safeguards make the bound hold on hardware that flushes subnormal numbers to
zero: the weights enter the bound as at least ``2^-100``, and each chunk's
absolute term grows by ``4 * 2^-126 * sum_i max_c |w_ci|``.

Regression values agree with the CPU's to rounding: R^2 and held-out R^2
to a relative 1e-9 (1e-13 measured), the correlations too on ordinary sets;
where a set holds exact copies of neurons and the ridge is tiny, the
correlations carry a rounding noise of a few 1e-9 (absolute), which the CPU's
own show as much when the neurons are relabelled. A chunk at the edge of a
resolution threshold may take the other branch on the other device.

torch is imported inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from types import SimpleNamespace

import numpy as np

from . import accuracy as _acc
from .blocks import iter_blocks
from .validation import RedrepError

#: Bytes of the largest temporary tensors of one step (gathered rows and logits of a group of chunks, a batch of
#: regressions, a batch of exact pairs): a few of them live at a time.
MEMORY_BYTES = 4 * 2**30
#: Bytes of one block of rows as read from the file and copied to the device.
STREAM_BYTES = 64 * 2**20
#: float32 multiply-adds that take the device as long as moving one float32 number through its memory: a chunk
#: gathers its rows where that costs less than multiplying all W neurons (see _gathers).
FMA_PER_FLOAT = 28
#: Least weight per neuron in the bound: a weight flushed to zero then loses less than the bound's spare.
_OMEGA_FLOOR = 2.0**-100


def _torch():
    import torch

    return torch


@contextlib.contextmanager
def ieee_float32(torch):
    """float32 products in IEEE float32 (TF32 off) while the context lasts; the previous settings restored after."""
    before = (
        torch.get_float32_matmul_precision(),
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
    )
    torch.set_float32_matmul_precision("highest")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cuda.matmul.allow_tf32 = before[1]
        torch.backends.cudnn.allow_tf32 = before[2]


def start(device: str):
    """torch, the device, and the seconds spent importing torch and starting the device's libraries.

    The first Cholesky factor, triangular solve and products load their
    libraries and kernels: done here, on tiny inputs, so that the analysis's
    own timings do not carry them.
    """
    t0 = time.perf_counter()
    torch = _torch()
    dev = torch.device(device)
    a = torch.eye(4, dtype=torch.float64, device=dev).expand(2, 4, 4)
    L = torch.linalg.cholesky_ex(a)[0]
    torch.cholesky_solve(a, L)
    torch.linalg.solve_triangular(L, a, upper=False)
    x = torch.ones((4, 4), device=dev)
    torch.bmm(x[None], x[None]).amax(1)
    (x.double() @ x.double()).sum().item()
    return torch, dev, time.perf_counter() - t0


def _quiet(total, desc, unit):
    """No progress bar."""
    return contextlib.nullcontext(SimpleNamespace(update=lambda n: None))


def _sync(torch, dev):
    if dev.type == "cuda":
        torch.cuda.current_stream(dev).synchronize()


# --------------------------------------------------------------------------- reading


class BlockStream:
    """Blocks of rows of host matrices, on the device: read by a thread into pinned buffers, copied on a side stream.

    Two buffers of each kind: while the device computes on one block, the
    next is read from the file and copied. On torch's CPU device the read
    buffer is the block.

    Attributes
    ----------
    read_s : seconds the reader thread spent copying rows from the file into the pinned buffers
    wait_s : seconds the computation waited for a block (the reading and copying that was not hidden)
    bytes : bytes read
    """

    def __init__(self, torch, dev, width: int, rows: int):
        self.torch, self.dev, self.width, self.rows = torch, dev, width, rows
        self.cuda = dev.type == "cuda"
        self.copy_stream = torch.cuda.Stream(dev) if self.cuda else None
        self._buffers = {}
        self.read_s = self.wait_s = 0.0
        self.bytes = 0

    def _buffers_for(self, dtype):
        if dtype not in self._buffers:
            torch = self.torch
            tdt = torch.float32 if dtype == np.float32 else torch.float64
            shape = (self.rows, self.width)
            pinned = [torch.empty(shape, dtype=tdt, pin_memory=self.cuda) for _ in range(2)]
            on_dev = [torch.empty(shape, dtype=tdt, device=self.dev) for _ in range(2)] if self.cuda else None
            done = [torch.cuda.Event() for _ in range(2)] if self.cuda else None
            self._buffers[dtype] = (pinned, on_dev, done)
        return self._buffers[dtype]

    def blocks(self, features, name: str):
        """Yield ``(start, x)``: ``x`` the rows ``start:start + len(x)`` on the device, valid until the next block.

        ``x`` is float32 where the file is, float64 otherwise (converted as numpy converts).
        """
        dtype = np.float32 if features.dtype == np.float32 else np.float64
        pinned, on_dev, done = self._buffers_for(dtype)
        free, ready = queue.Queue(), queue.Queue()
        for i in range(len(pinned)):
            free.put((i, None))
        reader = threading.Thread(target=self._read, args=(features, name, pinned, free, ready), daemon=True)
        reader.start()
        try:
            k = 0
            item = self._fetch(ready, free, pinned, on_dev, done, k)
            while item is not None:
                lo, x, copied, i = item
                item = self._fetch(ready, free, pinned, on_dev, done, k + 1)  # the next copy is queued first
                if copied is not None:
                    self.torch.cuda.current_stream(self.dev).wait_event(copied)
                yield lo, x
                if self.cuda:
                    done[k % 2].record(self.torch.cuda.current_stream(self.dev))
                else:
                    free.put((i, None))  # the block was the buffer: it may be refilled once used
                k += 1
        finally:
            free.put((None, None))
            reader.join()

    def _read(self, features, name, pinned, free, ready):
        try:
            for lo, view in iter_blocks(features, self.rows, None, name, check=False):
                i, copied = free.get()
                if i is None:
                    return
                if copied is not None:
                    copied.synchronize()  # the previous copy out of this buffer is over
                t0 = time.perf_counter()
                np.copyto(pinned[i].numpy()[: len(view)], view, casting="unsafe")
                self.read_s += time.perf_counter() - t0
                self.bytes += view.nbytes
                ready.put((lo, len(view), i))
            ready.put(None)
        except BaseException as exc:  # handed to the computing thread, which raises it
            ready.put(exc)

    def _fetch(self, ready, free, pinned, on_dev, done, k):
        t0 = time.perf_counter()
        item = ready.get()
        self.wait_s += time.perf_counter() - t0
        if isinstance(item, BaseException):
            raise item
        if item is None:
            return None
        lo, r, i = item
        if not self.cuda:
            return lo, pinned[i][:r], None, i
        torch = self.torch
        with torch.cuda.stream(self.copy_stream):
            self.copy_stream.wait_event(done[k % 2])  # the computation on this device buffer is over
            x = on_dev[k % 2][:r]
            x.copy_(pinned[i][:r], non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(self.copy_stream)
        free.put((i, copied))
        return lo, x, copied, i


def check_finite(torch, x, name: str, offset: int) -> None:
    """Raise the CPU's one-line error (:func:`redrep.core.validation.check_finite`) if block ``x`` holds NaN or Inf."""
    bad = ~torch.isfinite(x)
    count = int(bad.sum())
    if count:
        first = int(torch.argmax(bad.view(-1).to(torch.uint8)))
        row, col = divmod(first, x.shape[1])
        value = x[row, col].item()
        raise RedrepError(
            f"{name}: expected finite values, found {value} at index ({row + offset}, {col}) "
            f"({count} non-finite values in this block)"
        )


class GramSum:
    """The shifted float64 scatter of blocks, summed on the device (see :func:`redrep.core.regression.gram_matrix`)."""

    def __init__(self, torch, dev, shift: np.ndarray):
        width = len(shift)
        self.torch = torch
        self.shift = torch.as_tensor(np.array(shift, dtype=np.float64), device=dev)
        self.G = torch.zeros((width, width), dtype=torch.float64, device=dev)
        self.total = torch.zeros(width, dtype=torch.float64, device=dev)

    def add(self, x) -> None:
        y = x.to(self.torch.float64) - self.shift
        self.total += y.sum(0)
        self.G.addmm_(y.T, y)

    def result(self, n: int):
        """``(G, mean)``: the centred scatter (its upper triangle mirrored) and the column means, on the device."""
        torch = self.torch
        G = torch.triu(self.G) + torch.triu(self.G, 1).T
        d = self.total / n
        G -= n * torch.outer(d, d)
        return G, self.shift + d


# --------------------------------------------------------------------------- accuracies


def gathers(size: int, width: int, n_classes: int) -> bool:
    """Whether a chunk of ``size`` neurons gathers its rows (else it takes the masked product with all ``W``).

    Gathering moves ``size + 1`` floats twice per sample and multiplies only
    them; the masked product multiplies all ``W + 1``: the cheaper on a
    device where a float moved costs :data:`FMA_PER_FLOAT` multiply-adds.
    """
    return (size + 1) * (n_classes + 2 * FMA_PER_FLOAT) < (width + 1) * n_classes


class AccuracyPlan:
    """The chunks' readouts on the device, grouped for batched products, with the constants of their bounds.

    Parameters
    ----------
    weight : ndarray of shape (C, W), float32
    bias : ndarray of shape (C,), float32
    uniq : list of sorted distinct chunks (index arrays)
    rows : most rows of a block
    memory_bytes : bound on the gathered rows and logits of one group

    Attributes
    ----------
    correct : tensor of shape (K,), int64, the counts so far of the chunks decided on the device
    """

    def __init__(self, torch, dev, weight, bias, uniq, rows: int, memory_bytes: int = MEMORY_BYTES):
        self.torch, self.dev = torch, dev
        n_classes, width = weight.shape
        self.n_classes, self.width, self.n_chunks = n_classes, width, len(uniq)
        w_ext = np.concatenate([weight, bias[:, None]], axis=1).astype(np.float32)  # the bias as neuron W
        omega = np.abs(w_ext).max(axis=0)  # (W + 1,), max_c |w_ci|, exact float32 numbers
        self.member = np.zeros((len(uniq), width), dtype=bool)
        for k, c in enumerate(uniq):
            self.member[k, c] = True
        sizes = np.array([len(c) for c in uniq], dtype=np.int64)
        coef = np.array([_acc._Plan._coef(int(s))[0] for s in sizes])
        # the absolute term: products that underflow, and products of features flushed to zero
        tiny = 4 * _acc._TINY32 * (sizes + 3 + self.member @ omega[:width].astype(np.float64))
        self.slack = float(1.0 + 2.0 * _acc._gamma(width + 1))
        t = lambda a, dtype=torch.float32: torch.as_tensor(np.array(a), dtype=dtype, device=dev)  # noqa: E731 (a copy)
        floored = np.maximum(omega, np.float32(_OMEGA_FLOOR))  # the weights as the bound takes them
        self.omega = t(floored)
        self.coef, self.tiny = t(coef[:, None]), t(tiny[:, None])
        self.masked, self.gathered = [], []
        dense = [k for k in range(len(uniq)) if not gathers(int(sizes[k]), width, n_classes)]
        per = max(1, memory_bytes // (4 * rows * (n_classes + 4) + 4 * n_classes * (width + 1)))
        for lo in range(0, len(dense), per):  # stacked masked readouts, chunk by chunk: rows (k, c)
            ids = np.asarray(dense[lo : lo + per])
            stacked = w_ext[None, :, :] * np.append(self.member[ids], np.ones((len(ids), 1), bool), axis=1)[:, None]
            self.masked.append((t(ids, torch.int64), t(stacked.reshape(-1, width + 1))))
        by_size = {}
        for k in range(len(uniq)):
            if gathers(int(sizes[k]), width, n_classes):
                by_size.setdefault(int(sizes[k]), []).append(k)
        for size, ks in by_size.items():
            per = max(1, memory_bytes // (4 * rows * (2 * (size + 1) + n_classes + 4)))
            for lo in range(0, len(ks), per):
                ids = np.asarray(ks[lo : lo + per])
                idx = np.concatenate([np.stack([uniq[k] for k in ids]), np.full((len(ids), 1), width)], axis=1)
                wg = w_ext[:, idx].transpose(1, 0, 2)  # (k, C, w + 1)
                om = floored[idx][:, None, :]
                self.gathered.append((t(ids, torch.int64), t(idx.ravel(), torch.int64), t(wg), t(om), size + 1))
        self.correct = torch.zeros(len(uniq), dtype=torch.int64, device=dev)
        # the exact pass: float64 readouts, membership, and the CPU's plan for what the device cannot settle
        self.member64 = t(self.member, torch.float64)
        self.w64T = t(weight.T, torch.float64)
        self.w64absT, self.b64 = self.w64T.abs(), t(bias, torch.float64)
        self.b64abs = self.b64.abs()
        self.gamma64 = 4.0 * float(_acc._gamma(width + 2, _acc._U64))
        self.host = SimpleNamespace(
            width=width, weight64=weight.astype(np.float64), bias64=bias.astype(np.float64), member=self.member
        )
        self.pair_batch = max(1, memory_bytes // (8 * (3 * width + 4 * n_classes)))

    def transposed(self, x):
        """The block ``x`` (b, W) transposed to float32 (W + 1, b), its last row ones (the bias's neuron)."""
        XT = self.torch.empty((self.width + 1, x.shape[0]), dtype=self.torch.float32, device=self.dev)
        XT[: self.width] = x.T
        XT[self.width] = 1.0
        return XT

    def _bound(self, a):
        """``A`` from its float32 product ``a``, enlarged by that product's error; inf where it may overflow."""
        a = a * self.slack
        return self.torch.where(a <= _acc._OVERFLOW_GUARD, a, self.torch.inf)

    def count(self, XT, labels):
        """Add the certain correct predictions of block ``XT`` (from :meth:`transposed`) to :attr:`correct`.

        Returns
        -------
        undecided : tensor of shape (K, b), bool, the pairs whose margin lies within its bound
        """
        torch = self.torch
        n_b = XT.shape[1]
        undecided = torch.zeros((self.n_chunks, n_b), dtype=torch.bool, device=self.dev)
        if self.masked:
            bound = self._bound(self.omega @ XT.abs())  # (b,): over all W neurons
        for ids, stacked in self.masked:
            logits = (stacked @ XT).view(len(ids), self.n_classes, n_b)
            self._certify(logits, labels, self.coef[ids] * bound + self.tiny[ids], ids, undecided)
        for ids, idx, wg, om, terms in self.gathered:
            xg = XT.index_select(0, idx).view(len(ids), terms, n_b)
            logits = torch.bmm(wg, xg)
            bound = self._bound(torch.bmm(om, xg.abs()).view(len(ids), n_b))  # the chunk's own neurons
            self._certify(logits, labels, self.coef[ids] * bound + self.tiny[ids], ids, undecided)
        return undecided

    def _certify(self, logits, labels, threshold, ids, undecided):
        """Count the certain correct predictions of ``logits`` (k, C, b) and mark the undecided pairs."""
        torch = self.torch
        k, _, n_b = logits.shape
        lab = labels.view(1, 1, n_b).expand(k, 1, n_b)
        own = logits.gather(1, lab).view(k, n_b)
        logits.scatter_(1, lab, -torch.inf)  # the label's logit aside
        margin = logits.amax(1) - own  # D~: best other class minus the label's (NaN where a logit overflowed)
        right = margin < -threshold
        self.correct.index_add_(0, ids, right.sum(1))
        undecided.index_copy_(0, ids, ~(right | (margin > threshold)))

    def decide(self, undecided, XT, labels):
        """Decide the undecided pairs in float64 on the device; return those left for the CPU's exact pass.

        A float64 logit of float32 products errs by at most ``gamma64_{W+2}``
        of its absolute sum (with a factor 4 to spare); where that interval
        rounds to one float32 number it is the correctly rounded logit.

        Returns
        -------
        (chunk ids, rows) : ndarrays of the pairs whose interval straddles a float32 rounding boundary
        """
        torch = self.torch
        kk, ii = torch.nonzero(undecided, as_tuple=True)
        left = []
        for lo in range(0, len(kk), self.pair_batch):
            k, i = kk[lo : lo + self.pair_batch], ii[lo : lo + self.pair_batch]
            xm = XT[: self.width].index_select(1, i).T.to(torch.float64) * self.member64[k]  # exact products
            logits = torch.addmm(self.b64, xm, self.w64T)
            tol = self.gamma64 * torch.addmm(self.b64abs, xm.abs(), self.w64absT)
            right, unsure = _interval_decision(torch, logits, tol, labels[i])
            self.correct.index_add_(0, k, right.to(torch.int64))
            left.append(torch.stack([k[unsure], i[unsure]]))
        if not left:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        k, i = torch.cat(left, dim=1).cpu().numpy()
        return k, i


def _interval_decision(torch, logits, tol, labels):
    """Decide argmax == label from float64 logits known within ``tol``, as far as their float32 roundings allow.

    Each correctly rounded logit ``R_c`` lies between ``fl32(L_c - tol_c)`` and ``fl32(L_c + tol_c)`` (rounding is
    monotonic). The label ``y`` is predicted exactly when ``R_y > R_c`` for every ``c < y`` and ``R_y >= R_c`` for
    every ``c > y`` (ties to the first class, as argmax); only the classes that could change that answer matter.
    A logit within ``tol`` of a rounding boundary of a class that cannot compete leaves the pair decided.

    Parameters
    ----------
    logits, tol : tensors of shape (m, C), float64
    labels : tensor of shape (m,), int64

    Returns
    -------
    (right, unsure) : bool tensors of shape (m,): surely correct, and not decided here (for the exact pass)
    """
    lo, hi = (logits - tol).to(torch.float32), (logits + tol).to(torch.float32)
    y = labels.view(-1, 1)
    cls = torch.arange(logits.shape[1], device=logits.device).view(1, -1)
    before, after = cls < y, cls > y
    neg = torch.tensor(-torch.inf, dtype=torch.float32, device=logits.device)
    lo_y, hi_y = lo.gather(1, y).view(-1), hi.gather(1, y).view(-1)
    right = (lo_y > torch.where(before, hi, neg).amax(1)) & (lo_y >= torch.where(after, hi, neg).amax(1))
    wrong = (torch.where(before, lo, neg).amax(1) >= hi_y) | (torch.where(after, lo, neg).amax(1) > hi_y)
    return right, ~(right | wrong)


def count_correct(features, labels, weight, bias, uniq, *, name="features", progress=None, device="cuda", **kw):
    """Correct predictions of every distinct chunk of ``uniq`` on a torch device, equal to the CPU's counts.

    Parameters are those of :func:`redrep.core.accuracy.chunk_accuracy`; ``memory_bytes`` (keyword) bounds the
    temporaries. Returns an ndarray of shape (len(uniq),), int64.
    """
    torch, dev, _ = start(device)
    weight = np.ascontiguousarray(weight, dtype=np.float32)
    bias = np.ascontiguousarray(bias, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    rows = block_rows_for(features.shape[1])
    with ieee_float32(torch):
        plan = AccuracyPlan(torch, dev, weight, bias, uniq, rows, kw.get("memory_bytes", MEMORY_BYTES))
        stream = BlockStream(torch, dev, features.shape[1], rows)
        host = np.zeros(len(uniq), dtype=np.int64)
        labels_dev = torch.as_tensor(np.array(labels), device=dev)  # a copy: the set's arrays may be read-only
        for lo, x in stream.blocks(features, name):
            check_finite(torch, x, name, lo)
            count_block(plan, x, labels_dev[lo : lo + len(x)], features, labels, lo, host)
            if progress is not None:
                progress(len(x))
    return plan.correct.cpu().numpy() + host


def count_block(plan: AccuracyPlan, x, labels_dev, features, labels, lo: int, host: np.ndarray) -> None:
    """Count block ``x`` (rows ``lo:lo + len(x)`` of ``features``): the device's counts in ``plan.correct``, those of
    the CPU's exact pass in ``host``."""
    XT = plan.transposed(x)
    undecided = plan.count(XT, labels_dev)
    k, i = plan.decide(undecided, XT, labels_dev)
    if len(k):
        rows = np.asarray(features[lo + i], dtype=np.float32)
        _acc._add_exact(host, plan.host, rows, labels[lo + i], k)


def block_rows_for(width: int) -> int:
    """Rows of a block read and copied at a time: about :data:`STREAM_BYTES`, between 1024 and 65536."""
    return int(min(65536, max(1024, STREAM_BYTES // (4 * max(1, width)))))


def device_properties(device: str) -> tuple[int, int, int]:
    """``(multiprocessors, major, minor)`` of a CUDA device: what :class:`redrep.core.costs.GpuRates` scales by."""
    torch = _torch()
    props = torch.cuda.get_device_properties(torch.device(device))
    return props.multi_processor_count, props.major, props.minor


# --------------------------------------------------------------------------- the whole analysis


def analyze(
    repset, draws, *, device, readout=None, alpha=1e-8, block_rows=8192, heldout=True, bar=None, memory_bytes=None
):
    """The analysis of :meth:`redrep.core.analysis.ChunkAnalysis.fit` on a torch device: ``(values, timings)``.

    Parameters
    ----------
    repset : :class:`~redrep.storage.repset.RepresentationSet`
    draws : :class:`~redrep.core.analysis.ChunkDraws`, the chunks
    device : a torch device name ("cuda", "cuda:1"; "cpu" runs the same code on torch's CPU device)
    readout : ``(weight, bias)`` of shapes (C, W) and (C,) to count with, C >= 2; default the set's own
    alpha, block_rows, heldout : as in ChunkAnalysis (``block_rows`` sets the Gram matrices' shift, as on the CPU)
    bar : callable ``bar(total, desc, unit)`` returning a progress bar (a context manager with ``update``); none
        by default
    memory_bytes : bound on the temporaries of one step (default :data:`MEMORY_BYTES`, at most 1/16 of the device)

    Returns
    -------
    values : dict (metric, split) -> ndarray of shape (n_sizes, reps), as the CPU path's
    timings : dict of seconds: startup, then per part (gram_test, accuracy_test, gram_train, accuracy_train,
        regression_test) and upload (the time the computation waited for blocks, not hidden by it)
    """
    from .blocks import check_mapped
    from .regression import gram_shift

    torch, dev, startup = start(device)
    timings = {"startup": startup}
    bar = bar or _quiet
    if memory_bytes is None:
        memory_bytes = MEMORY_BYTES
        if dev.type == "cuda":
            memory_bytes = min(memory_bytes, torch.cuda.get_device_properties(dev).total_memory // 16)
    width = repset.width
    names = repset.names
    uniq, index = _acc._unique_chunks(draws.accuracy)
    rows = block_rows_for(width)
    values, grams = {}, {}
    with ieee_float32(torch):
        weight, bias = readout if readout is not None else (repset.weight, repset.bias)
        weight = np.ascontiguousarray(weight, dtype=np.float32)
        bias = np.ascontiguousarray(bias, dtype=np.float32)
        plan = AccuracyPlan(torch, dev, weight, bias, uniq, rows, memory_bytes)
        stream = BlockStream(torch, dev, width, rows)
        for split in ("test", "train"):
            features = getattr(repset, f"features_{split}")
            name = names.get(f"features_{split}", f"features_{split}")
            check_mapped(features, name)  # a file cut short since it was mapped: one line, not SIGBUS
            gram = GramSum(torch, dev, gram_shift(features, block_rows)) if split == "test" or heldout else None
            labels = getattr(repset, f"labels_{split}")
            counts = _split_pass(torch, dev, stream, plan, features, labels, name, gram, bar, timings, split)
            values[("accuracy", split)] = draws.accuracy_values(counts[index] / features.shape[0])
            if gram is not None:
                grams[split] = (*gram.result(features.shape[0]), features.shape[0])
        timings["upload"] = stream.wait_s
        t0 = time.perf_counter()
        per_chunk = _regression_pass(torch, grams, draws.regression, alpha, memory_bytes, bar)
        timings["regression_test"] = time.perf_counter() - t0
    values.update(draws.regression_values(per_chunk))
    return values, timings


def _split_pass(torch, dev, stream, plan, features, labels, name, gram, bar, timings, split):
    """One pass over a split's rows: its Gram matrix (if ``gram``) and the counts of every distinct chunk."""
    plan.correct.zero_()
    host = np.zeros(plan.n_chunks, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    labels_dev = torch.from_numpy(np.array(labels)).to(dev)  # a copy: the set's arrays may be read-only
    t_gram = t_acc = 0.0
    with bar(features.shape[0], f"accuracy ({split})", "rows") as progress:
        for lo, x in stream.blocks(features, name):
            t0 = time.perf_counter()
            check_finite(torch, x, name, lo)
            if gram is not None:
                gram.add(x)
                _sync(torch, dev)
            t1 = time.perf_counter()
            count_block(plan, x, labels_dev[lo : lo + len(x)], features, labels, lo, host)
            t_gram, t_acc = t_gram + t1 - t0, t_acc + time.perf_counter() - t1
            progress.update(len(x))
    if gram is not None:
        timings[f"gram_{split}"] = t_gram
    timings[f"accuracy_{split}"] = t_acc
    return plan.correct.cpu().numpy() + host


# --------------------------------------------------------------------------- regressions


def _regression_bytes(w: int, width: int) -> int:
    """Bytes of the float64 temporaries of one chunk of ``w`` neurons in a batch of regressions."""
    m = width - w
    return 8 * (4 * m * m + 6 * w * m + 8 * w * w + 6 * w * width + 4 * width)


def chunk_regressions(gram_test, chunks, alpha=1e-8, gram_train=None, *, device="cuda", memory_bytes=MEMORY_BYTES):
    """:func:`~redrep.core.regression.chunk_regression` and :func:`~redrep.core.regression.chunk_r2_heldout` of many
    chunks on a torch device, from Gram matrices on the host.

    Parameters
    ----------
    gram_test, gram_train : ``(G, mean, n)`` of the test (and training) features, as :func:`gram_matrix` returns
    chunks : sequence of integer arrays (distinct neurons each)
    alpha : ridge penalty

    Returns
    -------
    ndarray of shape (len(chunks), 4): ``r2, mean_corr, mean_corr_outside, r2_heldout`` (NaN without ``gram_train``).
    """
    torch, dev, _ = start(device)
    grams = {"test": gram_test} if gram_train is None else {"test": gram_test, "train": gram_train}
    on_dev = {
        s: (torch.tensor(np.array(G), device=dev), torch.tensor(np.array(m), device=dev), n)
        for s, (G, m, n) in grams.items()
    }
    return _regression_pass(torch, on_dev, chunks, alpha, memory_bytes, _quiet)


def _regression_pass(torch, grams, chunks, alpha, memory_bytes, bar) -> np.ndarray:
    """Rows ``(r2, mean_corr, mean_corr_outside, r2_heldout)`` of every chunk, shape (len(chunks), 4).

    ``grams``: split -> ``(G, mean, n)`` on the device. Chunks of one size
    run in batches on the device; a chunk whose Cholesky factor is
    unresolved there (numerically dependent neurons) is computed on the CPU,
    by :class:`redrep.core.regression.RegressionJob`, from the device's Gram
    matrices.
    """
    from .regression import RegressionJob, check_variance

    G, mean_test, n_test = grams["test"]
    width = G.shape[0]
    check_variance(float(torch.trace(G)))
    train = grams["train"][:2] if "train" in grams else None
    state = _RegressionState(torch, G, mean_test, n_test, alpha, train)
    out = np.full((len(chunks), 4), np.nan)
    by_size, fallback = {}, []
    for i, c in enumerate(chunks):
        by_size.setdefault(len(c), []).append(i)
    with bar(len(chunks), "regression", "chunks") as progress:
        for w, ids in by_size.items():
            step = max(1, memory_bytes // _regression_bytes(w, width))
            for lo in range(0, len(ids), step):
                batch = np.asarray(ids[lo : lo + step])
                S = torch.as_tensor(np.stack([np.sort(chunks[i]) for i in batch]), device=G.device)
                ok, out[batch] = state.batch(S)
                fallback.extend(batch[~ok].tolist())
                progress.update(len(batch))
    if fallback:
        job = RegressionJob(width, n_test, [chunks[i] for i in fallback], alpha, train is not None)
        host = {s: (g.cpu().numpy(), m.cpu().numpy(), n) for s, (g, m, n) in grams.items()}
        job.prepare(host["test"], host.get("train"))
        for j, s, r2_ho in job.run(range(len(fallback))):
            out[fallback[j]] = (s.r2, s.mean_corr, s.mean_corr_outside, r2_ho)
    return out


class _RegressionState:
    """What every batch of chunks shares: the Gram matrices on the device and their diagonals and traces."""

    def __init__(self, torch, G, mean_test, n_test, alpha, train=None):
        from .regression import _NEGLIGIBLE, _RESOLVED, CORR_EPS

        self.torch, self.G, self.n, self.alpha = torch, G, n_test, float(alpha)
        self.resolved, self.negligible = _RESOLVED, _NEGLIGIBLE
        self.diag = torch.diagonal(G).clone()
        self.trace = float(torch.trace(G))
        self.eps = (n_test - 1) * CORR_EPS
        self.G1 = None
        if train is not None:  # the held-out R^2: the training scatter and the test scatter about its means
            self.G1 = train[0]
            d = mean_test - train[1]
            self.H = G + n_test * torch.outer(d, d)
            self.diag_H = torch.diagonal(self.H).clone()

    def batch(self, S):
        """``(ok, rows)``: which chunks of ``S`` (k, w) the device resolved, and their rows (k, 4) (NaN elsewhere)."""
        out = np.full((S.shape[0], 4), np.nan)
        ok, out[:, :3] = _regress(self.torch, self, S)
        if self.G1 is not None:
            ok_ho, out[:, 3] = _heldout(self.torch, self, S)
            ok &= ok_ho
        return ok, out


def _gather2(G, rows, cols):
    """``G[rows[b]][:, cols[b]]`` for every ``b``: shapes (k, r) and (k, c) give (k, r, c)."""
    return G[rows[:, :, None], cols[:, None, :]]


def _complement(torch, S, width):
    """``(outside, Out)``: the mask (k, W) of the neurons outside each chunk, and their sorted indices (k, W - w)."""
    k, w = S.shape
    outside = torch.ones((k, width), dtype=torch.bool, device=S.device)
    outside.scatter_(1, S, False)
    return outside, outside.nonzero()[:, 1].view(k, width - w)


def _factor(torch, G, S, alpha, resolved):
    """Cholesky factors (k, w, w) of ``G_SS + alpha I`` and whether each is resolved (as the CPU's ``_factor``)."""
    A = _gather2(G, S, S)
    diag_A = A.diagonal(dim1=1, dim2=2)
    diag_A += alpha
    L, info = torch.linalg.cholesky_ex(A)
    ok = (info == 0) & (L.diagonal(dim1=1, dim2=2) ** 2 > resolved * diag_A).all(1)
    return L, ok


def _inverse(torch, L):
    """The inverses (k, w, w) of lower-triangular factors ``L`` (k, w, w)."""
    k, w, _ = L.shape
    eye = torch.eye(w, dtype=L.dtype, device=L.device).expand(k, w, w)
    return torch.linalg.solve_triangular(L, eye, upper=False)


def _resolved_part(torch, ok, *tensors):
    """The resolved chunks' rows of ``tensors`` and their positions; None where no chunk is resolved."""
    sel = torch.nonzero(ok).view(-1)
    if len(sel) == 0:
        return None
    return sel.cpu().numpy(), [t[sel] for t in tensors]


def _regress(torch, st, S):
    """:func:`redrep.core.regression.chunk_regression` for a batch of chunks of one size.

    Returns
    -------
    (ok, stats) : ndarray (k,) bool, the chunks resolved here; ndarray (k, 3), ``(r2, mean_corr, mean_corr_outside)``
    """
    k, w = S.shape
    width = st.G.shape[0]
    a, eps, n_pairs = st.alpha, st.eps, width * (width - 1) / 2
    stats = np.full((k, 3), np.nan)
    L, ok = _factor(torch, st.G, S, a, st.resolved)
    part = _resolved_part(torch, ok, S, L)
    if part is None:
        return ok.cpu().numpy(), stats
    sel, (S, L) = part
    k = len(sel)
    outside, Out = _complement(torch, S, width)
    GSO = _gather2(st.G, S, Out)
    B = torch.cholesky_solve(GSO, L)  # L L^T B = G_SO, shape (k, w, m)
    Rt = GSO + a * B  # G_SO + alpha B_O: R_OO = G_OO - B_O^T Rt
    diag = st.diag.expand(k, width).clone()
    d_out = diag.gather(1, Out) - (B * Rt).sum(1)
    diag.scatter_(1, Out, d_out)
    unresolved = d_out <= st.resolved * st.diag[Out]  # reconstructed to within the rounding of G
    in_x = ~outside
    in_x.scatter_(1, Out, unresolved)
    Linv = _inverse(torch, L)
    sq = Linv * Linv
    ainv_diag = sq.sum(1)
    exact = unresolved.any(1)
    if n_pairs > 0:  # the bound on the share of the pairs with a neuron inside (see chunk_regression)
        root = ainv_diag.sqrt().sum(1)
        bound_in_out = a**2 * sq.sum((1, 2)).sqrt() * root * B.norm(dim=1).sum(1) / eps
        exact |= (bound_in_out + a**2 * root**2 / (2 * eps)) / n_pairs > st.negligible
    # where negligible, the residual variances inside the chunk to first order
    diag.scatter_(1, S, torch.where(exact[:, None], diag.gather(1, S), a**2 * ainv_diag))
    e = torch.nonzero(exact).view(-1)
    if len(e):
        d_e = diag[e]
        rows = _exact_rows(torch, st, S[e], Out[e], L[e], Linv[e], B[e], unresolved[e], d_e)
        diag[e] = d_e
    diag.clamp_(min=0.0)
    r2 = 1.0 - diag.sum(1) / st.trace
    rs = diag.sqrt()
    sum_x, sum_u = torch.zeros_like(r2), torch.zeros_like(r2)
    if len(e):
        sum_x[e], sum_u[e] = _exact_sums(torch, rs[e], in_x[e], S[e], *rows, eps)
    sum_rest = _rest_sums(torch, st.G, Out, B, Rt, rs.masked_fill(in_x, 0.0), eps)
    m = width - w
    mean_corr = (sum_rest + sum_x) / n_pairs if width > 1 else torch.full_like(r2, np.nan)
    mean_out = (sum_rest + sum_u) / (m * (m - 1) / 2) if m >= 2 else torch.full_like(r2, np.nan)
    stats[sel] = torch.stack([r2, mean_corr, mean_out], dim=1).cpu().numpy()
    return ok.cpu().numpy(), stats


def _exact_rows(torch, st, S, Out, L, Linv, B, unresolved, diag):
    """The exact rows of the residual scatter (``alpha^2 A^-1 B`` and those of the reconstructed neurons ``Un``).

    Writes their residual variances into ``diag`` (k, W) and returns
    ``(RxS (k, w, W), RxU (k, u, W), Un (k, u), valid (k, u))``, ``Un`` padded to the
    longest (``valid`` marks the real ones).
    """
    k, w = S.shape
    width, m, a = st.G.shape[0], Out.shape[1], st.alpha
    K = torch.zeros((k, w, width), dtype=B.dtype, device=B.device)
    K.scatter_(2, Out[:, None, :].expand(k, w, m), torch.cholesky_solve(B, L))
    Ainv = Linv.mT @ Linv
    small = a * torch.linalg.matrix_norm(Ainv) <= 0.5
    # A^-1 (I - alpha A^-1) = A^-1 B_SS, or where the ridge dominates A^-1 G_SS A^-1, free of that cancellation
    K_S = torch.where(small[:, None, None], Ainv - a * (Ainv @ Ainv), Ainv @ (_gather2(st.G, S, S) @ Ainv))
    K.scatter_(2, S[:, None, :].expand(k, w, w), K_S)
    RxS = (a * a) * K
    counts = unresolved.sum(1)
    u = int(counts.max())
    pos = torch.sort(unresolved.to(torch.uint8), dim=1, descending=True, stable=True).indices[:, :u]
    valid = torch.arange(u, device=S.device)[None, :] < counts[:, None]
    Un = Out.gather(1, pos)
    # c = b + alpha A^-1 b: the coefficients of the reconstructed neurons on the chunk
    C = B.gather(2, pos[:, None, :].expand(k, w, u)) + a * K.gather(2, Un[:, None, :].expand(k, w, u))
    RxU = (C.mT @ RxS) * valid[:, :, None]
    diag.scatter_(1, S, RxS.gather(2, S[:, :, None]).squeeze(2))
    diag.scatter_(1, Un, torch.where(valid, RxU.gather(2, Un[:, :, None]).squeeze(2), diag.gather(1, Un)))
    return RxS, RxU, Un, valid


def _exact_sums(torch, rs, in_x, S, RxS, RxU, Un, valid, eps):
    """The correlations summed over the pairs with a neuron of the exact rows: all of them, and those without the
    chunk's neurons (``sum_x`` and ``sum_u`` of :func:`redrep.core.regression.chunk_regression`)."""
    un_cols = torch.zeros_like(in_x)
    un_cols.scatter_(1, Un, valid)
    rest = (~in_x)[:, None, :]

    def per_row(Rx, X, cols):  # each row: its pairs with neurons outside X, and half of those within ``cols``
        P = rs.gather(1, X)[:, :, None] * rs[:, None, :]
        M = torch.minimum(Rx.abs(), P) / (P + eps)
        own = M.gather(2, X[:, :, None]).squeeze(2)
        return (M * rest).sum(2) + ((M * cols[:, None, :]).sum(2) - own) / 2

    sum_x = per_row(RxS, S, in_x).sum(1) + (per_row(RxU, Un, in_x) * valid).sum(1)
    sum_u = (per_row(RxU, Un, un_cols) * valid).sum(1)
    return sum_x, sum_u


def _rest_sums(torch, G, Out, B, Rt, rs_rest, eps):
    """The correlations summed over the pairs of neurons outside the chunk, ``R_OO = G_OO - B^T Rt`` (k, m, m)."""
    k, m = Out.shape
    if m < 2:
        return torch.zeros(k, dtype=G.dtype, device=G.device)
    R = torch.baddbmm(_gather2(G, Out, Out), B.mT, Rt, alpha=-1.0)
    r = rs_rest.gather(1, Out)
    P = r[:, :, None] * r[:, None, :]
    R.abs_()
    torch.minimum(R, P, out=R)
    P += eps
    R /= P
    return R.triu_(1).sum((1, 2))  # each pair k < l once


def _heldout(torch, st, S):
    """:func:`redrep.core.regression.chunk_r2_heldout` for a batch of chunks: ``(ok, r2_heldout)``, ndarrays (k,)."""
    k, w = S.shape
    a = st.alpha
    r2 = np.full(k, np.nan)
    L, ok = _factor(torch, st.G1, S, a, st.resolved)
    part = _resolved_part(torch, ok, S, L)
    if part is None:
        return ok.cpu().numpy(), r2
    sel, (S, L) = part
    _, Out = _complement(torch, S, st.G1.shape[0])
    B = torch.cholesky_solve(_gather2(st.G1, S, Out), L)
    H_SS = _gather2(st.H, S, S)
    cross = (_gather2(st.H, S, Out) * B).sum((1, 2))
    quad = (H_SS * (B @ B.mT)).sum((1, 2))
    ss_res = st.diag_H[Out].sum(1) - 2.0 * cross + quad
    Linv = _inverse(torch, L)
    ainv_norm = (Linv * Linv).sum((1, 2))  # >= ||A^-1||_2
    # the neurons inside the chunk: alpha^2 <H_SS, A^-2>, where not negligible
    inside = a**2 * ainv_norm**2 * H_SS.diagonal(dim1=1, dim2=2).sum(1) > 1e-15 * st.trace
    Ainv = Linv.mT @ Linv
    ss_res += torch.where(inside, a**2 * ((H_SS @ Ainv) * Ainv).sum((1, 2)), torch.zeros_like(ss_res))
    r2[sel] = (1.0 - ss_res / st.trace).cpu().numpy()
    return ok.cpu().numpy(), r2
