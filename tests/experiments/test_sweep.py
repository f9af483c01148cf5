"""Width sweeps and the demo: resumption, the Fig. 3a numbers against the runs they come from."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

import redrep.experiments.runs as runs_mod
import redrep.experiments.sweep as sweep_mod
from redrep.cli import main
from redrep.core.validation import RedrepError
from redrep.experiments.sweep import SweepConfig, run_name, run_sweep, sweep_reading, width_table
from redrep.nets.train import PAPER_CHECKPOINT_EPOCHS, TrainConfig
from redrep.report.figures import width_figure
from results_factory import read_csv as _csv
from results_factory import tiny  # test_sweep_local imports it from here


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    result = run_sweep(tiny(), out, log=lambda _m: None)
    return out, result


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
    real = runs_mod.train_and_extract
    calls = []

    def flaky(task, **kw):
        calls.append((task.width, task.seed))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(task, **kw)

    monkeypatch.setattr(runs_mod, "train_and_extract", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(tiny(), tmp_path / "s", log=lambda _m: None)
    done = [(w, s) for w, s in calls[:2]]
    stamps = {d: (tmp_path / "s" / "runs" / run_name(*d) / "checkpoints").stat().st_mtime_ns for d in done}
    monkeypatch.setattr(runs_mod, "train_and_extract", real)
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
    r = CliRunner().invoke(main, ["sweep", "--device", "cpu", "--widths", "8", "--out", str(tmp_path / "s")])
    assert r.exit_code == 2 and "widths: expected at least two different widths" in r.stderr
    r = CliRunner().invoke(main, ["sweep", "--device", "cpu", "--widths", "8,x", "--out", str(tmp_path / "s")])
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
    args = ["demo", "--quick", "--out", str(tmp_path / "demo"), "--data-dir", str(tmp_path / "data"), "-q"]
    r = CliRunner().invoke(main, args + ["--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "demo" / "report.html").is_file()
    assert (tmp_path / "demo" / "figures" / "width_comparison.png").stat().st_size > 10_000
    assert "open " in r.output and "report.html" in r.output
    assert f"{min(2, os.cpu_count() or 1)} run" in r.output and "at a time on cpu" in r.output


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


# ------------------------------------------------------------ stages, state and errors
def test_plan_has_one_task_per_run_with_its_config(tmp_path):
    cfg = tiny(widths=(16, 8), seeds=3).validated()
    tasks = sweep_mod.plan_sweep(cfg, tmp_path)
    assert [(t.width, t.seed) for t in tasks] == [(16, 0), (16, 1), (16, 2), (8, 0), (8, 1), (8, 2)]
    for t in tasks:
        assert t.name == run_name(t.width, t.seed) and t.run_dir == str(tmp_path / "runs" / t.name)
        tc = TrainConfig.from_dict(t.train_config)
        # the widest runs keep the paper's checkpoint epochs up to the last (for redrep dynamics); the others none
        kept = (1, 2) if t.width == 16 else ()
        assert PAPER_CHECKPOINT_EPOCHS[:2] == (1, 2)
        assert (tc.width, tc.seed, tc.depth, tc.epochs, tc.checkpoint_epochs) == (t.width, t.seed, 2, 3, kept)


def test_demo_config_states_only_what_differs():
    full, quick = sweep_mod.demo_config(jobs=1), sweep_mod.demo_config(quick=True, jobs=1)
    assert full.train == replace(SweepConfig().train, data_dir="data") and full.widths == SweepConfig().widths
    assert (quick.train.epochs, quick.widths, quick.seeds) == (30, (16, 32, 64, 128), 2)


def test_sweep_json_round_trip_and_version(finished):
    out, _ = finished
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["version"] == sweep_mod.SWEEP_VERSION
    assert SweepConfig.from_dict(doc["config"]) == tiny().validated()


def test_old_sweep_layout_is_refused(tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    (out / "sweep.json").write_text(json.dumps({"config": {"dataset": "synthetic"}, "status": "done"}))
    with pytest.raises(
        RedrepError, match=r"expected a redrep sweep of layout version 2, found version none.*new folder"
    ):
        run_sweep(tiny(), out, log=lambda _m: None)
    r = CliRunner().invoke(main, ["sweep-status", str(out)])
    assert r.exit_code == 2 and "layout version 2, found version none" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_sweep_status_of_a_local_sweep(finished, tmp_path):
    out, _ = finished
    r = CliRunner().invoke(main, ["sweep-status", str(out)])
    assert r.exit_code == 0, r.output
    lines = [x for x in r.output.splitlines() if x.startswith("w")]
    assert [x.split()[:2] for x in lines] == [[run_name(w, s), "finished"] for w in (8, 16) for s in (0, 1)]
    assert all(x.endswith("job -  log -") for x in lines)  # local runs: no job id, and no error log
    assert "4 finished; sweep done" in r.output
    r = CliRunner().invoke(main, ["sweep-status", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "expected a redrep sweep folder (with sweep.json), found none" in r.stderr


def test_a_failing_local_run_is_reported_and_left_out(tmp_path):
    out = tmp_path / "s"
    bad = out / "runs" / run_name(8, 1)
    bad.mkdir(parents=True)
    (bad / "notes.txt").write_text("not a run")
    lines = []
    with pytest.raises(RedrepError, match=r"1 runs failed \(w00008_s1\): the report at .* leaves them out"):
        run_sweep(tiny(), out, log=lines.append)
    line = next(x for x in lines if "w00008_s1" in x)
    assert "failed (" in line and "found other files" in line and f"log {bad / 'error.log'}" in line
    assert "found other files" in (bad / "error.log").read_text()
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["status"] == "partial" and doc["missing"] == ["w00008_s1"] and len(doc["runs"]) == 3
    assert "Left out because they did not finish: w00008_s1." in doc["reading"]
    # the run is fixed; the re-run trains only it
    (bad / "notes.txt").unlink()
    (bad / "error.log").unlink()
    result = run_sweep(tiny(), out, log=lines.append)
    assert [r["run"] for r in result.runs if r["trained_now"]] == ["w00008_s1"] and result.missing == []


def test_collect_refuses_a_width_without_finished_run():
    from redrep.experiments.runs import FAILED, FINISHED, MISSING, RunStatus

    cfg = tiny(widths=(8, 16, 32)).validated()
    st = {run_name(w, s): RunStatus(FINISHED) for w in (8, 16, 32) for s in (0, 1)}
    sweep_mod.check_collectable(cfg, st)  # all there
    st[run_name(16, 0)] = RunStatus(FAILED, "cancelled")
    sweep_mod.check_collectable(cfg, st)  # W = 16 still has seed 1
    st[run_name(16, 1)] = RunStatus(MISSING)
    with pytest.raises(
        RedrepError, match=r"no finished run at W = 16 \(w00016_s0 failed, w00016_s1 missing\); re-run the same"
    ):
        sweep_mod.check_collectable(cfg, st)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--executor", "slurm", "--slurm-param", "account"], "--slurm-param: expected KEY=VALUE, found 'account'"),
        (
            ["--executor", "slurm", "--slurm-param", "setup=module load cuda"],
            "--slurm-param setup: a submitit option that takes a list or a flag, which KEY=VALUE cannot give",
        ),
        (
            ["--executor", "slurm", "--slurm-param", "array_parallelism=-1"],
            "--slurm-param array_parallelism: has a flag of its own, expected --max-parallel instead",
        ),
        (
            ["--executor", "slurm", "--slurm-param", "cpus-per-task=8"],
            "--slurm-param cpus_per_task: has a flag of its own, expected --slurm-cpus instead",
        ),
        (
            ["--executor", "slurm", "--slurm-param", "job-name=mine"],
            "--slurm-param job_name: redrep names the jobs to find them again",
        ),
        (["--executor", "slurm", "--slurm-param", "a b=1"], "--slurm-param: expected an option name of letters"),
        (["--executor", "slurm", "--slurm-mem-gb", "-2"], "Invalid value for --slurm-mem-gb: expected gigabytes > 0"),
        (["--executor", "slurm", "--slurm-time", "0"], "Invalid value for --slurm-time: expected an integer >= 1"),
        (
            ["--executor", "slurm", "--max-parallel", "0"],
            "Invalid value for --max-parallel: expected an integer >= 1, found 0",
        ),
        (
            ["--executor", "slurm", "--slurm-gpus", "-1"],
            "Invalid value for --slurm-gpus: expected an integer >= 0, found -1",
        ),
        (["--executor", "pbs"], "Invalid value for '--executor'"),
        (
            ["--slurm-gpus", "1", "--max-parallel", "2"],
            "--slurm-gpus, --max-parallel given, expected with --executor slurm",
        ),
        (["--wait-timeout", "-1"], "Invalid value for --wait-timeout: expected minutes > 0, found -1"),
        (["--device", "cuda:7"], "device: expected "),
        (["--device", "tpu"], "device: expected one of auto, cpu, cuda or cuda:N, found 'tpu'"),
    ],
)
def test_sweep_cli_executor_errors_exit_2(tmp_path, args, message):
    base = ["sweep", "--dataset", "synthetic", "--widths", "8,16", "--seeds", "1", "--out", str(tmp_path / "s")]
    base += [] if "--device" in args else ["--device", "cpu"]
    r = CliRunner().invoke(main, base + args)
    assert r.exit_code == 2 and message in r.stderr, r.output
    assert [x for x in r.stderr.splitlines() if "Error" in x] == [r.stderr.strip().splitlines()[-1]]  # one line
    assert "Traceback" not in r.output and not (tmp_path / "s").exists()


def test_slurm_without_sbatch_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    base = ["sweep", "--dataset", "synthetic", "--widths", "8,16", "--seeds", "1", "--out", str(tmp_path / "s")]
    base += ["--device", "cpu"]
    r = CliRunner().invoke(main, base + ["--executor", "slurm", "--epochs", "1"])
    assert r.exit_code == 2 and "executor: slurm needs SLURM's sbatch on PATH, found none" in r.stderr
    assert not (tmp_path / "s" / "runs").exists()


def test_slurm_params_go_to_submitit(tmp_path):
    from redrep.experiments.executors import SlurmExecutor, SlurmOptions, parse_slurm_params

    assert parse_slurm_params(["account=abc", "qos = high", "nice=10", "exclusive="]) == {
        "account": "abc",
        "qos": "high",
        "nice": 10,
        "exclusive": "",
    }
    if __import__("shutil").which("sbatch") is None:
        pytest.skip("submitit checks for sbatch before building a script")
    opts = SlurmOptions(partition="gpu", time_min=90, gpus=None, cpus=8, mem_gb=32, max_parallel=3)
    opts.params = {"account": "abc", "reservation": "r1"}
    ex = SlurmExecutor(tmp_path, opts, arch="wide_resnet28")._executor()
    p = ex.parameters
    assert (p["partition"], p["time"], p["cpus_per_task"], p["gpus_per_node"], p["mem"]) == ("gpu", 90, 8, 1, "32GB")
    # a parameter submitit knows goes through update_parameters, any other sbatch option as an additional one
    assert p["array_parallelism"] == 3 and p["account"] == "abc" and p["additional_parameters"] == {"reservation": "r1"}
    mlp = SlurmExecutor(tmp_path, SlurmOptions(), arch="mlp")._executor()
    assert "gpus_per_node" not in mlp.parameters  # the mlp asks for no GPU
    # a value submitit refuses (its setup takes a list of commands) is one line naming the parameter
    bad = SlurmExecutor(tmp_path, SlurmOptions(params={"setup": "module load cuda"}))
    with pytest.raises(RedrepError, match=r"^--slurm-param setup=module load cuda: submitit refused the value \("):
        bad.check()


def test_slurm_that_does_not_answer_is_not_a_lost_job(tmp_path, monkeypatch):
    from redrep.experiments.executors import SlurmExecutor, SlurmOptions
    from redrep.experiments.runs import QUEUED

    monkeypatch.setenv("PATH", str(tmp_path))  # neither sacct nor squeue: SLURM does not answer
    ex = SlurmExecutor(tmp_path, SlurmOptions(lost_after_s=0.5, poll_s=0.1))
    handles = {"w00008_s0": {"job_id": "12_0", "log": "l", "submitted": 0.0}}
    st = ex.status(handles)["w00008_s0"]
    assert st.state == QUEUED and st.detail == "state unknown: squeue does not answer"  # never resubmitted
    with pytest.raises(RedrepError, match=r"SLURM has not answered \(squeue\) for 0 s; the jobs may still run"):
        ex.wait(handles, timeout=30)


# ------------------------------------------------------------ sweep.json as input
def _crafted(finished, tmp_path, name, edit):
    """A copy of the finished sweep (without its runs) whose sweep.json ``edit`` changes (doc -> doc, or text)."""
    import shutil

    out, _ = finished
    copy = tmp_path / name
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("runs", "clones", "analysis"))
    f = copy / "sweep.json"
    text = f.read_text()
    f.write_text(edit(text) if edit.__name__ == "text" else json.dumps(edit(json.loads(text))))
    return copy


def _set(path, value):
    def edit(doc):
        d = doc
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
        return doc

    return edit


def text(t):  # a file no json.dumps can write: an integer of 5000 digits
    return t.replace('"status": "done"', '"status": "done", "n": ' + "9" * 5000, 1)


CRAFTED = [
    ("jobs-string", _set(["jobs"], "w00008_s0"), r"jobs: expected an object \(run name -> job\), found the string"),
    ("jobs-list", _set(["jobs"], [1, 2]), r"jobs: expected an object \(run name -> job\), found an array"),
    (
        "job-id-number",
        _set(["jobs"], {"w00008_s0": {"job_id": 123, "executor": "slurm", "log": None}}),
        r'jobs\.w00008_s0\.job_id: expected a SLURM job id such as "123_4" or null, found the number 123',
    ),
    ("widths-string", _set(["config", "widths"], "8,16"), r"widths: expected a list of integers, found the string"),
    ("seeds-string", _set(["config", "seeds"], "2"), r"seeds: expected an integer, found '2'"),
    ("seeds-1e9", _set(["config", "seeds"], 1e9), r"seeds: expected an integer, found 1000000000\.0"),
    ("seeds-10-9", _set(["config", "seeds"], 10**9), r"seeds: expected an integer <= 1000, found 1000000000"),
    ("seeds-huge", _set(["config", "seeds"], 10**400), r"seeds: expected an integer <= 1000, found an integer of 401"),
    ("digits", text, r"expected the JSON of a redrep sweep, found a number too long to read \(.*4300"),
    ("version-99", _set(["version"], 99), r"found version 99 \(written by a newer redrep\); upgrade redrep"),
    ("version-string", _set(["version"], "2"), r"found version '2' \(not a layout number"),
]


@pytest.mark.parametrize("name, edit, message", CRAFTED, ids=[c[0] for c in CRAFTED])
def test_crafted_sweep_json_is_one_line_everywhere(finished, tmp_path, name, edit, message):
    import re

    bad = _crafted(finished, tmp_path, name, edit)
    before = (bad / "sweep.json").read_bytes()
    runner = CliRunner()
    sweep = ["sweep", "--dataset", "synthetic", "--depth", "2", "--widths", "8,16", "--seeds", "2", "--epochs", "3"]
    for args in (
        ["sweep-status", str(bad)],
        [*sweep, "--acc-rep", "4", "--r2-rep", "3", "--out", str(bad), "-q"],
        ["compare", str(finished[0]), str(bad), "--out", str(tmp_path / "cmp")],
    ):
        r = runner.invoke(main, args)
        assert r.exit_code == 2, (args[0], r.output)
        assert len(r.stderr.strip().splitlines()) == 1 and re.search(message, r.stderr), (args[0], r.stderr)
        assert "Traceback" not in r.output
    assert (bad / "sweep.json").read_bytes() == before and not (tmp_path / "cmp").exists()


def test_sweep_seeds_and_runs_are_bounded(tmp_path):
    import subprocess
    import sys

    # in a process of its own: before the bound, planning 10^8 runs hung before writing anything
    base = [sys.executable, "-m", "redrep", "sweep", "--dataset", "synthetic", "--out", str(tmp_path / "s")]
    r = subprocess.run([*base, "--seeds", "100000000", "--no-wait"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == "Error: seeds: expected an integer <= 1000, found 100000000"
    widths = ",".join(str(w) for w in range(1, 12))
    r = subprocess.run([*base, "--widths", widths, "--seeds", "1000"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "expected at most 10000 runs (widths x seeds), found 11 x 1000 = 11000" in r.stderr
    assert not (tmp_path / "s").exists()
    r = subprocess.run([*base[:4], "--help"], capture_output=True, text=True, timeout=120)
    assert "at most 1000; a sweep has at most 10000 runs" in " ".join(r.stdout.split())


def test_sweep_status_imports_no_torch(finished, tmp_path):
    import subprocess
    import sys

    out, _ = finished
    slurm = _crafted(finished, tmp_path, "slurm", _set(["jobs"], {"w00008_s0": {"job_id": "9_0", "executor": "slurm"}}))
    probe = (
        "import sys\nfrom redrep.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    print('rc', e.code)\n"
        "print('torch loaded:', 'torch' in sys.modules)\n"
    )
    for args in (["sweep-status", "--help"], ["sweep-status", str(out)], ["sweep-status", str(slurm)]):
        r = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=120)
        assert "rc 0" in r.stdout and "torch loaded: False" in r.stdout, (args, r.stdout, r.stderr)
    assert (
        "4 finished; sweep done"
        in subprocess.run(
            [sys.executable, "-c", probe, "sweep-status", str(out)], capture_output=True, text=True, timeout=120
        ).stdout
    )


def test_a_sweeps_own_leftovers_are_no_foreign_folder(tmp_path):
    out = tmp_path / "s"
    (out / "slurm").mkdir(parents=True)
    (out / "slurm" / ("ab" * 16 + ".pkl")).write_bytes(b"pickled task that never reached a job folder")
    (out / ".sweep.json.abcd1234.tmp").write_text("{")
    assert sweep_mod.read_state(out) is None  # submitit's files of an interrupted first submission: a new sweep
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RedrepError, match=r"found other files \('notes\.txt'\); choose another output folder"):
        sweep_mod.read_state(out)


def test_submitit_leftovers_are_cleaned_and_job_folders_kept(tmp_path):
    from redrep.experiments.executors import SlurmExecutor

    folder = tmp_path / "slurm"
    job = folder / "12_0"
    job.mkdir(parents=True)
    (job / "12_0_submitted.pkl").write_bytes(b"x")
    (job / "12_submission.sh").write_text("#!/bin/bash")
    orphan_pkl, orphan_sh = folder / ("0f" * 16 + ".pkl"), folder / (".submission_file_" + "0f" * 16 + ".sh")
    orphan_pkl.write_bytes(b"x")
    orphan_sh.write_text("#!/bin/bash")
    link = folder / (".submission_file_" + "1e" * 16 + ".sh")
    link.symlink_to(job / "12_submission.sh")  # submitit keeps a submitted job's script as a link: not a leftover
    other = folder / "notes.pkl"
    other.write_bytes(b"not submitit's")
    removed = SlurmExecutor(folder).clean_leftovers()
    assert sorted(removed) == sorted([orphan_pkl, orphan_sh])
    assert link.is_symlink() and other.is_file() and (job / "12_0_submitted.pkl").is_file()


def test_slurm_without_the_slurm_extra_is_one_line(finished, tmp_path):
    import subprocess
    import sys

    probe = "import sys\nsys.modules['submitit'] = None\nfrom redrep.cli import main\nmain(sys.argv[1:])\n"
    base = ["sweep", "--dataset", "synthetic", "--widths", "8,16", "--seeds", "1", "--out", str(tmp_path / "s")]
    r = subprocess.run([sys.executable, "-c", probe, *base, "--executor", "slurm"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip() == (
        "Error: redrep sweep needs submitit, which is not installed: pip install 'redrep[slurm]'"
    )
    assert not (tmp_path / "s").exists()
    # a local sweep needs none of it, to run or to look at
    r = subprocess.run([sys.executable, "-c", probe, "sweep-status", str(finished[0])], capture_output=True, text=True)
    assert r.returncode == 0 and "4 finished; sweep done" in r.stdout, r.stderr
