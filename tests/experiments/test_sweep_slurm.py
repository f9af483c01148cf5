"""Sweeps through a real single-node SLURM cluster (see tests/slurm_cluster.py); skipped where none can start."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
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
    stored_plan,
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


def _sweep_args(out, *extra, epochs=40):
    args = ["sweep", "--dataset", "parity-digits", "--depth", "2", "--widths", "16,32", "--seeds", "2"]
    args += ["--device", "cpu"]
    args += ["--epochs", str(epochs), "--acc-rep", "3", "--r2-rep", "2", "--executor", "slurm", "--slurm-cpus", "1"]
    return args + ["--out", str(out), "-q", *extra]


def _cli_sweep(out, *extra, epochs=40):
    return CliRunner().invoke(main, _sweep_args(out, *extra, epochs=epochs))


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
    assert list((tmp_path / "s" / SLURM_DIR).iterdir()) == []  # nor submitit's pickles and script left behind


# ------------------------------------------------------------ interrupted submissions
def _trained_once(out, epochs):
    """Every run finished, trained once: each epoch logged once, none resumed."""
    for w in (16, 32):
        for seed in (0, 1):
            run = out / "runs" / run_name(w, seed)
            logged = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
            assert logged == list(range(1, epochs + 1)), run
            assert read_run_result(run)["epochs"] == epochs and not read_run_result(run)["resumed_from_epoch"]


def _slow_sbatch(tmp_path, sleep_s):
    """A folder with an sbatch that reads its script, marks its start, sleeps (a slow controller), then submits
    what it read and marks its end."""
    import shutil

    wrapper = tmp_path / "bin"
    wrapper.mkdir()
    real = shutil.which("sbatch")
    (wrapper / "sbatch").write_text(
        f'#!/bin/sh\ncp "$1" "{tmp_path}/script.sh"\ntouch "{tmp_path}/started"\nsleep {sleep_s}\n'
        f'"{real}" "{tmp_path}/script.sh"\nrc=$?\ntouch "{tmp_path}/done"\nexit $rc\n'
    )
    (wrapper / "sbatch").chmod(0o755)
    return wrapper


def _wait_file(path, timeout=180.0):
    t0 = time.monotonic()
    while not path.exists():
        assert time.monotonic() - t0 < timeout, f"{path} did not appear"
        time.sleep(0.1)


def _driver(out, env, *extra, epochs=3):
    """`redrep sweep` in a process of its own, to kill."""
    cmd = [sys.executable, "-m", "redrep", *_sweep_args(out, *extra, epochs=epochs)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_during_sbatch(cluster, tmp_path, out, sleep_s):
    wrapper = _slow_sbatch(tmp_path, sleep_s)
    env = {**cluster.env, "PATH": f"{wrapper}{os.pathsep}{cluster.env['PATH']}"}
    p = _driver(out, env, "--no-wait")
    _wait_file(tmp_path / "started")
    os.kill(p.pid, signal.SIGKILL)  # kill -9 while sbatch runs
    assert p.wait(timeout=30) == -signal.SIGKILL


def _state_of(cluster, job_id):
    rows = cluster.run("squeue", "-h", "-r", "-t", "all", "-o", "%i|%T", "-j", job_id.split("_")[0]).split()
    states = dict(r.split("|") for r in rows)
    # array tasks cancelled before they started are listed as their array's one record
    return states.get(job_id) or states.get(job_id.split("_")[0], f"not listed: {rows}")


def _jobs_named(cluster, name):
    rows = cluster.run("squeue", "-h", "-r", "-t", "all", "-o", "%i|%T|%k", "--name", name).split()
    return {r.split("|")[0]: r.split("|")[1:] for r in rows}


def test_killed_while_sbatch_runs_cancels_and_resubmits(cluster, tmp_path):
    out = tmp_path / "s"
    _kill_during_sbatch(cluster, tmp_path, out, sleep_s=3)
    _wait_file(tmp_path / "done")  # the sbatch outlived its driver and submitted the array
    state = json.loads((out / "sweep.json").read_text())  # written before sbatch ran: the plan, no job yet
    assert state["jobs"] == {} and sorted(state["submitting"]["runs"]) == sorted(
        run_name(w, s) for w in (16, 32) for s in (0, 1)
    )
    orphans = _jobs_named(cluster, f"redrep-{state['id']}")
    assert len(orphans) == 4 and {c for _, c in orphans.values()} == {f"redrep:{state['submitting']['id']}"}
    assert len(list((out / SLURM_DIR).glob("*.pkl"))) == 4  # their tasks never reached their job folders
    r = CliRunner().invoke(main, ["sweep-status", str(out)])
    assert r.exit_code == 0 and r.output.count("missing (submission interrupted: the next sweep adopts") == 4

    r = _cli_sweep(out, epochs=3)
    assert r.exit_code == 0, r.output
    # each orphan still waiting is cancelled; one that started waits 60 s for its task, then fails (a loaded
    # machine may get there first): either way none of them ran a run, and the new array did the work, once
    line = r"an interrupted submission of 4 runs \(slurm\): 0 jobs adopted, (\d) cancelled .*; 4 runs to submit"
    done = re.search(line, r.output)
    assert done, r.output
    assert "4 runs: 0 finished, 0 queued or running, 4 to run now on slurm" in r.output
    assert not orphans.keys() & {h["job_id"] for h in read_state(out)["jobs"].values()}
    ended = [_state_of(cluster, jid) for jid in orphans]
    assert set(ended) <= {"CANCELLED", "FAILED"} and ended.count("CANCELLED") >= int(done.group(1)), ended
    for jid, st in zip(orphans, ended):
        if st == "FAILED":
            assert "could not find submitted jobs" in (out / SLURM_DIR / jid / f"{jid}_0_log.err").read_text()
    _trained_once(out, 3)
    after = read_state(out)
    assert after["status"] == "done" and "submitting" not in after and (out / "report.html").is_file()
    assert list((out / SLURM_DIR).glob("*.pkl")) == []  # submitit's leftovers cleaned


def test_killed_before_the_ids_are_recorded_adopts_the_jobs(cluster, tmp_path):
    out = tmp_path / "s"
    p = _driver(out, {**cluster.env, "REDREP_CRASH_AT": "sweep:submitted"}, "--no-wait")
    assert p.wait(timeout=180) == -signal.SIGKILL, p.stderr.read()
    state = json.loads((out / "sweep.json").read_text())
    assert state["jobs"] == {} and len(state["submitting"]["runs"]) == 4
    submitted = _jobs_named(cluster, f"redrep-{state['id']}")
    assert len(submitted) == 4

    r = _cli_sweep(out, epochs=3)
    assert r.exit_code == 0, r.output
    assert "an interrupted submission of 4 runs (slurm): 4 jobs adopted, 0 cancelled" in r.output
    assert "0 runs to submit again" in r.output and "0 to run now" in r.output
    jobs = read_state(out)["jobs"]
    # the array's task i runs the i-th run of the plan, as recorded now; nothing was submitted twice
    assert {h["job_id"] for h in jobs.values()} == set(submitted)
    order = state["submitting"]["runs"]
    assert all(jobs[name]["job_id"].endswith(f"_{i}") for i, name in enumerate(order))
    assert len(_jobs_named(cluster, f"redrep-{state['id']}")) == 4
    _trained_once(out, 3)


def test_an_sbatch_that_lands_after_the_rerun_is_cancelled(cluster, tmp_path):
    out = tmp_path / "s"
    _kill_during_sbatch(cluster, tmp_path, out, sleep_s=15)
    first = json.loads((out / "sweep.json").read_text())["submitting"]["id"]
    r = _cli_sweep(out, "--no-wait", epochs=3)  # while the killed driver's sbatch still sleeps: nothing found yet
    assert r.exit_code == 0, r.output
    assert "an interrupted submission of 4 runs (slurm): 0 jobs adopted, 0 cancelled" in r.output
    state = read_state(out)
    assert [a["id"] for a in state["abandoned"]] == [first] and len(state["jobs"]) == 4
    _wait_file(tmp_path / "done")  # now the late array is there, beside the recorded one
    late = {j for j, (_, c) in _jobs_named(cluster, f"redrep-{state['id']}").items() if c == f"redrep:{first}"}
    assert len(late) == 4
    r = _cli_sweep(out, epochs=3)
    assert r.exit_code == 0, r.output
    assert "cancelled 4 jobs of an interrupted submission that reached SLURM late" in r.output
    for jid in late:
        assert _state_of(cluster, jid) == "CANCELLED"
    _trained_once(out, 3)


# ------------------------------------------------------------ jobs that can never start
def test_a_request_larger_than_any_node_stops_the_wait(cluster, tmp_path):
    from redrep.experiments.executors import waiting_line

    out = tmp_path / "s"
    big = ("--slurm-cpus", "8")  # the node has NODE_CPUS = 4
    r = _cli_sweep(out, *big, "--no-wait", epochs=3)
    assert r.exit_code == 0, r.output
    why = "can never start: each run asks 8 CPUs, the largest node of partition debug has 4; change --slurm-cpus"
    t0 = time.monotonic()
    while True:  # the controller gives its reason at its first look at the job
        r = CliRunner().invoke(main, ["sweep-status", str(out)])
        if r.output.count(why) == 4 or time.monotonic() - t0 > 30:
            break
        time.sleep(0.5)
    lines = [x for x in r.output.splitlines() if x.startswith("w")]
    assert len(lines) == 4 and all(f"queued (pending (PartitionConfig); {why})" in x for x in lines), r.output
    st = run_statuses(out, stored_plan(read_state(out), out), read_state(out))
    assert waiting_line(st) == "4 pending (PartitionConfig)"

    t0 = time.monotonic()
    r = _cli_sweep(out, *big, "--wait-timeout", "2", epochs=3)
    assert r.exit_code == 2 and time.monotonic() - t0 < 60, r.output
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in r.output
    assert err[0] == (
        "Error: executor: SLURM can never start 4 runs (w00016_s0, w00016_s1, w00032_s0, w00032_s1), pending "
        "(PartitionConfig): each run asks 8 CPUs, the largest node of partition debug has 4; cancelled them, so that "
        "a re-run submits them again; change --slurm-cpus and re-run the same command"
    )
    jobs = read_state(out)["jobs"]
    for h in jobs.values():
        assert _state_of(cluster, h["job_id"]) == "CANCELLED"
    # with the flag changed, the same command submits them again
    r = _cli_sweep(out, "--no-wait", epochs=3)
    assert r.exit_code == 0, r.output
    assert "4 runs: 0 finished, 0 queued or running, 4 to run now (again: " in r.output
    cluster.run("scancel", *[h["job_id"] for h in read_state(out)["jobs"].values()])
    cluster.wait_idle()
