"""Self-contained HTML pages: the report of a chunk analysis, the report of a width sweep.

Every page is rendered from a Jinja2 template shipped in the package
(``redrep/report/templates/``) that extends the one layout ``base.html``, which
inlines the one stylesheet ``style.css``. Pages open in a browser with no
server and no network: figures are embedded as base64 data URIs, there are
no scripts and no external fonts. Python passes plain data (rows, strings,
data URIs); the templates decide the markup. :func:`render_page` is the entry
point for any page, this module's and others'.

The analysis report holds the summary (``w_c*``, decay exponent, number of
clones), a plain-language reading, the figures, the results by chunk size
(one column per declared metric, :mod:`redrep.core.metrics`), the tidy results
table, and the input with its metadata, parameters and versions.
"""

from __future__ import annotations

import base64
import math
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

from markupsafe import Markup
from matplotlib.figure import Figure

from .. import __version__
from ..core.summary import ChunkCurves, Summary, reading, summarize
from ..core.validation import RedrepError
from ..storage import io
from .figures import figure_bytes, three_panel_figure

REPORT_NAME = "report.html"
#: The rendered docs/method.md that every page links to, written beside it (pages work offline).
METHOD_PAGE = "method.html"
#: Lists in the metadata longer than this are shown shortened.
_MAX_LIST = 16
_MAX_STR = 400


# --------------------------------------------------------------------------- templates
@lru_cache(maxsize=1)
def _environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("redrep.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a missing context value is a bug, not an empty string
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["num"] = lambda v, digits=6: v if isinstance(v, str) else fmt_number(v, digits)
    env.filters["data_uri"] = image_data_uri
    return env


def base_context() -> dict:
    """What ``base.html`` adds to every page besides ``title``: the redrep version, the time of writing and the
    file name of the method page beside it (``method_page``; :func:`write_method_page` writes it)."""
    return {
        "version": __version__,
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "method_page": METHOD_PAGE,
    }


# --------------------------------------------------------------------------- the method, offline
def method_markdown() -> str | None:
    """The text of docs/method.md: the copy shipped in the package (``redrep/report/method.md``, put there
    when the wheel is built), else the one of a source checkout (an editable install); None without either."""
    from importlib import resources

    shipped = resources.files("redrep.report").joinpath("method.md")
    if shipped.is_file():
        return shipped.read_text(encoding="utf-8")
    checkout = Path(__file__).resolve().parents[3] / "docs" / "method.md"
    return checkout.read_text(encoding="utf-8") if checkout.is_file() else None


@lru_cache(maxsize=1)
def render_method_page() -> str:
    """docs/method.md as a page of its own (CommonMark with tables; its ``<a id>`` anchors kept)."""
    text = method_markdown()
    if text is None:
        body = Markup(
            '<p class="note">docs/method.md was not found in this installation of redrep (a wheel built without '
            "it): see docs/method.md in redrep's source.</p>"
        )
    else:
        from markdown_it import MarkdownIt

        # the project's own document: its raw HTML (the section anchors) is kept as written
        body = Markup(MarkdownIt("commonmark", {"html": True}).enable("table").render(text))
    return render_page("method.html", title="redrep: the method", body=body)


def write_method_page(folder) -> Path:
    """Write ``folder/method.html`` (the rendered docs/method.md) for the pages there to link to; returns its path.

    An identical file is left as it is.
    """
    path = Path(folder) / METHOD_PAGE
    text = render_method_page()
    # the page's footer carries the time of writing: compare without it
    stamp = text.rfind("<footer>")
    if path.is_file():
        old = path.read_text(encoding="utf-8")
        if old[: old.rfind("<footer>")] == text[:stamp]:
            return path
    io.write_text(path, text)
    return path


def render_page(template: str, **context) -> str:
    """Render a page template of the package (one that extends ``base.html``) to an HTML string.

    Parameters
    ----------
    template : str
        File name under ``redrep/report/templates/`` ("report.html", "sweep.html", or a page of another module).
    **context
        Plain data for the template. ``base.html`` expects ``title`` (text; or the page overrides
        the block ``title``) and takes an optional ``subtitle``; the page fills the block ``content``
        (and may override ``head``, ``header``, ``footer``). Text is escaped; wrap caller-built
        markup in :class:`markupsafe.Markup`. ``macros.html`` offers ``table``, ``figures`` and
        ``sentences``; the filter ``num`` formats numbers as :func:`fmt_number` does (``x | num(4)``),
        ``data_uri`` embeds a Figure or image bytes (:func:`image_data_uri`).

    Returns
    -------
    str, the whole page; images must already be data URIs (:func:`image_data_uri`).
    """
    import jinja2

    try:
        tpl = _environment().get_template(template)
    except jinja2.TemplateNotFound:
        raise RedrepError(f"template: expected a file of redrep/report/templates/, found no {template!r}") from None
    try:
        return tpl.render(**{**base_context(), "subtitle": "", **context})
    except jinja2.UndefinedError as exc:
        raise RedrepError(f"{template}: expected every value the page uses, found {exc.message}") from None


# --------------------------------------------------------------------------- small builders
def fmt_number(v, digits: int = 6) -> str:
    """A number for the tables: ``digits`` significant digits, "n/a" for None and NaN."""
    if v is None or isinstance(v, bool):
        return "n/a" if v is None else str(v)
    if isinstance(v, int):
        return str(v)
    v = float(v)
    if not math.isfinite(v):
        return "n/a"
    return f"{v:.{digits}g}"


def image_data_uri(image) -> str:
    """A data URI for a Figure (rendered as PNG), PNG/SVG bytes, or a (mime, bytes) pair."""
    if isinstance(image, Figure):
        mime, data = "image/png", figure_bytes(image, "png", dpi=110)
    elif isinstance(image, (bytes, bytearray)):
        data = bytes(image)
        if data.startswith(b"\x89PNG"):
            mime = "image/png"
        elif data.lstrip().startswith((b"<?xml", b"<svg")):
            mime = "image/svg+xml"
        else:
            raise RedrepError("report figure: expected PNG or SVG bytes, found another format")
    elif isinstance(image, tuple) and len(image) == 2:
        mime, data = image
    else:
        raise RedrepError(f"report figure: expected a matplotlib Figure or image bytes, found {type(image).__name__}")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _short(v):
    """A metadata value for display: long lists and strings shortened."""
    if isinstance(v, (list, tuple)) and len(v) > _MAX_LIST:
        head = ", ".join(str(x) for x in v[:8])
        return f"[{head}, ...] ({len(v)} values)"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_short(x)}" for k, x in v.items()) + "}"
    s = fmt_number(v) if isinstance(v, float) else ("n/a" if v is None else str(v))
    return s if len(s) <= _MAX_STR else s[:_MAX_STR] + f"... ({len(s)} characters)"


def _kv_table(d: dict, prefix: str = "") -> list:
    rows = []
    for k, v in d.items():
        if isinstance(v, dict) and v and len(str(v)) > 120:
            rows.extend(_kv_table(v, f"{prefix}{k}."))
        else:
            rows.append((f"{prefix}{k}", _short(v)))
    return rows


# --------------------------------------------------------------------------- the data of the pages
def summary_rows(summary: Summary, curves: ChunkCurves) -> list:
    """(quantity, value) pairs of the summary table."""
    exp = "n/a"
    if summary.exponent is not None:
        exp = fmt_number(summary.exponent, 4)
        if summary.exponent_se is not None:
            exp += f" ± {fmt_number(summary.exponent_se, 2)}"
    fit_sizes = ", ".join(str(w) for w in summary.fit_chunk_sizes) or "n/a"
    full = curves.test_error
    level = f"{100 * summary.bootstrap['level']:g} % " if summary.bootstrap else ""
    rows = [
        ("layer width W", summary.width),
        (
            "critical chunk size w_c*",
            "none" if summary.w_c_star is None else f"{summary.w_c_star}{_interval(summary.w_c_star_interval, 6)}",
        ),
        ("  criterion", summary.describe_criterion()),
    ]
    if summary.bootstrap:
        n = summary.bootstrap["replicates"]
        rows.append(("  interval", f"{level}bootstrap percentile interval over the random chunks, {n} replicates"))
    if summary.refinement:
        r = summary.refinement
        sizes = ", ".join(str(w) for w in r["sizes"])
        rows.append(("  refined sizes", f"{sizes} (between {r['between'][0]} and {r['between'][1]})"))
    clones = "n/a"
    if summary.n_clones is not None:
        clones = fmt_number(summary.n_clones, 4) + _interval(summary.n_clones_interval, 3)
    rows += [
        ("number of clones W / w_c*", clones),
        ("decay exponent of test error − error_inf (w_c ≥ w_c*)", exp),
        ("  chunk sizes in the fit", fit_sizes),
        ("error_inf (large-ensemble test error)", "absent" if summary.error_inf is None else summary.error_inf),
        (f"test error of the largest chunk (w_c = {int(full.chunk_size[-1])})", float(full.mean[-1])),
    ]
    return rows


def _interval(iv, digits: int) -> str:
    if iv is None:
        return ""
    lo, hi = iv
    lo_t = "below 1" if lo is None else fmt_number(lo, digits)
    hi_t = "none" if hi is None else fmt_number(hi, digits)
    return f" (interval {lo_t} to {hi_t})"


def criterion_data(summary: Summary) -> dict:
    """The criterion at every chunk size: the table of ``summary.checks`` (w_c* and refined sizes marked)."""
    crit = summary.criterion
    refined = set((summary.refinement or {}).get("sizes", ()))
    r2_label = "held-out R²" if summary.r2_kind == "heldout" else "in-sample R²"
    if crit.mode == "mean":
        header = ["chunk size", "mean training error", "misclassified per chunk (mean)", r2_label, "meets"]
    else:
        header = ["chunk size", f"chunks with ≤ {crit.train_tolerance} misclassified", "misclassified per chunk (mean)"]
        header += [r2_label, "meets"]
    rows, classes = [], []
    for c in summary.checks:
        size = f"{c.chunk_size}{' (refined)' if c.chunk_size in refined else ''}"
        mis = "n/a" if c.misclassified is None else fmt_number(c.misclassified, 3)
        meets = (
            "yes"
            if c.ok
            else ("no: " + ", ".join(n for n, ok in (("training", c.train_ok), ("R²", c.r2_ok)) if not ok))
        )
        if crit.mode == "mean":
            rows.append([size, fmt_number(c.train_error, 4), mis, fmt_number(c.r2, 4), meets])
        else:
            frac = "n/a" if c.fit_fraction is None else f"{100 * c.fit_fraction:.3g} %"
            if c.fit_fraction_is_bound:
                frac = f"≥ {frac}"
            rows.append([size, frac, mis, fmt_number(c.r2, 4), meets])
        classes.append("wstar" if summary.w_c_star is not None and c.chunk_size == summary.w_c_star else "")
    return {"header": header, "rows": rows, "classes": classes}


def sensitivity_data(summary: Summary) -> dict:
    """w_c* over the grid of thresholds (:func:`redrep.core.summary.sensitivity`), the criterion's cell marked."""
    s, crit = summary.sensitivity, summary.criterion
    if s["train_parameter"] == "train_tolerance":
        first, own = "misclassified samples allowed", crit.train_tolerance
    else:
        first, own = "mean training error ≤", crit.train_error_max
    header = [first] + [f"R² ≥ {fmt_number(r, 4)}" for r in s["r2_min"]]
    rows = []
    for v, ws in zip(s["train_values"], s["w_c_star"]):
        cells = ["none" if w is None else w for w in ws]
        if v == own:
            cells = [f"[{c}]" if r == crit.r2_min else c for c, r in zip(cells, s["r2_min"])]
        rows.append([fmt_number(v, 4)] + cells)
    return {"header": header, "rows": rows}


def by_size_data(curves: ChunkCurves, summary: Summary) -> dict:
    """The wide table: one row per chunk size, mean ± sem of every declared metric present (as shown: errors)."""
    named = curves.metrics()
    sizes = sorted({float(w) for _, c in named for w in c.chunk_size})
    rows, classes = [], []
    for w in sizes:
        row = [str(int(w))]
        for m, c in named:
            i = [k for k, x in enumerate(c.chunk_size) if x == w]
            if not i:
                row.append("")
                continue
            mean, sem = c.mean[i[0]], c.sem[i[0]]
            if math.isfinite(sem) and sem <= 1e-12 * max(1.0, abs(mean)):
                sem = 0.0  # identical chunks (w_c = W): rounding noise, not an uncertainty
            text = fmt_number(mean, m.digits)
            row.append(f"{text} ± {fmt_number(sem, 2)}" if math.isfinite(sem) and math.isfinite(mean) else text)
        rows.append(row)
        classes.append("crit" if summary.w_c_star is not None and w >= summary.w_c_star else "")
    return {
        "header": ["chunk size"] + [m.label for m, _ in named],
        "rows": rows,
        "classes": classes,
        "w_c_star": summary.w_c_star,
        "descriptions": [(m.label, m.description, m.anchor) for m, _ in named],
    }


def tidy_data(results) -> dict:
    header = ("metric", "split", "chunk_size", "mean", "std", "sem", "n")
    return {"header": header, "rows": [[r[k] for k in header] for r in results.rows]}


def input_data(doc: dict) -> list:
    """The input, parameters, versions and timings of ``results.json`` as titled (key, value) tables."""
    out = []
    inp = doc.get("input")
    if isinstance(inp, dict):
        out.append({"title": "Input", "rows": _kv_table(inp)})
    for key, title in (("params", "Parameters"), ("versions", "Versions"), ("timings_s", "Timings (s)")):
        v = doc.get(key)
        if isinstance(v, dict) and v:
            out.append({"title": title, "rows": _kv_table(v)})
    return out


def _figures(items) -> list:
    return [{"caption": caption or "", "src": image_data_uri(image)} for caption, image in items]


def _markup_sections(sections) -> list:
    return [{"title": str(t), "html": Markup(h)} for t, h in sections]


def report_context(
    results,
    *,
    curves: ChunkCurves | None = None,
    summary: Summary | None = None,
    figures=None,
    extra_figures=(),
    sections=(),
    lead_sections=(),
    title: str | None = None,
    train_error_max: float | None = None,
    r2_min: float | None = None,
) -> dict:
    """The plain data of ``report.html`` (see :func:`write_report` for the parameters)."""
    curves = curves if curves is not None else ChunkCurves.from_results(results)
    if summary is None:
        kw = {k: v for k, v in (("train_error_max", train_error_max), ("r2_min", r2_min)) if v is not None}
        summary = summarize(curves, **kw)
    if figures is None:
        figures = [
            (
                "(a) chunk test error above the large-ensemble error, log-log, with the w_c^(-1/2) guide; "
                "(b) chunk training error; (c) R² of reconstructing the whole layer from the chunk and the "
                "residual mean correlation. Bands: ± one standard error over random chunks. "
                "Shaded: w_c ≥ w_c*.",
                three_panel_figure(curves, summary),
            )
        ]
    doc = results.doc
    return {
        "title": title or f"redrep report: {curves.label or results.path}",
        "subtitle": f"Results folder {results.path}.",
        "summary_rows": summary_rows(summary, curves),
        "near_misses": [m.text for m in summary.near_misses],
        "criterion": criterion_data(summary),
        "sensitivity": sensitivity_data(summary),
        "criterion_text": summary.describe_criterion(),
        "notes": list(summary.notes),
        "reading": reading(summary, curves),
        "figures": _figures(list(figures) + list(extra_figures)),
        "by_size": by_size_data(curves, summary),
        "tidy": tidy_data(results),
        "inputs": input_data(doc),
        "created": str(doc["created"]) if doc.get("created") else "",
        "lead_sections": _markup_sections(lead_sections),
        "sections": _markup_sections(sections),
    }


def render_report(results, **kw) -> str:
    """The report as an HTML string; see :func:`write_report` for the parameters."""
    return render_page("report.html", **report_context(results, **kw))


def write_report(
    results,
    out_path=None,
    *,
    curves: ChunkCurves | None = None,
    summary: Summary | None = None,
    figures=None,
    extra_figures=(),
    sections=(),
    lead_sections=(),
    title: str | None = None,
    train_error_max: float | None = None,
    r2_min: float | None = None,
) -> Path:
    """Write the HTML report of a results folder atomically; returns its path.

    Parameters
    ----------
    results : Results, from :func:`redrep.storage.results.load_results`
    out_path : path of the HTML file; default ``results.path / "report.html"``
    curves, summary : computed from ``results`` when absent
    figures : list of (caption, image) or None
        Replaces the default three-panel figure. An image is a matplotlib Figure,
        PNG or SVG bytes, or a (mime type, bytes) pair.
    extra_figures : list of (caption, image), shown after ``figures``
    sections : list of (title, html), appended at the end; ``html`` is markup inserted as is
        (the caller escapes its own text; new pages should rather extend ``report.html``)
    lead_sections : list of (title, html), the same, placed first, before the summary
    title : the page title
    train_error_max, r2_min : thresholds of ``w_c*`` when ``summary`` is absent
    """
    out_path = Path(out_path) if out_path is not None else Path(results.path) / REPORT_NAME
    text = render_report(
        results,
        curves=curves,
        summary=summary,
        figures=figures,
        extra_figures=extra_figures,
        sections=sections,
        lead_sections=lead_sections,
        title=title,
        train_error_max=train_error_max,
        r2_min=r2_min,
    )
    io.write_text(out_path, text)
    write_method_page(out_path.parent)
    return out_path


# --------------------------------------------------------------------------- the sweep report
#: Columns of the sweep report's table of training runs.
RUN_COLUMNS = ("width", "seed", "test_error", "train_error", "zero_train_error_epoch", "epochs", "seconds")


def _pm(mean, sem) -> str:
    if mean is None or not math.isfinite(mean):
        return "n/a"
    return f"{mean:.4g}" + (f" ± {sem:.2g}" if sem is not None and math.isfinite(sem) else "")


def width_table_data(table, widest: int) -> dict:
    """The paper's Fig. 3a numbers, compactly: mean ± sem over seeds per width (the CSV has every column).

    ``table`` is the list of per-width dicts of :func:`redrep.experiments.sweep.width_table`.
    """
    header = (
        "W",
        "full network: test error",
        f"chunk of the W = {widest} net: test error",
        "full network: training error",
        "chunk: training error",
        "seeds",
    )
    rows = [
        [
            str(r["width"]),
            _pm(r["full_test_mean"], r["full_test_sem"]),
            _pm(r["chunk_test_mean"], r["chunk_test_sem"]),
            _pm(r["full_train_mean"], r["full_train_sem"]),
            _pm(r["chunk_train_mean"], r["chunk_train_sem"]),
            str(r["full_n"]),
        ]
        for r in table
    ]
    return {"header": header, "rows": rows}


def _sizes(sizes) -> str:
    sizes = [int(w) for w in sizes]
    return ", ".join(map(str, sizes)) if len(sizes) <= 8 else f"{sizes[0]}, {sizes[1]}, ..., {sizes[-1]}"


def sweep_subtitle(results, sweep_dir, config: dict, widest: int) -> str:
    """The sweep page's subtitle: the sweep (folder, data set, architecture, widths, seeds), then which analysis
    the summary below is."""
    sweep_dir = Path(sweep_dir)
    widths = config.get("widths") or []
    what = ", ".join(
        str(x)
        for x in (
            config.get("dataset"),
            config.get("arch"),
            f"widths {_sizes(widths)}" if widths else None,
            f"{config['seeds']} seeds" if config.get("seeds") else None,
        )
        if x
    )
    try:
        where = Path(results.path).resolve().relative_to(sweep_dir.resolve())
    except ValueError:
        where = Path(results.path)
    seed = results.doc.get("seed") if isinstance(results.doc, dict) else None
    whose = f"W = {widest} network" + (f" of seed {seed}" if seed is not None else "")
    return (
        f"Width sweep {sweep_dir}"
        + (f" ({what})" if what else "")
        + (f". Summary, figures and tables below the width table: the {whose} ({where}).")
    )


def summary_source(curves: ChunkCurves, summary: Summary, widest: int) -> list:
    """Sentences under the sweep page's summary heading: which chunk sizes its decay exponent was fitted over,
    and why the clones table's exponents (another analysis of every run) differ."""
    grid = _sizes(curves.test_error.chunk_size)
    fit = summary.fit_chunk_sizes
    head = f"This summary is that of the W = {widest} network analysed with chunk sizes equal to the sweep widths"
    head += f" ({grid})"
    head += (
        f"; its decay exponent is fitted over chunk sizes {', '.join(str(int(w)) for w in fit)}."
        if fit
        else "; it has no decay exponent (too few chunk sizes at or above w_c* with test error above error_inf)."
    )
    return [
        head,
        "The decay exponents of the clones table come from another analysis of every run, with chunk sizes W, "
        "W/2, ..., 1 and other random chunks, each fitted over its run's chunk sizes at or above its w_c*, and are "
        "means over seeds: they need not equal this one.",
    ]


def _cell(v):
    """A table cell: lists and strings as text, numbers and None as they are (the template formats them)."""
    return str(v) if isinstance(v, (list, tuple, dict, str)) else v


def write_sweep_report(
    results,
    out_path,
    *,
    sweep_reading,
    width_table,
    widest: int,
    runs,
    config: dict,
    curves: ChunkCurves | None = None,
    summary: Summary | None = None,
    figures=None,
    extra_figures=(),
    lead_sections=(),
    sections=(),
    title: str | None = None,
) -> Path:
    """Write the sweep report (``sweep.html``): the report of the widest network's analysis, led by the sweep.

    Parameters
    ----------
    results : Results of the widest network's analysis (seed 0)
    out_path : path of the HTML file
    sweep_reading : list of str, plain sentences on what the sweep shows
    width_table : list of per-width dicts (:func:`redrep.experiments.sweep.width_table`)
    widest : int, the widest W of the sweep
    runs : list of per-run dicts (keys of :data:`RUN_COLUMNS`)
    config : dict, the sweep configuration (``SweepConfig.to_dict()``)
    curves, summary, figures, extra_figures, title : as for :func:`write_report`
    lead_sections : list of (title, markup), placed after the width table (a clones section, say)
    sections : list of (title, markup), placed at the end
    """
    context = report_context(
        results,
        curves=curves,
        summary=summary,
        figures=figures,
        extra_figures=extra_figures,
        lead_sections=lead_sections,
        sections=sections,
        title=title,
    )
    out_path = Path(out_path)
    curves = curves if curves is not None else ChunkCurves.from_results(results)
    summary = summary if summary is not None else summarize(curves)
    context.update(
        subtitle=sweep_subtitle(results, out_path.parent, config, widest),
        summary_source=summary_source(curves, summary, widest),
        sweep_reading=list(sweep_reading),
        width=width_table_data(width_table, widest),
        runs={"header": RUN_COLUMNS, "rows": [[_cell(r.get(k)) for k in RUN_COLUMNS] for r in runs]},
        config_rows=[(k, _cell(v)) for k, v in config.items()],
    )
    io.write_text(out_path, render_page("sweep.html", **context))
    write_method_page(out_path.parent)
    return out_path
