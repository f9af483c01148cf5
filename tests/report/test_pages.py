"""Every generated page in a real browser: it opens, its images decode, no console errors, no network.

One headless chromium serves all pages (module-scope fixture). Set
REDREP_SCREENSHOTS=DIR to also save a full-page screenshot of each.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from browser import inspect_page, start_chromium
from localhttp import LocalServer, Route
from redrep.experiments.clones import clones_reading, read_clones_csv, row_from_summary
from redrep.experiments.compare import write_comparison
from redrep.experiments.dynamics import DynamicsConfig, run_dynamics
from redrep.experiments.sweep import run_sweep
from redrep.report.pages import write_report
from redrep.storage.results import load_results, write_results
from repsets import random_set
from results_factory import tiny

# a 1x1 transparent PNG
_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d4944415478da63f8ffff3f0005fe02fe0dc7d4ac0000000049454e44ae426082"
)


@pytest.fixture(scope="module")
def driver():
    drv, why = start_chromium()
    if drv is None:
        print(f"browser tests skipped: {why}")
        pytest.skip(why)
    yield drv
    drv.quit()


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """The four kinds of page redrep writes, built from small data."""
    root = tmp_path_factory.mktemp("pages")
    from redrep.core.analysis import ChunkAnalysis

    rs = random_set(seed=3)
    an = ChunkAnalysis(acc_rep=5, r2_rep=3, random_state=0, device="cpu").fit(rs)
    write_results(an, rs, root / "results")
    report = write_report(load_results(root / "results"))
    sweep = run_sweep(tiny(device="cpu"), root / "sweep", log=lambda _m: None)
    dyn = run_dynamics(
        root / "sweep" / "runs" / "w00016_s0", config=DynamicsConfig(acc_rep=4, r2_rep=3, device="cpu"), progress=False
    )
    shutil.copytree(root / "sweep", root / "sweep2", ignore=shutil.ignore_patterns("runs", "clones", "analysis"))
    cmp = write_comparison([root / "sweep", root / "sweep2"], root / "cmp", labels=["first", "second"])
    return {"analysis report": report, "sweep report": sweep.report, "dynamics": dyn.page, "compare": cmp.page}


@pytest.mark.parametrize("name", ["analysis report", "sweep report", "dynamics", "compare"])
def test_page_in_the_browser(driver, pages, name):
    shots = os.environ.get("REDREP_SCREENSHOTS")
    shot = Path(shots) / f"{name.replace(' ', '_')}.png" if shots else None
    check = inspect_page(driver, pages[name], screenshot=shot)
    assert check.title.startswith("redrep")
    assert check.images and check.broken_images == [], check.images
    assert check.console_errors == []
    assert check.network == [], check.network
    assert check.requests and check.requests[0].startswith("file:")


def test_sweep_writes_clones_of_every_run(pages):
    """The sweep's clones.csv holds every run, each row from that run's results.json summary."""
    sweep = Path(pages["sweep report"]).parent
    rows = read_clones_csv(sweep / "clones.csv")
    assert [(r["width"], r["seed"]) for r in rows] == [(8, 0), (8, 1), (16, 0), (16, 1)]
    doc = json.loads((sweep / "sweep.json").read_text())
    for r in rows:
        res = load_results(sweep / "clones" / f"w{r['width']:05d}_s{r['seed']}")
        assert row_from_summary(r["width"], r["seed"], res.doc["summary"])["wc_star"] == r["wc_star"]
        assert res.error_inf == doc["error_inf"]
    assert doc["clones"]["reading"] == clones_reading(rows)
    text = Path(pages["sweep report"]).read_text()
    assert "Clones across widths" in text and all(html.escape(s) in text for s in doc["clones"]["reading"])
    assert (sweep / "figures" / "clones.png").is_file()


def test_the_checker_sees_what_it_must_refuse(driver, tmp_path):
    """A broken image, a console error and a request to a server are each reported."""
    with LocalServer() as srv:
        srv.routes["/x.png"] = Route(body=_PNG, headers={"Content-Type": "image/png"})
        page = tmp_path / "bad.html"
        page.write_text(
            "<!DOCTYPE html><html><head><title>bad</title></head><body>"
            '<img src="data:image/png;base64,AAAA">'
            f'<img src="{srv.url("/x.png")}">'
            "<script>console.error('boom')</script></body></html>"
        )
        check = inspect_page(driver, page)
    assert check.broken_images == ["data:image/png;base64,AAAA"]
    assert any("boom" in m for m in check.console_errors)
    assert check.network == [srv.url("/x.png")]
    assert len(srv.requests) == 1


class _Links(HTMLParser):
    """Every href and every id of a page."""

    def __init__(self):
        super().__init__()
        self.hrefs, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("href"):
            self.hrefs.append(a["href"])
        if a.get("id"):
            self.ids.add(a["id"])


def _parse(path) -> _Links:
    p = _Links()
    p.feed(Path(path).read_text(encoding="utf-8"))
    return p


@pytest.mark.parametrize("name", ["analysis report", "sweep report", "dynamics", "compare"])
def test_links_to_the_method_work_offline(pages, name):
    """The definitions used to be plain text 'docs/method.md': now links to method.html, written beside the page,
    whose anchors exist."""
    page = Path(pages[name])
    links = _parse(page)
    local = [h for h in links.hrefs if not h.startswith(("http:", "https:", "mailto:"))]
    assert any(h.startswith("method.html") for h in local), links.hrefs
    for href in local:
        target, _, anchor = href.partition("#")
        path = page.parent / target if target else page
        assert path.is_file(), href
        if anchor:
            assert anchor in _parse(path).ids, href
    text = (page.parent / "method.html").read_text(encoding="utf-8")
    assert "<h1>The method: what redrep measures and how</h1>" in text and "<table>" in text


def test_the_method_page_holds_every_anchor_the_code_cites():
    """Every section a metric or a page cites (redrep.core.metrics, the templates) is an anchor of method.html."""
    import re

    from redrep.core.metrics import METRICS
    from redrep.report.pages import render_method_page

    ids = _Links()
    ids.feed(render_method_page())
    templates = Path(__file__).resolve().parents[2] / "src" / "redrep" / "report" / "templates"
    cited = {m.anchor for m in METRICS}
    for t in templates.glob("*.html"):
        cited |= set(re.findall(r"method_page \}\}#([\w-]+)", t.read_text(encoding="utf-8")))
    assert cited and cited <= ids.ids, cited - ids.ids


def test_sweep_page_names_the_sweep_and_the_grid_of_its_exponent(pages):
    """The subtitle named demo_output/analysis/seed0; the summary's exponent came from another grid than the clones
    table's without saying so."""
    page = Path(pages["sweep report"])
    sweep = page.parent
    text = html.unescape(page.read_text(encoding="utf-8"))
    sub = re.search(r'<p class="sub">(.*?)</p>', text, re.S).group(1)
    assert sub.startswith(f"Width sweep {sweep} (synthetic, mlp, widths 8, 16, 2 seeds).")
    assert sub.endswith("the W = 16 network of seed 0 (analysis/seed0).")
    summary = load_results(sweep / "analysis" / "seed0").doc
    fit = summary.get("summary", {}).get("exponent_fit_chunk_sizes") or []
    assert "analysed with chunk sizes equal to the sweep widths (8, 16)" in text
    if fit:
        assert f"fitted over chunk sizes {', '.join(map(str, fit))}." in text
    else:
        assert "it has no decay exponent" in text
    assert "another analysis of every run, with chunk sizes W, W/2, ..., 1" in text
    assert "decay exponent (mean; chunk sizes w_c* ≤ w_c ≤ W of W, W/2, ..., 1)" in text


def test_an_installed_wheel_ships_the_method(tmp_path):
    """The pages' method.html comes from docs/method.md: a built wheel (not only a checkout) must hold it."""
    import subprocess
    import sys
    import zipfile

    root = Path(__file__).resolve().parents[2]
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(root),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if r.returncode != 0 and "No module named" in r.stderr:
        pytest.skip(f"cannot build a wheel here: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stderr[-2000:]
    (whl,) = tmp_path.glob("redrep-*.whl")
    with zipfile.ZipFile(whl) as z:
        shipped = z.read("redrep/report/method.md").decode("utf-8")
        assert "redrep/report/templates/method.html" in z.namelist()
    assert shipped == (root / "docs" / "method.md").read_text(encoding="utf-8")
