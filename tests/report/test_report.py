import base64
from html.parser import HTMLParser

import numpy as np
import pytest
from matplotlib.figure import Figure

from redrep.core.validation import RedrepError
from redrep.report.pages import REPORT_NAME, fmt_number, image_data_uri, render_report, write_report
from redrep.storage.results import load_results
from results_factory import paper_like, write_results_dir


class _Page(HTMLParser):
    """Images, tables (as lists of rows of cell texts) and all text of a page."""

    def __init__(self):
        super().__init__()
        self.images, self.tables, self.text, self.tags = [], [], [], []
        self._cell = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        if tag == "img":
            self.images.append(a["src"])
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def _parse(text):
    p = _Page()
    p.feed(text)
    p.close()
    p.all_text = " ".join(p.text)
    return p


def _results(tmp_path, **kw):
    c = paper_like(width=512, w_star=64, error_inf=0.04)
    write_results_dir(tmp_path, c, error_inf=0.04, meta={"dataset": "toy <net>", "long": list(range(100))}, **kw)
    return load_results(tmp_path)


def test_report_holds_numbers_tables_and_embedded_figure(tmp_path):
    res = _results(tmp_path)
    path = write_report(res)
    assert path == tmp_path / REPORT_NAME
    text = path.read_text(encoding="utf-8")
    page = _parse(text)
    # self-contained: no scripts, no external style sheets or images, no URLs at all
    assert "script" not in page.tags and "link" not in page.tags
    assert "http://" not in text and "https://" not in text
    # the embedded three-panel figure is a valid PNG
    assert len(page.images) == 1 and page.images[0].startswith("data:image/png;base64,")
    png = base64.b64decode(page.images[0].split(",", 1)[1])
    assert png.startswith(b"\x89PNG") and len(png) > 10000
    # summary table: w_c*, clones, exponent
    summary = {row[0]: row[1] for row in page.tables[0][1:]}
    assert summary["critical chunk size w_c*"] == "64"
    assert summary["number of clones W / w_c*"] == "8"
    assert summary["decay exponent of test error − error_inf (w_c ≥ w_c*)"].startswith("-0.5 ± ")
    assert summary["chunk sizes in the fit"] == "64, 128, 256, 512"
    assert summary["error_inf (large-ensemble test error)"] == "0.04"
    # the tidy table reproduces results.csv
    tidy = next(t for t in page.tables if t[0] == ["metric", "split", "chunk_size", "mean", "std", "sem", "n"])
    assert len(tidy) - 1 == len(res.rows)
    for cells, row in zip(tidy[1:], res.rows):
        assert cells[:3] == [row["metric"], row["split"], str(row["chunk_size"])]
        for cell, key in zip(cells[3:6], ("mean", "std", "sem")):
            if np.isnan(row[key]):
                assert cell == "n/a"
            else:
                assert float(cell) == pytest.approx(row[key], rel=1e-5, abs=1e-12)
    # the by-size table: one row per chunk size, the critical ones marked
    by_size = next(t for t in page.tables if t[0][0] == "chunk size")
    assert [r[0] for r in by_size[1:]] == [str(int(w)) for w in 2 ** np.arange(10)]
    assert text.count('<tr class="crit">') == 4
    # the reading and the input metadata, escaped and shortened
    assert "about 8 disjoint chunks" in page.all_text
    assert "toy <net>" in page.all_text and "toy <net>" not in text
    assert "(100 values)" in page.all_text


def test_report_without_error_inf_and_without_w_star(tmp_path):
    c = paper_like(error_inf=None)
    c["train_err"] = c["train_err"] + 0.03
    write_results_dir(tmp_path, c, error_inf=None)
    text = render_report(load_results(tmp_path))
    page = _parse(text)
    summary = {row[0]: row[1] for row in page.tables[0][1:]}
    assert summary["critical chunk size w_c*"] == "none"
    assert summary["number of clones W / w_c*"] == "n/a"
    assert summary["error_inf (large-ensemble test error)"] == "absent"
    assert "No chunk size meets the criterion" in page.all_text
    assert "error_inf is unknown" in page.all_text
    assert 'class="crit"' not in text  # no marked rows
    # a looser threshold finds one, and says so
    page = _parse(render_report(load_results(tmp_path), train_error_max=0.05))
    summary = {row[0]: row[1] for row in page.tables[0][1:]}
    assert summary["critical chunk size w_c*"] == "64"


def test_report_extra_figures_and_sections(tmp_path):
    res = _results(tmp_path)
    extra = Figure(figsize=(2, 2))
    extra.subplots().plot([1, 2], [1, 4])
    svg = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"></svg>'
    out = write_report(
        res,
        tmp_path / "sub" / "r.html",
        extra_figures=[("extra <fig>", extra), ("vector", svg)],
        sections=[("Width sweep", "<p id='sweep'>sweep table</p>")],
        title="A & B",
    )
    text = out.read_text(encoding="utf-8")
    page = _parse(text)
    assert len(page.images) == 3
    assert page.images[1].startswith("data:image/png;base64,")
    assert page.images[2].startswith("data:image/svg+xml;base64,")
    assert base64.b64decode(page.images[2].split(",", 1)[1]) == svg
    assert "<h2>Width sweep</h2><p id='sweep'>sweep table</p>" in text
    assert "<title>A &amp; B</title>" in text and "extra &lt;fig&gt;" in text
    # figures=[] replaces the default figure
    assert _parse(render_report(res, figures=[])).images == []


def test_report_bad_figure_and_atomic_write(tmp_path):
    res = _results(tmp_path)
    target = tmp_path / REPORT_NAME
    target.write_text("old")
    with pytest.raises(RedrepError, match="expected a matplotlib Figure or image bytes, found int"):
        write_report(res, extra_figures=[("x", 3)])
    with pytest.raises(RedrepError, match="expected PNG or SVG bytes"):
        image_data_uri(b"GIF89a")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["results.csv", "results.json", REPORT_NAME])


@pytest.mark.parametrize(
    "value, text", [(None, "n/a"), (float("nan"), "n/a"), (3, "3"), (0.123456789, "0.123457"), (1e-20, "1e-20")]
)
def test_fmt_number(value, text):
    assert fmt_number(value) == text


def test_render_page_uses_the_one_layout_and_escapes(tmp_path):
    from markupsafe import Markup

    from redrep.report.pages import render_page

    text = render_page("base.html", title="T <&>", subtitle="s <b>")
    page = _parse(text)
    assert "<title>T &lt;&amp;&gt;</title>" in text and "s &lt;b&gt;" in text
    assert text.count("<style>") == 1 and "font-family" in text  # style.css inlined, once
    assert "script" not in page.tags and "link" not in page.tags and "http" not in text
    # every page extends the same layout: the report carries the same stylesheet
    res = _results(tmp_path)
    report = render_report(res, figures=[], lead_sections=[("Lead", Markup("<p id='x'>x</p>"))])
    style = text[text.index("<style>") : text.index("</style>")]
    assert style in report
    assert report.index("<p id='x'>x</p>") < report.index('id="summary"')
    with pytest.raises(
        RedrepError, match=r"^base.html: expected every value the page uses, found 'title' is undefined"
    ):
        render_page("base.html")
    # the filters pages use
    from redrep.report.pages import _environment

    env = _environment()
    assert env.from_string("{{ 0.123456 | num(2) }} {{ 'a<b' | num }} {{ none | num }}").render() == "0.12 a&lt;b n/a"
    fig = Figure(figsize=(1, 1))
    fig.subplots()
    assert env.from_string("{{ f | data_uri }}").render(f=fig).startswith("data:image/png;base64,")
    with pytest.raises(
        RedrepError, match=r"^template: expected a file of redrep/report/templates/, found no 'nope.html'"
    ):
        render_page("nope.html", title="x")


def test_sweep_report_tables_and_order(tmp_path):
    from redrep.report.pages import RUN_COLUMNS, write_sweep_report

    res = _results(tmp_path)
    table = [
        {
            "width": w,
            "full_test_mean": 0.1 / w,
            "full_test_sem": 0.001,
            "chunk_test_mean": 0.2 / w,
            "chunk_test_sem": float("nan"),
            "full_train_mean": 0.0,
            "full_train_sem": 0.0,
            "chunk_train_mean": 0.01,
            "chunk_train_sem": 0.002,
            "full_n": 3,
        }
        for w in (16, 32)
    ]
    runs = [{"width": 16, "seed": 0, "test_error": 0.25, "train_error": 0.0, "epochs": 5, "seconds": 1.5}]
    out = write_sweep_report(
        res,
        tmp_path / "s" / "report.html",
        sweep_reading=["Wider <is> better."],
        width_table=table,
        widest=32,
        runs=runs,
        config={"widths": [16, 32], "dataset": "toy"},
        figures=[],
        lead_sections=[("Clones across widths", "<p id='clones'>c</p>")],
        title="sweep & co",
    )
    text = out.read_text(encoding="utf-8")
    page = _parse(text)
    assert "<title>sweep &amp; co</title>" in text and "Wider &lt;is&gt; better." in text
    order = ["What the sweep shows", "Full networks against", "id='clones'", 'id="summary"', 'id="runs"', 'id="config"']
    assert [text.index(k) for k in order] == sorted(text.index(k) for k in order)
    width = next(t for t in page.tables if t[0][0] == "W")
    assert width[1] == ["16", "0.00625 ± 0.001", "0.0125", "0 ± 0", "0.01 ± 0.002", "3"]
    runs_t = next(t for t in page.tables if t[0] == list(RUN_COLUMNS))
    assert runs_t[1] == ["16", "0", "0.25", "0", "n/a", "5", "1.5"]
    config = next(t for t in page.tables if t[0] == ["setting", "value"])
    assert config[1:] == [["widths", "[16, 32]"], ["dataset", "toy"]]


def test_report_shows_the_interval_the_near_miss_and_the_sensitivity(tmp_path):
    from redrep.core.summary import ChunkCurves, summarize

    res = _results(tmp_path)
    sizes = [8, 16, 32, 64]
    counts = np.array([[9] * 20, [0] * 16 + [2] * 4, [0] * 19 + [2], [0] * 20], dtype=float)
    acc = 1 - counts / 100
    values = {("accuracy", "train"): acc, ("accuracy", "test"): acc, ("r2", "test"): np.full((4, 5), 0.99),
              ("r2_heldout", "test"): np.full((4, 5), 0.99)}  # fmt: skip
    curves = ChunkCurves.from_values(sizes, values, n_train=100, width=64, seed=0, refinement=None)
    summary = summarize(curves, replicates=200)
    assert summary.w_c_star == 32 and summary.near_misses
    page = _parse(render_report(res, curves=curves, summary=summary))
    rows = {row[0]: row[1] for row in page.tables[0][1:]}
    lo, hi = summary.w_c_star_interval
    assert rows["critical chunk size w_c*"] == f"32 (interval {lo} to {hi})"
    assert rows["criterion"] == summary.describe_criterion()
    assert rows["interval"] == "95 % bootstrap percentile interval over the random chunks, 200 replicates"
    assert rows["number of clones W / w_c*"].startswith("2 (interval ")
    assert "Near miss." in page.all_text and summary.near_misses[0].text in page.all_text
    by_size = next(t for t in page.tables if t[0][:2] == ["chunk size", "chunks with ≤ 1 misclassified"])
    assert [r[1] for r in by_size[1:]] == ["0 %", "80 %", "95 %", "100 %"]
    assert [r[-1] for r in by_size[1:]] == ["no: training", "no: training", "yes", "yes"]
    sens = next(t for t in page.tables if t[0][0] == "misclassified samples allowed")
    assert sens[0][1:] == ["R² ≥ 0.9", "R² ≥ 0.95", "R² ≥ 0.98", "R² ≥ 0.99"]
    assert sens[2] == ["1", "32", "[32]", "32", "32"]  # the criterion used, in brackets
    assert sens[3] == ["2", "16", "16", "16", "16"]  # two samples allowed: 16 qualifies
