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

import functools
import numbers
import os
import time
from dataclasses import dataclass

import numpy as np

from . import metrics as _metrics
from . import summary as _summary
from .accuracy import AccuracyJob, chunk_accuracy, class_readout, fastpass_library, fastpass_name  # noqa: F401
from .costs import Workload, choose_device
from .device import resolve_device
from .parallel import Pool, n_workers

# the regression statistics, public here too: the analysis's whole API under one name
from .regression import (  # noqa: F401
    CORR_EPS,
    GramJob,
    HeldOut,
    RegressionJob,
    RegressionStats,
    chunk_r2_heldout,
    chunk_regression,
    gram_matrix,
)
from .summary import describe_values  # noqa: F401  (the statistics of results.csv; re-exported)
from .validation import (
    RedrepError,
    check_chunk_sizes,
    check_float,
    check_int,
)

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
        Where the analysis runs: "cpu" is numpy and the compiled fast pass
        on worker processes; "cuda" runs all of it on the GPU in torch
        (:mod:`redrep.core.cuda`), with the same counts and the regression
        statistics to rounding; "auto" takes the GPU only where the cost
        model of :mod:`redrep.core.costs` says it finishes first, start-up
        included.
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
    timings_ : dict of seconds per part: on the CPU, the seconds its tasks took summed over the workers,
        divided by their number (its share of the time they ran side by side; the parts add up to about the
        analysis time); on a GPU, the wall time of each part, and its start-up
    n_workers_ : int, worker processes (or threads) that ran the tasks
    width_ : int
    error_inf_ : float or None, copied from the set
    device_ : str, where the analysis ran
    device_choice_ : dict, why: ``asked``, ``device``, ``reason`` and, for "auto", the cost model's ``estimate_s``
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

    def fit(self, repset) -> ChunkAnalysis:
        """Run the analysis on a :class:`~redrep.storage.repset.RepresentationSet`; returns self."""
        width = repset.width
        sizes, acc_rep, r2_rep, alpha, block_rows = self._check_params(width)
        if repset.n_test < 2:
            raise RedrepError(f"features_test: expected at least 2 rows for the regression, found {repset.n_test}")
        draws = self._draw(width, sizes, acc_rep, r2_rep)
        self.width_ = width
        self.error_inf_ = repset.error_inf
        self.n_train_ = repset.n_train
        t0 = time.perf_counter()
        self.device_, self.device_choice_ = self._choose_device(repset, sizes, acc_rep, r2_rep)
        choice_s = time.perf_counter() - t0
        self.accuracy_pass_ = fastpass_name(self.device_)
        settings = {"alpha": alpha, "block_rows": block_rows, "heldout": self.heldout}
        settings["readout"] = class_readout(repset.weight, repset.bias)  # one output: as two classes (docs/method.md)
        settings["bar"] = functools.partial(_bar, self.progress)
        if self.device_ == "cpu":
            self.values_, self.timings_, self.n_workers_ = _fit_cpu(repset, draws, **settings)
        else:
            from . import cuda

            self.values_, self.timings_ = cuda.analyze(repset, draws, device=self.device_, **settings)
            self.n_workers_ = 1
        if self.device == "auto":
            self.timings_["device_choice"] = choice_s
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

    def _draw(self, width, sizes, acc_rep, r2_rep) -> ChunkDraws:
        """Draw the chunks (``acc_chunks_``, ``r2_chunks_``) from two independent streams of the seed."""
        draws = ChunkDraws.draw(width, sizes, acc_rep, r2_rep, self.random_state, progress=self.progress)
        self.chunk_sizes_, self.acc_chunks_, self.r2_chunks_ = sizes, draws.acc_chunks, draws.r2_chunks
        return draws

    def _choose_device(self, repset, sizes, acc_rep, r2_rep) -> tuple[str, dict]:
        """The device, and why: as asked, or for ``auto`` the faster by the cost model (:mod:`redrep.core.costs`)."""
        if self.device != "auto":
            device = resolve_device(self.device)
            return device, {"asked": self.device, "device": device, "reason": "asked for"}
        work = Workload(
            repset.n_train,
            repset.n_test,
            repset.width,
            max(repset.n_classes, 2),
            tuple(sizes),
            acc_rep,
            r2_rep,
            self.heldout,
        )
        return choose_device(work, workers=n_workers(), compiled=fastpass_library() is not None)

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


def _nanmean_rows(a):
    out = np.full(a.shape[0], np.nan)
    for i, row in enumerate(a):
        row = row[np.isfinite(row)]
        if row.size:
            out[i] = row.mean()
    return out


@dataclass
class ChunkDraws:
    """The chunks of one analysis, as the passes take them, and where their values go.

    Attributes
    ----------
    sizes : list of int, the chunk sizes
    acc_chunks, r2_chunks : dict size -> ndarray of shape (rep, size), the chunks drawn
    accuracy : list of index arrays, the accuracy chunks size by size (``len(sizes) * acc_rep``)
    regression : list of index arrays, the distinct regression chunks
    places : list, for each distinct regression chunk, the (size index, repetition) slots it fills
    """

    sizes: list
    acc_chunks: dict
    r2_chunks: dict
    accuracy: list
    regression: list
    places: list

    @classmethod
    def draw(cls, width: int, sizes, acc_rep: int, r2_rep: int, random_state, progress: bool = False) -> ChunkDraws:
        """The chunks :class:`ChunkAnalysis` draws: two independent streams of the seed, size by size (with a
        progress bar, if ``progress``, when they are many)."""
        acc_seq, r2_seq = np.random.SeedSequence(random_state).spawn(2)
        acc_rng, r2_rng = np.random.default_rng(acc_seq), np.random.default_rng(r2_seq)
        acc_chunks, r2_chunks = _draw_all(width, sizes, acc_rep, r2_rep, acc_rng, r2_rng, progress)
        return cls.of(sizes, acc_chunks, r2_chunks)

    @classmethod
    def of(cls, sizes, acc_chunks: dict, r2_chunks: dict) -> ChunkDraws:
        """The draws of given chunks: the accuracy chunks in order, the distinct regression chunks and their slots."""
        slots = {}  # unique chunk -> the (size index, repetition) places it fills
        for i, w in enumerate(sizes):
            for r, c in enumerate(r2_chunks[w]):
                slots.setdefault(c.tobytes(), (c, []))[1].append((i, r))
        flat = [c for w in sizes for c in acc_chunks[w]]
        return cls(
            list(sizes), acc_chunks, r2_chunks, flat, [v[0] for v in slots.values()], [v[1] for v in slots.values()]
        )

    @property
    def acc_rep(self) -> int:
        return len(self.acc_chunks[self.sizes[0]])

    @property
    def r2_rep(self) -> int:
        return len(self.r2_chunks[self.sizes[0]])

    def accuracy_values(self, acc: np.ndarray) -> np.ndarray:
        """Accuracies of :attr:`accuracy` in order, as an array of shape (n_sizes, acc_rep)."""
        return acc.reshape(len(self.sizes), self.acc_rep)

    def regression_values(self, per_chunk: np.ndarray) -> dict:
        """The regression metrics, each of shape (n_sizes, r2_rep), from rows ``(r2, mean_corr, mean_corr_outside,
        r2_heldout)`` per distinct chunk (shape (len(regression), 4))."""
        stats = np.empty((4, len(self.sizes), self.r2_rep))
        for row, places in zip(per_chunk, self.places):
            for i, r in places:
                stats[:, i, r] = row
        names = ("r2", "mean_corr", "mean_corr_outside", "r2_heldout")
        return {(name, "test"): stats[k] for k, name in enumerate(names)}


class _Refinement(ChunkAnalysis):
    """The refinement's analysis: the chunks of each size come from streams of their own, keyed by the size."""

    def _draw(self, width: int, sizes, acc_rep: int, r2_rep: int) -> ChunkDraws:
        acc, reg = {}, {}
        for w in sizes:
            # spawn keys (2, w) and (3, w): apart from the first pass's two streams, (0,) and (1,), and their children
            a = np.random.default_rng(np.random.SeedSequence(self.random_state, spawn_key=(2, int(w))))
            r = np.random.default_rng(np.random.SeedSequence(self.random_state, spawn_key=(3, int(w))))
            acc[w], reg[w] = draw_chunks(width, w, acc_rep, a), draw_chunks(width, w, r2_rep, r)
        draws = ChunkDraws.of(sizes, acc, reg)
        self.chunk_sizes_, self.acc_chunks_, self.r2_chunks_ = list(sizes), acc, reg
        return draws


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


def _fit_cpu(repset, draws: ChunkDraws, *, readout, alpha, block_rows, heldout, bar):
    """The analysis on the CPU: ``(values, timings, workers)``.

    Everything runs as tasks of one pool of workers, forked once (see
    :mod:`redrep.core.parallel`): the Gram matrices first, then the
    accuracies; the regressions are queued as soon as the Gram matrices are in.
    """
    names = repset.names
    split_names = {s: names.get(f"features_{s}", f"features_{s}") for s in ("train", "test")}
    gram_splits = ("test", "train") if heldout else ("test",)
    jobs = {}
    for split in gram_splits:
        feats = getattr(repset, f"features_{split}")
        jobs[f"gram_{split}"] = GramJob(feats, block_rows=block_rows, name=split_names[split])
    for split in ("train", "test"):
        jobs[f"accuracy_{split}"] = AccuracyJob(
            getattr(repset, f"features_{split}"),
            getattr(repset, f"labels_{split}"),
            *readout,
            draws.accuracy,
            block_rows=block_rows,
            name=split_names[split],
            like=jobs.get("accuracy_train"),
            check=split not in gram_splits,  # the Gram tasks read the same rows and check them
        )
    first = [(name, task) for name, job in jobs.items() for task in job.tasks()]  # Gram, then accuracies
    jobs["regression_test"] = RegressionJob(repset.width, repset.n_test, draws.regression, alpha, heldout)
    with Pool(jobs, work=sum(job.work() for job in jobs.values())) as pool:
        correct, per_chunk = _run_pool(pool, jobs, first, gram_splits, bar)
    values = {}
    for split in ("train", "test"):
        values[("accuracy", split)] = draws.accuracy_values(jobs[f"accuracy_{split}"].accuracies(correct[split]))
    values.update(draws.regression_values(per_chunk))
    # each part's worker-seconds over the workers: its share of the time the pool ran, the parts adding up to it
    timings = {name: seconds / pool.n for name, seconds in pool.seconds.items()}
    return values, timings, pool.n


def _run_pool(pool, jobs, first, gram_splits, bar):
    """Run the Gram and accuracy tasks ``first``, then the regressions: the counts by split, the regression rows."""
    regression = jobs["regression_test"]
    reg_tasks = [("regression_test", b) for b in regression.tasks(pool.n)]
    gram_totals = {s: {} for s in gram_splits}  # column sums of the Gram tasks, by task
    correct = {s: 0 for s in ("train", "test")}
    per_chunk = np.empty((len(regression.chunks), 4))
    with bar(len(first) + len(reg_tasks), "chunk analysis", "tasks") as progress:
        reg_stream = None
        for i, result in pool.imap_unordered(first):
            name, payload = first[i]
            job, split = name.split("_")
            if job == "gram":
                gram_totals[split][payload] = result
            else:
                correct[split] = correct[split] + result[0]
            progress.update(1)
            if reg_stream is None and all(len(gram_totals[s]) == len(jobs[f"gram_{s}"].spans) for s in gram_splits):
                grams = {s: jobs[f"gram_{s}"].combine(gram_totals[s]) for s in gram_splits}
                regression.prepare(grams["test"], grams.get("train"))
                del grams
                reg_stream = pool.imap_unordered(reg_tasks)
        for _, batch in reg_stream:
            for i_r, s, r2_ho in batch:
                per_chunk[i_r] = (s.r2, s.mean_corr, s.mean_corr_outside, r2_ho)
            progress.update(1)
    return correct, per_chunk


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
