"""Clones across widths: the chunk analysis of every run of a width sweep.

The paper's first claim: above a critical width the last hidden layer splits
into clones, the critical chunk size ``w_c*`` then stays roughly fixed as the
width W grows, so the number of clones ``W / w_c*`` grows linearly with W.

:func:`analyse_runs` runs :class:`~redrep.core.analysis.ChunkAnalysis` on the
representation set of every run (chunk sizes ``W / 2**i`` down to 1), writes
each run's results folder with its summary (``w_c*``, clones, decay exponent:
:func:`redrep.core.summary.summarize`), and returns one row per run;
:func:`write_clones_csv` stores them as the tidy ``clones.csv``.
:func:`clone_growth` fits the log-log slope of the clone count against W over
the widths that are redundant, :func:`clones_reading` says in plain sentences
whether it is linear, and :func:`clones_figure` draws both quantities. The
definitions and the claim are in ``docs/method.md#claim-clones-across-widths``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from ..core.analysis import ChunkAnalysis, check_reading_config, default_chunk_sizes
from ..core.summary import Criterion, fit_power_law, mean_sem
from ..core.validation import RedrepError, check_float, check_int
from ..storage import io
from ..storage.repset import RepresentationSet
from ..storage.results import clean_nan, csv_to_rows, rows_to_csv, write_results

CLONES_CSV = "clones.csv"
CLONES_COLUMNS = ("width", "seed", "wc_star", "clones", "exponent", "exponent_se")
#: Folder (inside a sweep) holding one results folder per run.
CLONES_DIR = "clones"
_RUN_RE = re.compile(r"^w0*(\d+)_s(\d+)$")


@dataclass
class CloneConfig:
    """How every run of a sweep is analysed.

    Parameters
    ----------
    acc_rep, r2_rep : random chunks per size for the accuracies and for R^2
    narrow_below : widths W < narrow_below use ``narrow_acc_rep`` and ``narrow_r2_rep``
        instead (None: every width uses ``acc_rep`` and ``r2_rep``)
    narrow_acc_rep, narrow_r2_rep : the repetitions of the narrow networks
    seed : seed of the chunk draws, the same for every run
    device : where the chunk accuracies are computed (see ChunkAnalysis)
    criterion : the criterion of ``w_c*`` (:class:`redrep.core.summary.Criterion`)
    refine : sizes analysed between the size below ``w_c*`` and ``w_c*`` (0: the sizes W, W/2, ..., 1 only)
    """

    acc_rep: int = 100
    r2_rep: int = 40
    narrow_below: int | None = None
    narrow_acc_rep: int | None = None
    narrow_r2_rep: int | None = None
    seed: int = 0
    device: str = "auto"
    criterion: Criterion = field(default_factory=Criterion)
    refine: int = 0

    def validated(self) -> CloneConfig:
        check_reading_config(self)
        if self.narrow_below is not None:
            check_int(self.narrow_below, "narrow_below", min_value=1)
        for name in ("narrow_acc_rep", "narrow_r2_rep"):
            v = getattr(self, name)
            if v is not None:
                check_int(v, name, min_value=1)
                if self.narrow_below is None:
                    raise RedrepError(f"{name}: given without narrow_below, the width below which it applies")
        return self

    def reps(self, width: int) -> tuple[int, int]:
        """(acc_rep, r2_rep) for a network of this width."""
        if self.narrow_below is not None and width < self.narrow_below:
            return (self.narrow_acc_rep or self.acc_rep, self.narrow_r2_rep or self.r2_rep)
        return self.acc_rep, self.r2_rep


@dataclass(frozen=True)
class RunSet:
    """One run of a sweep: its width, seed and representation set folder."""

    width: int
    seed: int
    path: Path
    name: str


def find_runs(sweep_dir) -> list[RunSet]:
    """The extracted runs of a sweep folder (``runs/w<W>_s<seed>/representations``), by width then seed."""
    sweep_dir = Path(sweep_dir)
    runs_dir = sweep_dir / "runs"
    if not runs_dir.is_dir():
        raise RedrepError(f"{sweep_dir}: expected a redrep sweep folder with runs/, found none")
    out = []
    for p in sorted(runs_dir.iterdir()):
        m = _RUN_RE.match(p.name)
        if m and (p / "representations").is_dir():
            out.append(RunSet(int(m.group(1)), int(m.group(2)), p / "representations", p.name))
    if not out:
        raise RedrepError(f"{runs_dir}: expected extracted runs (w<W>_s<seed>/representations), found none")
    return sorted(out, key=lambda r: (r.width, r.seed))


def analyse_runs(
    runs, out_dir, *, config: CloneConfig | None = None, error_inf: float | None = None, progress: bool = True
) -> list[dict]:
    """Chunk analysis and summary of every run; one results folder per run under ``out_dir``.

    Parameters
    ----------
    runs : list of RunSet (see :func:`find_runs`)
    out_dir : folder of the per-run results folders (``out_dir/<run name>/results.{csv,json}``)
    config : CloneConfig (default: its defaults)
    error_inf : the large-ensemble test error used for every run's decay exponent (the sweep's,
        from the widest networks); None keeps each set's own (often absent: no exponent then)
    progress : a progress bar over runs

    Returns
    -------
    list of dict, one per run, with the :data:`CLONES_COLUMNS` (None where undefined), ``results``
    (the results folder) and ``notes`` (why a quantity is undefined).
    """
    from tqdm.auto import tqdm

    config = (config or CloneConfig()).validated()
    if error_inf is not None:
        error_inf = check_float(error_inf, "error_inf", min_value=0.0, max_value=1.0)
    out_dir = Path(out_dir)
    rows = []
    for run in tqdm(list(runs), desc="clones: runs analysed", unit="run", disable=not progress, dynamic_ncols=True):
        rs = RepresentationSet.load(run.path)
        if rs.width != run.width:
            raise RedrepError(f"{run.path}: expected a layer of width {run.width} (its run name), found {rs.width}")
        if error_inf is not None:
            rs.error_inf = error_inf
        acc_rep, r2_rep = config.reps(rs.width)
        an = ChunkAnalysis(
            chunk_sizes=default_chunk_sizes(rs.width),
            acc_rep=acc_rep,
            r2_rep=r2_rep,
            random_state=config.seed,
            progress=False,
            device=config.device,
            criterion=config.criterion,
            refine=config.refine,
        ).fit(rs)
        rdir = out_dir / run.name
        summary = an.summary().to_dict()
        extra = {"run": str(run.path.parent), "width": run.width, "seed": run.seed, "summary": summary}
        write_results(an, rs, rdir, extra=extra)
        rows.append(row_from_summary(run.width, run.seed, summary, results=rdir))
    return rows


def row_from_summary(width: int, seed: int, summary: dict, *, results=None) -> dict:
    """A ``clones.csv`` row from a ``results.json`` summary (None where the summary has no value)."""
    return {
        "width": int(width),
        "seed": int(seed),
        "wc_star": summary.get("w_c_star"),
        "clones": summary.get("n_clones"),
        "exponent": summary.get("exponent"),
        "exponent_se": summary.get("exponent_se"),
        "results": None if results is None else str(results),
        "notes": list(summary.get("notes") or []),
    }


def write_clones_csv(rows, path) -> Path:
    """Write the tidy ``clones.csv`` atomically: one row per run, ``nan`` where a value is undefined."""
    ordered = sorted(rows, key=lambda r: (r["width"], r["seed"]))
    path = Path(path)
    io.write_text(path, rows_to_csv(ordered, CLONES_COLUMNS, missing="nan"))
    return path


def read_clones_csv(path) -> list[dict]:
    """Read ``clones.csv`` back (None for ``nan``); a one-line error when it is not one."""

    def convert(r):
        row = {k: _num(r[k]) for k in CLONES_COLUMNS}
        row["width"], row["seed"] = int(row["width"]), int(row["seed"])
        if row["wc_star"] is not None:
            row["wc_star"] = int(row["wc_star"])
        return row

    return csv_to_rows(path, CLONES_COLUMNS, convert, "numbers or nan")


def _num(s):
    v = float(s)
    return None if math.isnan(v) else v


# --------------------------------------------------------------------------- what the rows say
def per_width(rows) -> list[dict]:
    """Per width: seeds, seeds with a ``w_c*``, their ``w_c*`` values, clones mean and sem over those seeds."""
    out = []
    for w in sorted({r["width"] for r in rows}):
        sel = [r for r in rows if r["width"] == w]
        ok = [r for r in sel if r["wc_star"] is not None]
        clones_mean, clones_sem, _ = mean_sem([r["clones"] for r in ok])
        e = np.array([r["exponent"] for r in ok if r["exponent"] is not None], dtype=float)
        out.append(
            {
                "width": int(w),
                "seeds": len(sel),
                "seeds_with_wc_star": len(ok),
                "wc_star": [int(r["wc_star"]) for r in ok],
                "clones_mean": clones_mean,
                "clones_sem": clones_sem,
                "redundant": bool(ok) and len(ok) == len(sel) and all(r["wc_star"] < w for r in ok),
                "exponent_mean": float(e.mean()) if e.size else math.nan,
            }
        )
    return out


@dataclass(frozen=True)
class CloneGrowth:
    """How the clone count grows with W.

    Attributes
    ----------
    table : list of dict, :func:`per_width`
    onset : int or None, the smallest width from which every wider width is redundant
        (every seed has ``w_c* < W``)
    slope, slope_se : the log-log slope of the mean clone count against W over widths >= onset
        (None with fewer than two such widths; slope_se None with two)
    fit_widths : tuple of int, the widths in the fit
    """

    table: list
    onset: int | None
    slope: float | None
    slope_se: float | None
    fit_widths: tuple = ()

    @property
    def linear(self) -> bool | None:
        """True when the slope is within two standard errors of 1; None when that cannot be told."""
        if self.slope is None or self.slope_se is None:
            return None
        return abs(self.slope - 1.0) <= 2 * self.slope_se


def clone_growth(rows) -> CloneGrowth:
    """Onset of redundancy and the log-log slope of the clone count against W above it."""
    table = per_width(rows)
    onset = None
    for t in reversed(table):
        if not t["redundant"]:
            break
        onset = t["width"]
    if onset is None:
        return CloneGrowth(table, None, None, None)
    above = [t for t in table if t["width"] >= onset]
    fit = fit_power_law([t["width"] for t in above], [t["clones_mean"] for t in above])
    if fit is None:
        return CloneGrowth(table, onset, None, None, tuple(t["width"] for t in above))
    se = fit.exponent_se if math.isfinite(fit.exponent_se) else None
    return CloneGrowth(table, onset, fit.exponent, se, fit.chunk_sizes)


def clones_reading(rows, *, growth: CloneGrowth | None = None) -> list[str]:
    """Plain sentences, with the numbers: is there a ``w_c*`` below W, and does W / w_c* grow like W.

    ``growth`` is :func:`clone_growth` of ``rows`` when already computed.
    """
    g = clone_growth(rows) if growth is None else growth
    t = g.table
    ws = [x["width"] for x in t]
    out = []
    none = [x["width"] for x in t if x["seeds_with_wc_star"] == 0]
    if none:
        out.append(
            f"At W = {', '.join(map(str, none))} no chunk size of any seed meets the criterion of w_c*, "
            "so neither w_c* nor the clone count is defined there."
        )
    wc = {x["width"]: x["wc_star"] for x in t if x["wc_star"]}
    if wc:
        out.append(
            "w_c* by width (one value per seed where defined): "
            + "; ".join(f"W = {w}: {', '.join(map(str, v))}" for w, v in wc.items())
            + "."
        )
    if g.onset is None:
        some = [x["width"] for x in t if x["redundant"]]
        out.append(
            f"Clones across widths: not shown. The widest networks (W = {ws[-1]}) do not have w_c* < W on every "
            "seed, so no range of widths up to the widest is redundant"
            + (f" (every seed has w_c* < W only at W = {', '.join(map(str, some))})." if some else ".")
        )
        return out
    above = [x for x in t if x["width"] >= g.onset]
    c0, c1 = above[0]["clones_mean"], above[-1]["clones_mean"]
    out.append(
        f"From W = {g.onset} on, every seed of every width has w_c* < W: the layer holds several clones "
        f"({c0:.3g} at W = {above[0]['width']}, {c1:.3g} at W = {above[-1]['width']}, mean over seeds)."
    )
    if g.slope is None:
        out.append(
            f"Clones across widths: linear growth not shown. Only W = {g.onset} is redundant, and one width "
            "gives no slope."
        )
    elif g.slope_se is None:
        pace = "about as fast as" if abs(g.slope - 1) < 0.1 else ("slower than" if g.slope < 1 else "faster than")
        out.append(
            f"The clone count grows like W^{g.slope:.2f} between W = {g.fit_widths[0]} and W = {g.fit_widths[-1]}, "
            f"{pace} the linear growth of the paper (W^1); two widths give no uncertainty on the slope."
        )
    else:
        verdict = (
            "consistent with the linear growth of the paper (slope 1)"
            if g.linear
            else ("slower than linear" if g.slope < 1 else "faster than linear")
        )
        out.append(
            f"The clone count grows like W^({g.slope:.2f} ± {g.slope_se:.2f}) over W = "
            f"{', '.join(map(str, g.fit_widths))}: {verdict}."
        )
    return out


# --------------------------------------------------------------------------- figure
def clones_figure(rows, *, title: str | None = None, growth: CloneGrowth | None = None) -> Figure:
    """(a) w_c* against W; (b) W / w_c* against W with a slope-1 guide; log-log, one point per seed.

    ``growth`` is :func:`clone_growth` of ``rows`` when already computed.
    """
    from ..report.figures import int_ticks, legend_below, log_xlim

    g = clone_growth(rows) if growth is None else growth
    widths = np.array([x["width"] for x in g.table], dtype=float)
    fig = Figure(figsize=(11.5, 4.4), layout="constrained")
    ax_a, ax_b = fig.subplots(1, 2)
    pts = [r for r in rows if r["wc_star"] is not None]
    missing = sorted({r["width"] for r in rows if r["wc_star"] is None})
    xs = np.array([r["width"] for r in pts], dtype=float)
    ax_a.plot(widths, widths, color="0.6", ls=":", lw=1.2, label="w_c* = W (one clone: no redundancy)")
    if pts:
        ax_a.scatter(xs, [r["wc_star"] for r in pts], color="#1f5fa8", s=22, alpha=0.8, label="one seed", zorder=3)
        ax_b.scatter(xs, [r["clones"] for r in pts], color="#b8401a", s=22, alpha=0.8, label="one seed", zorder=3)
    mean_c = np.array([x["clones_mean"] for x in g.table])
    ok = np.isfinite(mean_c)
    if ok.any():
        ax_b.plot(widths[ok], mean_c[ok], color="#b8401a", lw=1.4, label="mean over seeds with w_c*")
    ref_w = g.onset if g.onset is not None else (widths[ok][0] if ok.any() else widths[0])
    ref_c = float(mean_c[widths == ref_w][0]) if g.onset is not None or ok.any() else 1.0
    guide = ref_c * widths / ref_w
    keep = guide >= min(1.0, ref_c)  # a layer holds at least one clone: the guide stops there
    ax_b.plot(widths[keep], guide[keep], color="0.35", ls="--", lw=1, label="slope 1 (linear growth)")
    if g.slope is not None:
        fw = np.array(g.fit_widths, dtype=float)
        pre = float(np.exp(np.mean(np.log(mean_c[np.isin(widths, fw)])) - g.slope * np.mean(np.log(fw))))
        se = "" if g.slope_se is None else f" ± {g.slope_se:.2f}"
        ax_b.plot(fw, pre * fw**g.slope, color="#2ca02c", lw=2, alpha=0.8, label=f"fit: slope {g.slope:.2f}{se}")
    for ax, ylabel, letter in ((ax_a, "critical chunk size $w_c^*$", "a"), (ax_b, "clones W / $w_c^*$", "b")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlim(*log_xlim(widths))
        int_ticks(ax)
        ax.set_xlabel("width W")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.set_title(f"({letter})", loc="left", fontweight="bold")
        if missing and ax is ax_a:
            ax.text(
                0.02,
                0.97,
                f"no $w_c^*$ at W = {', '.join(map(str, missing))}",
                transform=ax.transAxes,
                va="top",
                fontsize=9,
                color="#8a1c00",
            )
        legend_below(ax, ncol=2)
    fig.suptitle(title or "Critical chunk size and number of clones against width")
    return fig


# --------------------------------------------------------------------------- a sweep at once
@dataclass(frozen=True)
class CloneResult:
    """What :func:`analyse_sweep` wrote: the rows, the growth fit, the reading and the files."""

    rows: list
    growth: CloneGrowth
    reading: list
    csv: Path
    figures: list
    figure: Figure


def analyse_sweep(
    sweep_dir,
    *,
    config: CloneConfig | None = None,
    error_inf: float | None = None,
    runs=None,
    title: str | None = None,
    progress: bool = True,
) -> CloneResult:
    """Analyse every run of a sweep; write ``clones/<run>/``, ``clones.csv`` and ``figures/clones.{png,pdf}``."""
    from ..report.figures import save_figure

    sweep_dir = Path(sweep_dir)
    runs = find_runs(sweep_dir) if runs is None else runs
    rows = analyse_runs(runs, sweep_dir / CLONES_DIR, config=config, error_inf=error_inf, progress=progress)
    path = write_clones_csv(rows, sweep_dir / CLONES_CSV)
    growth = clone_growth(rows)
    fig = clones_figure(rows, title=title, growth=growth)
    figures = save_figure(fig, sweep_dir / "figures", stem="clones")
    return CloneResult(rows, growth, clones_reading(rows, growth=growth), path, figures, fig)


def section_html(result: CloneResult) -> str:
    """The sweep report's section on clones across widths (reading, figure and per-width table)."""
    from markupsafe import Markup

    from ..report.pages import render_page

    return Markup(
        render_page(
            "clones_section.html",
            reading=result.reading,
            figure=result.figure,
            table=clean_nan(result.growth.table),
            csv_name=CLONES_CSV,
        )
    )


__all__ = [
    "CLONES_COLUMNS",
    "CloneConfig",
    "CloneGrowth",
    "CloneResult",
    "RunSet",
    "analyse_runs",
    "analyse_sweep",
    "clone_growth",
    "clones_figure",
    "clones_reading",
    "find_runs",
    "per_width",
    "read_clones_csv",
    "row_from_summary",
    "write_clones_csv",
]
