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
from click.testing import CliRunner

import procs
from procs import alive, lock_holder
from redrep.cli import main
from redrep.experiments.executors import LocalExecutor, local_devices
from redrep.experiments.runs import FAILED, FINISHED, RunTask

STOPPED = "stopped (nothing queued or running; re-run the same command to resume)"


#: Set by a test in the driver before the workers start: a forked worker sees it, a spawned one does not.
PARENT_MARK = None


def record_device(task: RunTask, device: str) -> dict:
    """A stand-in for training: note which process ran the task on which device, and when."""
    t0 = time.time()
    time.sleep(0.3)
    rec = {"name": task.name, "pid": os.getpid(), "device": device, "threads": task.threads, "mark": PARENT_MARK}
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
    assert local_devices("cuda", 1) == ["cuda:0"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert local_devices("cuda", 3) == ["cuda:0", "cuda:1", "cuda:0"]  # worker i on GPU i mod N
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert local_devices("cuda", 2) == ["cuda", "cuda"]
    assert local_devices("cuda", 4) == ["cuda"] * 4  # --jobs 4 on one GPU: four workers share it


def test_workers_that_may_use_cuda_start_by_spawn(monkeypatch):
    import torch

    import redrep.experiments.executors as executors

    monkeypatch.setattr(executors, "can_fork", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert executors.start_method(["cpu", "cpu"]) == "fork"  # CPU runs keep fork, the faster start
    assert executors.start_method(["auto", None]) == "fork"  # no GPU here: auto trains on the CPU
    assert executors.start_method(["cuda", "cuda"]) == "spawn"
    assert executors.start_method(["cpu", "cuda:1"]) == "spawn"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a machine with a GPU
    assert executors.start_method(["auto"]) == "spawn" and executors.start_method([None]) == "spawn"
    assert executors.start_method(["cpu", "cpu"]) == "fork"
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)  # this process has used CUDA
    assert executors.start_method(["cpu", "cpu"]) == "spawn"
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(executors, "can_fork", lambda: False)  # no fork at all (not Linux, a daemon)
    assert executors.start_method(["cpu"]) == "spawn"


def test_the_executor_spawns_workers_for_gpu_runs_and_forks_for_cpu_runs(tmp_path, monkeypatch):
    # the stand-in never touches CUDA: this machine needs no GPU to check how the workers start
    monkeypatch.setattr(sys.modules[__name__], "PARENT_MARK", "set in the driver")
    for devices, how in ((["cuda"] * 2, "spawn"), (["cpu"] * 2, "fork")):
        ex = LocalExecutor(2, devices, run=record_device)
        tasks = _tasks(tmp_path / how, 2)
        st = ex.wait(ex.submit(tasks))
        assert ex.start_method_ == how and all(s.state == FINISHED for s in st.values())
        recs = [json.loads((Path(t.run_dir) / "rec.json").read_text()) for t in tasks]
        assert {r["device"] for r in recs} == {devices[0]} and os.getpid() not in {r["pid"] for r in recs}
        # a spawned worker is a fresh interpreter: it does not see what the driver set after importing
        assert {r["mark"] for r in recs} == {None if how == "spawn" else "set in the driver"}
        assert {r["threads"] for r in recs} == {max(1, (os.cpu_count() or 1) // 2)}
    # the task's own device decides where the executor has none per worker
    ex = LocalExecutor(2, None, run=record_device)
    tasks = [RunTask(f"r{i}", 8, i, str(tmp_path / "own" / f"r{i}"), {"device": "cuda:0"}) for i in range(2)]
    ex.wait(ex.submit(tasks))
    assert ex.start_method_ == "spawn"


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
    cmd += ["--device", "cpu"]
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
    # nothing runs any more, and sweep-status says so (sweep.json still says "running": the driver was killed)
    assert json.loads((tmp_path / "s" / "sweep.json").read_text())["status"] == "running"
    r = CliRunner().invoke(main, ["sweep-status", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[-1] == f"2 failed; sweep {STOPPED}"
    assert "failed (interrupted (its driver ended))" in r.output


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to find the workers")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_spawned_workers_die_with_their_driver(tmp_path, sig):
    # workers for GPU runs are spawned, not forked; they end with the driver all the same
    code = (
        "from redrep.experiments.executors import LocalExecutor\n"
        "from redrep.experiments.runs import RunTask\n"
        "import test_sweep_local\n"
        "ex = LocalExecutor(2, ['cuda', 'cuda'], run=test_sweep_local.sleepy)\n"
        f"tasks = [RunTask(f'r{{i}}', 8, i, {str(tmp_path)!r} + f'/r{{i}}', {{}}) for i in range(2)]\n"
        "handles = ex.submit(tasks)\n"
        "print(ex.start_method_, flush=True)\n"
        "ex.wait(handles)\n"
    )
    env = procs.env(
        PYTHONPATH=f"{procs.SRC}{os.pathsep}{Path(__file__).parent}{os.pathsep}{Path(procs.__file__).parent}"
    )
    driver = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pids: list[int] = []
    try:
        assert driver.stdout.readline().decode().strip() == "spawn"
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60 and len(pids) < 2:  # each worker writes its pid once it runs
            pids = [int(f.read_text()) for f in tmp_path.glob("r*/pid") if f.read_text()]
            if driver.poll() is not None:
                pytest.fail(f"the driver ended early: {driver.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)
        assert len(pids) == 2, "the workers did not start"
        assert {_ppid(p) for p in pids} == {driver.pid}  # spawned by the driver itself (not a fork server)
        driver.send_signal(sig)
        driver.wait(timeout=30)
        t1 = time.monotonic()
        while time.monotonic() - t1 < 10 and any(alive(p) for p in pids):
            time.sleep(0.1)
        assert not [p for p in pids if alive(p)], "spawned workers survived their driver"
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        for p in pids:
            if alive(p):
                os.kill(p, signal.SIGKILL)


def always_fails(task: RunTask, device: str) -> dict:
    raise ValueError(f"cannot train {task.name} (a stand-in)")


@pytest.mark.parametrize("jobs", [1, 2])
def test_status_after_every_run_failed_is_not_running(tmp_path, jobs):
    from test_sweep import tiny

    from redrep.core.validation import RedrepError
    from redrep.experiments.sweep import run_sweep

    out = tmp_path / "s"
    with pytest.raises(RedrepError, match="cannot collect the sweep: no finished run at W = 8"):
        run_sweep(
            tiny(jobs=jobs), out, executor=LocalExecutor(jobs, ["cpu"] * jobs, run=always_fails), log=lambda _m: None
        )
    assert json.loads((out / "sweep.json").read_text())["status"] == "stopped"  # written on the way out
    r = CliRunner().invoke(main, ["sweep-status", str(out)])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[-1] == f"4 failed; sweep {STOPPED}"
    assert (
        r.output.count("failed (failed, see its log)") == 4
        and "cannot train" in (out / "runs" / "w00008_s0" / "error.log").read_text()
    )


def test_sweep_status_is_running_only_while_a_run_is():
    from redrep.experiments.runs import MISSING, QUEUED, RUNNING, RunStatus
    from redrep.experiments.sweep import sweep_status

    ended = {"a": RunStatus(FAILED), "b": RunStatus(FINISHED), "c": RunStatus(MISSING)}
    for written in ("running", "stopped", None):
        assert sweep_status({"status": written} if written else None, ended) == STOPPED
    for written in ("done", "partial"):  # a collected sweep says how it was collected
        assert sweep_status({"status": written}, ended) == written
    for going in (QUEUED, RUNNING):  # a run still queued or running (a SLURM job, another driver's worker)
        assert sweep_status({"status": "stopped"}, {**ended, "d": RunStatus(going)}) == "running"


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
