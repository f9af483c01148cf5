"""The three-panel figure of a chunk analysis (the authors' Fig. 3b, 4b and 4e in one row).

* (a) chunk test error minus error_inf against chunk size, log-log, for
  ``w_c >= 16``, with the paper's decay ``w_c^(-1/2)`` (the guide
  ``0.12 w_c^(-1/2)`` of the paper's Fig. 3b for the authors' CIFAR-10 set, a
  slope -1/2 through the data elsewhere), the fitted decay above ``w_c*`` and a
  right axis in absolute test error; the absolute test error when error_inf is
  unknown;
* (b) chunk training error, symlog y axis (linear below 1e-2);
* (c) every declared metric placed on panel (c) (:mod:`redrep.core.metrics`):
  R^2 and held-out R^2 on the left axis, the residual mean correlation on the
  right, both variants: over all pairs of neurons (published) and over the
  pairs outside the chunk.

Bands are +/- one standard error of the mean over random chunks. The region
``w_c >= w_c*`` is shaded. Figures are built on :class:`matplotlib.figure.Figure`
directly (no pyplot, no global state), so plotting works headless and in threads.
"""

from __future__ import annotations

import io as _stdio
import itertools
import math
import re
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import (
    FixedLocator,
    Formatter,
    FuncFormatter,
    Locator,
    LogLocator,
    NullFormatter,
    NullLocator,
)

from ..core.summary import PAPER_EXPONENT, ChunkCurves, Summary, summarize
from ..core.validation import RedrepError, check_float
from ..storage import io

#: The authors' file name of the figure (without extension).
DEFAULT_STEM = "cifar10_wr28_plots"
FORMATS = ("png", "pdf", "svg")
DEFAULT_FORMATS = ("png", "pdf")
#: The guide of panel (a): prefactor * w_c ** exponent (paper, Fig. 3b).
GUIDE_PREFACTOR = 0.12
GUIDE_EXPONENT = PAPER_EXPONENT
#: Panel (a) starts at this chunk size, as in the paper.
MIN_CHUNK_SIZE_A = 16
#: Linear range of the symlog axis of panel (b).
SYMLOG_LINTHRESH = 1e-2

_C_TEST, _C_TRAIN, _C_R2, _C_CORR, _C_CORR_OUT = "#1f5fa8", "#b8401a", "#1f5fa8", "#b8401a", "#6a3d9a"
_SHADE = "#2ca02c"


def int_ticks(ax):
    """Powers of two with plain integer labels on a base-2 log x axis (every other one on long ranges)."""
    lo, hi = ax.get_xlim()
    octaves = math.log2(hi / lo)
    a = ax.xaxis
    a.set_major_locator(LogLocator(base=2, numticks=16 if octaves <= 11 else 8))
    a.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    a.set_minor_locator(NullLocator())


class _PlainLogFormatter(Formatter):
    """Plain decimals on a log axis (0.05, not 5 x 10^-2); minor ticks 2 and 5 labelled on short ranges."""

    def __call__(self, x, pos=None):
        if x <= 0 or not math.isfinite(x):
            return ""
        mantissa = x / 10 ** math.floor(math.log10(x) + 1e-9)
        lo, hi = sorted(self.axis.get_view_interval()) if self.axis is not None else (x, x)
        decades = math.log10(hi / lo) if lo > 0 else math.inf
        if abs(mantissa - 1) < 1e-6 or (decades <= 1.5 and any(abs(mantissa - m) < 1e-6 for m in (2, 5))):
            return f"{x:.6g}"
        return ""


def _plain_log(axis):
    axis.set_major_formatter(_PlainLogFormatter())
    axis.set_minor_formatter(_PlainLogFormatter())


def legend_below(ax, handles=None, ncol=1):
    """The legend of ``ax`` under it, outside the plot (``handles`` as for ``Axes.legend``)."""
    if handles is None:
        handles = ax.get_legend_handles_labels()[0]
    if not handles:  # nothing labelled to show (every point hidden): no legend, and no matplotlib warning
        return
    ax.legend(handles=handles, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=ncol, frameon=False)


def _band(ax, x, y, sem, color, **line_kw):
    """A line with markers and a +/- sem band; returns the line."""
    (line,) = ax.plot(x, y, color=color, **line_kw)
    s = np.where(np.isfinite(sem), sem, 0.0)
    if np.any(s > 0):
        ax.fill_between(x, y - s, y + s, color=color, alpha=0.2, linewidth=0)
    return line


def _shade(ax, summary: Summary | None, xmax: float):
    if summary is None or summary.w_c_star is None:
        return None
    return ax.axvspan(
        summary.w_c_star, xmax, color=_SHADE, alpha=0.12, linewidth=0, label=f"$w_c \\geq w_c^* = {summary.w_c_star}$"
    )


def log_xlim(x):
    """(left, right) limits of a log x axis holding the positive values ``x``, with a margin of a factor 1.25."""
    x = np.asarray(x, dtype=float)
    return float(x.min()) / 1.25, float(x.max()) * 1.25


def three_panel_figure(
    source,
    summary: Summary | None = None,
    *,
    train_error_max: float | None = None,
    r2_min: float | None = None,
    min_chunk_size: float = MIN_CHUNK_SIZE_A,
    guide_prefactor: float | None = None,
    authors_set: bool | None = None,
    title: str | None = None,
    figsize=(15.5, 5.6),
) -> Figure:
    """Build the three-panel figure.

    Parameters
    ----------
    source : Results or ChunkCurves
        A results folder read by :func:`redrep.storage.results.load_results`, or curves built
        from plain arrays (:class:`redrep.core.summary.Curve`).
    summary : Summary, optional
        Computed with :func:`redrep.core.summary.summarize` when absent (with the thresholds given).
    train_error_max, r2_min : float, optional
        Thresholds of ``w_c*`` when ``summary`` is absent (defaults 0 and 0.95).
    min_chunk_size : panel (a) shows chunk sizes at least this large.
    guide_prefactor : prefactor of the ``w_c^(-1/2)`` guide of panel (a); None: :data:`GUIDE_PREFACTOR`
        (the paper's, fitted on CIFAR-10) for the authors' set, else a slope -1/2 anchored at the data.
    authors_set : whether the input is the authors' WRN-28-8 / CIFAR-10 set; None: read from the results
        folder's input metadata (:func:`is_authors_results`), False for curves.
    title : figure title; default names the input, W and the summary.

    Returns
    -------
    matplotlib.figure.Figure with three panels (``fig.axes[:3]`` are (a), (b), (c) in order;
    the right axes of (a) and (c) follow).
    """
    min_chunk_size = check_float(min_chunk_size, "min_chunk_size", min_value=0.0)
    if guide_prefactor is not None:
        guide_prefactor = check_float(guide_prefactor, "guide_prefactor", min_value=0.0)
    elif authors_set or (authors_set is None and is_authors_results(source)):
        guide_prefactor = GUIDE_PREFACTOR
    curves = source if isinstance(source, ChunkCurves) else ChunkCurves.from_results(source)
    if summary is None:
        kw = {}
        if train_error_max is not None:
            kw["train_error_max"] = train_error_max
        if r2_min is not None:
            kw["r2_min"] = r2_min
        summary = summarize(curves, **kw)
    fig = Figure(figsize=figsize, layout="constrained")
    fig.get_layout_engine().set(wspace=0.06)
    ax_a, ax_b, ax_c = fig.subplots(1, 3)
    _panel_a(ax_a, curves, summary, min_chunk_size, guide_prefactor)
    _panel_b(ax_b, curves, summary)
    _panel_c(ax_c, curves, summary)
    for ax, letter in zip((ax_a, ax_b, ax_c), "abc"):
        ax.set_title(f"({letter})", loc="left", fontweight="bold")
    fig.suptitle(title if title is not None else _default_title(curves, summary), fontsize=11)
    return fig


def is_authors_results(results) -> bool:
    """Whether a results folder (:class:`~redrep.storage.results.Results`) is that of the authors' published set."""
    doc = getattr(results, "doc", None)
    inp = doc.get("input") if isinstance(doc, dict) else None
    meta = inp.get("meta") if isinstance(inp, dict) else None
    return isinstance(meta, dict) and meta.get("layout") == "authors"


def figure_stem(results) -> str:
    """The file name (no extension) of a results folder's figure: the authors' own name for their set, else
    the set's dataset, architecture and width (``parity-digits_mlp_w1024_plots``), or its folder's name."""
    if is_authors_results(results):
        return DEFAULT_STEM
    doc = getattr(results, "doc", None) or {}
    inp = doc.get("input") if isinstance(doc.get("input"), dict) else {}
    meta = inp.get("meta") if isinstance(inp.get("meta"), dict) else {}
    parts = [str(meta[k]) for k in ("dataset", "arch") if meta.get(k)]
    width = inp.get("width")
    if parts and isinstance(width, int) and not isinstance(width, bool):
        parts.append(f"w{width}")
    if not parts:  # a set without metadata: the folder that holds its results
        path = Path(getattr(results, "path", "") or ".").resolve()
        parts = [path.parent.name if path.name == "results" and path.parent.name else path.name or "redrep"]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", "_".join(parts)).strip(".-") or "redrep"
    return f"{stem}_plots"


def _default_title(curves: ChunkCurves, summary: Summary) -> str:
    head = f"{curves.label}: last hidden layer of width W = {curves.width}" if curves.label else f"W = {curves.width}"
    crit = summary.criterion.short(summary.r2_kind)
    if summary.w_c_star is None:
        return f"{head}\nno critical chunk size: no chunk size meets {crit}"
    parts = [f"$w_c^* = {summary.w_c_star}$ ({crit})", f"$W / w_c^* \\approx {summary.n_clones:.3g}$ clones"]
    if summary.exponent is not None:
        se = "" if summary.exponent_se is None else f" $\\pm$ {summary.exponent_se:.2f}"
        parts.append(f"decay exponent {summary.exponent:.2f}{se}")
    return f"{head}\n" + ",  ".join(parts)


def _panel_a(ax, curves: ChunkCurves, summary: Summary, min_size: float, guide_prefactor: float):
    te = curves.test_error
    einf = curves.error_inf
    sel = te.chunk_size >= min_size
    x = te.chunk_size[sel]
    y = te.mean[sel] - (einf if einf is not None else 0.0)
    sem = te.sem[sel]
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("chunk size $w_c$")
    if x.size == 0:
        ax.text(0.5, 0.5, f"no chunk size $\\geq$ {min_size:g}", transform=ax.transAxes, ha="center", va="center")
        ax.set_ylabel("test error")
        return
    xlim = log_xlim(x)
    _shade(ax, summary, xlim[1])
    pos = np.isfinite(y) & (y > 0)
    if einf is not None:
        ax.set_ylabel("test error $-$ error$_\\infty$")
        label = "chunks (test error $-$ error$_\\infty$)"
    else:
        ax.set_ylabel("test error")
        label = "chunks (absolute test error)"
    if pos.any():
        _band(ax, x[pos], y[pos], sem[pos], _C_TEST, marker="o", ms=4, label=label)
    if einf is not None:
        _guide(ax, x[pos], y[pos], summary, guide_prefactor)
        fit = summary.fit
        if fit is not None and len(fit.chunk_sizes) >= 2:
            xf = np.geomspace(min(fit.chunk_sizes), max(fit.chunk_sizes), 50)
            se = "" if not math.isfinite(fit.exponent_se) else f" $\\pm$ {fit.exponent_se:.2f}"
            ax.plot(
                xf, fit(xf), ls=":", color="k", lw=1.6, label=f"fit $w_c \\geq w_c^*$: slope {fit.exponent:.2f}{se}"
            )
        sec = ax.secondary_yaxis("right", functions=(lambda v: v + einf, lambda v: v - einf))
        sec.set_ylabel("absolute test error")
        # error_inf + a log-spaced quantity is not log-spaced: ticks spread over the whole log range of the left axis
        sec.yaxis.set_major_locator(OffsetLogLocator(einf))
        sec.yaxis.set_minor_locator(NullLocator())
        sec.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.6g}"))
        ax.text(
            0.02,
            0.03,
            f"error$_\\infty$ = {einf:.4f}",
            transform=ax.transAxes,
            fontsize=8,
            color="0.3",
        )
    else:
        ax.text(
            0.97,
            0.97,
            "error$_\\infty$ absent: absolute test error shown,\nno guide and no exponent fit",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=8,
            color="#a00000",
        )
    hidden = int((~pos).sum())
    if hidden:
        ax.text(
            0.97,
            0.97 if einf is not None else 0.85,
            f"{hidden} point(s) " + ("at or below error$_\\infty$" if einf is not None else "at 0") + " not shown",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=8,
            color="0.3",
        )
    ax.set_xlim(*xlim)
    int_ticks(ax)
    _plain_log(ax.yaxis)
    ax.grid(True, which="major", alpha=0.3)
    legend_below(ax, ncol=2)


def _guide(ax, x, y, summary: Summary, prefactor: float | None):
    """The w_c^(-1/2) decay on panel (a): the paper's CIFAR-10 prefactor, or a slope anchored at the data.

    ``x``, ``y`` are the plotted (positive) points. With ``prefactor`` the line is prefactor * w_c^(-1/2)
    (0.12 fits the authors' WRN-28-8 / CIFAR-10 set, Fig. 3b of the paper, and nothing else); without it,
    the slope -1/2 goes through the first plotted point at or above w_c* (the widest point without a w_c*).
    """
    if x.size == 0:
        return
    xs = np.geomspace(x.min(), x.max(), 50)
    if prefactor is not None:
        ax.plot(xs, prefactor * xs**GUIDE_EXPONENT, ls="--", color="0.35", lw=1.2,
                label=f"guide {prefactor:g}$\\,w_c^{{-1/2}}$ (the paper, CIFAR-10)")  # fmt: skip
        return
    wcs = summary.w_c_star
    above = np.flatnonzero(x >= wcs) if wcs is not None else np.array([], dtype=int)
    i = int(above[0]) if above.size else int(np.argmax(x))
    x0, y0 = float(x[i]), float(y[i])
    ax.plot(xs, y0 * (xs / x0) ** GUIDE_EXPONENT, ls="--", color="0.35", lw=1.2,
            label=f"slope $-1/2$ (the paper's decay) through $w_c$ = {x0:g}")  # fmt: skip


class OffsetLogLocator(Locator):
    """Ticks of a right axis showing ``offset + d`` beside a log axis of ``d`` (panel (a): error_inf + excess).

    Evenly spaced values of ``log d`` over the whole view, each rounded to the precision that ``d`` has
    there: 0.0175, 0.02, 0.05, 0.2 rather than only 0.1 ... 0.5, so that every decade of the left axis
    gets a readable absolute value.
    """

    def __init__(self, offset: float, nticks: int = 6):
        self.offset = float(offset)
        self.nticks = int(nticks)

    def __call__(self):
        vmin, vmax = self.axis.get_view_interval()
        return self.tick_values(vmin, vmax)

    def tick_values(self, vmin, vmax):
        lo, hi = sorted((float(vmin) - self.offset, float(vmax) - self.offset))
        if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= 0:
            return []
        lo = max(lo, hi * 1e-9)
        ticks = []
        for p in np.linspace(math.log10(lo), math.log10(hi), self.nticks):
            d = 10.0**p
            q = 10.0 ** math.floor(math.log10(d))  # the precision of d there
            for step in (q, q / 2, q / 5, q / 10):  # the coarsest rounding that stays in the view
                v = round((self.offset + d) / step) * step
                if lo <= v - self.offset <= hi:
                    break
            else:
                continue
            v = float(f"{v:.12g}")
            # two ticks closer than a third of the spacing in log d read as one: keep the first
            gap = (math.log10(hi) - math.log10(lo)) / max(1, self.nticks - 1) / 3
            if all(abs(math.log10(v - self.offset) - math.log10(t - self.offset)) >= gap for t in ticks):
                ticks.append(v)
        return ticks


def _panel_b(ax, curves: ChunkCurves, summary: Summary):
    tr = curves.train_error
    ax.set_xscale("log", base=2)
    ax.set_yscale("symlog", linthresh=SYMLOG_LINTHRESH)
    xlim = log_xlim(tr.chunk_size)
    _shade(ax, summary, xlim[1])
    _band(ax, tr.chunk_size, tr.mean, tr.sem, _C_TRAIN, marker="o", ms=4, label="chunks (training error)")
    if summary.train_error_max > 0:
        ax.axhline(summary.train_error_max, ls=":", color="0.3", lw=1.2, label=f"threshold {summary.train_error_max:g}")
    top = max(1.0, float(np.nanmax(tr.mean + np.nan_to_num(tr.sem))))
    # a little room below 0 so that points at exactly 0 are not cut in half
    ax.set_ylim(-0.1 * SYMLOG_LINTHRESH, top * 1.15)
    ax.set_xlim(*xlim)
    int_ticks(ax)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("chunk size $w_c$")
    ax.set_ylabel("training error")
    ax.grid(True, which="major", alpha=0.3)
    legend_below(ax, ncol=2)


#: Line styles of the curves of panel (c), by curve name; other declared metrics take :data:`_CYCLE` in turn.
_STYLES_C = {
    "r2": {"color": _C_R2, "marker": "o"},
    "r2_heldout": {"color": "#2a9d8f", "marker": "D", "ls": "--"},
    "mean_corr": {"color": _C_CORR, "marker": "s"},
    "mean_corr_outside": {"color": _C_CORR_OUT, "marker": "^", "ls": "--"},
}
_CYCLE = ({"color": "#8c564b", "marker": "v"}, {"color": "#e377c2", "marker": "P"}, {"color": "#7f7f7f", "marker": "X"})


def _finite_limits(values, lo_default, hi_default):
    """(min, max) of the finite values, or the defaults when there are none (a layer of width 1, say)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return lo_default, hi_default
    return float(v.min()), float(v.max())


def _panel_c(ax, curves: ChunkCurves, summary: Summary):
    """R^2-like metrics on the left axis, correlations on the right: every declared metric of panel (c)."""
    placed = [(m, c) for m, c in curves.metrics() if m.panel == "c"]
    ax.set_xscale("log", base=2)
    xs = np.concatenate([c.chunk_size for _, c in placed]) if placed else curves.train_error.chunk_size
    xlim = log_xlim(xs)
    span = _shade(ax, summary, xlim[1])
    ax2 = ax.twinx()
    handles, extra = [], itertools.cycle(_CYCLE)
    left_vals, right_vals = [], []
    for m, c in placed:
        style = dict(_STYLES_C.get(m.curve) or next(extra))
        target = ax if m.axis == "left" else ax2
        fin = np.isfinite(c.mean)
        if not fin.any():  # nothing to draw: a correlation of a layer of one neuron, say
            continue
        label = f"{m.label} ({m.axis})"
        handles.append(_band(target, c.chunk_size[fin], c.mean[fin], c.sem[fin], ms=4, label=label, **style))
        (left_vals if m.axis == "left" else right_vals).append(c.mean[fin])
        if m.curve == "r2":
            handles.append(ax.axhline(summary.r2_min, ls=":", color=_C_R2, lw=1.2, label=f"$R^2$ = {summary.r2_min:g}"))
    ax.set_ylabel("$R^2$ of the reconstruction", color=_C_R2)
    ax.tick_params(axis="y", colors=_C_R2)
    lo, _ = _finite_limits(np.concatenate(left_vals) if left_vals else [], 0.0, 1.0)
    ax.set_ylim(min(0.0, lo - 0.05), 1.05)
    ax.set_xlabel("chunk size $w_c$")
    ax2.set_ylabel("residual mean |correlation|", color=_C_CORR)
    ax2.tick_params(axis="y", colors=_C_CORR)
    _, top = _finite_limits(np.concatenate(right_vals) if right_vals else [], 0.0, 1.0)
    ax2.set_ylim(0.0, max(top, 1e-6) * 1.1)
    if not right_vals:
        ax2.text(
            0.97,
            0.03,
            "no residual correlation: fewer than two neurons",
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=8,
            color="0.3",
        )
    if span is not None:
        handles.append(span)
    ax.set_xlim(*xlim)
    int_ticks(ax)
    ax.grid(True, which="major", alpha=0.3)
    legend_below(ax2, handles=handles, ncol=2)


# --------------------------------------------------------------------------- files
def check_formats(formats, name: str = "formats") -> tuple:
    """Validate figure formats: a comma-separated string or a sequence of png, pdf, svg (errors name ``name``)."""
    if isinstance(formats, str):
        items = [f.strip().lower().lstrip(".") for f in formats.split(",") if f.strip()]
    else:
        items = [str(f).strip().lower().lstrip(".") for f in formats]
    bad = [f for f in items if f not in FORMATS]
    if bad or not items:
        raise RedrepError(f"{name}: expected a comma-separated list of {', '.join(FORMATS)}, found {formats!r}")
    return tuple(dict.fromkeys(items))


def figure_bytes(fig: Figure, fmt: str = "png", *, dpi: int = 150) -> bytes:
    """The figure rendered in memory; PDF and SVG bytes are reproducible (no dates, fixed ids)."""
    (fmt,) = check_formats([fmt])
    metadata = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}.get(fmt)
    buf = _stdio.BytesIO()
    # a fixed salt makes the SVG element ids, hence the bytes, the same on every run
    with matplotlib.rc_context({"svg.hashsalt": "redrep"}):
        fig.savefig(buf, format=fmt, dpi=dpi, metadata=metadata)
    return buf.getvalue()


def check_stem(stem, name: str = "stem") -> None:
    """Refuse a figure file name (without extension) that is empty, has a folder, or is ``.`` or ``..``."""
    if not stem or "/" in stem or stem in (".", ".."):
        raise RedrepError(f"{name}: expected a file name without folder, found {stem!r}")


def save_figure(fig: Figure, out_dir, *, stem: str = DEFAULT_STEM, formats=DEFAULT_FORMATS, dpi: int = 150) -> list:
    """Write ``out_dir/stem.<fmt>`` for every format; returns the paths.

    Every format is rendered before any file is written, and each file is
    written atomically, so a failure leaves existing figures untouched.
    """
    formats = check_formats(formats)
    check_stem(stem)
    blobs = {fmt: figure_bytes(fig, fmt, dpi=dpi) for fmt in formats}
    out_dir = Path(out_dir)
    paths = []
    for fmt, data in blobs.items():
        path = out_dir / f"{stem}.{fmt}"
        io.write_bytes(path, data)
        paths.append(path)
    return paths


def width_figure(
    widths,
    full_test,
    chunk_test,
    *,
    full_train=None,
    chunk_train=None,
    error_inf: float | None = None,
    widest: int | None = None,
    title: str | None = None,
) -> Figure:
    """The paper's Fig. 3a: full networks of width W against chunks of W neurons of the widest network.

    Parameters
    ----------
    widths : array of shape (n,), the widths W (= chunk sizes)
    full_test, chunk_test : pairs (mean, sem) of arrays of shape (n,), test error over seeds;
        NaN where a value is missing
    full_train, chunk_train : the same for the training error (panel b), optional
    error_inf : the ensemble test error, drawn as a horizontal line
    widest : width of the network the chunks come from (for the legend)
    title : figure title
    """
    widths = np.asarray(widths, dtype=float)
    two = full_train is not None or chunk_train is not None
    fig = Figure(figsize=(11.5 if two else 6.2, 4.4), layout="constrained")
    axes = fig.subplots(1, 2 if two else 1, squeeze=False)[0]
    src = f"chunks of the W = {widest} network" if widest else "chunks of the widest network"
    panels = [("test error", full_test, chunk_test)]
    if two:
        panels.append(("training error", full_train, chunk_train))
    for ax, (label, full, chunk) in zip(axes, panels):
        for series, name, color, marker in (
            (full, "full network of width W", _C_TEST, "o"),
            (chunk, f"{src}, $w_c$ = W", _C_TRAIN, "s"),
        ):
            if series is None:
                continue
            mean, sem = (np.asarray(v, dtype=float) for v in series)
            ok = np.isfinite(mean)
            if ok.any():
                ax.errorbar(
                    widths[ok],
                    mean[ok],
                    yerr=np.where(np.isfinite(sem[ok]), sem[ok], 0),
                    color=color,
                    marker=marker,
                    ms=5,
                    lw=1.6,
                    capsize=3,
                    label=name,
                )
        if label == "test error" and error_inf is not None:
            ax.axhline(error_inf, color="0.35", ls="--", lw=1, label=f"ensemble error$_\\infty$ = {error_inf:.4g}")
        ax.set_xscale("log", base=2)
        ax.set_xlim(*log_xlim(widths))
        int_ticks(ax)
        if label == "training error":
            ax.set_yscale("symlog", linthresh=SYMLOG_LINTHRESH)
            ax.set_ylim(-SYMLOG_LINTHRESH / 5, 1.1)
        else:  # test errors span decades between narrow and wide networks
            ax.set_yscale("log")
            lo, hi = ax.get_ylim()
            ticks = [m * 10.0**e for e in range(-6, 1) for m in (1, 2, 5) if lo <= m * 10.0**e <= hi]
            ax.yaxis.set_major_locator(FixedLocator(ticks))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("width W (chunk size $w_c$ = W)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        legend_below(ax)
    for ax, letter in zip(axes, "ab"):
        ax.set_title(f"({letter})", loc="left", fontweight="bold")
    fig.suptitle(title or "Full networks against chunks of the widest one (error bars: sem over seeds)")
    return fig
