"""Comparing width sweeps: how the paper's claims change from one training setup to another.

The regularization claim (redundancy appears only when training is
regularized and reaches zero training error) is checked by running the same
sweep with and without weight decay and comparing them here. For each sweep
this reads what the sweep wrote (``sweep.json``, its width comparison, the
widest network's summary, and ``clones.csv`` when present) and puts side by
side: full-network test error against W, w_c* and the clone count against W,
``error_inf`` and the decay exponent. Each sweep is labelled by the settings
in which it differs from the others (e.g. ``weight_decay=0``).

Outputs of :func:`write_comparison`: ``compare.csv`` (tidy: sweep, label,
quantity, width, mean, sem, n), ``compare.json``, ``figures/compare.{png,pdf}``
and ``compare.html``. The claim it tests: ``docs/method.md#claim-regularization``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from ..core.summary import PAPER_EXPONENT, mean_sem
from ..core.validation import RedrepError
from ..storage import io
from ..storage.results import rows_to_csv
from .clones import CLONES_CSV, clone_growth, read_clones_csv

COMPARE_CSV = "compare.csv"
COMPARE_JSON = "compare.json"
COMPARE_HTML = "compare.html"
COMPARE_COLUMNS = ("sweep", "label", "quantity", "width", "mean", "sem", "n")
#: Config fields that say where and how a sweep ran, not what it computed: never used in labels.
_NOT_LABELS = ("jobs", "device", "amp", "data_dir", "progress", "executor", "partition", "slurm", "eval_batch_size")
#: Sweeps of different values of these are refused unless allow_mixed.
MUST_MATCH = ("dataset", "arch")


@dataclass
class SweepData:
    """What one sweep folder holds, read back.

    Attributes
    ----------
    path : the sweep folder
    config : dict, the sweep's config
    error_inf : float or None
    width_comparison : list of dict, per width (full_test_mean, full_test_sem, full_n, ...)
    summary : dict, the widest network's summary (seed 0)
    clones : list of dict or None, the rows of clones.csv (None when the sweep has none)
    label : str
    """

    path: Path
    config: dict
    error_inf: float | None
    width_comparison: list
    summary: dict
    clones: list | None = None
    label: str = ""
    notes: list = field(default_factory=list)

    @property
    def widest(self) -> int:
        return max(int(r["width"]) for r in self.width_comparison)


def load_sweep(path) -> SweepData:
    """Read a finished sweep folder; one-line errors when it is not one (or its sweep.json is malformed)."""
    from .sweep_state import SWEEP_FILE, check_plan, check_state, read_sweep_json

    path = Path(path)
    f = path / SWEEP_FILE
    if not path.is_dir():
        raise RedrepError(f"{path}: no such folder (expected a redrep sweep folder with {SWEEP_FILE})")
    if not f.is_file():
        raise RedrepError(f"{path}: not a redrep sweep (expected {SWEEP_FILE}, written by `redrep sweep`)")
    doc = check_state(read_sweep_json(f, older=True), f)  # older layouts are read too; a newer one is refused
    config, table = doc.get("config"), doc.get("width_comparison")
    if isinstance(config, dict) and ("widths" in config or "seeds" in config):
        check_plan(config.get("widths", []), config.get("seeds", 1), where=str(f))
    if not isinstance(config, dict) or not isinstance(table, list) or not table:
        status = doc.get("status", "unknown")
        raise RedrepError(
            f"{f}: expected a finished sweep with its config and width comparison, found status {_brief(status)} "
            "(run `redrep sweep` to the end first)"
        )
    _check_table(table, f)
    summary = doc.get("summary") or {}
    if not isinstance(summary, dict) or any(
        not _number_or_none(summary.get(k)) for k in ("w_c_star", "n_clones", "exponent")
    ):
        raise RedrepError(
            f"{f}: summary: expected an object of numbers (w_c_star, n_clones, exponent), found {_brief(summary)}"
        )
    # the sweep's training template (nested under "train" since sweeps are staged) flattened beside its own fields
    template = config.get("train") if isinstance(config.get("train"), dict) else {}
    config = {**{k: v for k, v in config.items() if k != "train"}, **template}
    e = doc.get("error_inf")
    error_inf = float(e) if isinstance(e, (int, float)) and not isinstance(e, bool) else None
    clones = read_clones_csv(path / CLONES_CSV) if (path / CLONES_CSV).is_file() else None
    data = SweepData(path, config, error_inf, table, summary, clones)
    if clones is None:
        data.notes.append(f"no {CLONES_CSV}: w_c*, clones and the exponent of the widest network only")
    return data


def _brief(value) -> str:
    from .sweep_state import brief

    return brief(value)


def _number_or_none(v) -> bool:
    # NaN stands for an undefined mean or sem (one seed); an integer past float's range is no result of a sweep
    if isinstance(v, bool):
        return False
    return v is None or isinstance(v, float) or (isinstance(v, int) and abs(v) < 10**300)


def _check_table(table: list, f: Path) -> None:
    """Every width_comparison row a dict with an integer width, a numeric full_test_mean and numbers (or null)."""
    for r in table:
        ok = isinstance(r, dict)
        if ok:
            w = r.get("width")
            ok = isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= 2**31
            ok = ok and r.get("full_test_mean") is not None and _number_or_none(r["full_test_mean"])
            ok = ok and all(_number_or_none(v) for k, v in r.items() if k != "width")
        if not ok:
            raise RedrepError(
                f"{f}: width_comparison: expected rows of numbers with an integer width and full_test_mean, "
                f"found {_brief(r)}"
            )


def label_sweeps(sweeps, labels=None) -> list[str]:
    """Labels: given ones, else the config settings in which each sweep differs from the others."""
    if labels:
        if len(labels) != len(sweeps):
            raise RedrepError(f"labels: expected one label per sweep ({len(sweeps)}), found {len(labels)}")
        return [str(x) for x in labels]
    keys = sorted({k for s in sweeps for k in s.config} - set(_NOT_LABELS))
    differ = [k for k in keys if len({repr(s.config.get(k)) for s in sweeps}) > 1]
    out = []
    for s in sweeps:
        parts = [f"{k}={_short(s.config.get(k))}" for k in differ]
        out.append(", ".join(parts) if parts else s.path.name)
    if len(set(out)) < len(out):  # same settings: the folder tells them apart
        out = [f"{lab} ({s.path.name})" if out.count(lab) > 1 else lab for lab, s in zip(out, sweeps)]
    return out


def _short(v):
    if isinstance(v, (list, tuple)):
        return "/".join(map(str, v))
    return f"{v:g}" if isinstance(v, float) else str(v)


def check_comparable(sweeps, *, allow_mixed: bool = False) -> None:
    """Refuse sweeps of different datasets or architectures unless ``allow_mixed``."""
    if allow_mixed:
        return
    for key in MUST_MATCH:
        values = {str(s.config.get(key)) for s in sweeps}
        if len(values) > 1:
            found = ", ".join(f"{s.config.get(key)} ({s.path})" for s in sweeps)
            raise RedrepError(
                f"sweeps: expected one {key} to compare, found {found}; "
                "set allow_mixed (--allow-mixed) to compare them anyway"
            )


# --------------------------------------------------------------------------- the tidy table
def comparison_rows(sweeps) -> list[dict]:
    """Tidy rows (:data:`COMPARE_COLUMNS`), one per sweep x quantity x width (width None for error_inf)."""
    rows = []

    def add(s, quantity, width, mean, sem=None, n=None):
        rows.append(
            {
                "sweep": str(s.path),
                "label": s.label,
                "quantity": quantity,
                "width": width,
                "mean": mean,
                "sem": sem,
                "n": n,
            }
        )

    for s in sweeps:
        for r in sorted(s.width_comparison, key=lambda r: int(r["width"])):
            w = int(r["width"])
            for quantity, key in (
                ("full_test_error", "full_test"),
                ("full_train_error", "full_train"),
                ("chunk_test_error", "chunk_test"),
            ):
                n = r.get("full_n" if key.startswith("full") else "chunk_n")
                add(s, quantity, w, _f(r.get(f"{key}_mean")), _f(r.get(f"{key}_sem")), n)
        add(s, "error_inf", None, s.error_inf, None, None if s.error_inf is None else 1)
        if s.clones is not None:
            for w in map(int, sorted({c["width"] for c in s.clones})):
                sel = [c for c in s.clones if c["width"] == w]
                for quantity in ("wc_star", "clones", "exponent"):
                    add(s, quantity, w, *mean_sem([c[quantity] for c in sel if c[quantity] is not None], missing=None))
        else:
            summ = s.summary
            for quantity, key in (("wc_star", "w_c_star"), ("clones", "n_clones"), ("exponent", "exponent")):
                v = summ.get(key)
                add(s, quantity, s.widest, None if v is None else float(v), None, 0 if v is None else 1)
    return rows


def _f(v):
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def series(rows, label, quantity):
    """(widths, mean, sem) arrays of one sweep's quantity, NaN where undefined."""
    sel = sorted((r for r in rows if r["label"] == label and r["quantity"] == quantity), key=lambda r: r["width"])
    nan = float("nan")
    return (
        np.array([r["width"] for r in sel], dtype=float),
        np.array([nan if r["mean"] is None else r["mean"] for r in sel], dtype=float),
        np.array([nan if r["sem"] is None else r["sem"] for r in sel], dtype=float),
    )


# --------------------------------------------------------------------------- reading and figure
def comparison_reading(sweeps) -> list[str]:
    """Plain sentences per sweep, then which sweeps show redundancy, with the numbers."""
    out = []
    shows, lacks = [], []
    for s in sweeps:
        t = sorted(s.width_comparison, key=lambda r: int(r["width"]))
        lo, hi = t[0], t[-1]
        msg = (
            f"{s.label}: full-network test error {float(lo['full_test_mean']):.4f} at W = {lo['width']}, "
            f"{float(hi['full_test_mean']):.4f} at W = {hi['width']}"
        )
        msg += f"; error_inf = {s.error_inf:.4f}" if s.error_inf is not None else "; error_inf unknown (one seed)"
        zero = [int(r["width"]) for r in t if _f(r.get("full_train_mean")) == 0]
        msg += f"; zero training error from W = {zero[0]} on." if zero else "; no width reaches zero training error."
        out.append(msg)
        if s.clones is not None:
            g = clone_growth(s.clones)
            if g.onset is None:
                lacks.append(s.label)
                defined = sorted({c["width"] for c in s.clones if c["wc_star"] is not None})
                out.append(
                    f"{s.label}: no redundancy across widths (the widest networks do not have w_c* < W on every "
                    "seed)"
                    + (
                        f"; w_c* defined at W = {', '.join(map(str, defined))}."
                        if defined
                        else "; no w_c* at any width."
                    )  # fmt: skip
                )
            else:
                shows.append(f"{s.label} (from W = {g.onset})")
                slope = (
                    ""
                    if g.slope is None
                    else f"; clones grow like W^{g.slope:.2f}"
                    + (f" ± {g.slope_se:.2f}" if g.slope_se is not None else "")
                )
                out.append(f"{s.label}: redundant from W = {g.onset} on{slope}.")
        else:
            w = s.summary.get("w_c_star")
            (shows if w is not None and w < s.widest else lacks).append(s.label)
            out.append(
                f"{s.label}: the widest network (W = {s.widest}) has "
                + (f"w_c* = {w} ({s.widest / w:.3g} clones)." if w else "no w_c*.")
                + f" No {CLONES_CSV}: the other widths were not analysed."
            )
    if shows and lacks:
        out.append(f"Redundancy shows in {'; '.join(shows)}, and not in {'; '.join(lacks)}.")
    elif shows:
        out.append(f"Every sweep shows redundancy: {'; '.join(shows)}.")
    else:
        out.append("No sweep shows redundancy across widths at this budget.")
    return out


#: Markers and line styles of the sweeps in turn, so that sweeps with equal values stay visible.
_MARKERS = ("o", "s", "^", "D", "v", "P")
_LINESTYLES = ("-", "--", ":", "-.")
#: Horizontal offset between sweeps, in octaves of W: points at the same width sit side by side.
_DODGE_OCTAVES = 0.05
#: Why a panel has no points.
_EMPTY = {
    "full_test_error": "no full-network test error",
    "wc_star": "no $w_c^*$ at any width of any sweep:\nno chunk size meets the thresholds",
    "clones": "no $w_c^*$ at any width of any sweep:\nno clone count",
    "exponent": "no decay exponent in any sweep: it needs error$_\\infty$\nand two chunk sizes at or above $w_c^*$ "
    "with test error\nabove error$_\\infty$",
}


def _same(a, b) -> bool:
    """Two (widths, mean, sem) series with the same values (NaN equal to NaN)."""
    return all(x.shape == y.shape and np.array_equal(x, y, equal_nan=True) for x, y in zip(a, b))


def comparison_figure(rows, labels, errors_inf, *, title: str | None = None) -> Figure:
    """(a) full-network test error, (b) w_c*, (c) clones W / w_c* (slope-1 guide), (d) decay exponent; against W.

    Each sweep has its own color, marker and line style, and its points are shifted by a few hundredths of an
    octave, so that sweeps with equal values do not hide each other; a sweep whose series equals an earlier
    one's says so in the legend. A panel without any value says why instead of showing an empty axis.
    """
    import matplotlib

    from ..report.figures import int_ticks, legend_below, log_xlim

    fig = Figure(figsize=(11.5, 8.6), layout="constrained")
    axes = fig.subplots(2, 2)
    colors = matplotlib.colormaps["tab10"]
    all_w = np.array(sorted({r["width"] for r in rows if r["width"] is not None}), dtype=float)
    panels = (
        (axes[0, 0], "full_test_error", "full-network test error"),
        (axes[0, 1], "wc_star", "critical chunk size $w_c^*$ (mean over seeds)"),
        (axes[1, 0], "clones", "clones W / $w_c^*$ (mean over seeds)"),
        (axes[1, 1], "exponent", "decay exponent of test error − error$_\\infty$"),
    )
    drawn = {q: False for _, q, _ in panels}
    n = len(labels)
    for i, label in enumerate(labels):
        style = dict(color=colors(i % 10), marker=_MARKERS[i % len(_MARKERS)], ls=_LINESTYLES[i % len(_LINESTYLES)])
        dodge = 2.0 ** ((i - (n - 1) / 2) * _DODGE_OCTAVES)
        for ax, quantity, _ in panels:
            s = series(rows, label, quantity)
            w, m, se = s
            ok = np.isfinite(m)
            if not ok.any():
                continue
            twin = next((labels[k] for k in range(i) if _same(series(rows, labels[k], quantity), s)), None)
            name = label if twin is None else f"{label} (identical to {twin})"
            ax.errorbar(w[ok] * dodge, m[ok], yerr=np.where(np.isfinite(se[ok]), se[ok], 0), ms=5, lw=1.5,
                        capsize=3, label=name, mfc="none" if twin is not None else None, **style)  # fmt: skip
            drawn[quantity] = True
        if errors_inf[i] is not None:
            axes[0, 0].axhline(errors_inf[i], color=style["color"], ls="--", lw=1, label=f"error$_\\infty$, {label}")
    if drawn["wc_star"]:
        axes[0, 1].plot(all_w, all_w, color="0.6", ls=":", lw=1.2, label="$w_c^*$ = W (no redundancy)")
    if drawn["clones"]:
        axes[1, 0].plot(all_w, all_w / all_w[0], color="0.35", ls="--", lw=1, label="slope 1 (linear growth)")
    if drawn["exponent"]:
        axes[1, 1].axhline(PAPER_EXPONENT, color="0.35", ls="--", lw=1, label="−1/2 (the paper)")
    for (ax, quantity, ylabel), letter in zip(panels, "abcd"):
        ax.set_title(f"({letter})", loc="left", fontweight="bold")
        ax.set_xlabel("width W")
        ax.set_ylabel(ylabel)
        ax.set_xscale("log", base=2)
        if all_w.size:
            ax.set_xlim(*log_xlim(all_w))
        int_ticks(ax)
        if not drawn[quantity]:  # nothing to show: say why, on no y scale at all
            ax.set_yticks([])
            ax.text(0.5, 0.5, _EMPTY[quantity], transform=ax.transAxes, ha="center", va="center", fontsize=9,
                    color="#8a1c00")  # fmt: skip
            continue
        if quantity != "exponent":
            ax.set_yscale("log", base=2 if quantity in ("wc_star", "clones") else 10)
            plain = FuncFormatter(lambda v, _: f"{v:g}")
            ax.yaxis.set_major_formatter(plain)
            if quantity == "full_test_error":
                ax.yaxis.set_minor_formatter(plain)
        ax.grid(True, alpha=0.3)
        legend_below(ax, ncol=2)
    fig.suptitle(title or "Width sweeps compared")
    return fig


# --------------------------------------------------------------------------- everything at once
@dataclass(frozen=True)
class Comparison:
    """What :func:`write_comparison` wrote."""

    sweeps: list
    rows: list
    reading: list
    csv: Path
    page: Path
    figures: list


def write_comparison(sweep_dirs, out, *, labels=None, allow_mixed: bool = False) -> Comparison:
    """Compare sweeps: write ``compare.csv``, ``compare.json``, ``figures/compare.*`` and ``compare.html`` in ``out``.

    Parameters
    ----------
    sweep_dirs : at least two sweep folders
    out : the output folder
    labels : one label per sweep (default: the settings in which they differ)
    allow_mixed : compare sweeps of different datasets or architectures
    """
    from ..report.figures import save_figure
    from ..report.pages import render_page, write_method_page

    sweep_dirs = [Path(p) for p in sweep_dirs]
    if len(sweep_dirs) < 2:
        raise RedrepError(f"sweep_dirs: expected at least two sweep folders to compare, found {len(sweep_dirs)}")
    if len({p.resolve() for p in sweep_dirs}) < len(sweep_dirs):
        raise RedrepError("sweep_dirs: expected different sweep folders, found one given twice")
    sweeps = [load_sweep(p) for p in sweep_dirs]
    check_comparable(sweeps, allow_mixed=allow_mixed)
    for s, lab in zip(sweeps, label_sweeps(sweeps, labels)):
        s.label = lab
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RedrepError(f"{out}: expected a folder for the comparison, found a file")
    rows = comparison_rows(sweeps)
    reading = comparison_reading(sweeps)
    fig = comparison_figure(rows, [s.label for s in sweeps], [s.error_inf for s in sweeps])
    figures = save_figure(fig, out / "figures", stem="compare")
    io.write_text(out / COMPARE_CSV, rows_to_csv(rows, COMPARE_COLUMNS))
    overview = [
        {
            "label": s.label,
            "path": str(s.path),
            "dataset": s.config.get("dataset"),
            "arch": s.config.get("arch"),
            "weight_decay": s.config.get("weight_decay"),
            "widths": ", ".join(str(int(r["width"])) for r in s.width_comparison),
            "seeds": s.config.get("seeds"),
            "epochs": s.config.get("epochs"),
            "error_inf": s.error_inf,
            "w_c_star_widest": s.summary.get("w_c_star"),
            "exponent_widest": s.summary.get("exponent"),
            "exponent_se_widest": s.summary.get("exponent_se"),
            "clones_csv": s.clones is not None,
            "notes": s.notes,
        }
        for s in sweeps
    ]
    io.write_json(out / COMPARE_JSON, {"tool": "redrep compare", "sweeps": overview, "reading": reading, "rows": rows})
    page = out / COMPARE_HTML
    io.write_text(page, render_page("compare.html", sweeps=overview, reading=reading, figure=fig, csv_name=COMPARE_CSV))
    write_method_page(out)
    return Comparison(sweeps, rows, reading, out / COMPARE_CSV, page, figures)
