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

import contextlib
import logging
import multiprocessing
import os
import re
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
from . import slurm_queue
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
@dataclass
class SlurmOptions:
    """Resources of each run's SLURM job.

    ``time_min`` is the time limit in minutes; ``gpus`` GPUs per run (None: 1 for a CNN,
    0 for the mlp); ``params`` extra sbatch or submitit parameters (account, qos,
    constraint, ..., see :func:`parse_slurm_params`); ``max_parallel`` the job-array
    throttle (None: no limit).
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


#: --slurm-param keys that a flag of ``redrep sweep`` sets.
_OWN_FLAG = {
    "partition": "--slurm-partition",
    "time": "--slurm-time",
    "timeout_min": "--slurm-time",
    "cpus_per_task": "--slurm-cpus",
    "gpus_per_node": "--slurm-gpus",
    "num_gpus": "--slurm-gpus",
    "mem": "--slurm-mem-gb",
    "mem_gb": "--slurm-mem-gb",
    "array_parallelism": "--max-parallel",
}
#: --slurm-param keys that redrep sets itself, and why.
_RESERVED = {
    "job_name": "redrep names the jobs to find them again",
    "name": "redrep names the jobs to find them again",
    "comment": "redrep marks each submission with it to find its jobs again",
    "array": "redrep makes the job array, one task per run",
    "nodes": "each run is one task on one node",
    "ntasks": "each run is one task on one node",
    "ntasks_per_node": "each run is one task on one node",
    "tasks_per_node": "each run is one task on one node",
    "output": "submitit places the logs beside each job",
    "error": "submitit places the logs beside each job",
}
#: submitit options that are no sbatch options: they take lists or booleans, which KEY=VALUE cannot give.
_NOT_SBATCH = ("setup", "teardown", "srun_args", "use_srun", "additional_parameters", "stderr_to_stdout", "map_count")


def parse_slurm_params(items) -> dict:
    """``["account=abc", "qos=high"]`` -> ``{"account": "abc", "qos": "high"}`` (digits become ints).

    Keys are sbatch options (``-`` or ``_``) or submitit's; one-line errors name ``--slurm-param`` for a key that
    has a flag of its own, one that redrep sets itself, and submitit's options that take a list or a flag.
    """
    out = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise RedrepError(f"--slurm-param: expected KEY=VALUE, found {item!r}")
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,63}", key):
            raise RedrepError(f"--slurm-param: expected an option name of letters, digits, - and _, found {key!r}")
        value = value.strip()
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise RedrepError(f"--slurm-param {key}: expected a value on one line, found control characters")
        if key in _OWN_FLAG:
            raise RedrepError(f"--slurm-param {key}: has a flag of its own, expected {_OWN_FLAG[key]} instead")
        if key in _RESERVED:
            raise RedrepError(f"--slurm-param {key}: {_RESERVED[key]}; expected another sbatch option")
        if key in _NOT_SBATCH:
            raise RedrepError(
                f"--slurm-param {key}: a submitit option that takes a list or a flag, which KEY=VALUE cannot give; "
                f"expected an sbatch option (account, qos, constraint, ...)"
            )
        out[key] = int(value) if value.isascii() and value.isdigit() else value
    return out


def _sbatch_only(submitit, folder: Path, key: str, value) -> bool:
    """Whether ``key`` is no parameter of submitit's (an sbatch option, passed on as it is); a RedrepError when
    submitit knows it and refuses the value (asked through the public AutoExecutor.update_parameters)."""
    probe = submitit.AutoExecutor(folder=folder, cluster="slurm")
    try:
        probe.update_parameters(**{f"slurm_{key}": value})
    except NameError:  # AutoExecutor's answer for a name no executor knows
        return True
    except Exception as exc:  # noqa: BLE001 - submitit checks a value by building the sbatch script with it
        raise RedrepError(f"--slurm-param {key}={value}: submitit refused the value ({exception_line(exc)})") from None
    return False


@contextlib.contextmanager
def _quiet_submitit():
    """submitit logs sacct's failures and dropped batches itself; redrep says what matters, in one line."""
    log = logging.getLogger("submitit")
    level = log.level
    log.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        log.setLevel(level)


def _some(names, n: int = 4) -> str:
    names = sorted(names)
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


class SlurmExecutor:
    """Submits each run as one task of a SLURM job array through submitit.

    Job folders are ``<folder>/<job id>/`` (submitit's ``%j``): the submission script,
    the pickled task, its result and the logs ``<job id>_0_log.{out,err}`` sit together.
    The jobs run this Python (``sys.executable``) with this environment (PYTHONPATH
    included), as sbatch passes it on.

    Job states come from squeue (pending and running jobs, with the reason a job
    waits) and, for jobs that ended long ago, from submitit's jobs (sacct). A job
    pending for a reason that waiting cannot resolve stops :meth:`wait` with one
    line naming the flag to change (see :func:`redrep.experiments.slurm_queue.never_starts`).
    """

    name = "slurm"

    def __init__(self, folder, options: SlurmOptions | None = None, *, arch: str = "mlp"):
        self.folder = Path(folder)
        self.options = options or SlurmOptions()
        self.arch = arch
        self._submitit = None
        self._unknown_since: dict[str, float] = {}
        self._silent_since: float | None = None
        #: run name -> (job id, reason, why, flag) of the jobs that can never start, from the last status()
        self._never: dict[str, tuple[str, str, str, str]] = {}

    # ------------------------------------------------------------ submitting
    def check(self):
        """submitit's executor for the options: call it before anything is written, so that a bad option or a
        missing sbatch is one line and nothing else."""
        if self._submitit is None:
            self._submitit = self._executor()
        return self._submitit

    def _executor(self):
        import shutil

        import submitit  # the slurm extra: the command line names it when it is missing

        if shutil.which("sbatch") is None:
            raise RedrepError("executor: slurm needs SLURM's sbatch on PATH, found none (is this a SLURM login node?)")
        o = self.options
        gpus = o.gpus if o.gpus is not None else (0 if self.arch == "mlp" else 1)
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
        with _quiet_submitit():
            for k, v in o.params.items():
                if _sbatch_only(submitit, self.folder, k, v):
                    extra[k] = v
                else:
                    params[k] = v
            ex = submitit.AutoExecutor(folder=self.folder / "%j", cluster="slurm")
            try:
                ex.update_parameters(**{f"slurm_{k}": v for k, v in params.items()}, slurm_additional_parameters=extra)
            except (ValueError, TypeError, NameError) as exc:
                raise RedrepError(f"--slurm-param: submitit refused the parameters ({exception_line(exc)})") from None
        return ex

    def submit(self, tasks: list[RunTask], *, name: str = "redrep", comment: str | None = None) -> dict[str, dict]:
        """Submit the tasks as one job array named ``name``, marked with ``comment`` (to find its jobs again)."""
        if not tasks:
            return {}
        import io as _stdio

        ex = self.check()
        ex.update_parameters(slurm_job_name=name, slurm_comment=comment)
        try:
            # submitit prints sbatch's complaint too; it is in the exception, said once below
            with contextlib.redirect_stderr(_stdio.StringIO()), _quiet_submitit(), ex.batch():
                jobs = [ex.submit(t) for t in tasks]
        except Exception as exc:  # noqa: BLE001 - sbatch's own message, in one line
            raise RedrepError(f"executor: sbatch refused the job array: {exception_line(exc)}") from None
        now = time.time()
        return {
            t.name: {"job_id": str(j.job_id), "log": str(j.paths.stderr), "submitted": now} for t, j in zip(tasks, jobs)
        }

    def clean_leftovers(self) -> list[Path]:
        """Remove what an interrupted or refused submission left at the top of the job folder: submitit's pickles
        and sbatch scripts that never reached a job folder (a submitted job's script is kept there as a link).

        Call it only while no submission is under way (the sweep's folder lock)."""
        removed = []
        try:
            entries = list(self.folder.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return removed
        for p in entries:
            if p.is_symlink() or not p.is_file():
                continue
            if re.fullmatch(r"[0-9a-f]{32}\.pkl|\.submission_file_[0-9a-f]{32}\.sh", p.name):
                p.unlink(missing_ok=True)
                removed.append(p)
        return removed

    def recover(self, name: str, comment: str | None, runs: list[str], recorded: set[str]):
        """The jobs of a submission that its driver did not record (killed while sbatch ran, or just after).

        Every pending or running job named ``name`` whose id is not in ``recorded`` is either adopted, when it is a
        task of the submission marked ``comment`` and its pickled task reached its job folder (it will run
        ``runs[i]``, i its array index), or cancelled, as it cannot find its task and would fail at its start.

        Returns ``(adopted, cancelled)``: run name -> handle, and the job ids cancelled. A RedrepError when
        squeue does not answer: without it, resubmitting could run a run twice.
        """
        rows = slurm_queue.squeue(["--name", name])
        if rows is None:
            raise RedrepError(
                f"executor: cannot tell which jobs of the interrupted submission of {len(runs)} runs reached SLURM: "
                f"squeue does not answer; re-run the same command once it does"
            )
        import submitit

        live = slurm_queue.QUEUED_STATES + slurm_queue.RUNNING_STATES
        adopted, cancel = {}, []
        for jid, row in rows.items():
            if jid in recorded or row.state not in live:
                continue
            _, _, index = jid.partition("_")
            i = int(index) if index.isdigit() else 0
            job = submitit.SlurmJob(self.folder / "%j", jid)
            if comment and row.comment == comment and i < len(runs) and job.paths.submitted_pickle.is_file():
                adopted[runs[i]] = {"job_id": jid, "log": str(job.paths.stderr), "submitted": time.time()}
            else:
                cancel.append(jid)
        if cancel and not slurm_queue.cancel(cancel):
            raise RedrepError(
                f"executor: could not cancel the jobs of an interrupted submission ({_some(cancel)}), which cannot "
                f"run; cancel them with scancel and re-run the same command"
            )
        return adopted, cancel

    # ------------------------------------------------------------ states
    def _ended_states(self, ids: list[str]) -> dict[str, str]:
        """States of jobs that squeue no longer lists, from submitit's jobs (one sacct call for all)."""
        if not ids:
            return {}
        import submitit

        with _quiet_submitit():
            jobs = {i: submitit.SlurmJob(self.folder / "%j", i) for i in ids}  # registered before the first call
            return {i: str(j.state).split(" ")[0].upper() for i, j in jobs.items()}

    def _failure_detail(self, job_id: str, state: str) -> str:
        """``failed: <the last line of the run's traceback>`` where the job left one, else the state."""
        import submitit

        job = submitit.SlurmJob(self.folder / "%j", job_id)
        if not job.paths.result_pickle.is_file():  # the job died outside Python: no traceback
            return state.lower()
        with _quiet_submitit():
            try:
                exc = job.exception()  # the result file is there: this does not wait
            except Exception:  # noqa: BLE001 - an unreadable result file says no more than the state
                return state.lower()
        if exc is None:
            return state.lower()
        text = str(exc)
        parts = text.split("-" * 22)  # submitit frames the traceback with dashes
        trace = parts[1] if len(parts) >= 3 else text
        lines = [x.strip() for x in trace.strip().splitlines() if x.strip()]
        return f"{state.lower()}: {lines[-1]}" if lines else state.lower()

    def _pending(self, name: str, row: slurm_queue.QueueRow, nodes: dict) -> str:
        """The detail of a pending job: its reason, and why it can never start when it cannot."""
        reason = "" if row.reason in ("None", "") else row.reason
        detail = f"{row.state.lower()} ({reason})" if reason else row.state.lower()
        if row.state != "PENDING":
            return detail
        if row.partition not in nodes:
            nodes[row.partition] = slurm_queue.partition_nodes(row.partition)
        known = None
        if row.reason.startswith("ReqNodeNotAvail") and row.nodelist:
            every = slurm_queue.partition_nodes("")
            known = None if every is None else {n.name for n in every}
        never = slurm_queue.never_starts(row, nodes[row.partition], known)
        if never is None:
            return detail
        why, flag = never
        self._never[name] = (row.job_id, reason or row.state.lower(), why, flag)
        return f"{detail}; can never start: {why}; change {flag}"

    def status(self, handles: dict[str, dict]) -> dict[str, RunStatus]:
        ids = sorted({h["job_id"] for h in handles.values() if h.get("job_id")})
        arrays = sorted({i.split("_")[0] for i in ids})
        rows = slurm_queue.squeue(["-j", ",".join(arrays)]) if ids else {}
        now = time.time()
        self._never = {}
        if rows is None:  # no answer is not a lost job: never resubmit what may still run
            if self._silent_since is None:
                self._silent_since = now
            return {
                n: RunStatus(QUEUED, "state unknown: squeue does not answer", h.get("job_id"), h.get("log"))
                for n, h in handles.items()
            }
        self._silent_since = None
        ended = self._ended_states([i for i in ids if i not in rows and i.split("_")[0] not in rows])
        nodes: dict = {}
        out = {}
        for name, h in handles.items():
            jid, log = h.get("job_id"), h.get("log")
            # array tasks cancelled before they started are listed as their array's one record (``12``)
            row = rows.get(jid) or (rows.get(jid.split("_")[0]) if jid else None)
            state = row.state if row is not None else ended.get(jid, "UNKNOWN")
            if state in slurm_queue.QUEUED_STATES:
                self._unknown_since.pop(jid, None)
                detail = self._pending(name, row, nodes) if row is not None else state.lower()
                out[name] = RunStatus(QUEUED, detail, jid, log, reason=row.reason if row is not None else "")
            elif state in slurm_queue.RUNNING_STATES:
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

    # ------------------------------------------------------------ waiting
    def _give_up(self, never: dict[str, tuple[str, str, str, str]]) -> None:
        """Cancel the jobs that can never start and say so, with the flag to change, in one line."""
        ids = sorted({v[0] for v in never.values()})
        _, reason, why, _ = never[min(never)]
        flags = " / ".join(sorted({v[3] for v in never.values()}))
        done = (
            "cancelled them, so that a re-run submits them again"
            if slurm_queue.cancel(ids)
            else f"could not cancel them: scancel {' '.join(ids[:4])}{' ...' if len(ids) > 4 else ''}"
        )
        raise RedrepError(
            f"executor: SLURM can never start {len(never)} runs ({_some(never)}), pending ({reason}): {why}; "
            f"{done}; change {flags} and re-run the same command"
        )

    def wait(
        self, handles: dict[str, dict], *, on_done=None, timeout: float | None = None, on_poll=None
    ) -> dict[str, RunStatus]:
        """Poll SLURM until no run is queued or running, or ``timeout`` seconds have passed.

        ``on_done(name, status)`` once per run that ends, ``on_poll(statuses)`` after each look.
        A job that SLURM stops knowing about counts as failed ("lost") after
        ``options.lost_after_s``, a SLURM that stops answering is an error after
        as long, and a job that can never start (its pending reason, see
        :func:`redrep.experiments.slurm_queue.never_starts`) is cancelled and an
        error at once, so that this never waits forever.
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
            if on_poll:
                on_poll(st)
            if all(s.state in (FINISHED, FAILED) for s in st.values()):
                return st
            if self._never:
                self._give_up(self._never)
            if timeout is not None and time.monotonic() - t0 > timeout:
                return st
            if self._silent_since is not None and time.time() - self._silent_since > self.options.lost_after_s:
                raise RedrepError(
                    f"executor: SLURM has not answered (squeue) for {self.options.lost_after_s:.0f} s; "
                    f"the jobs may still run: see redrep sweep-status, and re-run the same command to collect"
                )
            time.sleep(self.options.poll_s)

    def shutdown(self) -> None:
        """Nothing to stop: the jobs belong to SLURM and go on without the driver."""


def waiting_line(statuses: dict[str, RunStatus]) -> str:
    """What the unfinished runs are doing, for a progress line: ``2 running, 4 pending (Resources)``."""
    running = sum(s.state == RUNNING for s in statuses.values())
    reasons: dict[str, int] = {}
    for s in statuses.values():
        if s.state == QUEUED:
            key = s.reason if s.reason and s.reason != "None" else ""
            reasons[key] = reasons.get(key, 0) + 1
    parts = [f"{running} running"] if running else []
    parts += [f"{n} pending" + (f" ({r})" if r else "") for r, n in sorted(reasons.items(), key=lambda x: -x[1])]
    return ", ".join(parts)
