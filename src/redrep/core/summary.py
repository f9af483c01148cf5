"""Derived quantities of a chunk analysis: critical chunk size with its uncertainty, decay exponent, clones.

* **Critical chunk size** ``w_c*`` (docs/method.md#critical-chunk-size): the
  smallest chunk size whose random chunks fit the training set and
  reconstruct the whole layer, under a :class:`Criterion`. By default a size
  qualifies when at least ``fit_fraction`` (0.9) of its random chunks
  misclassify at most ``train_tolerance`` (1) training samples and the mean
  held-out R^2 of its chunks is at least ``r2_min`` (0.95). The previous
  criterion (mean training error at most ``train_error_max``, in-sample R^2)
  stays available.
* **Its uncertainty**: a bootstrap over the random chunks of every size (the
  chunks are resampled within each size, ``w_c*`` recomputed), a percentile
  interval for ``w_c*`` and for ``W / w_c*``; the near misses of the size
  below ``w_c*``; and ``w_c*`` over a small grid of thresholds.
* **Decay exponent**: the slope of an ordinary least-squares fit of
  ``log(test error - error_inf)`` against ``log(w_c)`` over the chunk sizes
  ``w_c >= w_c*`` where the difference is positive, with its standard error.
  Averaging independent noisy copies gives -1/2 (paper, Fig. 3b).
* **Number of clones** ``W / w_c*``: how many disjoint chunks of the critical
  size the layer holds.

Everything here is a pure function of arrays: :class:`ChunkCurves` gathers the
curves (and, when kept, the value of every random chunk) of an analysis in
memory (:meth:`ChunkCurves.from_analysis`) or of a results folder
(:meth:`ChunkCurves.from_results`), and :func:`summarize` computes the
:class:`Summary` that ``results.json`` stores, the same for both.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from . import metrics as _metrics
from .validation import RedrepError, check_float, check_int

#: Default criterion of the critical chunk size (docs/method.md#critical-chunk-size): a chunk fits the training set
#: when it misclassifies at most TRAIN_TOLERANCE training samples, and a size qualifies when at least FIT_FRACTION of
#: its random chunks fit and the mean R^2 of the kind R2_KIND of its chunks is at least R2_MIN.
TRAIN_TOLERANCE = 1
FIT_FRACTION = 0.9
R2_MIN = 0.95
R2_KINDS = ("heldout", "in-sample")
R2_KIND = "heldout"
#: The threshold of the mean criterion, when it is chosen instead (``train_error_max``): the paper's mean of 0.
TRAIN_ERROR_MAX = 0.0
#: Sizes analysed between the power of 2 below w_c* and w_c* by default (docs/method.md#refined-chunk-sizes).
REFINE = 3
#: The bootstrap over chunks: replicates and the level of the percentile interval.
BOOTSTRAP_REPLICATES = 2000
BOOTSTRAP_LEVEL = 0.95
#: A size that misses the R^2 condition by less than this is a near miss.
NEAR_MISS_R2 = 0.01
#: The grid of the sensitivity table (the criterion's own values are added to it).
SENSITIVITY_TOLERANCES = (0, 1, 2, 5, 10)
SENSITIVITY_ERROR_MAX = (0.0, 1e-4, 1e-3, 1e-2)
SENSITIVITY_R2 = (0.9, 0.95, 0.98, 0.99)
#: The decay exponent of averaging independent noisy clones (paper, Fig. 3b).
PAPER_EXPONENT = -0.5
#: A decay exponent whose standard error is at least this is "not resolved": the uncertainty is as large as
#: the w_c^(-1/2) it would test (docs/method.md#decay-exponent).
EXPONENT_UNRESOLVED_SE = 0.5
#: Slack on the comparisons, so that a mean written to CSV and read back still compares as computed.
_TOL = 1e-12


# --------------------------------------------------------------------------- statistics of chunk values
def describe_values(v) -> dict:
    """Mean, standard deviation (ddof 1), standard error and count of the finite values of ``v``."""
    v = np.asarray(v, dtype=np.float64)
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return {"mean": float("nan"), "std": float("nan"), "sem": float("nan"), "n": 0}
    std = float(v.std(ddof=1)) if n > 1 else 0.0
    return {"mean": float(v.mean()), "std": std, "sem": std / np.sqrt(n), "n": n}


def mean_sem(values, missing=math.nan) -> tuple:
    """(mean, standard error of the mean, count) of the finite ``values`` (:func:`describe_values`).

    ``missing`` stands for a mean of no value and for the standard error of one.
    """
    d = describe_values(values)
    n = d["n"]
    return (d["mean"] if n else missing), (d["sem"] if n > 1 else missing), n


# --------------------------------------------------------------------------- the criterion
@dataclass(frozen=True)
class Criterion:
    """When a chunk size is critical (docs/method.md#critical-chunk-size).

    Parameters
    ----------
    train_tolerance : int, default 1
        A chunk fits the training set when it misclassifies at most this many training samples.
    fit_fraction : float in (0, 1], default 0.9
        A size meets the training condition when at least this fraction of its random chunks fit.
    r2_min : float, default 0.95
        ... and the mean R^2 of its chunks is at least this.
    r2_kind : {"heldout", "in-sample"}, default "heldout"
        Which R^2: fitted on the training set and scored on the test set, or fitted and scored on the
        test set (the published one, biased upwards by about ``w_c / N_test`` of the unexplained variance).
    train_error_max : float or None, default None
        When set, the mean criterion replaces the two above: the mean training error of the chunks is at
        most this (0 with ``r2_kind="in-sample"`` is the criterion of the paper and of earlier redrep).
    """

    train_tolerance: int = TRAIN_TOLERANCE
    fit_fraction: float = FIT_FRACTION
    r2_min: float = R2_MIN
    r2_kind: str = R2_KIND
    train_error_max: float | None = None

    def validated(self) -> Criterion:
        check_int(self.train_tolerance, "train_tolerance", min_value=0)
        f = check_float(self.fit_fraction, "fit_fraction", max_value=1.0)
        if f <= 0:
            raise RedrepError(f"fit_fraction: expected a fraction in (0, 1], found {f}")
        check_float(self.r2_min, "r2_min", max_value=1.0)
        if self.r2_kind not in R2_KINDS:
            raise RedrepError(f"r2_kind: expected one of {', '.join(R2_KINDS)}, found {self.r2_kind!r}")
        check_float(self.train_error_max, "train_error_max", min_value=0.0, max_value=1.0, allow_none=True)
        return self

    @property
    def mode(self) -> str:
        """``"fraction"`` (a fraction of chunks within a tolerance) or ``"mean"`` (the mean training error)."""
        return "fraction" if self.train_error_max is None else "mean"

    def replace(self, **changes) -> Criterion:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        e = self.train_error_max
        return {
            "mode": self.mode,
            "train_tolerance": int(self.train_tolerance),
            "fit_fraction": float(self.fit_fraction),
            "r2_min": float(self.r2_min),
            "r2_kind": self.r2_kind,
            "train_error_max": None if e is None else float(e),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Criterion:
        """The criterion of a stored summary (``to_dict``); keys it does not know are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names}).validated()

    def describe(self, r2_kind: str | None = None) -> str:
        """The criterion in words (``r2_kind``: the kind actually used, when it differs)."""
        kind = _R2_WORDS[r2_kind or self.r2_kind]
        if self.mode == "mean":
            train = f"mean training error ≤ {self.train_error_max:g}"
        else:
            train = (
                f"at least {_pct(self.fit_fraction)} of random chunks misclassify at most "
                f"{_samples(self.train_tolerance)}"
            )
        return f"{train}, and mean {kind} ≥ {self.r2_min:g}"

    def short(self, r2_kind: str | None = None) -> str:
        """The criterion in a few words, for figure titles."""
        kind = "held-out R²" if (r2_kind or self.r2_kind) == "heldout" else "R²"
        if self.mode == "mean":
            train = f"train error ≤ {self.train_error_max:g}"
        else:
            train = f"{_pct(self.fit_fraction)} of chunks ≤ {self.train_tolerance:g} misclassified"
        return f"{train}, {kind} ≥ {self.r2_min:g}"


_R2_WORDS = {"heldout": "held-out R²", "in-sample": "in-sample R²"}


def _pct(f: float) -> str:
    return f"{100 * f:.3g} %"


def _samples(n) -> str:
    return f"{n:g} training sample" + ("" if n == 1 else "s")


# --------------------------------------------------------------------------- curves
@dataclass(frozen=True)
class Curve:
    """One metric against chunk size.

    Attributes
    ----------
    chunk_size : ndarray of shape (n,), ascending
    mean : ndarray of shape (n,), the mean over random chunks
    sem : ndarray of shape (n,), its standard error (NaN where unknown)
    """

    chunk_size: np.ndarray
    mean: np.ndarray
    sem: np.ndarray

    @classmethod
    def from_arrays(cls, chunk_size, mean, sem=None, *, name: str = "curve") -> Curve:
        x = np.asarray(chunk_size, dtype=np.float64).ravel()
        y = np.asarray(mean, dtype=np.float64).ravel()
        s = np.full_like(y, np.nan) if sem is None else np.asarray(sem, dtype=np.float64).ravel()
        if not (x.size == y.size == s.size):
            raise RedrepError(
                f"{name}: expected chunk_size, mean and sem of equal length, found {x.size}, {y.size} and {s.size}"
            )
        if x.size == 0:
            raise RedrepError(f"{name}: expected at least one chunk size, found none")
        if not np.all(np.isfinite(x)) or np.any(x < 1):
            raise RedrepError(f"{name}: expected chunk sizes >= 1, found {x.tolist()}")
        order = np.argsort(x, kind="stable")
        x, y, s = x[order], y[order], s[order]
        if np.any(np.diff(x) == 0):
            raise RedrepError(f"{name}: expected distinct chunk sizes, found {x.tolist()}")
        return cls(x, y, s)

    def at(self, sizes) -> np.ndarray:
        """Means at the given chunk sizes (NaN where this curve has no point)."""
        idx = {float(w): i for i, w in enumerate(self.chunk_size)}
        return np.array([self.mean[idx[float(w)]] if float(w) in idx else np.nan for w in sizes])


class ChunkCurves:
    """The curves of a chunk analysis, one per declared metric (:mod:`redrep.core.metrics`), accuracies as errors.

    Parameters
    ----------
    train_error, test_error, r2, mean_corr, mean_corr_outside : Curve, optional
        The curves of the metrics with those ``curve`` names, by keyword or in this order.
    error_inf : float or None, the test error of a large ensemble
    width : int or None, the layer width W (default: the largest chunk size)
    label : str, a short name of the input for titles
    curves : dict of curve name -> Curve, optional
        The curves of any other declared metric (``r2_heldout``, say).
    n_train : int or None, the number of training samples (turns training errors into misclassified samples)
    chunk_values : dict of curve name -> {chunk size: ndarray of shape (reps,)}, optional
        The value of every random chunk, as shown (errors for accuracies); the bootstrap and the
        fraction of chunks that fit need them (without them, see docs/method.md#critical-chunk-size).
    refinement : dict or None, the refined sizes of the analysis (:func:`refinement_info`)
    seed : int or None, the seed of the analysis (the bootstrap's by default)

    Attributes
    ----------
    curves : dict of curve name -> Curve, in the order of :data:`redrep.core.metrics.METRICS`,
        only the metrics present
    <curve name> : Curve or None for every declared metric (``curves.test_error``, ``curves.r2_heldout``):
        None when the results lack it. The training and test errors and R^2 are always present.
    error_inf, width, label, n_train, chunk_values, refinement, seed : as given
    """

    _NAMED = ("train_error", "test_error", "r2", "mean_corr", "mean_corr_outside")

    def __init__(
        self,
        *args,
        error_inf=None,
        width=None,
        label: str = "",
        curves=None,
        n_train=None,
        chunk_values=None,
        refinement=None,
        seed=None,
        **named,
    ):
        if len(args) > len(self._NAMED):
            raise TypeError(f"ChunkCurves takes at most {len(self._NAMED)} curves by position")
        given = dict(curves or {})
        given.update({k: v for k, v in zip(self._NAMED, args)})
        declared = _metrics.by_curve()
        unknown = sorted(set(named) - set(declared))
        if unknown:
            raise TypeError(f"ChunkCurves: no declared metric with curve name(s) {', '.join(unknown)}")
        given.update(named)
        unknown = sorted(set(given) - set(declared))
        if unknown:
            raise RedrepError(f"curves: expected curve names of declared metrics, found {', '.join(unknown)}")
        ordered = {k: given[k] for k in declared if given.get(k) is not None}
        for m in declared.values():
            if m.required and m.curve not in ordered:
                raise RedrepError(f"curves: expected a curve of {m.label} ({m.name}, {m.split}), found none")
        self.curves = ordered
        if error_inf is not None:
            error_inf = check_float(error_inf, "error_inf", min_value=0.0, max_value=1.0)
        self.error_inf = error_inf
        # without the input's width, the largest chunk is the whole layer
        self.width = int(width) if width is not None else int(ordered["train_error"].chunk_size.max())
        self.n_train = None if n_train is None else check_int(n_train, "n_train", min_value=1)
        self.chunk_values = {k: dict(v) for k, v in (chunk_values or {}).items()}
        self.refinement = refinement
        self.seed = seed
        self.label = label

    def __getattr__(self, name):
        # only reached for attributes not set in __init__: curves of declared metrics
        if name.startswith("_") or name == "curves":
            raise AttributeError(name)
        if name in _metrics.by_curve():
            return self.__dict__.get("curves", {}).get(name)
        raise AttributeError(f"ChunkCurves has no attribute {name!r}")

    def __setattr__(self, name, value):
        if "label" in self.__dict__:  # set last in __init__, then frozen like the dataclasses around it
            raise AttributeError("ChunkCurves is immutable")
        object.__setattr__(self, name, value)

    def metrics(self):
        """The declared metrics present, in declaration order, as ``(Metric, Curve)`` pairs."""
        declared = _metrics.by_curve()
        return [(declared[k], c) for k, c in self.curves.items()]

    @classmethod
    def from_values(cls, chunk_sizes, values: dict, **kw) -> ChunkCurves:
        """Curves from the value of every random chunk: ``values[(metric, split)]`` of shape (n_sizes, reps).

        The means and standard errors are those of ``results.csv`` (:func:`describe_values`), so curves
        built here and curves read back from a results folder are the same numbers.
        """
        sizes = [int(w) for w in chunk_sizes]
        curves, per_chunk = {}, {}
        for m in _metrics.METRICS:
            v = values.get(m.key)
            if v is None:
                continue
            v = np.asarray(v, dtype=np.float64)
            # as results.csv has them: statistics of the stored values, the mean then shown (an error for an accuracy)
            stats = [describe_values(row) for row in v]
            means, sems = m.shown(np.array([s["mean"] for s in stats])), [s["sem"] for s in stats]
            curves[m.curve] = Curve.from_arrays(sizes, means, sems, name=f"{m.name} ({m.split})")
            per_chunk[m.curve] = dict(zip(sizes, m.shown(v)))
        return cls(curves=curves, chunk_values=per_chunk, **kw)

    @classmethod
    def from_analysis(cls, analysis) -> ChunkCurves:
        """Curves of a fitted :class:`~redrep.core.analysis.ChunkAnalysis`, in memory, with every chunk's values."""
        return cls.from_values(
            analysis.chunk_sizes_,
            analysis.values_,
            error_inf=analysis.error_inf_,
            width=analysis.width_,
            label=getattr(analysis, "label_", ""),
            n_train=getattr(analysis, "n_train_", None),
            refinement=getattr(analysis, "refinement_", None),
            seed=analysis.random_state,
        )

    @classmethod
    def from_results(cls, results) -> ChunkCurves:
        """Curves of a :class:`~redrep.storage.results.Results`: every declared metric it holds.

        A required metric that is missing gives a one-line error; the others
        (a metric declared after the folder was written, say) are left out. The
        value of every chunk comes along when the folder keeps them (``chunks.npz``).
        """
        curves = {}
        for m in _metrics.METRICS:
            if not m.required and not results.has(m.name, m.split):
                continue
            s = results.series(m.name, m.split)  # a required one missing: the one-line error naming the file
            curves[m.curve] = Curve.from_arrays(
                s["chunk_size"], m.shown(s["mean"]), s["sem"], name=f"{m.name} ({m.split})"
            )
        doc = results.doc
        inp = doc.get("input") if isinstance(doc.get("input"), dict) else {}
        meta = inp.get("meta") if isinstance(inp.get("meta"), dict) else {}
        label = str(meta.get("dataset") or meta.get("source") or results.path)
        error_inf = results.error_inf
        if error_inf is not None and not (isinstance(error_inf, (int, float)) and 0 <= error_inf <= 1):
            raise RedrepError(
                f"{results.path}/results.json: expected error_inf to be a number in [0, 1] or null, found {error_inf!r}"
            )
        params = doc.get("params") if isinstance(doc.get("params"), dict) else {}
        seed = params.get("seed")
        refinement = doc.get("refinement")
        return cls(
            curves=curves,
            error_inf=None if error_inf is None else float(error_inf),
            width=_positive_int(inp.get("width")),
            label=label,
            n_train=_positive_int(inp.get("n_train")),
            chunk_values=_chunk_values(results),
            refinement=refinement if isinstance(refinement, dict) else None,
            seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        )


def _positive_int(v):
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 1 else None


def _chunk_values(results) -> dict:
    """``{curve name: {size: values as shown}}`` from a results folder's ``chunks.npz``, or {} without one."""
    read = getattr(results, "chunk_values", None)
    stored = read() if read is not None else None
    if not stored:
        return {}
    sizes, values = stored
    out = {}
    for m in _metrics.METRICS:
        if m.key in values:
            out[m.curve] = dict(zip((int(w) for w in sizes), m.shown(np.asarray(values[m.key], dtype=np.float64))))
    return out


# --------------------------------------------------------------------------- pure functions
def critical_chunk_size(
    chunk_sizes, train_error, r2, *, train_error_max: float = TRAIN_ERROR_MAX, r2_min: float = R2_MIN
) -> int | None:
    """The mean criterion: the smallest chunk size with ``train_error <= train_error_max`` and ``r2 >= r2_min``.

    Parameters
    ----------
    chunk_sizes : array of shape (n,)
    train_error, r2 : arrays of shape (n,), mean training error and mean R^2 at those sizes
        (NaN never qualifies)
    train_error_max, r2_min : thresholds

    Returns
    -------
    int, or None when no chunk size meets both thresholds.
    """
    w = np.asarray(chunk_sizes, dtype=np.float64)
    e = np.asarray(train_error, dtype=np.float64)
    r = np.asarray(r2, dtype=np.float64)
    if not (w.shape == e.shape == r.shape) or w.ndim != 1:
        raise RedrepError(
            f"critical_chunk_size: expected 1-D arrays of equal length, found shapes {w.shape}, {e.shape}, {r.shape}"
        )
    return _first(w, (e <= train_error_max + _TOL) & (r >= r2_min - _TOL))


def _first(sizes, ok) -> int | None:
    """The smallest size where ``ok`` holds (sizes ascending or not), or None."""
    ok = np.asarray(ok, dtype=bool)
    return int(np.asarray(sizes)[ok].min()) if ok.any() else None


def misclassified(train_error, n_train) -> np.ndarray:
    """Misclassified training samples from training errors: ``train_error * n_train``, rounded (an exact count).

    Without ``n_train``, 0 where the error is 0 and infinity elsewhere (a count that is unknown but not 0).
    """
    e = np.asarray(train_error, dtype=np.float64)
    if n_train is None:
        return np.where(e <= _TOL, 0.0, np.inf)
    return np.rint(e * n_train)


def fit_fraction(chunk_errors, n_train, tolerance: int) -> float:
    """The fraction of chunks that misclassify at most ``tolerance`` training samples.

    Parameters
    ----------
    chunk_errors : array of shape (reps,), the training error of each random chunk (NaN is left out)
    n_train : int or None, training samples
    tolerance : int
    """
    e = np.asarray(chunk_errors, dtype=np.float64)
    e = e[np.isfinite(e)]
    if e.size == 0:
        return math.nan
    return float(np.mean(misclassified(e, n_train) <= tolerance))


def fit_fraction_bound(mean_error, n_train, tolerance: int) -> float:
    """A lower bound on the fraction of chunks that fit, from the mean training error alone (Markov's inequality).

    With ``c`` the misclassified samples of a random chunk, ``P(c > t) <= E[c] / (t + 1)``; so at least
    ``1 - mean * n_train / (t + 1)`` of the chunks misclassify at most ``t`` (exact when the mean is 0).
    """
    if not math.isfinite(mean_error):
        return math.nan
    if n_train is None:  # the mean count is unknown unless it is 0
        return 1.0 if mean_error <= _TOL else 0.0
    return max(0.0, 1.0 - mean_error * n_train / (tolerance + 1))  # a mean count: not rounded


@dataclass(frozen=True)
class PowerLawFit:
    """``y ~ prefactor * w**exponent``, fitted on log-log axes.

    Attributes
    ----------
    exponent : float, the slope of log y against log w
    exponent_se : float, its standard error (NaN with two points: no residual degrees of freedom)
    prefactor : float, exp(intercept)
    chunk_sizes : tuple of int, the sizes used
    """

    exponent: float
    exponent_se: float
    prefactor: float
    chunk_sizes: tuple = field(default_factory=tuple)

    def __call__(self, w):
        return self.prefactor * np.asarray(w, dtype=np.float64) ** self.exponent


def fit_power_law(chunk_sizes, y, *, min_size: float = 0.0) -> PowerLawFit | None:
    """Least-squares fit of ``log y`` against ``log w`` over ``w >= min_size`` where ``y > 0`` (scipy's linregress).

    Parameters
    ----------
    chunk_sizes : array of shape (n,)
    y : array of shape (n,), e.g. test error - error_inf
    min_size : only chunk sizes at least this large enter the fit

    Returns
    -------
    PowerLawFit, or None with fewer than two usable points (or a single distinct size).
    The standard error is the usual OLS one, ``sqrt(s^2 / sum (x - mean x)^2)`` with
    ``s^2`` the residual variance on ``n - 2`` degrees of freedom (NaN with two points).
    """
    from scipy.stats import linregress  # here: importing scipy.stats costs 0.2 s

    w = np.asarray(chunk_sizes, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    use = np.isfinite(w) & np.isfinite(y) & (w >= min_size) & (y > 0) & (w > 0)
    if use.sum() < 2 or np.unique(w[use]).size < 2:
        return None
    res = linregress(np.log(w[use]), np.log(y[use]))
    se = float(res.stderr) if use.sum() > 2 else float("nan")
    return PowerLawFit(float(res.slope), se, math.exp(float(res.intercept)), tuple(int(v) for v in w[use]))


def number_of_clones(width, w_c_star) -> float | None:
    """``W / w_c*``: disjoint chunks of the critical size in the layer (None without ``w_c*``)."""
    if w_c_star is None:
        return None
    return float(width) / float(w_c_star)


def refine_sizes(chunk_sizes, w_c_star, n: int) -> list[int]:
    """``n`` sizes evenly spaced strictly between the largest size below ``w_c*`` and ``w_c*`` (docs/method.md).

    Parameters
    ----------
    chunk_sizes : the sizes analysed
    w_c_star : int or None, the critical size among them
    n : how many sizes to add

    Returns
    -------
    list of int, ascending, none of them already analysed; empty without ``w_c*``, when ``w_c*`` is the
    smallest size, or when no integer lies in between.
    """
    n = check_int(n, "refine", min_value=0)
    below = [int(w) for w in chunk_sizes if w_c_star is not None and w < w_c_star]
    if not below or n == 0:
        return []
    lo, hi = max(below), int(w_c_star)
    new = {lo + round(j * (hi - lo) / (n + 1)) for j in range(1, n + 1)}
    return sorted(w for w in new if lo < w < hi and w not in set(int(x) for x in chunk_sizes))


def refinement_info(chunk_sizes, w_c_star, n: int, sizes) -> dict | None:
    """What a refinement added: ``{"between": [lo, w_c*], "sizes": [...], "step": (w_c* - lo) / (n + 1)}``."""
    if not sizes:
        return None
    lo = max(int(w) for w in chunk_sizes if w < w_c_star)
    return {"between": [lo, int(w_c_star)], "sizes": [int(w) for w in sizes], "step": (w_c_star - lo) / (n + 1)}


# --------------------------------------------------------------------------- the criterion, size by size
@dataclass(frozen=True)
class SizeCheck:
    """How one chunk size fares under a criterion.

    Attributes
    ----------
    chunk_size : int
    train_error : float, the mean training error of its chunks
    misclassified : float or None, the mean number of misclassified training samples per chunk
    fit_fraction : float or None, the fraction of its chunks within the tolerance (fraction criterion;
        a lower bound from the mean when ``fit_fraction_is_bound``); None under the mean criterion
    fit_fraction_is_bound : bool
    n_chunks : int, random chunks with a training error
    r2 : float, the mean R^2 (of the kind used) of its chunks
    train_ok, r2_ok : bool, whether it meets each condition
    """

    chunk_size: int
    train_error: float
    misclassified: float | None
    fit_fraction: float | None
    fit_fraction_is_bound: bool
    n_chunks: int
    r2: float
    train_ok: bool
    r2_ok: bool

    @property
    def ok(self) -> bool:
        return self.train_ok and self.r2_ok

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "ok": self.ok}


class _Evidence:
    """What the criterion reads, per chunk size (ascending): means, and the value of every chunk when kept."""

    def __init__(self, curves: ChunkCurves, r2_kind: str):
        self.notes = []
        r2_curve = curves.r2_heldout if r2_kind == "heldout" else curves.r2
        if r2_kind == "heldout" and (r2_curve is None or not np.isfinite(r2_curve.mean).any()):
            self.notes.append("held-out R² is absent from these results: the criterion uses the in-sample R²")
            r2_kind, r2_curve = "in-sample", curves.r2
        self.r2_kind = r2_kind
        r2_name = "r2_heldout" if r2_kind == "heldout" else "r2"
        self.sizes = np.intersect1d(curves.train_error.chunk_size, r2_curve.chunk_size).astype(np.int64)
        self.train_mean = curves.train_error.at(self.sizes)
        self.r2_mean = r2_curve.at(self.sizes)
        self.n_train = curves.n_train
        tv, rv = curves.chunk_values.get("train_error", {}), curves.chunk_values.get(r2_name, {})
        self.train_chunks = [_finite(tv.get(int(w))) for w in self.sizes]
        self.r2_chunks = [_finite(rv.get(int(w))) for w in self.sizes]
        self.per_chunk = all(v is not None for v in self.train_chunks + self.r2_chunks)


def _finite(v):
    if v is None:
        return None
    v = np.asarray(v, dtype=np.float64)
    return v[np.isfinite(v)]


def _check(ev: _Evidence, i: int, crit: Criterion) -> SizeCheck:
    e, chunks, n_train = float(ev.train_mean[i]), ev.train_chunks[i], ev.n_train
    frac, bound = None, False
    if crit.mode == "mean":
        train_ok = e <= crit.train_error_max + _TOL
    elif chunks is not None:
        frac = fit_fraction(chunks, n_train, crit.train_tolerance)
        train_ok = frac >= crit.fit_fraction - _TOL
    else:
        frac, bound = fit_fraction_bound(e, n_train, crit.train_tolerance), True
        train_ok = frac >= crit.fit_fraction - _TOL
    r2 = float(ev.r2_mean[i])
    mis = None if n_train is None or not math.isfinite(e) else float(e * n_train)
    return SizeCheck(
        chunk_size=int(ev.sizes[i]),
        train_error=e,
        misclassified=mis,
        fit_fraction=frac,
        fit_fraction_is_bound=bound,
        n_chunks=0 if chunks is None else int(chunks.size),
        r2=r2,
        train_ok=bool(train_ok),
        r2_ok=bool(r2 >= crit.r2_min - _TOL),
    )


def _checks(ev: _Evidence, crit: Criterion) -> list[SizeCheck]:
    return [_check(ev, i, crit) for i in range(ev.sizes.size)]


def _critical(checks) -> int | None:
    return _first([c.chunk_size for c in checks], [c.ok for c in checks])


# --------------------------------------------------------------------------- bootstrap over chunks
def resample_indices(seed: int, chunk_size: int, stream: int, n: int, replicates: int) -> np.ndarray:
    """Indices of the bootstrap resamples of the ``n`` chunks of one size: shape (replicates, n).

    Each size has its own generator, seeded by ``(seed, chunk_size, stream)`` (stream 0: the accuracy
    chunks, 1: the regression chunks), so adding a size (a refinement) leaves the others' resamples as
    they were.
    """
    return np.random.default_rng([int(seed), int(chunk_size), int(stream)]).integers(0, n, size=(replicates, n))


def bootstrap_w_c_star(ev: _Evidence, crit: Criterion, *, replicates: int, seed: int) -> np.ndarray:
    """``w_c*`` of every bootstrap replicate (inf where no size qualifies): shape (replicates,).

    A replicate resamples, with replacement, the chunks of every size (the accuracy chunks and the
    regression chunks each within their own size) and applies the criterion to them.
    """
    ok = np.zeros((replicates, ev.sizes.size), dtype=bool)
    for i, w in enumerate(ev.sizes):
        e, r = ev.train_chunks[i], ev.r2_chunks[i]
        if e.size == 0 or r.size == 0:
            continue
        if crit.mode == "mean":
            train_ok = e[resample_indices(seed, w, 0, e.size, replicates)].mean(axis=1) <= crit.train_error_max + _TOL
        else:
            fits = (misclassified(e, ev.n_train) <= crit.train_tolerance).astype(np.float64)
            train_ok = fits[resample_indices(seed, w, 0, e.size, replicates)].mean(axis=1) >= crit.fit_fraction - _TOL
        r2_ok = r[resample_indices(seed, w, 1, r.size, replicates)].mean(axis=1) >= crit.r2_min - _TOL
        ok[:, i] = train_ok & r2_ok
    return np.where(ok.any(axis=1), ev.sizes[np.argmax(ok, axis=1)], np.inf)


def percentile_interval(samples, level: float) -> tuple:
    """The ``level`` percentile interval of ``samples`` (values of the samples, no interpolation; inf stays inf)."""
    a = (1.0 - level) / 2
    lo, hi = np.quantile(np.asarray(samples, dtype=np.float64), [a, 1.0 - a], method="inverted_cdf")
    return float(lo), float(hi)


# --------------------------------------------------------------------------- near misses and sensitivity
@dataclass(frozen=True)
class NearMiss:
    """A chunk size that misses the criterion narrowly, in plain words."""

    chunk_size: int
    text: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _near_train(ev: _Evidence, i: int, crit: Criterion, c: SizeCheck) -> str | None:
    """Why the training condition of size ``i`` is missed narrowly, or None when it is not."""
    if crit.mode == "mean":
        if c.misclassified is None or c.misclassified > crit.train_error_max * ev.n_train + 1 + _TOL:
            return None
        return (
            f"their mean training error {c.train_error:.3g} ({c.misclassified:.3g} misclassified training samples per "
            f"chunk) misses ≤ {crit.train_error_max:g} by less than one sample"
        )
    relaxed = _check(ev, i, crit.replace(train_tolerance=crit.train_tolerance + 1)).fit_fraction
    of = "at least " if c.fit_fraction_is_bound else ""
    have = f"{of}{_pct(c.fit_fraction)} of them misclassify at most {_samples(crit.train_tolerance)}"
    if relaxed >= crit.fit_fraction - _TOL:
        return (
            f"{have} ({_pct(crit.fit_fraction)} needed), and {of}{_pct(relaxed)} would with one more misclassified "
            "sample allowed"
        )
    if c.n_chunks and c.fit_fraction >= crit.fit_fraction - 1.0 / c.n_chunks - _TOL:
        return f"{have}: one chunk short of the {_pct(crit.fit_fraction)} needed"
    return None


def near_misses(ev: _Evidence, crit: Criterion, checks, w_star) -> list[NearMiss]:
    """The size just below ``w_c*`` (the largest size without one) when it misses the criterion narrowly.

    Narrowly: the training condition would hold with one more misclassified sample allowed, or with one
    more chunk fitting; the R^2 condition is missed by less than :data:`NEAR_MISS_R2`.
    """
    below = [i for i, c in enumerate(checks) if w_star is None or c.chunk_size < w_star]
    if not below:
        return []
    i = below[-1]
    c = checks[i]
    if c.ok:
        return []
    parts = []
    if not c.train_ok:
        why = _near_train(ev, i, crit, c)
        if why is None:
            return []
        parts.append(why)
    if not c.r2_ok:
        if not c.r2 >= crit.r2_min - NEAR_MISS_R2:
            return []
        parts.append(f"their mean {_R2_WORDS[ev.r2_kind]} {c.r2:.4f} is within {NEAR_MISS_R2:g} of {crit.r2_min:g}")
    text = f"Chunks of {c.chunk_size} neurons narrowly miss the criterion: " + "; ".join(parts) + "."
    return [NearMiss(c.chunk_size, text)]


def sensitivity(ev: _Evidence, crit: Criterion) -> dict:
    """``w_c*`` over a grid of the training threshold x the R^2 threshold (the criterion's own values included).

    Returns
    -------
    dict with ``train_parameter`` (``"train_tolerance"`` or ``"train_error_max"``), ``train_values``,
    ``r2_min`` (the grid's values) and ``w_c_star``, a list per training value of ``w_c*`` per R^2 value.
    """
    if crit.mode == "mean":
        name, values = "train_error_max", sorted({*SENSITIVITY_ERROR_MAX, crit.train_error_max})
    else:
        name, values = "train_tolerance", sorted({*SENSITIVITY_TOLERANCES, crit.train_tolerance})
    r2s = sorted({*SENSITIVITY_R2, crit.r2_min})
    grid = [[_critical(_checks(ev, crit.replace(**{name: v}, r2_min=r))) for r in r2s] for v in values]
    return {"train_parameter": name, "train_values": values, "r2_min": r2s, "w_c_star": grid}


# --------------------------------------------------------------------------- everything at once
@dataclass(frozen=True)
class Summary:
    """What a chunk analysis says about redundancy; see the module docstring and ``docs/method.md``.

    Attributes
    ----------
    w_c_star : int or None
    criterion : Criterion, the criterion used
    r2_kind : str, the R^2 the criterion read (``criterion.r2_kind`` unless the results lack it)
    w_c_star_interval : (lo, hi) or None, the bootstrap percentile interval of ``w_c*`` (``hi`` None: in more
        than the interval's upper tail of the replicates no size qualifies); None without per-chunk values
    n_clones : float or None
    n_clones_interval : (lo, hi) or None, ``(W / hi, W / lo)`` (``lo`` None when ``hi`` is)
    bootstrap : dict or None, ``replicates``, ``level``, ``seed`` and ``without_w_c_star`` (the fraction of
        replicates where no size qualifies)
    checks : tuple of SizeCheck, the criterion at every size
    near_misses : tuple of NearMiss
    sensitivity : dict, :func:`sensitivity`
    refinement : dict or None, the sizes a refinement added (:func:`refinement_info`)
    exponent, exponent_se, prefactor : float or None, the fit above ``w_c*``
    fit_chunk_sizes : tuple of int, the sizes in the fit
    width : int
    n_train : int or None
    error_inf : float or None
    notes : tuple of str, plain statements of what could not be computed and why
    """

    w_c_star: int | None
    criterion: Criterion
    r2_kind: str
    w_c_star_interval: tuple | None
    n_clones: float | None
    n_clones_interval: tuple | None
    bootstrap: dict | None
    checks: tuple
    near_misses: tuple
    sensitivity: dict
    refinement: dict | None
    exponent: float | None
    exponent_se: float | None
    prefactor: float | None
    fit_chunk_sizes: tuple
    width: int
    n_train: int | None
    error_inf: float | None
    notes: tuple = ()

    @property
    def r2_min(self) -> float:
        return self.criterion.r2_min

    @property
    def train_error_max(self) -> float:
        """The mean criterion's threshold on the mean training error; 0 under the fraction criterion (none)."""
        return self.criterion.train_error_max if self.criterion.mode == "mean" else 0.0

    @property
    def fit(self) -> PowerLawFit | None:
        if self.exponent is None:
            return None
        se = float("nan") if self.exponent_se is None else self.exponent_se
        return PowerLawFit(self.exponent, se, self.prefactor, self.fit_chunk_sizes)

    def describe_criterion(self) -> str:
        return self.criterion.describe(self.r2_kind)

    def to_dict(self) -> dict:
        """JSON-ready (NaN becomes None), as stored in ``results.json["summary"]``."""
        return _clean(
            {
                "w_c_star": self.w_c_star,
                "w_c_star_interval": _listed(self.w_c_star_interval),
                "n_clones": self.n_clones,
                "n_clones_interval": _listed(self.n_clones_interval),
                "criterion": {**self.criterion.to_dict(), "r2_kind_used": self.r2_kind},
                "bootstrap": self.bootstrap,
                "near_misses": [m.to_dict() for m in self.near_misses],
                "by_size": [c.to_dict() for c in self.checks],
                "sensitivity": self.sensitivity,
                "refinement": self.refinement,
                "exponent": self.exponent,
                "exponent_se": self.exponent_se,
                "exponent_prefactor": self.prefactor,
                "exponent_fit_chunk_sizes": list(self.fit_chunk_sizes),
                "width": self.width,
                "n_train": self.n_train,
                "error_inf": self.error_inf,
                "notes": list(self.notes),
            }
        )

    def lines(self) -> list[str]:
        """The summary as printed by ``redrep analyze``, ``plot`` and ``report``."""
        out = []
        if self.w_c_star is None:
            out.append("w_c*: none (no chunk size meets the criterion)")
        else:
            out.append(
                f"w_c* = {self.w_c_star}{_interval_text(self.w_c_star_interval, self.bootstrap)}  "
                f"clones W/w_c* = {self.n_clones:.3g}{_interval_text(self.n_clones_interval, None, clones=True)}"
            )
        out.append(f"criterion: {self.describe_criterion()}")
        if self.exponent is not None:
            exp = f"{self.exponent:.3f}" + ("" if self.exponent_se is None else f" +/- {self.exponent_se:.3f}")
            out.append(f"decay exponent above w_c* = {exp}")
        out += [f"near miss: {m.text}" for m in self.near_misses]
        out += [f"note: {n}" for n in self.notes]
        return out


def _listed(t):
    return None if t is None else list(t)


def _clean(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _interval_text(iv, bootstrap, *, clones: bool = False) -> str:
    if iv is None:
        return ""
    lo, hi = iv
    fmt = (lambda v: f"{v:.3g}") if clones else (lambda v: f"{v:g}")
    lo_t = "below 1" if lo is None else fmt(lo)
    hi_t = ("none" if not clones else "n/a") if hi is None else fmt(hi)
    level = f"{100 * bootstrap['level']:g} % bootstrap interval " if bootstrap else ""
    return f" ({level}{lo_t} to {hi_t})"


def summarize(
    curves: ChunkCurves,
    criterion: Criterion | None = None,
    *,
    train_error_max: float | None = None,
    r2_min: float | None = None,
    replicates: int = BOOTSTRAP_REPLICATES,
    level: float = BOOTSTRAP_LEVEL,
    seed: int | None = None,
) -> Summary:
    """Critical chunk size with its bootstrap interval, near misses and sensitivity, decay exponent and clones.

    Parameters
    ----------
    curves : ChunkCurves (with the value of every chunk for the fraction criterion and the bootstrap)
    criterion : Criterion, default ``Criterion()``
    train_error_max, r2_min : when given, replace those of ``criterion`` (``train_error_max`` selects the
        mean criterion)
    replicates : bootstrap replicates (0: no interval)
    level : level of the percentile interval
    seed : seed of the bootstrap; default the analysis seed (``curves.seed``), else 0
    """
    crit = criterion if criterion is not None else Criterion()
    if train_error_max is not None:
        crit = crit.replace(train_error_max=train_error_max)
    if r2_min is not None:
        crit = crit.replace(r2_min=r2_min)
    crit = crit.validated()
    replicates = check_int(replicates, "replicates", min_value=0)
    level = check_float(level, "level", min_value=0.0, max_value=1.0)
    seed = check_int(seed if seed is not None else (curves.seed or 0), "seed", min_value=0)
    ev = _Evidence(curves, crit.r2_kind)
    notes = list(ev.notes)
    checks = _checks(ev, crit)
    w_star = _critical(checks)
    interval, clones_iv, boot = _bootstrap(ev, crit, replicates, level, seed, curves.width, notes)
    if not ev.per_chunk and crit.mode == "fraction":
        notes.append(
            "these results keep no value per chunk (chunks.npz): the fraction of chunks that fit is bounded from "
            "below by the mean training error (Markov's inequality), which can only place w_c* higher"
        )
    if w_star is None:
        notes.append(
            f"no chunk size meets the criterion ({crit.describe(ev.r2_kind)}): "
            "no critical chunk size, no exponent, no number of clones"
        )
    fit = _exponent(curves, w_star, notes)
    return Summary(
        w_c_star=w_star,
        criterion=crit,
        r2_kind=ev.r2_kind,
        w_c_star_interval=interval,
        n_clones=number_of_clones(curves.width, w_star),
        n_clones_interval=clones_iv,
        bootstrap=boot,
        checks=tuple(checks),
        near_misses=tuple(near_misses(ev, crit, checks, w_star)),
        sensitivity=sensitivity(ev, crit),
        refinement=curves.refinement,
        exponent=None if fit is None else fit.exponent,
        exponent_se=None if fit is None or not math.isfinite(fit.exponent_se) else fit.exponent_se,
        prefactor=None if fit is None else fit.prefactor,
        fit_chunk_sizes=() if fit is None else fit.chunk_sizes,
        width=int(curves.width),
        n_train=curves.n_train,
        error_inf=curves.error_inf,
        notes=tuple(notes),
    )


def _bootstrap(ev, crit, replicates, level, seed, width, notes):
    """(w_c* interval, clones interval, bootstrap dict) or three None, with a note saying why."""
    if replicates == 0:
        return None, None, None
    if not ev.per_chunk:
        notes.append("no bootstrap interval: these results keep no value per chunk (chunks.npz)")
        return None, None, None
    samples = bootstrap_w_c_star(ev, crit, replicates=replicates, seed=seed)
    lo, hi = percentile_interval(samples, level)
    interval = (None if not math.isfinite(lo) else int(lo), None if not math.isfinite(hi) else int(hi))
    clones = (
        None if interval[1] is None else width / interval[1],
        None if interval[0] is None else width / interval[0],
    )
    if interval[0] is None:  # no size qualifies in most replicates
        interval, clones = None, None
    boot = {
        "replicates": replicates,
        "level": level,
        "seed": seed,
        "method": "percentile; the chunks of each size resampled with replacement",
        "without_w_c_star": float(np.mean(~np.isfinite(samples))),
    }
    return interval, clones, boot


def _exponent(curves: ChunkCurves, w_star, notes) -> PowerLawFit | None:
    if w_star is None:
        return None
    if curves.error_inf is None:
        notes.append("error_inf is absent: the decay of test error - error_inf cannot be fitted")
        return None
    te = curves.test_error
    fit = fit_power_law(te.chunk_size, te.mean - curves.error_inf, min_size=w_star)
    if fit is None:
        n_pos = int(np.sum((te.chunk_size >= w_star) & (te.mean - curves.error_inf > 0)))
        notes.append(
            f"only {n_pos} chunk size(s) >= w_c* = {w_star} with test error above error_inf: "
            "need two to fit the exponent"
        )
    elif not math.isfinite(fit.exponent_se):
        notes.append("the exponent rests on two chunk sizes: no standard error")
    return fit


# --------------------------------------------------------------------------- in words
def _criterion_sentences(summary: Summary, curves: ChunkCurves) -> list[str]:
    """The sentences on w_c*: the criterion met (or not), its interval, the near misses."""
    W, crit = summary.width, summary.describe_criterion()
    by_size = {c.chunk_size: c for c in summary.checks}
    out = []
    if summary.w_c_star is not None:
        c = by_size[summary.w_c_star]
        bound = "at least " if c.fit_fraction_is_bound else ""
        fits = "" if c.fit_fraction is None else f"{bound}{_pct(c.fit_fraction)} of them fit, "
        out.append(
            f"Random chunks of w_c* = {summary.w_c_star} of the {W} neurons already meet the criterion ({crit}): "
            f"{fits}their mean training error is {c.train_error:.4g} and they reconstruct the whole layer with "
            f"{_R2_WORDS[summary.r2_kind]} = {c.r2:.4f}."
        )
        if summary.w_c_star_interval is not None:
            lo, hi = summary.w_c_star_interval
            b = summary.bootstrap
            where = f"between {lo} and {hi}" if hi is not None else f"at {lo} or above, or nowhere"
            out.append(
                f"Resampling the random chunks ({b['replicates']} bootstrap replicates) puts w_c* {where} "
                f"({100 * b['level']:g} % interval)."
            )
        if summary.n_clones is not None and summary.n_clones >= 2:
            out.append(
                f"The layer is redundant: it holds about {summary.n_clones:.3g} disjoint chunks of that size, "
                "each carrying the same information (clones) up to noise."
            )
        elif summary.w_c_star < W:
            out.append(
                f"The layer holds {summary.n_clones:.3g} chunks of that size, fewer than two disjoint ones: "
                "at most weakly redundant by this measure."
            )
        else:
            out.append(
                "Only the whole layer meets the criterion: by this measure the layer is not redundant "
                "(about one clone)."
            )
    else:
        parts = [f"No chunk size meets the criterion ({crit}), so the layer shows no redundancy by this measure."]
        last = summary.checks[-1] if summary.checks else None
        if last is not None and not last.train_ok:
            parts.append(
                f"Even the largest chunk (w_c = {last.chunk_size}) has training error {last.train_error:.4g}: "
                "the network does not fit its training set; a larger tolerance may be appropriate."
            )
        r2_ok = [c.chunk_size for c in summary.checks if c.r2_ok]
        if r2_ok:
            parts.append(f"{_R2_WORDS[summary.r2_kind]} reaches {summary.r2_min:g} from w_c = {min(r2_ok)} on.")
        else:
            best = max((c.r2 for c in summary.checks if math.isfinite(c.r2)), default=math.nan)
            parts.append(f"{_R2_WORDS[summary.r2_kind]} never reaches {summary.r2_min:g} (largest value {best:.4f}).")
        out.append(" ".join(parts))
    out += [m.text for m in summary.near_misses]
    return out


def reading(summary: Summary, curves: ChunkCurves) -> list[str]:
    """A short plain-language reading of the numbers, one sentence or two per item."""
    out = _criterion_sentences(summary, curves)
    if summary.exponent is not None:
        e, se = summary.exponent, summary.exponent_se
        if se is None:
            out.append(
                f"Above w_c*, test error - error_inf falls like w_c^{e:.2f} (two chunk sizes, no uncertainty); "
                "averaging independent noisy clones would give w_c^-0.5."
            )
        elif se >= EXPONENT_UNRESOLVED_SE:
            out.append(
                f"Above w_c*, the fit of test error - error_inf against w_c gives the exponent {e:.2f} +/- {se:.2f}: "
                "the decay is not resolved (the uncertainty is as large as the w_c^-0.5 it would test); more "
                "test samples, seeds or chunk sizes above w_c* are needed."
            )
        else:
            verdict = (
                "consistent with"
                if abs(e - PAPER_EXPONENT) <= max(2 * se, 1e-9)  # the floor: rounding of an exact fit, se 0
                else ("steeper than" if e < PAPER_EXPONENT else "shallower than")
            )
            out.append(
                f"Above w_c*, test error - error_inf falls like w_c^({e:.2f} +/- {se:.2f}) "
                f"over {len(summary.fit_chunk_sizes)} chunk sizes, {verdict} the w_c^-0.5 of averaging "
                "independent noisy clones."
            )
    elif curves.error_inf is None:
        out.append(
            "The ensemble test error error_inf is unknown, so the figure shows the absolute test error and "
            "no decay exponent is fitted."
        )
    mo = curves.mean_corr_outside
    if mo is not None and np.isfinite(mo.mean).sum() >= 2:
        fin = np.isfinite(mo.mean)
        x, y = mo.chunk_size[fin], mo.mean[fin]
        ref = summary.w_c_star if summary.w_c_star is not None and summary.w_c_star in x else int(x[-1])
        y_ref = float(mo.at([ref])[0])
        out.append(
            f"The reconstruction residuals of the neurons outside the chunk have mean absolute correlation "
            f"{y[0]:.3f} at w_c = {int(x[0])} and {y_ref:.3f} at w_c = {ref}; the closer to 0, the closer what "
            "the chunk leaves out is to independent noise."
        )
    if curves.error_inf is not None:
        full = float(curves.test_error.mean[-1])
        out.append(
            f"The largest chunk (w_c = {int(curves.test_error.chunk_size[-1])}) has test error {full:.4f}, "
            f"against {curves.error_inf:.4f} for the large ensemble."
        )
    return out
