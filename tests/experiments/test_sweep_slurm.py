"""Sweeps through a real single-node SLURM cluster (see tests/slurm_cluster.py); skipped where none can start."""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from redrep.cli import main
from redrep.core.validation import RedrepError
from redrep.experiments.executors import LocalExecutor, SlurmExecutor, SlurmOptions
from redrep.experiments.runs import FAILED, FINISHED, read_run_result
from redrep.experiments.sweep import (
    SLURM_DIR,
    SweepConfig,
    plan_sweep,
    read_state,
    run_name,
    run_stage,
    run_statuses,
    run_sweep,
)
from redrep.nets.train import TrainConfig
from slurm_cluster import SlurmCluster, unavailable_reason

REASON = unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"no SLURM test cluster: {REASON}")


@pytest.fixture(scope="module")
def cluster():
    c = SlurmCluster()
    saved = {k: os.environ.get(k) for k in ("SLURM_CONF", "PATH")}
    try:
        c.start()
        # this process is the driver: its sbatch, squeue and sacct talk to the test cluster
        os.environ.update(SLURM_CONF=c.env["SLURM_CONF"], PATH=c.env["PATH"])
        yield c
    finally:
        c.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def small(**kw) -> SweepConfig:
    train = TrainConfig(
        dataset="parity-digits", arch="mlp", depth=2, epochs=3, lr=0.05, checkpoint_epochs=(), device="cpu"
    )
    base = dict(train=train, widths=(16, 32), seeds=2, acc_rep=3, r2_rep=2, progress=False)
    base.update(kw)
    return SweepConfig(**base)


def slurm(out, **kw) -> SlurmExecutor:
    return SlurmExecutor(out / SLURM_DIR, SlurmOptions(time_min=10, cpus=1, poll_s=0.3, **kw))


def _quiet(_msg):
    pass


def _cli_sweep(out, *extra):
    args = ["sweep", "--dataset", "parity-digits", "--depth", "2", "--widths", "16,32", "--seeds", "2"]
    args += ["--device", "cpu"]
    args += ["--epochs", "40", "--acc-rep", "3", "--r2-rep", "2", "--executor", "slurm", "--slurm-cpus", "1"]
    return CliRunner().invoke(main, args + ["--out", str(out), "-q", *extra])


def _run_only(config, out, executor, **kw):
    """The plan and run stages without collecting: the runs' own results (run.json), by name."""
    config = config.validated()
    tasks = plan_sweep(config, out)
    statuses, _, _ = run_stage(tasks, out, config, read_state(out), executor, log=_quiet, **kw)
    assert {s.state for s in statuses.values()} == {FINISHED}, statuses
    return {t.name: read_run_result(t.run_dir) for t in tasks}


def test_slurm_sweep_matches_local(cluster, tmp_path):
    # one torch thread per run on both sides: the SLURM task has one CPU, the two local workers one core each
    local = _run_only(small(jobs=2), tmp_path / "local", LocalExecutor(2, ["cpu", "cpu"]))
    remote = _run_only(small(), tmp_path / "slurm", slurm(tmp_path / "slurm"))
    key = ("width", "seed", "test_error", "train_error", "zero_train_error_epoch", "epochs")
    assert len(remote) == 4
    assert {n: {k: r[k] for k in key} for n, r in remote.items()} == {
        n: {k: r[k] for k in key} for n, r in local.items()
    }
    for name in remote:  # the same network: the extracted representations agree bit for bit
        a, b = (
            np.load(tmp_path / d / "runs" / name / "representations" / "features_test.npy") for d in ("local", "slurm")
        )
        np.testing.assert_array_equal(a, b)
    state = read_state(tmp_path / "slurm")
    assert state["status"] == "running" and len(state["jobs"]) == 4
    for h in state["jobs"].values():
        assert h["executor"] == "slurm" and "_" in h["job_id"]  # a task of one job array
        assert h["log"].startswith(str(tmp_path / "slurm" / SLURM_DIR / h["job_id"]))
    assert len({h["job_id"].split("_")[0] for h in state["jobs"].values()}) == 1


def test_no_wait_status_cancel_and_rerun(cluster, tmp_path):
    # --no-wait, then sweep-status; scancel one run in the middle; the re-run resubmits only that one and collects
    out = tmp_path / "s"
    r = _cli_sweep(out, "--no-wait")
    assert r.exit_code == 0, r.output
    assert "4 runs: 0 finished, 0 queued or running, 4 to run now on slurm" in r.output
    assert "see redrep sweep-status" in r.output and not (out / "report.html").exists()
    jobs = read_state(out)["jobs"]
    r = CliRunner().invoke(main, ["sweep-status", str(out)])
    assert r.exit_code == 0, r.output
    lines = [x for x in r.output.splitlines() if x.startswith("w")]
    assert len(lines) == 4
    for line in lines:
        name = line.split()[0]
        assert line.split()[1] in ("queued", "running", "finished")
        assert f"job {jobs[name]['job_id']}" in line and f"log {jobs[name]['log']}" in line

    victim = run_name(32, 1)
    cluster.wait_state(jobs[victim]["job_id"], "RUNNING")
    cluster.run("scancel", jobs[victim]["job_id"])
    cluster.wait_idle()
    r = CliRunner().invoke(main, ["sweep-status", str(out)])
    line = next(x for x in r.output.splitlines() if x.startswith(victim))
    assert "failed (cancelled)" in line and f"job {jobs[victim]['job_id']}" in line
    assert [x.split()[1] for x in r.output.splitlines() if x.startswith("w")].count("finished") == 3
    assert "1 failed, 3 finished" in r.output

    r = _cli_sweep(out)
    assert r.exit_code == 0, r.output
    assert f"3 finished, 0 queued or running, 1 to run now (again: {victim}) on slurm" in r.output
    after = read_state(out)
    assert after["status"] == "done" and len(after["runs"]) == 4 and (out / "report.html").is_file()
    assert {n: h for n, h in after["jobs"].items() if n != victim} == {n: h for n, h in jobs.items() if n != victim}
    assert after["jobs"][victim]["job_id"] != jobs[victim]["job_id"]
    assert [r["trained_now"] for r in after["runs"] if r["run"] == victim] == [True]


def test_failing_run_is_reported_with_its_log(cluster, tmp_path):
    out = tmp_path / "s"
    bad = out / "runs" / run_name(16, 1)
    bad.mkdir(parents=True)
    (bad / "notes.txt").write_text("not a training run")  # training refuses a folder that is not a run
    lines = []
    with pytest.raises(RedrepError, match=rf"1 runs failed \({run_name(16, 1)}\).*re-run the same command"):
        run_sweep(small(), out, executor=slurm(out), log=lines.append)
    line = next(x for x in lines if run_name(16, 1) in x)
    assert "failed (failed: " in line and "found other files; choose another out folder" in line
    log = line.split(" log ")[-1].strip()
    assert log.endswith("_log.err") and "found other files" in open(log).read()
    # the other runs were collected, and the report says what is missing
    doc = read_state(out)
    assert doc["status"] == "partial" and doc["missing"] == [run_name(16, 1)] and len(doc["runs"]) == 3
    st = run_statuses(out, plan_sweep(small().validated(), out), doc)
    assert st[run_name(16, 1)].state == FAILED and st[run_name(16, 0)].state == FINISHED


def test_lost_job_is_failed_not_waited_for(cluster, tmp_path):
    ex = slurm(tmp_path, lost_after_s=0.5)
    handles = {"w00016_s0": {"job_id": "999999_0", "log": "x", "submitted": time.time()}}
    t0 = time.monotonic()
    st = ex.wait(handles, timeout=30)
    assert time.monotonic() - t0 < 10
    assert st["w00016_s0"].state == FAILED and "lost: SLURM does not know job 999999_0" in st["w00016_s0"].detail


def test_preempted_run_is_requeued_and_resumes(cluster, tmp_path):
    out = tmp_path / "s"
    epochs = 150  # long enough that the signal lands during training, not after it
    cfg = small(seeds=1, train=replace(small().train, epochs=epochs))
    assert run_sweep(cfg, out, executor=slurm(out), wait=False, log=_quiet) is None
    jobs = read_state(out)["jobs"]
    victim = run_name(32, 0)
    metrics = out / "runs" / victim / "metrics.jsonl"
    t0 = time.monotonic()
    while time.monotonic() - t0 < 60 and (not metrics.exists() or len(metrics.read_text().splitlines()) < 2):
        time.sleep(0.2)  # two epochs done and checkpointed
    # what SLURM sends before a preemption or the time limit (submitit's --signal=USR2@90)
    cluster.run("scancel", "--signal=USR2", jobs[victim]["job_id"])
    lines = []
    tasks = plan_sweep(cfg.validated(), out)
    statuses, _, _ = run_stage(tasks, out, cfg.validated(), read_state(out), slurm(out), log=lines.append)
    # the other run may already have finished; what matters is that nothing is submitted twice
    assert re.search(r"2 runs: \d finished, \d queued or running, 0 to run now", lines[0]), lines[0]
    assert "1 queued or running" in lines[0] or "2 queued or running" in lines[0]
    assert {s.state for s in statuses.values()} == {FINISHED} and read_state(out)["jobs"] == jobs
    run = read_run_result(out / "runs" / victim)
    assert 0 < run["resumed_from_epoch"] < epochs and run["epochs"] == epochs
    logged = [json.loads(x)["epoch"] for x in (out / "runs" / victim / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, epochs + 1))
    log = (Path(jobs[victim]["log"]).with_suffix(".out")).read_text() + Path(jobs[victim]["log"]).read_text()
    assert "Caught signal SIGUSR2" in log and "Calling checkpoint method" in log and "Requeued job" in log


def test_sbatch_refusal_is_one_line(cluster, tmp_path):
    r = _cli_sweep(tmp_path / "s", "--slurm-partition", "nope", "--no-wait")
    assert r.exit_code == 2 and "Traceback" not in r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "executor: sbatch refused the job array:" in lines[0] and "nope" in lines[0]
    assert not (tmp_path / "s" / "sweep.json").exists()  # nothing recorded as submitted
