"""Where the runs of a sweep train: local worker processes or a SLURM cluster (through submitit).

Both executors implement one small interface:

``submit(tasks) -> handles``
    start the runs; a handle is a small JSON-able dict (``job_id``, ``log``) that the
    sweep keeps in its state file, so that a later driver or ``redrep sweep-status``
    can ask about the run again;
``status(handles) -> {name: RunStatus}``
    what each submitted run is doing now: queued, running, finished or failed;
``wait(handles, ...) -> {name: RunStatus}``
    block until no run is queued or running (with a progress callback and a timeout),
    and return the final states.

A run counts as finished when its folder holds :data:`RUN_RESULT` (written by the run
itself after training and extraction), whatever the executor says: the run folders
are the truth, the executors only tell what is still going on.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..core.device import resolve_device
from ..core.parallel import can_fork, die_with_parent, stop_process_pool
from ..core.validation import RedrepError, exception_line
from ..storage import io
from .runs import FAILED, FINISHED, QUEUED, RUN_ERROR, RUNNING, RunStatus, RunTask


# ---------------------------------------------------------------- local
def local_devices(device: str, jobs: int) -> list[str]:
    """One device per local worker: ``cuda`` on a machine with N GPUs gives worker i ``cuda:(i mod N)``.

    With more workers than GPUs several workers share a GPU (``--jobs 4`` on one GPU: four
    workers on ``cuda``): narrow networks at batch 128 leave most of a GPU idle, and runs of
    several processes fill it. ``device`` is a resolved device name (``cpu``, ``cuda`` or
    ``cuda:N``); an explicit ``cuda:N`` puts every worker on that GPU, as asked.

    Counting the GPUs does not initialise CUDA in this process (torch asks NVML), so the
    workers started afterwards can use them.
    """
    if device != "cuda":
        return [device] * jobs
    import torch

    n = torch.cuda.device_count()
    return [f"cuda:{i % n}" for i in range(jobs)] if n > 1 else ["cuda"] * jobs


def _may_use_cuda(device: str | None) -> bool:
    """Whether a worker on ``device`` may train on a GPU (``auto``: where this machine has one)."""
    if device is None or device == "auto":
        return resolve_device("auto") != "cpu"
    return device.startswith("cuda")


def _cuda_initialised() -> bool:
    """Whether this process has initialised CUDA (without importing torch where it is not imported)."""
    torch = sys.modules.get("torch")
    return torch is not None and torch.cuda.is_initialized()


def start_method(devices) -> str:
    """How the local workers start: ``"fork"`` where it is safe, else ``"spawn"``.

    ``devices`` are the devices the workers may train on (``auto`` or None: the machine's
    choice). A forked child of a process that has initialised CUDA cannot use CUDA
    ("Cannot re-initialize CUDA in forked subprocess"), and forking such a process is
    unsafe even for CPU work; so a worker that may use a GPU, or the child of a process
    that has initialised CUDA, starts by spawn: a fresh interpreter, which costs an import
    of torch (seconds, against minutes of training). CPU runs keep fork, which is faster.
    Not forkserver: its workers are the server's children, and could not die with the driver.
    """
    if not can_fork() or _cuda_initialised() or any(_may_use_cuda(d) for d in devices):
        return "spawn"
    return "fork"


_WORKER_DEVICE: str | None = None
_WORKER_THREADS: int | None = None


def _worker_init(parent: int, slots, threads: int | None) -> None:
    global _WORKER_DEVICE, _WORKER_THREADS
    die_with_parent(parent)
    _WORKER_DEVICE = slots.get()
    _WORKER_THREADS = threads


def _run_in_worker(fn, task):
    # the worker's share of the cores, not a SLURM allocation's count that the driver may run inside
    return fn(replace(task, threads=_WORKER_THREADS), _WORKER_DEVICE)


def _error_log(task: RunTask) -> str:
    """Where a local run that raises leaves its traceback."""
    return str(Path(task.run_dir) / RUN_ERROR)


class LocalExecutor:
    """Runs the tasks in ``jobs`` worker processes of this machine (in this process when ``jobs`` is 1).

    Parameters
    ----------
    jobs : number of concurrent runs
    devices : list of ``jobs`` device names, one per worker (see :func:`local_devices`);
        None runs every worker on the task's own device
    run : ``run(task, device) -> dict``, what a worker does with a task (a stand-in in tests);
        under spawn, a function that a fresh interpreter can import
    start : how the workers start, ``"fork"`` or ``"spawn"``; None: :func:`start_method`

    Attributes
    ----------
    start_method_ : how the workers of the last :meth:`submit` started (None: no workers)

    Workers die with the driver: they ask the kernel for SIGKILL when their parent
    ends (Linux) and watch their parent otherwise, so that an interrupted sweep
    leaves no orphan training the runs that the next sweep will train again.
    """

    name = "local"

    def __init__(self, jobs: int = 1, devices: list[str] | None = None, *, run=None, start: str | None = None):
        self.jobs = jobs
        self.devices = devices
        self.run = run or RunTask.__call__
        self.start = start
        self.start_method_: str | None = None
        self._futures: dict[str, object] = {}
        self._outcomes: dict[str, RunStatus] = {}
        self._pool = None
        self._tasks: dict[str, RunTask] = {}

    def _devices(self) -> list[str | None]:
        devs = list(self.devices) if self.devices else [None] * self.jobs
        if len(devs) != self.jobs:
            raise RedrepError(f"devices: expected one device per worker ({self.jobs}), found {len(devs)}")
        return devs

    def submit(self, tasks: list[RunTask]) -> dict[str, dict]:
        devs = self._devices()
        self._tasks.update({t.name: t for t in tasks})
        handles = {t.name: {"job_id": None, "log": _error_log(t)} for t in tasks}
        if self.jobs == 1:  # run lazily in wait(): this process is the worker
            return handles
        threads = max(1, (os.cpu_count() or 1) // self.jobs)  # the machine's cores, split between the workers
        wanted = [d for d in devs if d is not None]
        if None in devs:  # workers on their run's own device
            wanted += [t.train_config.get("device", "auto") for t in tasks]
        self.start_method_ = self.start or start_method(wanted)
        ctx = multiprocessing.get_context(self.start_method_)
        slots = ctx.Queue()
        for d in devs:
            slots.put(d)
        self._pool = ProcessPoolExecutor(
            max_workers=self.jobs, mp_context=ctx, initializer=_worker_init, initargs=(os.getpid(), slots, threads)
        )
        self._futures = {t.name: self._pool.submit(_run_in_worker, self.run, t) for t in tasks}
        return handles

    def status(self, handles: dict[str, dict]) -> dict[str, RunStatus]:
        out = {}
        for name, h in handles.items():
            if name in self._outcomes:
                out[name] = self._outcomes[name]
            elif name in self._futures:
                fut = self._futures[name]
                out[name] = RunStatus(RUNNING if fut.running() else QUEUED, log=h.get("log"))
            elif name in self._tasks:  # one job: runs in wait(), one after the other
                out[name] = RunStatus(QUEUED, "not started yet", log=h.get("log"))
            else:  # submitted by an earlier driver that has ended: it is not going on any more
                out[name] = RunStatus(FAILED, "interrupted (its driver ended)", log=h.get("log"))
        return out

    def _record(self, name: str, exc: BaseException | None = None) -> RunStatus:
        task = self._tasks[name]
        log = _error_log(task)
        if exc is None:
            st = RunStatus(FINISHED, log=None)
        else:
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            try:
                Path(task.run_dir).mkdir(parents=True, exist_ok=True)
                io.write_text(log, text)
            except OSError:
                log = None
            st = RunStatus(FAILED, exception_line(exc), log=log)
        self._outcomes[name] = st
        return st

    def wait(self, handles: dict[str, dict], *, on_done=None, timeout: float | None = None) -> dict[str, RunStatus]:
        """Run or wait for the runs; ``on_done(name, status)`` after each; a run that raises is failed."""
        t0 = time.monotonic()
        if self.jobs == 1:
            device = self._devices()[0]
            for name in handles:
                if timeout is not None and time.monotonic() - t0 > timeout:
                    break
                try:
                    self.run(self._tasks[name], device)
                    st = self._record(name)
                except Exception as exc:  # noqa: BLE001 - one failed run must not stop the others
                    st = self._record(name, exc=exc)
                if on_done:
                    on_done(name, st)
            return self.status(handles)
        names = {fut: name for name, fut in self._futures.items() if name in handles}
        pending = set(names)
        try:
            while pending:
                left = None if timeout is None else timeout - (time.monotonic() - t0)
                if left is not None and left <= 0:
                    break
                done, pending = wait_futures(pending, timeout=left, return_when=FIRST_COMPLETED)
                for fut in done:
                    st = self._record(names[fut], exc=fut.exception())
                    if on_done:
                        on_done(names[fut], st)
        finally:
            self.shutdown()
        return self.status(handles)

    def shutdown(self) -> None:
        if self._pool is not None:
            # the workers of cancelled runs end here; a run in progress keeps its last checkpoint
            stop_process_pool(self._pool)
            self._pool = None


# ---------------------------------------------------------------- SLURM
#: SLURM job states (sacct) and what they mean for a run.
_SLURM_QUEUED = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESIZING", "SUSPENDED")
_SLURM_RUNNING = ("RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING")


@dataclass
class SlurmOptions:
    """Resources of each run's SLURM job.

    ``time_min`` is the time limit in minutes; ``gpus`` GPUs per run (None: 1 for a CNN,
    0 for the mlp); ``params`` extra submitit/sbatch parameters (account, qos,
    constraint, ...); ``max_parallel`` the job-array throttle (None: no limit).
    """

    partition: str | None = None
    time_min: int = 240
    gpus: int | None = None
    cpus: int = 4
    mem_gb: float | None = None
    params: dict = field(default_factory=dict)
    max_parallel: int | None = None
    #: seconds a submitted job may stay unknown to SLURM before it counts as lost
    lost_after_s: float = 120.0
    #: seconds between two looks at the queue while waiting
    poll_s: float = 5.0


def parse_slurm_params(items) -> dict:
    """``["account=abc", "qos=high"]`` -> ``{"account": "abc", "qos": "high"}`` (numbers become ints)."""
    out = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise RedrepError(f"slurm_param: expected KEY=VALUE, found {item!r}")
        value = value.strip()
        out[key] = int(value) if value.isdigit() else value
    return out


class SlurmExecutor:
    """Submits each run as one task of a SLURM job array through submitit.

    Job folders are ``<folder>/<job id>/`` (submitit's ``%j``): the submission script,
    the pickled task, its result and the logs ``<job id>_0_log.{out,err}`` sit together.
    The jobs run this Python (``sys.executable``) with this environment (PYTHONPATH
    included), as sbatch passes it on.
    """

    name = "slurm"

    def __init__(self, folder, options: SlurmOptions | None = None, *, arch: str = "mlp"):
        self.folder = Path(folder)
        self.options = options or SlurmOptions()
        self.arch = arch
        self._unknown_since: dict[str, float] = {}
        self._silent_since: float | None = None

    def _executor(self):
        try:
            import submitit
        except ImportError as exc:  # pragma: no cover - a dependency
            raise RedrepError(f"executor: slurm needs the submitit package ({exc})") from None
        import shutil

        if shutil.which("sbatch") is None:
            raise RedrepError("executor: slurm needs SLURM's sbatch on PATH, found none (is this a SLURM login node?)")
        o = self.options
        gpus = o.gpus if o.gpus is not None else (0 if self.arch == "mlp" else 1)
        ex = submitit.SlurmExecutor(folder=self.folder / "%j")
        params = {"time": int(o.time_min), "cpus_per_task": int(o.cpus), "job_name": "redrep"}
        if gpus:
            params["gpus_per_node"] = int(gpus)
        if o.partition:
            params["partition"] = o.partition
        if o.mem_gb:
            params["mem"] = f"{o.mem_gb}GB"
        if o.max_parallel:
            params["array_parallelism"] = int(o.max_parallel)
        extra = {}
        valid = ex._valid_parameters()
        for k, v in o.params.items():
            if k in valid:
                params[k] = v
            else:
                extra[k] = v
        if extra:
            params["additional_parameters"] = {**params.get("additional_parameters", {}), **extra}
        try:
            ex.update_parameters(**params)
        except ValueError as exc:
            raise RedrepError(f"slurm_param: submitit refused the parameters ({str(exc).splitlines()[0]})") from None
        return ex

    def submit(self, tasks: list[RunTask]) -> dict[str, dict]:
        if not tasks:
            return {}
        import contextlib
        import io as _stdio

        ex = self._executor()
        try:
            # submitit prints sbatch's complaint too; it is in the exception, said once below
            with contextlib.redirect_stderr(_stdio.StringIO()), ex.batch():
                jobs = [ex.submit(t) for t in tasks]
        except Exception as exc:  # noqa: BLE001 - sbatch's own message, in one line
            raise RedrepError(f"executor: sbatch refused the job array: {exception_line(exc)}") from None
        now = time.time()
        return {
            t.name: {"job_id": str(j.job_id), "log": str(j.paths.stderr), "submitted": now} for t, j in zip(tasks, jobs)
        }

    def _job(self, job_id: str):
        from submitit.slurm.slurm import SlurmJob

        return SlurmJob(folder=self.folder / "%j", job_id=job_id)

    def _states(self, handles: dict[str, dict]) -> dict[str, str] | None:
        """Job id -> SLURM state, from one sacct call (squeue where sacct fails); None when SLURM does not answer.

        A job that SLURM does not know is absent from the answer.
        """
        import subprocess

        from submitit.slurm.slurm import SlurmInfoWatcher

        ids = sorted({h["job_id"] for h in handles.values() if h.get("job_id")})
        if not ids:
            return {}
        arrays = sorted({i.split("_")[0] for i in ids})
        queries = (
            ["sacct", "-o", "JobID,State", "--parsable2", *[a for i in arrays for a in ("-j", i)]],
            ["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T", "-j", ",".join(arrays)],
        )
        for cmd in queries:
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                continue
            if r.returncode != 0:
                continue
            text = r.stdout if cmd[0] == "sacct" else "JobID|State\n" + r.stdout
            info = SlurmInfoWatcher().read_info(text)
            return {i: info[i]["State"] for i in ids if i in info}
        return None

    def _failure_detail(self, job_id: str, state: str) -> str:
        job = self._job(job_id)
        try:
            from submitit.core.utils import pickle_load

            outcome, result = pickle_load(job.paths.result_pickle)
            if outcome == "error":
                lines = [x for x in str(result).strip().splitlines() if x.strip()]
                return f"{state.lower()}: {lines[-1].strip()}" if lines else state.lower()
        except Exception:  # noqa: BLE001 - no result file: the job died outside Python
            pass
        return state.lower()

    def status(self, handles: dict[str, dict]) -> dict[str, RunStatus]:
        states = self._states(handles)
        out = {}
        now = time.time()
        if states is None:  # no answer is not a lost job: never resubmit what may still run
            if self._silent_since is None:
                self._silent_since = now
            return {
                n: RunStatus(QUEUED, "state unknown: sacct and squeue do not answer", h.get("job_id"), h.get("log"))
                for n, h in handles.items()
            }
        self._silent_since = None
        for name, h in handles.items():
            jid, log = h.get("job_id"), h.get("log")
            state = states.get(jid, "UNKNOWN").split(" ")[0] if jid else "UNKNOWN"
            if state in _SLURM_QUEUED:
                self._unknown_since.pop(jid, None)
                out[name] = RunStatus(QUEUED, state.lower(), jid, log)
            elif state in _SLURM_RUNNING:
                self._unknown_since.pop(jid, None)
                out[name] = RunStatus(RUNNING, "", jid, log)
            elif state == "UNKNOWN":
                since = self._unknown_since.setdefault(jid, max(now, float(h.get("submitted", 0))))
                if now - since < self.options.lost_after_s and now - float(h.get("submitted", 0)) < 3600:
                    out[name] = RunStatus(QUEUED, "not yet seen by SLURM", jid, log)
                else:
                    out[name] = RunStatus(FAILED, f"lost: SLURM does not know job {jid}", jid, log)
            elif state == "COMPLETED":
                out[name] = RunStatus(FINISHED, "", jid, log)
            else:  # FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, PREEMPTED, BOOT_FAIL, DEADLINE
                out[name] = RunStatus(FAILED, self._failure_detail(jid, state), jid, log)
        return out

    def wait(self, handles: dict[str, dict], *, on_done=None, timeout: float | None = None) -> dict[str, RunStatus]:
        """Poll SLURM until no run is queued or running, or ``timeout`` seconds have passed.

        A job that SLURM stops knowing about counts as failed ("lost") after
        ``options.lost_after_s``, and a SLURM that stops answering is an error
        after as long, so that this never waits forever.
        """
        t0 = time.monotonic()
        seen: set[str] = set()
        while True:
            st = self.status(handles)
            for name, s in st.items():
                if s.state in (FINISHED, FAILED) and name not in seen:
                    seen.add(name)
                    if on_done:
                        on_done(name, s)
            if all(s.state in (FINISHED, FAILED) for s in st.values()):
                return st
            if timeout is not None and time.monotonic() - t0 > timeout:
                return st
            if self._silent_since is not None and time.time() - self._silent_since > self.options.lost_after_s:
                raise RedrepError(
                    f"executor: SLURM has not answered (sacct, squeue) for {self.options.lost_after_s:.0f} s; "
                    f"the jobs may still run: see redrep sweep-status, and re-run the same command to collect"
                )
            time.sleep(self.options.poll_s)

    def shutdown(self) -> None:
        """Nothing to stop: the jobs belong to SLURM and go on without the driver."""
