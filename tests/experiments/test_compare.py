"""`redrep compare`: the table against the sweeps it reads, labels, refusals with one line and exit 2."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from redrep.cli import main
from redrep.core.validation import RedrepError
from redrep.experiments.clones import read_clones_csv
from redrep.experiments.compare import (
    COMPARE_COLUMNS,
    SweepData,
    comparison_reading,
    comparison_rows,
    label_sweeps,
    load_sweep,
    write_comparison,
)
from redrep.experiments.sweep import run_sweep
from results_factory import clone_rows, read_csv, tiny


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    run_sweep(tiny(device="cpu", weight_decay=0.0), root / "wd0", log=lambda _m: None)
    run_sweep(tiny(device="cpu"), root / "wd", log=lambda _m: None)
    return root


def _num(s):
    return None if s == "" else float(s)


def test_compare_table_comes_from_the_sweeps(sweeps, tmp_path):
    res = write_comparison([sweeps / "wd0", sweeps / "wd"], tmp_path / "cmp")
    rows = read_csv(tmp_path / "cmp" / "compare.csv")
    assert tuple(rows[0]) == COMPARE_COLUMNS
    assert [s.label for s in res.sweeps] == ["weight_decay=0", "weight_decay=0.0005"]
    for name, label in (("wd0", "weight_decay=0"), ("wd", "weight_decay=0.0005")):
        doc = json.loads((sweeps / name / "sweep.json").read_text())
        mine = [r for r in rows if r["label"] == label]
        assert {r["sweep"] for r in mine} == {str(sweeps / name)}
        for t in doc["width_comparison"]:
            (r,) = [r for r in mine if r["quantity"] == "full_test_error" and r["width"] == str(t["width"])]
            assert float(r["mean"]) == t["full_test_mean"] and int(r["n"]) == t["full_n"] == 2
        (e,) = [r for r in mine if r["quantity"] == "error_inf"]
        assert float(e["mean"]) == doc["error_inf"] and e["width"] == ""
        clones = read_clones_csv(sweeps / name / "clones.csv")
        for w in (8, 16):
            for q in ("wc_star", "clones", "exponent"):
                (r,) = [r for r in mine if r["quantity"] == q and r["width"] == str(w)]
                v = [c[q] for c in clones if c["width"] == w and c[q] is not None]
                assert int(r["n"]) == len(v)
                assert (_num(r["mean"]) is None and not v) or _num(r["mean"]) == pytest.approx(np.mean(v))
    html = (tmp_path / "cmp" / "compare.html").read_text()
    assert "weight_decay=0" in html and "data:image/png;base64," in html
    assert (tmp_path / "cmp" / "figures" / "compare.png").stat().st_size > 0


def test_a_sweep_without_clones_csv_uses_its_widest_summary(sweeps, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(sweeps / "wd", old)
    (old / "clones.csv").unlink()
    res = write_comparison([sweeps / "wd0", old], tmp_path / "cmp", labels=["no decay", "old sweep"])
    summ = json.loads((old / "sweep.json").read_text())["summary"]
    mine = [r for r in res.rows if r["label"] == "old sweep" and r["quantity"] == "wc_star"]
    assert [(r["width"], r["mean"]) for r in mine] == [(16, None if summ["w_c_star"] is None else summ["w_c_star"])]
    assert "no clones.csv" in (tmp_path / "cmp" / "compare.html").read_text()


def test_labels_from_the_settings_that_differ(sweeps, tmp_path):
    same = tmp_path / "same"
    shutil.copytree(sweeps / "wd", same)
    s = [load_sweep(sweeps / "wd"), load_sweep(same)]
    assert label_sweeps(s) == ["wd", "same"]
    with pytest.raises(RedrepError, match="labels: expected one label per sweep"):
        label_sweeps(s, ["a"])


def _edit(folder, **changes):
    f = folder / "sweep.json"
    doc = json.loads(f.read_text())
    for k, v in changes.items():
        if k == "status":
            doc = {"config": doc["config"], "status": v}
        else:
            doc["config"]["train"][k] = v
    f.write_text(json.dumps(doc))


def test_refusals_are_one_line_and_exit_2(sweeps, tmp_path):
    runner = CliRunner()
    other = tmp_path / "other"
    shutil.copytree(sweeps / "wd", other, ignore=shutil.ignore_patterns("runs", "clones"))
    _edit(other, dataset="parity-digits")
    unfinished = tmp_path / "unfinished"
    shutil.copytree(sweeps / "wd", unfinished, ignore=shutil.ignore_patterns("runs", "clones"))
    _edit(unfinished, status="training")
    (tmp_path / "empty").mkdir()
    out = str(tmp_path / "cmp")
    cases = [
        ([str(sweeps / "wd0"), str(other)], "expected one dataset to compare"),
        ([str(sweeps / "wd0"), str(tmp_path / "empty")], "not a redrep sweep (expected sweep.json"),
        ([str(sweeps / "wd0"), str(tmp_path / "nowhere")], "no such folder"),
        ([str(sweeps / "wd0"), str(unfinished)], "expected a finished sweep"),
        ([str(sweeps / "wd0")], "expected at least two sweep folders"),
        ([str(sweeps / "wd0"), str(sweeps / "wd0")], "one given twice"),
        ([str(sweeps / "wd0"), str(sweeps / "wd"), "--label", "a"], "labels: expected one label per sweep (2)"),
    ]
    for args, message in cases:
        r = runner.invoke(main, ["compare", *args, "--out", out])
        assert r.exit_code == 2, r.output
        assert message in r.output and len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert not (tmp_path / "cmp").exists()  # nothing written by a refused comparison
    (tmp_path / "file").write_text("x")
    r = runner.invoke(main, ["compare", str(sweeps / "wd0"), str(sweeps / "wd"), "--out", str(tmp_path / "file")])
    assert r.exit_code == 2 and "'--out'" in r.output and "is a file" in r.output
    with pytest.raises(RedrepError, match="expected a folder for the comparison, found a file"):
        write_comparison([sweeps / "wd0", sweeps / "wd"], tmp_path / "file")
    assert (tmp_path / "file").read_text() == "x"
    r = runner.invoke(main, ["compare", str(sweeps / "wd0"), str(other), "--out", out, "--allow-mixed"])
    assert r.exit_code == 0, r.output
    rows = read_csv(tmp_path / "cmp" / "compare.csv")
    assert {r["label"] for r in rows} == {
        "dataset=synthetic, weight_decay=0",
        "dataset=parity-digits, weight_decay=0.0005",
    }
    assert all(math.isfinite(float(r["mean"])) for r in rows if r["quantity"] == "full_test_error")


def _data(name, table, clones, error_inf=0.02):
    return SweepData(Path(name), {"dataset": "d", "arch": "mlp"}, error_inf, table, {}, clones, label=name)


def test_reading_says_which_sweeps_show_redundancy():
    table = [
        {"width": w, "full_test_mean": e, "full_train_mean": t}
        for w, e, t in ((16, 0.1, 0.01), (32, 0.08, 0.0), (64, 0.07, 0.0))
    ]
    regularized = _data("wd", table, clone_rows({16: [16, 16], 32: [16, 16], 64: [16, 16]}))
    plain = _data("wd0", table, clone_rows({16: [None, 16], 32: [32, None], 64: [64, 64]}), error_inf=None)
    text = comparison_reading([regularized, plain])
    assert text[0] == (
        "wd: full-network test error 0.1000 at W = 16, 0.0700 at W = 64; error_inf = 0.0200; "
        "zero training error from W = 32 on."
    )
    assert text[1] == "wd: redundant from W = 32 on; clones grow like W^1.00."
    assert "error_inf unknown" in text[2]
    assert text[3].startswith("wd0: no redundancy across widths") and "w_c* defined at W = 16, 32, 64" in text[3]
    assert text[-1] == "Redundancy shows in wd (from W = 32), and not in wd0."
    rows_ = comparison_rows([regularized, plain])
    (c,) = [r for r in rows_ if r["label"] == "wd0" and r["quantity"] == "wc_star" and r["width"] == 32]
    assert (c["mean"], c["sem"], c["n"]) == (32.0, None, 1)


def _panel_points(ax):
    """(label, x, y) of each errorbar series on an axes (its data line)."""
    out = []
    for c in ax.containers:
        line = c.lines[0]
        out.append((c.get_label(), np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)))
    return out


def test_identical_sweeps_stay_visible_and_say_so():
    """Two sweeps with the same numbers used to draw one curve over the other: now side by side, and labelled."""
    from redrep.experiments.compare import comparison_figure

    table = [{"width": w, "full_test_mean": e, "full_test_sem": 0.01, "full_train_mean": 0.0, "full_n": 2}
             for w, e in ((16, 0.1), (32, 0.08), (64, 0.07))]  # fmt: skip
    wc = {16: [16, 16], 32: [16, 16], 64: [16, 32]}
    a, b = _data("wd", table, clone_rows(wc)), _data("wd0", table, clone_rows(wc))
    fig = comparison_figure(comparison_rows([a, b]), ["wd", "wd0"], [0.02, 0.02])
    for ax in (fig.axes[0], fig.axes[1], fig.axes[2]):
        (la, xa, ya), (lb, xb, yb) = _panel_points(ax)
        assert (la, lb) == ("wd", "wd0 (identical to wd)")
        np.testing.assert_array_equal(ya, yb)
        # the same widths, drawn a few hundredths of an octave apart: neither hides the other
        assert np.all(xb > xa) and np.allclose(np.log2(xb / xa), 0.05)
        assert np.allclose(np.sqrt(xa * xb), [16, 32, 64])
        # and with their own marker and line style
        (ca, cb) = ax.containers
        assert ca.lines[0].get_marker() != cb.lines[0].get_marker()
        assert ca.lines[0].get_linestyle() != cb.lines[0].get_linestyle()


def test_a_panel_without_values_says_why_instead_of_an_empty_axis():
    """No sweep has a decay exponent (clone_rows has none): panel (d) says so, with no y ticks and no -1/2 line."""
    from redrep.experiments.compare import comparison_figure

    table = [{"width": w, "full_test_mean": e, "full_train_mean": 0.0} for w, e in ((16, 0.1), (32, 0.08))]
    a, b = _data("wd", table, clone_rows({16: [16], 32: [16]})), _data("wd0", table, clone_rows({16: [16], 32: [32]}))
    fig = comparison_figure(comparison_rows([a, b]), ["wd", "wd0"], [None, None])
    ax_b, ax_d = fig.axes[1], fig.axes[3]
    assert _panel_points(ax_d) == [] and list(ax_d.get_yticks()) == []
    assert not any("the paper" in ln.get_label() for ln in ax_d.lines)
    (text,) = ax_d.texts
    assert text.get_text().startswith("no decay exponent in any sweep")
    assert len(_panel_points(ax_b)) == 2 and not ax_b.texts  # a panel with values draws them
    # and no w_c* anywhere: panels (b) and (c) say so too
    none = {16: [None], 32: [None]}
    fig = comparison_figure(comparison_rows([_data("x", table, clone_rows(none)), _data("y", table, clone_rows(none))]),
                            ["x", "y"], [None, None])  # fmt: skip
    assert all(ax.texts and ax.texts[0].get_text().startswith("no $w_c^*$") for ax in fig.axes[1:3])
