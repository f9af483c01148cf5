"""Every generated page in a real browser: it opens, its images decode, no console errors, no network.

One headless chromium serves all pages (module-scope fixture). Set
REDREP_SCREENSHOTS=DIR to also save a full-page screenshot of each.
"""

from __future__ import annotations

import html
import json
import os
import shutil
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
