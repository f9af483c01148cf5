"""Derived quantities of a chunk analysis: critical chunk size, decay exponent, number of clones.

* **Critical chunk size** ``w_c*``: the smallest chunk size whose mean
  training error is at most ``train_error_max`` (default 0: the chunk fits
  the training set) and whose mean R^2 is at least ``r2_min`` (default 0.95:
  the chunk reconstructs the whole layer).
* **Decay exponent**: the slope of an ordinary least-squares fit of
  ``log(test error - error_inf)`` against ``log(w_c)`` over the chunk sizes
  ``w_c >= w_c*`` where the difference is positive, with its standard error.
  Averaging independent noisy copies gives -1/2 (paper, Fig. 3b).
* **Number of clones** ``W / w_c*``: how many disjoint chunks of the critical
  size the layer holds.

Everything here is a pure function of arrays; :class:`ChunkCurves` gathers
the arrays of a results folder, and :func:`summarize` computes them all
(:func:`redrep.storage.results.summarize_folder` does both for a folder and stores the summary).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import metrics as _metrics
from .validation import RedrepError, check_float, check_int

#: Default thresholds of the critical chunk size.
TRAIN_ERROR_MAX = 0.0
R2_MIN = 0.95
#: The decay exponent of averaging independent noisy clones (paper, Fig. 3b).
PAPER_EXPONENT = -0.5
#: A decay exponent whose standard error is at least this is "not resolved": the uncertainty is as large as
#: the w_c^(-1/2) it would test (docs/method.md#decay-exponent).
EXPONENT_UNRESOLVED_SE = 0.5
#: Slack on the comparisons, so that a mean written to CSV and read back still compares as computed.
_TOL = 1e-12


def check_reading_config(config) -> None:
    """Check the fields that every analysis-and-reading config shares: acc_rep, r2_rep, seed and the thresholds."""
    from .analysis import MAX_REP  # here: a summary alone does not need the analysis

    check_int(config.acc_rep, "acc_rep", min_value=1, max_value=MAX_REP)
    check_int(config.r2_rep, "r2_rep", min_value=1, max_value=MAX_REP)
    check_int(config.seed, "seed", min_value=0)
    check_float(config.train_error_max, "train_error_max", min_value=0.0, max_value=1.0)
    check_float(config.r2_min, "r2_min", max_value=1.0)


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

    Attributes
    ----------
    curves : dict of curve name -> Curve, in the order of :data:`redrep.core.metrics.METRICS`,
        only the metrics present
    <curve name> : Curve or None for every declared metric (``curves.test_error``, ``curves.r2_heldout``):
        None when the results lack it. The training and test errors and R^2 are always present.
    error_inf, width, label : as given
    """

    _NAMED = ("train_error", "test_error", "r2", "mean_corr", "mean_corr_outside")

    def __init__(self, *args, error_inf=None, width=None, label: str = "", curves=None, **named):
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
        self.label = label

    def __getattr__(self, name):
        # only reached for attributes not set in __init__: curves of declared metrics
        if name.startswith("_") or name == "curves":
            raise AttributeError(name)
        if name in _metrics.by_curve():
            return self.__dict__.get("curves", {}).get(name)
        raise AttributeError(f"ChunkCurves has no attribute {name!r}")

    def __setattr__(self, name, value):
        if "label" in self.__dict__:  # set once in __init__, then frozen like the dataclasses around it
            raise AttributeError("ChunkCurves is immutable")
        object.__setattr__(self, name, value)

    def metrics(self):
        """The declared metrics present, in declaration order, as ``(Metric, Curve)`` pairs."""
        declared = _metrics.by_curve()
        return [(declared[k], c) for k, c in self.curves.items()]

    @classmethod
    def from_results(cls, results) -> ChunkCurves:
        """Curves of a :class:`~redrep.storage.results.Results`: every declared metric it holds.

        A required metric that is missing gives a one-line error; the others
        (a metric declared after the folder was written, say) are left out.
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
        width = inp.get("width")
        width = int(width) if isinstance(width, (int, float)) and not isinstance(width, bool) and width >= 1 else None
        meta = inp.get("meta") if isinstance(inp.get("meta"), dict) else {}
        label = str(meta.get("dataset") or meta.get("source") or results.path)
        error_inf = results.error_inf
        if error_inf is not None and not (isinstance(error_inf, (int, float)) and 0 <= error_inf <= 1):
            raise RedrepError(
                f"{results.path}/results.json: expected error_inf to be a number in [0, 1] or null, found {error_inf!r}"
            )
        return cls(
            curves=curves,
            error_inf=None if error_inf is None else float(error_inf),
            width=width,
            label=label,
        )


# --------------------------------------------------------------------------- pure functions
def critical_chunk_size(
    chunk_sizes, train_error, r2, *, train_error_max: float = TRAIN_ERROR_MAX, r2_min: float = R2_MIN
) -> int | None:
    """The smallest chunk size with ``train_error <= train_error_max`` and ``r2 >= r2_min``.

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
    ok = (e <= train_error_max + _TOL) & (r >= r2_min - _TOL)
    if not ok.any():
        return None
    return int(w[ok].min())


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
    """Least-squares fit of ``log y`` against ``log w`` over ``w >= min_size`` where ``y > 0``.

    Parameters
    ----------
    chunk_sizes : array of shape (n,)
    y : array of shape (n,), e.g. test error - error_inf
    min_size : only chunk sizes at least this large enter the fit

    Returns
    -------
    PowerLawFit, or None with fewer than two usable points (or a single distinct size).
    The standard error is the usual OLS one, ``sqrt(s^2 / sum (x - mean x)^2)`` with
    ``s^2`` the residual variance on ``n - 2`` degrees of freedom.
    """
    w = np.asarray(chunk_sizes, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    use = np.isfinite(w) & np.isfinite(y) & (w >= min_size) & (y > 0) & (w > 0)
    if use.sum() < 2:
        return None
    x, ly = np.log(w[use]), np.log(y[use])
    dx = x - x.mean()
    sxx = float(dx @ dx)
    if sxx == 0:
        return None
    slope = float(dx @ (ly - ly.mean())) / sxx
    intercept = float(ly.mean() - slope * x.mean())
    n = x.size
    if n > 2:
        resid = ly - (intercept + slope * x)
        se = math.sqrt(float(resid @ resid) / (n - 2) / sxx)
    else:
        se = float("nan")
    return PowerLawFit(slope, se, math.exp(intercept), tuple(int(v) for v in w[use]))


def mean_sem(values, missing=math.nan) -> tuple:
    """(mean, standard error of the mean, count) of ``values``; ``missing`` for a mean of none or a sem of one.

    The sem is the sample standard deviation (``ddof=1``) over the square root of the count.
    """
    v = np.array(values, dtype=float)
    mean = float(v.mean()) if v.size else missing
    sem = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else missing
    return mean, sem, int(v.size)


def number_of_clones(width, w_c_star) -> float | None:
    """``W / w_c*``: disjoint chunks of the critical size in the layer (None without ``w_c*``)."""
    if w_c_star is None:
        return None
    return float(width) / float(w_c_star)


# --------------------------------------------------------------------------- everything at once
@dataclass(frozen=True)
class Summary:
    """What a chunk analysis says about redundancy; see the module docstring.

    Attributes
    ----------
    w_c_star : int or None
    train_error_max, r2_min : float, the thresholds used
    exponent, exponent_se, prefactor : float or None, the fit above ``w_c*``
    fit_chunk_sizes : tuple of int, the sizes in the fit
    n_clones : float or None
    width : int
    error_inf : float or None
    notes : tuple of str, plain statements of what could not be computed and why
    """

    w_c_star: int | None
    train_error_max: float
    r2_min: float
    exponent: float | None
    exponent_se: float | None
    prefactor: float | None
    fit_chunk_sizes: tuple
    n_clones: float | None
    width: int
    error_inf: float | None
    notes: tuple = ()

    @property
    def fit(self) -> PowerLawFit | None:
        if self.exponent is None:
            return None
        se = float("nan") if self.exponent_se is None else self.exponent_se
        return PowerLawFit(self.exponent, se, self.prefactor, self.fit_chunk_sizes)

    def to_dict(self) -> dict:
        """JSON-ready (NaN becomes None), as stored in ``results.json["summary"]``."""

        def clean(v):
            return None if isinstance(v, float) and not math.isfinite(v) else v

        return {
            "w_c_star": self.w_c_star,
            "thresholds": {"train_error_max": self.train_error_max, "r2_min": self.r2_min},
            "exponent": clean(self.exponent),
            "exponent_se": clean(self.exponent_se),
            "exponent_prefactor": clean(self.prefactor),
            "exponent_fit_chunk_sizes": list(self.fit_chunk_sizes),
            "n_clones": clean(self.n_clones),
            "width": self.width,
            "error_inf": self.error_inf,
            "notes": list(self.notes),
        }


def summarize(curves: ChunkCurves, *, train_error_max: float = TRAIN_ERROR_MAX, r2_min: float = R2_MIN) -> Summary:
    """Critical chunk size, decay exponent above it, and number of clones of a set of curves."""
    train_error_max = check_float(train_error_max, "train_error_max", min_value=0.0, max_value=1.0)
    r2_min = check_float(r2_min, "r2_min", max_value=1.0)
    sizes = np.intersect1d(curves.train_error.chunk_size, curves.r2.chunk_size)
    w_star = critical_chunk_size(
        sizes, curves.train_error.at(sizes), curves.r2.at(sizes), train_error_max=train_error_max, r2_min=r2_min
    )
    notes = []
    fit = None
    if w_star is None:
        notes.append(
            f"no chunk size has training error <= {train_error_max:g} and R^2 >= {r2_min:g}: "
            "no critical chunk size, no exponent, no number of clones"
        )
    elif curves.error_inf is None:
        notes.append("error_inf is absent: the decay of test error - error_inf cannot be fitted")
    else:
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
    return Summary(
        w_c_star=w_star,
        train_error_max=train_error_max,
        r2_min=r2_min,
        exponent=None if fit is None else fit.exponent,
        exponent_se=None if fit is None or not math.isfinite(fit.exponent_se) else fit.exponent_se,
        prefactor=None if fit is None else fit.prefactor,
        fit_chunk_sizes=() if fit is None else fit.chunk_sizes,
        n_clones=number_of_clones(curves.width, w_star),
        width=int(curves.width),
        error_inf=curves.error_inf,
        notes=tuple(notes),
    )


def reading(summary: Summary, curves: ChunkCurves) -> list[str]:
    """A short plain-language reading of the numbers, one sentence or two per item."""
    out = []
    W = summary.width
    tr, r2 = curves.train_error, curves.r2
    crit = f"training error <= {summary.train_error_max:g} and R^2 >= {summary.r2_min:g}"
    if summary.w_c_star is not None:
        w = summary.w_c_star
        e_w, r_w = float(tr.at([w])[0]), float(r2.at([w])[0])
        out.append(
            f"Random chunks of w_c* = {w} of the {W} neurons already meet the criterion ({crit}): "
            f"their training error is {e_w:.4g} and they reconstruct the whole layer with R^2 = {r_w:.4f}."
        )
        if summary.n_clones is not None and summary.n_clones >= 2:
            out.append(
                f"The layer is redundant: it holds about {summary.n_clones:.3g} disjoint chunks of that size, "
                "each carrying the same information (clones) up to noise."
            )
        else:
            out.append(
                "Only the whole layer meets the criterion: by this measure the layer is not redundant "
                "(about one clone)."
            )
    else:
        full_e = float(tr.mean[-1])
        r2_ok = r2.chunk_size[r2.mean >= summary.r2_min - _TOL]
        parts = [f"No chunk size meets the criterion ({crit}), so the layer shows no redundancy by this measure."]
        if full_e > summary.train_error_max + _TOL:
            parts.append(
                f"Even the largest chunk (w_c = {int(tr.chunk_size[-1])}) has training error {full_e:.4g}: "
                "the network does not fit its training set; a higher training-error threshold may be appropriate."
            )
        if r2_ok.size:
            parts.append(f"R^2 reaches {summary.r2_min:g} from w_c = {int(r2_ok.min())} on.")
        else:
            parts.append(f"R^2 never reaches {summary.r2_min:g} (largest value {np.nanmax(r2.mean):.4f}).")
        out.append(" ".join(parts))
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
                if abs(e - PAPER_EXPONENT) <= 2 * se
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
