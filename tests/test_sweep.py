"""Width sweeps and the demo: resumption, the Fig. 3a numbers against the runs they come from."""

from __future__ import annotations

import csv
import json
from dataclasses import fields

import numpy as np
import pytest
from click.testing import CliRunner

import redrep.sweep as sweep_mod
from redrep.cli import main
from redrep.plots import width_figure
from redrep.sweep import SweepConfig, run_name, run_sweep, sweep_reading, width_table
from redrep.train import TrainConfig
from redrep.validation import RedrepError

TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}


def tiny(**kw):
    train = dict(dataset="synthetic", arch="mlp", depth=2, epochs=3, lr=0.05, data_dir=None, checkpoint_epochs=())
    train.update({k: kw.pop(k) for k in list(kw) if k in TRAIN_FIELDS})
    base = dict(widths=(8, 16), seeds=2, acc_rep=4, r2_rep=3, jobs=1, progress=False)
    base.update(kw)
    return SweepConfig(train=TrainConfig(**train), **base)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    result = run_sweep(tiny(), out, log=lambda _m: None)
    return out, result


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_sweep_writes_everything(finished):
    out, result = finished
    for name in (
        "sweep.json",
        "sweep.csv",
        "width_comparison.csv",
        "report.html",
        "figures/width_comparison.png",
        "figures/chunks.pdf",
        "analysis/seed0/results.csv",
        "analysis/seed1/results.json",
        f"runs/{run_name(16, 1)}/representations/meta.json",
    ):
        assert (out / name).is_file(), name
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["status"] == "done" and len(doc["runs"]) == 4
    assert doc["error_inf"] == pytest.approx(result.error_inf)
    html = (out / "report.html").read_text()
    assert "Full networks against chunks, by width" in html and "data:image/png;base64," in html
    # the sweep's own reading leads the page, before the chunk-analysis summary
    assert html.index("What the sweep shows") < html.index('id="summary"')


def test_fig3a_numbers_come_from_the_runs(finished):
    out, result = finished
    table = {int(r["width"]): r for r in _csv(out / "width_comparison.csv")}
    for w in (8, 16):
        errs = []
        for s in range(2):
            run = out / "runs" / run_name(w, s)
            doc = json.loads((run / "representations" / "meta.json").read_text())
            errs.append(1 - doc["meta"]["test_accuracy"])
            # the training loop's own evaluation of the same network agrees
            last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
            assert abs((1 - last["test_acc"]) - errs[-1]) <= 1 / doc["n_test"] + 1e-12
        assert float(table[w]["full_test_mean"]) == pytest.approx(np.mean(errs), abs=1e-12)
        assert float(table[w]["full_test_sem"]) == pytest.approx(np.std(errs, ddof=1) / np.sqrt(2), abs=1e-12)
        chunk = []
        for s in range(2):
            rows = _csv(out / "analysis" / f"seed{s}" / "results.csv")
            acc = [
                float(r["mean"])
                for r in rows
                if r["metric"] == "accuracy" and r["split"] == "test" and int(r["chunk_size"]) == w
            ]
            chunk.append(1 - acc[0])
        assert float(table[w]["chunk_test_mean"]) == pytest.approx(np.mean(chunk), abs=1e-12)
    # a chunk of all W neurons of the widest network is that network
    assert float(table[16]["chunk_test_mean"]) == pytest.approx(float(table[16]["full_test_mean"]), abs=1e-12)


def test_error_inf_is_stored_in_the_widest_sets(finished):
    out, result = finished
    for s in range(2):
        meta = json.loads((out / "runs" / run_name(16, s) / "representations" / "meta.json").read_text())
        assert meta["error_inf"] == pytest.approx(result.error_inf)


def test_interrupted_sweep_resumes_without_retraining(tmp_path, monkeypatch):
    real = sweep_mod.train_and_extract
    calls = []

    def flaky(task, **kw):
        calls.append((task.width, task.seed))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(task, **kw)

    monkeypatch.setattr(sweep_mod, "train_and_extract", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(tiny(), tmp_path / "s", log=lambda _m: None)
    done = [(w, s) for w, s in calls[:2]]
    stamps = {d: (tmp_path / "s" / "runs" / run_name(*d) / "checkpoints").stat().st_mtime_ns for d in done}
    monkeypatch.setattr(sweep_mod, "train_and_extract", real)
    result = run_sweep(tiny(), tmp_path / "s", log=lambda _m: None)
    by = {(r["width"], r["seed"]): r for r in result.runs}
    for d in done:
        assert by[d]["trained_now"] is False
        assert (tmp_path / "s" / "runs" / run_name(*d) / "checkpoints").stat().st_mtime_ns == stamps[d]
    assert sum(r["trained_now"] for r in result.runs) == 2


def test_resume_with_another_config_is_refused(finished):
    out, _ = finished
    with pytest.raises(RedrepError, match=r"holds a sweep with another config \(epochs: 3 -> 4\)"):
        run_sweep(tiny(epochs=4), out, log=lambda _m: None)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"arch": "densenet40", "depth": None}, r"arch: expected one of mlp, wide_resnet16.*found 'densenet40'"),
        ({"widths": (8,)}, r"widths: expected at least two different widths, found \[8\]"),
        ({"widths": (0, 8)}, r"widths: expected an integer >= 1, found 0"),
        ({"seeds": 0}, r"seeds: expected an integer >= 1, found 0"),
        ({"jobs": 99}, r"jobs: expected an integer <= "),
        ({"dataset": "imagenet"}, r"dataset: expected one of"),
        ({"arch": "wide_resnet16", "depth": 3}, r"depth: only the mlp takes a depth"),
    ],
)
def test_bad_sweep_configs(tmp_path, kw, message):
    with pytest.raises(RedrepError, match=message):
        run_sweep(tiny(**kw), tmp_path / "s", log=lambda _m: None)
    assert not (tmp_path / "s").exists()


def test_sweep_cli_errors_exit_2(tmp_path):
    r = CliRunner().invoke(main, ["sweep", "--widths", "8", "--out", str(tmp_path / "s")])
    assert r.exit_code == 2 and "widths: expected at least two different widths" in r.stderr
    r = CliRunner().invoke(main, ["sweep", "--widths", "8,x", "--out", str(tmp_path / "s")])
    assert r.exit_code == 2 and "expected a comma-separated list of integers" in r.stderr


def test_width_table_and_reading_known_answer():
    tidy = [
        {"source": "full", "width": 8, "seed": 0, "test_error": 0.3, "train_error": 0.1},
        {"source": "full", "width": 8, "seed": 1, "test_error": 0.5, "train_error": 0.0},
        {"source": "full", "width": 16, "seed": 0, "test_error": 0.2, "train_error": 0.0},
        {"source": "full", "width": 16, "seed": 1, "test_error": 0.2, "train_error": 0.0},
        {"source": "chunk", "width": 8, "seed": 0, "test_error": 0.6, "train_error": 0.2},
        {"source": "chunk", "width": 8, "seed": 1, "test_error": 0.4, "train_error": 0.2},
        {"source": "chunk", "width": 16, "seed": 0, "test_error": 0.2, "train_error": 0.0},
        {"source": "chunk", "width": 16, "seed": 1, "test_error": 0.2, "train_error": 0.0},
    ]
    t = width_table(tidy, (16, 8))
    assert [r["width"] for r in t] == [8, 16]
    assert t[0]["full_test_mean"] == pytest.approx(0.4) and t[0]["full_test_sem"] == pytest.approx(0.1)
    assert t[0]["chunk_test_mean"] == pytest.approx(0.5) and t[0]["chunk_n"] == 2
    assert t[0]["full_train_mean"] == pytest.approx(0.05)
    text = " ".join(sweep_reading(t, 0.15, {"w_c_star": None}, 16))
    assert "from 0.4000 at W = 8 to 0.2000 at W = 16 (wider is better)" in text
    assert "error_inf = 0.1500" in text
    assert "training error 0 on every seed) from W = 16 on" in text
    assert "match full networks of width W = w_c (within two standard errors) at W = 8" in text
    assert "signature does not show at this budget" in text


def test_width_figure_panels():
    w = [8, 16, 32]
    fig = width_figure(
        w,
        ([0.5, 0.4, 0.3], [0.01, 0.01, 0.01]),
        ([0.7, 0.5, 0.3], [0.02, 0.02, 0.0]),
        full_train=([0.1, 0, 0], [0, 0, 0]),
        chunk_train=([0.5, 0.1, 0], [0, 0, 0]),
        error_inf=0.25,
        widest=32,
    )
    a, b = fig.axes
    assert a.get_xscale() == "log" and a.get_yscale() == "log" and b.get_yscale() == "symlog"
    assert len(a.containers) == 2 and len(b.containers) == 2  # two error-bar series per panel
    assert any(line.get_linestyle() == "--" for line in a.get_lines())  # the error_inf line
    np.testing.assert_allclose(a.containers[1].lines[0].get_ydata(), [0.7, 0.5, 0.3])


def test_demo_quick(tmp_path):
    r = CliRunner().invoke(
        main, ["demo", "--quick", "--out", str(tmp_path / "demo"), "--data-dir", str(tmp_path / "data"), "-q"]
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "demo" / "report.html").is_file()
    assert (tmp_path / "demo" / "figures" / "width_comparison.png").stat().st_size > 10_000
    assert "open " in r.output and "report.html" in r.output


def test_reading_says_when_the_decay_is_not_resolved():
    t = width_table(
        [
            {"source": s, "width": w, "seed": k, "test_error": 0.1, "train_error": 0.0}
            for s in ("full", "chunk")
            for w in (8, 16)
            for k in (0, 1)
        ],
        (8, 16),
    )
    loose = " ".join(sweep_reading(t, 0.05, {"w_c_star": 8, "exponent": 0.05, "exponent_se": 1.03}, 16))
    assert "w_c* = 8" in loose and "about 2 clones" in loose
    assert "not resolved at this budget (fitted exponent 0.05 ± 1.03" in loose
    tight = " ".join(sweep_reading(t, 0.05, {"w_c_star": 8, "exponent": -0.48, "exponent_se": 0.05}, 16))
    assert "decays like w_c^(-0.48 ± 0.05)" in tight
