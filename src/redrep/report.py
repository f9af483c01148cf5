"""A self-contained HTML report of a chunk analysis.

One file that opens in a browser with no server and no network: figures are
embedded as base64 data URIs, tables are plain HTML, the style sheet is
inline. It holds the summary (``w_c*``, decay exponent, number of clones), a
plain-language reading, the figures, the results by chunk size, the tidy
results table, and the input with its metadata, parameters and versions.

:func:`write_report` takes extra figures and extra sections, so commands that
produce more than one results folder (e.g. a width sweep) can reuse it.
"""

from __future__ import annotations

import base64
import math
from datetime import datetime, timezone
from html import escape
from pathlib import Path

from matplotlib.figure import Figure

from . import __version__, io
from .plots import figure_bytes, three_panel_figure
from .summary import ChunkCurves, Summary, reading, summarize
from .validation import RedrepError

REPORT_NAME = "report.html"
#: Lists in the metadata longer than this are shown shortened.
_MAX_LIST = 16
_MAX_STR = 400

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #d8d8d8; padding: 0.25em 0.6em; text-align: right; vertical-align: top; }
th { background: #f3f3f3; }
td.k, th.k { text-align: left; font-family: ui-monospace, Menlo, Consolas, monospace; }
td.t { text-align: left; }
tr.crit td { background: #eaf6ea; }
.note { color: #8a1c00; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.92em; }
details summary { cursor: pointer; color: #1f5fa8; }
"""


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


def html_table(header, rows, *, left_cols=(0,), row_classes=None) -> str:
    """An HTML table; cells are escaped text (numbers formatted with :func:`fmt_number`)."""
    out = ["<table>", "<thead><tr>"]
    for j, h in enumerate(header):
        out.append(f'<th class="k">{escape(str(h))}</th>' if j in left_cols else f"<th>{escape(str(h))}</th>")
    out.append("</tr></thead><tbody>")
    for i, row in enumerate(rows):
        cls = f' class="{escape(row_classes[i])}"' if row_classes and row_classes[i] else ""
        out.append(f"<tr{cls}>")
        for j, cell in enumerate(row):
            text = cell if isinstance(cell, str) else fmt_number(cell)
            out.append(f'<td class="k">{escape(text)}</td>' if j in left_cols else f"<td>{escape(text)}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


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


# --------------------------------------------------------------------------- sections
def summary_html(summary: Summary, curves: ChunkCurves) -> str:
    exp = "n/a"
    if summary.exponent is not None:
        exp = fmt_number(summary.exponent, 4)
        if summary.exponent_se is not None:
            exp += f" ± {fmt_number(summary.exponent_se, 2)}"
    fit_sizes = ", ".join(str(w) for w in summary.fit_chunk_sizes) or "n/a"
    full = curves.test_error
    rows = [
        ("layer width W", summary.width),
        ("critical chunk size w_c*", "none" if summary.w_c_star is None else summary.w_c_star),
        ("  thresholds", f"training error ≤ {summary.train_error_max:g}, R² ≥ {summary.r2_min:g}"),
        ("number of clones W / w_c*", "n/a" if summary.n_clones is None else fmt_number(summary.n_clones, 4)),
        ("decay exponent of test error − error_inf (w_c ≥ w_c*)", exp),
        ("  chunk sizes in the fit", fit_sizes),
        ("error_inf (large-ensemble test error)", "absent" if summary.error_inf is None else summary.error_inf),
        (f"test error of the largest chunk (w_c = {int(full.chunk_size[-1])})", float(full.mean[-1])),
    ]
    out = [html_table(("quantity", "value"), rows, left_cols=(0,))]
    for note in summary.notes:
        out.append(f'<p class="note">{escape(note)}</p>')
    return "".join(out)


def by_size_html(curves: ChunkCurves, summary: Summary) -> str:
    """Wide table: one row per chunk size, mean ± sem of every curve."""
    named = [
        ("training error", curves.train_error),
        ("test error", curves.test_error),
        ("R²", curves.r2),
        ("mean corr. (all pairs)", curves.mean_corr),
    ]
    if curves.mean_corr_outside is not None:
        named.append(("mean corr. (outside chunk)", curves.mean_corr_outside))
    sizes = sorted({float(w) for _, c in named for w in c.chunk_size})
    rows, classes = [], []
    for w in sizes:
        row = [str(int(w))]
        for _, c in named:
            i = [k for k, x in enumerate(c.chunk_size) if x == w]
            if not i:
                row.append("")
                continue
            m, s = c.mean[i[0]], c.sem[i[0]]
            if math.isfinite(s) and s <= 1e-12 * max(1.0, abs(m)):
                s = 0.0  # identical chunks (w_c = W): rounding noise, not an uncertainty
            row.append(f"{fmt_number(m, 5)} ± {fmt_number(s, 2)}" if math.isfinite(s) else fmt_number(m, 5))
        rows.append(row)
        classes.append("crit" if summary.w_c_star is not None and w >= summary.w_c_star else "")
    header = ["chunk size"] + [n for n, _ in named]
    note = (
        f"<p>Mean ± standard error over random chunks. Shaded rows: w_c ≥ w_c* = {summary.w_c_star}.</p>"
        if summary.w_c_star is not None
        else "<p>Mean ± standard error over random chunks.</p>"
    )
    return note + html_table(header, rows, left_cols=(0,), row_classes=classes)


def tidy_html(results) -> str:
    header = ("metric", "split", "chunk_size", "mean", "std", "sem", "n")
    rows = [tuple(r[k] for k in header) for r in results.rows]
    table = html_table(header, rows, left_cols=(0, 1))
    return f"<details open><summary>results.csv ({len(rows)} rows; accuracy, not error)</summary>{table}</details>"


def input_html(doc: dict) -> str:
    out = []
    inp = doc.get("input")
    if isinstance(inp, dict):
        out.append("<h3>Input</h3>" + html_table(("key", "value"), _kv_table(inp), left_cols=(0, 1)))
    for key, title in (("params", "Parameters"), ("versions", "Versions"), ("timings_s", "Timings (s)")):
        v = doc.get(key)
        if isinstance(v, dict) and v:
            out.append(f"<h3>{title}</h3>" + html_table(("key", "value"), _kv_table(v), left_cols=(0, 1)))
    if doc.get("created"):
        out.append(f"<p>Results created {escape(str(doc['created']))}.</p>")
    return "".join(out) or "<p>No input metadata in results.json.</p>"


# --------------------------------------------------------------------------- the document
def render_report(
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
) -> str:
    """The report as an HTML string; see :func:`write_report` for the parameters."""
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
    figures = list(figures) + list(extra_figures)
    title = title or f"redrep report: {curves.label or results.path}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="sub">Results folder <code>{escape(str(results.path))}</code>; report written by redrep '
        f"{escape(__version__)} on {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.</p>",
        *(f"<h2>{escape(t)}</h2>{h}" for t, h in lead_sections),
        '<h2 id="summary">Summary</h2>',
        summary_html(summary, curves),
        '<h2 id="reading">What the numbers say</h2><ul>',
        *(f"<li>{escape(s)}</li>" for s in reading(summary, curves)),
        "</ul>",
        '<h2 id="figures">Figures</h2>',
    ]
    for caption, image in figures:
        parts.append(
            f'<figure><img alt="{escape(caption or "figure")}" src="{image_data_uri(image)}">'
            f"<figcaption>{escape(caption or '')}</figcaption></figure>"
        )
    parts += [
        '<h2 id="by-size">Results by chunk size</h2>',
        by_size_html(curves, summary),
        '<h2 id="tidy">Tidy results table</h2>',
        tidy_html(results),
        '<h2 id="input">Input and metadata</h2>',
        input_html(results.doc),
    ]
    for sec_title, sec_html in sections:
        parts.append(f"<h2>{escape(sec_title)}</h2>{sec_html}")
    parts.append("</body></html>\n")
    return "\n".join(parts)


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
    results : Results, from :func:`redrep.results.load_results`
    out_path : path of the HTML file; default ``results.path / "report.html"``
    curves, summary : computed from ``results`` when absent
    figures : list of (caption, image) or None
        Replaces the default three-panel figure. An image is a matplotlib Figure,
        PNG or SVG bytes, or a (mime type, bytes) pair.
    extra_figures : list of (caption, image), shown after ``figures``
    sections : list of (title, html), appended at the end; ``html`` is inserted as is
        (the caller escapes its own text)
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
    return out_path
