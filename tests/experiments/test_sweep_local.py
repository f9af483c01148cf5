"""The local executor: one device per worker, failed runs reported, workers that die with their driver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from procs import alive, lock_holder
from redrep.experiments.executors import LocalExecutor, local_devices
from redrep.experiments.runs import FAILED, FINISHED, RunTask


def record_device(task: RunTask, device: str) -> dict:
    """A stand-in for training: note which process ran the task on which device, and when."""
    t0 = time.time()
    time.sleep(0.3)
    rec = {"name": task.name, "pid": os.getpid(), "device": device, "threads": task.threads}
    rec.update(start=t0, end=time.time())
    Path(task.run_dir).mkdir(parents=True, exist_ok=True)
    (Path(task.run_dir) / "rec.json").write_text(json.dumps(rec))
    return rec


def fail_on_seed_1(task: RunTask, device: str) -> dict:
    if task.seed == 1:
        raise ValueError(f"no good: {task.name}")
    return record_device(task, device)


def _tasks(tmp_path, n):
    return [RunTask(f"r{i}", 8, i, str(tmp_path / f"r{i}"), {}) for i in range(n)]


@pytest.mark.parametrize("n_tasks", [4, 6])
def test_each_worker_keeps_its_own_device(tmp_path, n_tasks):
    ex = LocalExecutor(2, ["cuda:0", "cuda:1"], run=record_device)
    tasks = _tasks(tmp_path, n_tasks)
    handles = ex.submit(tasks)
    done = []
    st = ex.wait(handles, on_done=lambda n, s: done.append(n))
    assert sorted(done) == sorted(t.name for t in tasks) and all(s.state == FINISHED for s in st.values())
    recs = [json.loads((Path(t.run_dir) / "rec.json").read_text()) for t in tasks]
    by_pid = {}
    for r in recs:
        by_pid.setdefault(r["pid"], set()).add(r["device"])
    assert all(len(d) == 1 for d in by_pid.values())  # a worker never changes device
    assert len(by_pid) <= 2 and set().union(*by_pid.values()) <= {"cuda:0", "cuda:1"}
    # runs that overlap in time are on different devices
    for a in recs:
        for b in recs:
            if a is not b and a["start"] < b["end"] and b["start"] < a["end"]:
                assert a["device"] != b["device"], (a, b)
    assert os.getpid() not in by_pid
    # the CPU split between the workers is as before: each its share of the cores
    assert {r["threads"] for r in recs} == {max(1, (os.cpu_count() or 1) // 2)}


def test_one_job_runs_in_this_process_on_its_device(tmp_path):
    ex = LocalExecutor(1, ["cuda:1"], run=record_device)
    tasks = _tasks(tmp_path, 2)
    ex.wait(ex.submit(tasks))
    recs = [json.loads((Path(t.run_dir) / "rec.json").read_text()) for t in tasks]
    assert {(r["pid"], r["device"]) for r in recs} == {(os.getpid(), "cuda:1")}


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_failing_run_is_failed_with_its_log_and_the_others_go_on(tmp_path, jobs):
    ex = LocalExecutor(jobs, ["cpu"] * jobs, run=fail_on_seed_1)
    tasks = _tasks(tmp_path, 3)
    st = ex.wait(ex.submit(tasks))
    assert [st[t.name].state for t in tasks] == [FINISHED, FAILED, FINISHED]
    bad = st["r1"]
    assert bad.detail == "no good: r1" and bad.log == str(tmp_path / "r1" / "error.log")
    assert "ValueError: no good: r1" in Path(bad.log).read_text()


def test_devices_must_match_the_workers(tmp_path):
    from redrep.core.validation import RedrepError

    with pytest.raises(RedrepError, match=r"devices: expected one device per worker \(2\), found 3"):
        LocalExecutor(2, ["cpu"] * 3).submit(_tasks(tmp_path, 1))


def test_local_devices(monkeypatch):
    import torch

    assert local_devices("cpu", 3) == ["cpu"] * 3
    assert local_devices("cuda:1", 2) == ["cuda:1", "cuda:1"]  # asked for one GPU: every worker on it
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert local_devices("cuda", 4) == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert local_devices("cuda", 6) == ["cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0", "cuda:1"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert local_devices("cuda", 2) == ["cuda", "cuda"]


def test_run_task_checkpoint_requeues_itself(tmp_path):
    t = RunTask("w00008_s0", 8, 0, str(tmp_path), {"epochs": 3})
    d = t.checkpoint()
    assert d.function is t and d.args == () and d.kwargs == {}


# ------------------------------------------------------------ driver death
def _children(pid: int) -> set[int]:
    out = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out |= {int(x) for x in (task / "children").read_text().split()}
        except OSError:
            pass
    return out


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to find the workers")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_workers_die_with_their_driver(tmp_path, sig):
    cmd = [sys.executable, "-m", "redrep", "sweep", "--dataset", "synthetic", "--widths", "8,16", "--seeds", "1"]
    cmd += ["--epochs", "100000", "--jobs", "2", "--acc-rep", "2", "--r2-rep", "2", "-q", "--out", str(tmp_path / "s")]
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ))
    workers: set[int] = set()
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60 and len(workers) < 2:
            workers = {p for p in _children(driver.pid) if alive(p)}
            if driver.poll() is not None:
                pytest.fail(f"the driver ended early: {driver.stderr.read().decode()[-2000:]}")
            time.sleep(0.2)
        assert len(workers) >= 2, "no workers started"
        # the workers are training: a checkpoint appears
        while time.monotonic() - t0 < 90 and not list((tmp_path / "s" / "runs").glob("*/checkpoints/last.pt")):
            time.sleep(0.2)
        driver.send_signal(sig)
        driver.wait(timeout=30)
        t1 = time.monotonic()
        while time.monotonic() - t1 < 10 and any(alive(p) for p in workers):
            time.sleep(0.1)
        assert not [p for p in workers if alive(p)], "workers survived their driver"
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        for p in workers:  # should they have survived, this test does not leave them behind
            if alive(p):
                os.kill(p, signal.SIGKILL)


def sleepy(task: RunTask, device: str) -> dict:
    Path(task.run_dir).mkdir(parents=True, exist_ok=True)
    (Path(task.run_dir) / "pid").write_text(str(os.getpid()))
    time.sleep(60)
    return {}


def test_waiting_has_a_timeout_and_stops_the_workers(tmp_path):
    from test_sweep import tiny

    from redrep.core.validation import RedrepError
    from redrep.experiments.sweep import run_sweep

    ex = LocalExecutor(2, ["cpu", "cpu"], run=sleepy)
    t0 = time.monotonic()
    with pytest.raises(RedrepError, match=r"timed out after \d+ s with 4 runs still queued or running \(w00016_s0"):
        run_sweep(tiny(jobs=2), tmp_path / "s", executor=ex, timeout=2, log=lambda _m: None)
    assert time.monotonic() - t0 < 30
    pids = [int(p.read_text()) for p in (tmp_path / "s" / "runs").glob("*/pid")]
    assert pids and not [p for p in pids if alive(p)]


def test_a_gpu_that_is_not_there_is_one_line(monkeypatch):
    import torch

    from redrep.core.device import resolve_device as resolve_local_device
    from redrep.core.validation import RedrepError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_local_device("cuda:0") == "cuda:0" and resolve_local_device("auto") == "cuda"
    with pytest.raises(
        RedrepError, match=r"device: expected one of the 1 CUDA device\(s\) of this machine \(cuda:0\), found 'cuda:7'"
    ):
        resolve_local_device("cuda:7")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_local_device("auto") == "cpu"
    with pytest.raises(RedrepError, match=r"device: expected a CUDA GPU for 'cuda:7', found none"):
        resolve_local_device("cuda:7")


def test_a_second_driver_of_one_sweep_is_refused(tmp_path):
    from test_sweep import tiny

    from redrep.core.validation import RedrepError
    from redrep.experiments.sweep import run_sweep

    out = tmp_path / "s"
    with lock_holder(out, what="sweep"):
        with pytest.raises(RedrepError, match=rf"{out}"):
            run_sweep(tiny(), out, executor=LocalExecutor(1, ["cpu"], run=record_device), log=lambda _m: None)
        assert not (out / "runs").exists()
    # once the other driver has gone, the sweep runs (the stand-in writes no results, so nothing to collect)
    st = []
    with pytest.raises(RedrepError, match="cannot collect the sweep"):
        run_sweep(tiny(), out, executor=LocalExecutor(1, ["cpu"], run=record_device), log=st.append)
    assert "4 runs: 0 finished, 0 queued or running, 4 to run now on local" in st[0]


def test_one_job_stops_between_runs_at_the_timeout(tmp_path):
    ex = LocalExecutor(1, ["cpu"], run=record_device)
    tasks = _tasks(tmp_path, 3)
    st = ex.wait(ex.submit(tasks), timeout=0.1)  # the first run (0.3 s) overruns it: the others do not start
    assert [st[t.name].state for t in tasks] == [FINISHED, "queued", "queued"]
    assert not (tmp_path / "r1").exists() and st["r1"].detail == "not started yet"
