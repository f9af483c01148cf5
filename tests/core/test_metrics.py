"""Metrics declared in one place: every consumer follows the registry of redrep.core.metrics."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
from click.testing import CliRunner

from redrep.cli import main
from redrep.core import metrics
from redrep.core.analysis import ChunkAnalysis
from redrep.core.summary import EXPONENT_UNRESOLVED_SE, ChunkCurves, Curve, reading, summarize
from redrep.core.validation import RedrepError
from redrep.report.figures import three_panel_figure
from redrep.report.pages import render_report
from redrep.storage.repset import RepresentationSet
from redrep.storage.results import AUTHORS_RESULT_FILES, load_results, read_result_array, write_results
from repsets import random_set
from results_factory import paper_like, write_results_dir

#: A metric no module knows about: declared in a test only.
TOY = metrics.Metric(
    "toy_score",
    "test",
    "regression",
    "correlation",
    curve="toy_score",
    label="toy score",
    panel="c",
    axis="right",
    description="A metric declared by the test only.",
)


def test_registry_is_consistent():
    keys = [m.key for m in metrics.METRICS]
    assert len(set(keys)) == len(keys)
    assert len({m.curve for m in metrics.METRICS}) == len(keys)
    assert len({m.file_name for m in metrics.METRICS}) == len(keys)
    assert {m.curve for m in metrics.METRICS if m.required} == {"train_error", "test_error", "r2"}
    held = metrics.by_key()[("r2_heldout", "test")]
    assert held.computed_by == "regression" and held.kind == "fraction" and held.panel == "c"
    assert "fitted on the training features, scored on the test features" in held.description
    assert AUTHORS_RESULT_FILES[("accuracy", "test")] == "acc_chunk_c10_test_wr28_8.npy"
    acc = metrics.by_key()[("accuracy", "train")]
    assert acc.shown_as_error and acc.shown(0.75) == pytest.approx(0.25)
    assert metrics.by_key()[("r2", "test")].shown(0.75) == 0.75


@pytest.mark.parametrize(
    "field, value", [("split", "val"), ("computed_by", "magic"), ("kind", "ratio"), ("panel", "d")]
)
def test_a_bad_declaration_fails_at_once(field, value):
    with pytest.raises(AssertionError):
        dataclasses.replace(TOY, **{field: value})


@pytest.mark.parametrize("seed", [0, 1])
def test_a_metric_added_to_the_registry_reaches_every_output(tmp_path, monkeypatch, seed):
    monkeypatch.setattr(metrics, "METRICS", metrics.METRICS + (TOY,))
    rs = random_set(seed, n_train=120, n_test=80, width=8)
    an = ChunkAnalysis(device="cpu", acc_rep=3, r2_rep=2, random_state=seed).fit(rs)
    toy = np.random.default_rng(seed).uniform(size=(len(an.chunk_sizes_), 2))
    an.values_[TOY.key] = toy  # what the analysis would compute for it
    write_results(an, rs, tmp_path)
    # results.csv and the neutral .npy file
    with open(tmp_path / "results.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["metric"] == "toy_score"]
    np.testing.assert_allclose([float(r["mean"]) for r in rows], toy.mean(axis=1))
    np.testing.assert_allclose(np.load(tmp_path / "toy_score_test.npy"), [an.chunk_sizes_, toy.mean(axis=1)])
    # the curves, panel (c) of the figure and the report's table
    curves = ChunkCurves.from_results(load_results(tmp_path))
    np.testing.assert_allclose(curves.toy_score.mean, toy.mean(axis=1))
    fig = three_panel_figure(curves)
    lines = [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_label() == "toy score (right)"]
    assert len(lines) == 1
    np.testing.assert_allclose(lines[0].get_ydata(), toy.mean(axis=1))
    html = render_report(load_results(tmp_path), figures=[])
    assert "<th>toy score</th>" in html and "A metric declared by the test only." in html


def test_the_cli_printout_follows_the_registry(tmp_path, monkeypatch):
    random_set(0, width=8).save(tmp_path / "set")
    dropped = tuple(m for m in metrics.METRICS if m.name != "mean_corr_outside")
    monkeypatch.setattr(metrics, "METRICS", dropped)
    r = CliRunner().invoke(
        main, ["analyze", "--device", "cpu", "--repr", str(tmp_path / "set"), "--acc-rep", "3", "--r2-rep", "2"]
    )
    assert r.exit_code == 0, r.output
    (header,) = [ln for ln in r.stdout.splitlines() if ln.startswith("chunk size")]
    assert "training error" in header and "R²" in header and "outside" not in header
    with open(tmp_path / "set" / "results" / "results.csv") as f:
        assert "mean_corr_outside" not in {row["metric"] for row in csv.DictReader(f)}
    assert not (tmp_path / "set" / "results" / "mean_corr_outside_test.npy").exists()


def test_a_declared_metric_missing_from_old_results_is_left_out(tmp_path):
    # results written before r2_heldout existed: no rows of it; they still load, plot and report
    write_results_dir(tmp_path, paper_like(width=64, w_star=16), error_inf=0.04)
    res = load_results(tmp_path)
    assert not res.has("r2_heldout", "test")
    curves = ChunkCurves.from_results(res)
    assert curves.r2_heldout is None and "r2_heldout" not in curves.curves
    fig = three_panel_figure(curves)
    assert not any("held out" in ln.get_label() for ax in fig.axes for ln in ax.get_lines())
    assert "R² held out" not in render_report(res, figures=[])


def test_r2_heldout_rows_are_plotted_and_tabled_when_present(tmp_path):
    write_results_dir(tmp_path, paper_like(width=64, w_star=16), error_inf=0.04)
    lines = (tmp_path / "results.csv").read_text().splitlines()
    extra = [ln.replace("r2,test", "r2_heldout,test") for ln in lines if ln.startswith("r2,test")]
    (tmp_path / "results.csv").write_text("\n".join(lines + extra) + "\n")
    curves = ChunkCurves.from_results(load_results(tmp_path))
    np.testing.assert_allclose(curves.r2_heldout.mean, curves.r2.mean)
    fig = three_panel_figure(curves)
    (held,) = [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_label() == "R² held out (left)"]
    np.testing.assert_allclose(held.get_ydata(), curves.r2.mean)
    assert "<th>R² held out</th>" in render_report(load_results(tmp_path), figures=[])


def test_chunk_curves_require_the_summary_metrics_and_known_names():
    w = np.array([1, 2, 4])
    c = Curve.from_arrays(w, [0.3, 0.2, 0.1])
    with pytest.raises(RedrepError, match=r"curves: expected a curve of R² \(r2, test\), found none"):
        ChunkCurves(train_error=c, test_error=c)
    with pytest.raises(RedrepError, match="curves: expected curve names of declared metrics, found nope"):
        ChunkCurves(c, c, c, curves={"nope": c})
    with pytest.raises(TypeError, match="no declared metric with curve name"):
        ChunkCurves(c, c, c, nope=c)
    curves = ChunkCurves(c, c, c, curves={"r2_heldout": c})
    assert [m.curve for m, _ in curves.metrics()] == ["train_error", "test_error", "r2", "r2_heldout"]
    assert curves.mean_corr is None and curves.width == 4
    with pytest.raises(AttributeError, match="immutable"):
        curves.width = 8


def test_read_result_array_accepts_both_names(tmp_path):
    arr = np.array([[1.0, 2.0], [0.5, 0.7]])
    np.save(tmp_path / "acc_chunk_c10_test_wr28_8.npy", arr)
    np.testing.assert_array_equal(read_result_array(tmp_path, "accuracy", "test"), arr)
    np.save(tmp_path / "accuracy_test.npy", arr + 1)  # the neutral name comes first
    np.testing.assert_array_equal(read_result_array(tmp_path, "accuracy", "test"), arr + 1)
    with pytest.raises(RedrepError, match=r"expected r2_test.npy or r2_c10_test_wr28_8.npy .* found neither"):
        read_result_array(tmp_path, "r2", "test")
    np.save(tmp_path / "r2_test.npy", np.zeros(3))
    with pytest.raises(RedrepError, match=r"expected an array of shape \(2, n_sizes\), found shape \(3,\)"):
        read_result_array(tmp_path, "r2", "test")
    (tmp_path / "mean_corr_test.npy").write_bytes(b"not an array")
    with pytest.raises(RedrepError, match="could not read it as a .npy array"):
        read_result_array(tmp_path, "mean_corr", "test")


def test_the_unresolved_cut_off_is_one_constant():
    w = 2.0 ** np.arange(8)
    curves = ChunkCurves(
        Curve.from_arrays(w, np.where(w >= 4, 0.0, 0.3)),
        Curve.from_arrays(w, 0.1 + 0.2 / np.sqrt(w)),
        Curve.from_arrays(w, np.where(w >= 4, 0.99, 0.5)),
        error_inf=0.1,
    )
    s = summarize(curves)
    at = dataclasses.replace(s, exponent_se=EXPONENT_UNRESOLVED_SE)
    below = dataclasses.replace(s, exponent_se=EXPONENT_UNRESOLVED_SE * 0.99)
    assert any("not resolved" in x for x in reading(at, curves))
    assert not any("not resolved" in x for x in reading(below, curves))


def _width_one_set(path, seed):
    rng = np.random.default_rng(seed)
    x, t = rng.normal(size=(60, 1)), rng.normal(size=(40, 1))
    RepresentationSet.from_arrays(
        x.astype(np.float32),
        t.astype(np.float32),
        (x[:, 0] > 0).astype(np.int64),
        (t[:, 0] > 0.3).astype(np.int64),
        np.array([[-1.0], [1.0]], np.float32),
        np.zeros(2, np.float32),
        error_inf=0.01,
    ).save(path)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_layer_of_width_one_analyzes_plots_and_reports(tmp_path, seed):
    _width_one_set(tmp_path / "set", seed)
    runner = CliRunner()
    res = tmp_path / "set" / "results"
    r = runner.invoke(
        main, ["analyze", "--device", "cpu", "--repr", str(tmp_path / "set"), "--acc-rep", "3", "--r2-rep", "2", "-q"]
    )
    assert r.exit_code == 0, r.output
    assert np.isnan(load_results(res).series("mean_corr")["mean"]).all()  # one neuron: no pair
    for extra in ([], ["--min-chunk-size", "1"]):
        r = runner.invoke(main, ["plot", "--results", str(res), "--out", str(tmp_path / "p"), "--dpi", "30", *extra])
        assert r.exit_code == 0, r.output
        assert (tmp_path / "p" / "set_plots.png").stat().st_size > 1000  # named after the set's folder
    r = runner.invoke(main, ["report", "--results", str(res)])
    assert r.exit_code == 0, r.output
    assert "data:image/png;base64," in (res / "report.html").read_text(encoding="utf-8")
    assert json.loads((res / "results.json").read_text())["summary"]["width"] == 1
    fig = three_panel_figure(load_results(res), min_chunk_size=1)
    for ax in fig.axes[:3]:
        assert np.all(np.isfinite(ax.get_xlim())) and np.all(np.isfinite(ax.get_ylim()))


def test_three_panel_figure_rejects_non_finite_options(tmp_path):
    write_results_dir(tmp_path, paper_like(width=64, w_star=16), error_inf=0.04)
    res = load_results(tmp_path)
    with pytest.raises(RedrepError, match="^min_chunk_size: expected a finite number, found nan"):
        three_panel_figure(res, min_chunk_size=float("nan"))
    with pytest.raises(RedrepError, match="^guide_prefactor: expected a finite number, found inf"):
        three_panel_figure(res, guide_prefactor=float("inf"))


def test_every_cited_section_of_the_method_exists():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    doc = (root / "docs" / "method.md").read_text(encoding="utf-8")
    anchors = set(re.findall(r'<a id="([a-z0-9-]+)"></a>', doc))
    cited = {m.anchor for m in metrics.METRICS}
    for f in (root / "src" / "redrep").rglob("*"):
        if f.suffix in (".py", ".html"):
            cited |= set(re.findall(r"docs/method\.md#([a-z0-9-]+)", f.read_text(encoding="utf-8")))
    cited |= set(re.findall(r"\(#([a-z0-9-]+)\)", doc))  # the document's own links
    assert {"inputs", "residual-correlations", "decay-exponent", "the-algebra"} <= cited
    assert cited <= anchors, sorted(cited - anchors)
    assert "SPEC.md" not in " ".join(f.read_text(encoding="utf-8") for f in (root / "src").rglob("*.py"))
