"""Width sweeps: the paper's experiment end to end, in three stages.

A sweep trains networks that differ only in width W (every hidden layer of an
MLP, or the widening factor k = W / 64 of a Wide-ResNet), several seeds each;
extracts their last hidden layer; takes ``error_inf`` from the ensemble of
the widest networks; runs the chunk analysis on every seed of the widest
network with chunk sizes equal to the sweep widths; and compares, width by
width, a full network of width W with chunks of W neurons of the widest one
(paper, Fig. 3a).

The stages:

plan (:func:`plan_sweep`)
    the (width, seed) runs, each a :class:`~redrep.experiments.runs.RunTask` with its folder and training config;
run (:func:`run_stage`)
    submit the runs that are neither finished nor already queued or running to an executor
    (local worker processes or SLURM, see :mod:`redrep.experiments.executors`), and wait for them;
collect (:func:`collect_sweep`)
    ensemble, chunk analyses (:func:`analyse_runs`), CSVs, figures and report from the finished runs.

Layout of a sweep folder::

    sweep.json              version, config, job ids of submitted runs, per-run metrics, error_inf, summary
    sweep.csv               tidy: source (full | chunk), width, seed, test_error, train_error
    width_comparison.csv    per width: mean and sem over seeds of both sources
    runs/w<W>_s<seed>/      one training run each (config, log, checkpoints, representations/, run.json)
    slurm/<job id>/         submitit's job folders: submission script, pickled task, logs (SLURM only)
    analysis/seed<seed>/    chunk analysis of the widest network of that seed
    clones/w<W>_s<seed>/    chunk analysis of every run (chunk sizes W, W/2, ..., 1), with its summary
    clones.csv              tidy: width, seed, wc_star, clones, exponent, exponent_se (redrep.experiments.clones)
    figures/                width_comparison.{png,pdf}, chunks.{png,pdf}
    report.html             everything above, in one self-contained page

Running the same sweep again skips finished runs, leaves queued and running
ones alone, resubmits failed or missing ones and collects once all are finished.
"""

from __future__ import annotations

import math
import os
import socket
import time
import uuid
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from ..core.analysis import ChunkAnalysis
from ..core.device import resolve_device
from ..core.summary import EXPONENT_UNRESOLVED_SE, mean_sem
from ..core.validation import RedrepError, check_float, check_int
from ..nets.config import PAPER_CHECKPOINT_EPOCHS, RESUME_FREE_FIELDS, TrainConfig, config_differences
from ..storage import io
from ..storage.repset import RepresentationSet
from ..storage.results import load_results, rows_to_csv, write_results
from .executors import LocalExecutor, SlurmExecutor, local_devices, waiting_line
from .preflight import check_sweep
from .runs import FAILED, FINISHED, MISSING, QUEUED, RUNNING, RunStatus, RunTask, read_run_result
from .sweep_state import (
    SLURM_DIR,
    SWEEP_FILE,
    SWEEP_VERSION,
    brief,
    check_new_folder,
    check_plan,
    check_state,
    plan_order,
    read_sweep_json,
)

#: Architectures whose width a sweep can set, and how: option name and W -> value.
WIDTH_OPTIONS = {
    "mlp": ("width", lambda w: int(w)),
    "wide_resnet16": ("widening_factor", lambda w: w / 64),
    "wide_resnet22": ("widening_factor", lambda w: w / 64),
    "wide_resnet28": ("widening_factor", lambda w: w / 64),
    "wide_resnet40": ("widening_factor", lambda w: w / 64),
}
#: Fields of SweepConfig that may change when a sweep is resumed (and those of its training template).
RESUME_FREE = ("jobs", "acc_rep", "r2_rep", "analysis_seed", "progress")
#: Training-template fields that a sweep sets per run, so the template's own value does not matter.
PER_RUN_FIELDS = ("seed", "width", "widening_factor")


#: The recipe of a sweep's runs unless one is given (redrep.nets.config.RECIPES).
DEFAULT_RECIPE = "demo-mlp"


def _default_template() -> TrainConfig:
    # the demo's recipe: parity-digits, 3-hidden-layer MLPs; the last epoch kept only (a sweep holds many runs)
    return TrainConfig.from_recipe(DEFAULT_RECIPE)


@dataclass
class SweepConfig:
    """A family of training runs that differ in width and seed, and how they are analysed.

    ``train`` is the template of every run: a :class:`redrep.nets.train.TrainConfig`
    whose seed and width (``width`` of an mlp, ``widening_factor`` of a
    Wide-ResNet) each run sets; ``seeds`` is the number of seeds (0, 1, ...,
    seeds - 1); ``jobs`` the number of runs trained at once by the local
    executor.
    """

    train: TrainConfig = field(default_factory=_default_template)
    widths: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024)
    seeds: int = 3
    acc_rep: int = 100
    r2_rep: int = 40
    analysis_seed: int = 0
    jobs: int = 1
    progress: bool = field(default=True, compare=False)

    def validated(self) -> SweepConfig:
        if not isinstance(self.train, TrainConfig):
            raise RedrepError(f"train: expected a TrainConfig template, found {type(self.train).__name__}")
        arch = self.train.arch
        if arch not in WIDTH_OPTIONS:
            raise RedrepError(f"arch: expected one of {', '.join(WIDTH_OPTIONS)} for a width sweep, found {arch!r}")
        ws = self.widths
        if not isinstance(ws, (str, bytes, dict)) and hasattr(ws, "__iter__"):  # a range or an array will do
            ws = list(ws)
        widths, seeds = check_plan(ws, self.seeds)
        if len(widths) < 2:
            raise RedrepError(f"widths: expected at least two different widths, found {list(widths)}")
        jobs = check_int(self.jobs, "jobs", min_value=1, max_value=max(1, os.cpu_count() or 1))
        check_int(self.acc_rep, "acc_rep", min_value=1)
        check_int(self.r2_rep, "r2_rep", min_value=1)
        check_int(self.analysis_seed, "analysis_seed", min_value=0)
        if self.train.lr is not None:  # None: the authors' rule, resolved by each run for its own width
            check_float(self.train.lr, "lr", min_value=0.0)
        if arch != "mlp" and self.train.depth is not None:
            raise RedrepError(f"depth: only the mlp takes a depth; {arch} fixes its own, found {self.train.depth}")
        out = replace(self, widths=tuple(widths), seeds=seeds, jobs=jobs)
        checked = [out.train_config(w, 0).validated() for w in widths]  # every run valid before anything trains
        return replace(out, train=replace(checked[0], seed=0, width=self.train.width, widening_factor=None))

    def train_config(self, width: int, seed: int) -> TrainConfig:
        """The TrainConfig of the run of this width and seed.

        The widest runs keep the paper's checkpoint epochs (besides the template's), so that
        ``redrep dynamics`` can follow them through training; the others keep epoch 0 and the last.
        """
        option, value = WIDTH_OPTIONS[self.train.arch]
        extra = {}
        if self.widths and width == max(self.widths):
            kept = sorted({*self.train.checkpoint_epochs, *PAPER_CHECKPOINT_EPOCHS})
            extra["checkpoint_epochs"] = tuple(e for e in kept if e <= self.train.epochs)
        return replace(self.train, seed=seed, **{option: value(width)}, **extra)

    def to_dict(self) -> dict:
        return {
            "train": self.train.to_dict(),
            "widths": list(self.widths),
            "seeds": self.seeds,
            "acc_rep": self.acc_rep,
            "r2_rep": self.r2_rep,
            "analysis_seed": self.analysis_seed,
            "jobs": self.jobs,
        }

    @classmethod
    def from_dict(cls, d: dict, *, where: str = "config") -> SweepConfig:
        """The config stored in sweep.json; its widths and seeds checked and bounded before anything is planned."""
        if not isinstance(d, dict) or not isinstance(d.get("train"), dict):
            raise RedrepError(f"{where}: expected a sweep config with its training template, found none")
        known = {f.name for f in fields(cls)} - {"train", "progress"}
        kw = {k: v for k, v in d.items() if k in known}
        widths, seeds = check_plan(kw.get("widths", list(cls.widths)), kw.get("seeds", cls.seeds), where=where)
        kw.update(widths=widths, seeds=seeds)
        return cls(train=TrainConfig.from_dict(d["train"], where=f"{where}: train"), **kw)

    def differences(self, other: SweepConfig) -> list[str]:
        """What ``other`` changes that a resumed sweep cannot (widths may grow; devices may change)."""
        diffs = [f"seeds: {self.seeds!r} -> {other.seeds!r}"] if self.seeds != other.seeds else []
        return diffs + config_differences(self.train, other.train, ignore=(*RESUME_FREE_FIELDS, *PER_RUN_FIELDS))


def run_name(width: int, seed: int) -> str:
    return f"w{width:05d}_s{seed}"


# ---------------------------------------------------------------- state
def read_state(out) -> dict | None:
    """The sweep's state file (sweep.json) as a dict, None for a new folder.

    Checked as input (:mod:`redrep.experiments.sweep_state`): another layout version, job records of the wrong
    type, or a folder holding more than a sweep's own leftovers get one line.
    """
    out = Path(out)
    f = out / SWEEP_FILE
    if not f.is_file():
        check_new_folder(out)
        return None
    return check_state(read_sweep_json(f), f)


def _check_resume(state: dict | None, out: Path, config: SweepConfig) -> None:
    if state is None:
        return
    old = SweepConfig.from_dict(state.get("config"), where=str(out / SWEEP_FILE))
    diffs = old.differences(config)
    if diffs:
        raise RedrepError(
            f"{out}: holds a sweep with another config ({'; '.join(diffs)}); "
            f"expected the same options to resume it, or choose another output folder"
        )


def _write_state(out: Path, config: SweepConfig, state: dict | None, **kw) -> dict:
    """Write sweep.json: ``state`` updated with ``kw``; a ``submitting`` of None, an empty ``abandoned`` dropped."""
    doc = dict(state or {})
    doc.update(version=SWEEP_VERSION, config=config.to_dict(), **kw)
    doc.setdefault("jobs", {})
    doc.setdefault("id", uuid.uuid4().hex[:12])  # names the sweep's SLURM jobs, to find them again
    for key in ("submitting", "abandoned"):
        if not doc.get(key):
            doc.pop(key, None)
    io.write_json(out / SWEEP_FILE, doc)
    return doc


def slurm_job_name(state: dict) -> str:
    """The name of every SLURM job of the sweep (squeue --name finds them)."""
    return f"redrep-{state['id']}"


def _submission_comment(mark: dict) -> str:
    """The comment of one submission's jobs (which submission a job found by name belongs to)."""
    return f"redrep:{mark['id']}"


# ---------------------------------------------------------------- plan
def plan_sweep(config: SweepConfig, out) -> list[RunTask]:
    """Every (width, seed) run of the sweep, widest first (the longest runs start first)."""
    out = Path(out)
    return [
        RunTask(
            name=run_name(w, s),
            width=w,
            seed=s,
            run_dir=str(out / "runs" / run_name(w, s)),
            train_config=config.train_config(w, s).to_dict(),
        )
        for w, s in plan_order(config.widths, config.seeds)
    ]


def stored_plan(state: dict, out) -> list[RunTask]:
    """The runs of the sweep that ``state`` holds, to look at them (``redrep sweep-status``), without torch.

    The same runs as :func:`plan_sweep` of the stored config, in the same order, from its widths, seeds and
    epochs only (checked and bounded); their ``train_config`` holds the epochs alone: tasks to look at, not to run.
    """
    out = Path(out)
    where = str(out / SWEEP_FILE)
    cfg = state.get("config")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("train"), dict):
        raise RedrepError(f"{where}: expected a sweep config with its training template, found none")
    widths, seeds = check_plan(
        cfg.get("widths", list(SweepConfig.widths)), cfg.get("seeds", SweepConfig.seeds), where=where
    )
    epochs = cfg["train"].get("epochs")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise RedrepError(f"{where}: train: epochs: expected an integer >= 1, found {brief(epochs)}")
    return [
        RunTask(run_name(w, s), w, s, str(out / "runs" / run_name(w, s)), {"epochs": epochs})
        for w, s in plan_order(widths, seeds)
    ]


# ---------------------------------------------------------------- run
def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError):
        return False
    return True


def _by_executor(out: Path, handles: dict[str, dict], current):
    """``(executor, handles)`` for each executor the runs were submitted to; the executor is None for the runs of
    another local driver, which only that driver can wait on."""
    groups: dict[str, dict] = {}
    for n, h in handles.items():
        groups.setdefault(h.get("executor", "local"), {})[n] = h
    for name, group in groups.items():
        if current is not None and current.name == name:
            yield current, group
        elif name == "slurm":
            yield SlurmExecutor(out / SLURM_DIR), group
        else:
            yield (None if name == "local" else LocalExecutor()), group


def run_statuses(out, tasks: list[RunTask], state: dict | None, *, executor=None) -> dict[str, RunStatus]:
    """What each planned run is doing: finished (its run.json is there), queued, running, failed or missing.

    Runs submitted to SLURM are looked up there (one squeue call); a run of a local
    driver that has ended is failed ("interrupted") unless it finished; a run of a
    submission whose driver was killed before it recorded the job ids is missing
    until the next ``redrep sweep`` adopts or cancels its job.
    """
    out = Path(out)
    jobs = (state or {}).get("jobs", {})
    unrecorded = set(((state or {}).get("submitting") or {}).get("runs", ()))
    result: dict[str, RunStatus] = {}
    pending: dict[str, dict] = {}
    for t in tasks:
        res = read_run_result(t.run_dir)
        h = jobs.get(t.name)
        # finished: all its epochs trained, or stopped by the loss rule (redrep.nets.train)
        if res is not None and (res.get("epochs") == t.train_config["epochs"] or res.get("stop_reason") == "stop_loss"):
            log = (h or {}).get("log")
            result[t.name] = RunStatus(
                FINISHED, "", (h or {}).get("job_id"), log if log and Path(log).is_file() else None
            )
        elif h is None and t.name in unrecorded:
            result[t.name] = RunStatus(MISSING, "submission interrupted: the next sweep adopts or cancels its job")
        elif h is None:
            started = (Path(t.run_dir) / "checkpoints").is_dir()
            result[t.name] = RunStatus(MISSING, "interrupted" if started else "not submitted")
        else:
            pending[t.name] = h
    for ex, handles in _by_executor(out, pending, executor):
        if ex is None:
            # submitted by another driver: going on only while that driver lives (on this machine)
            for n, h in handles.items():
                alive = h.get("host") == socket.gethostname() and h.get("driver") != os.getpid()
                alive = alive and _pid_alive(h.get("driver"))
                if alive:
                    started = (out / "runs" / n / "checkpoints").is_dir()
                    result[n] = RunStatus(RUNNING if started else QUEUED, "by another driver", None, h.get("log"))
                else:
                    log = h.get("log") if h.get("log") and Path(h["log"]).is_file() else None
                    detail = "failed, see its log" if log else "interrupted (its driver ended)"
                    result[n] = RunStatus(FAILED, detail, None, log)
            continue
        for n, st in ex.status(handles).items():
            if st.state == FINISHED:  # the job ended, but the run wrote no result
                st = RunStatus(FAILED, "the job ended without the run's result", st.job_id, st.log)
            result[n] = st
    return {t.name: result[t.name] for t in tasks}


def sweep_status(state: dict | None, statuses: dict[str, RunStatus]) -> str:
    """The sweep's own state for ``redrep sweep-status``: "running" only while one of its runs is queued or running.

    sweep.json says "running" from the first submission until the sweep is collected, and a
    driver that ends without collecting (every run failed, killed) may leave it so; the runs'
    states (their driver alive on this machine, SLURM's answer) tell whether anything goes on.
    """
    if any(s.state in (QUEUED, RUNNING) for s in statuses.values()):
        return "running"
    written = (state or {}).get("status")
    if written in ("done", "partial"):
        return written
    return "stopped (nothing queued or running; re-run the same command to resume)"


def status_line(name: str, st: RunStatus) -> str:
    """One line of ``redrep sweep-status``: run, state (and why), job id, log."""
    state = st.state + (f" ({st.detail})" if st.detail else "")
    return f"{name}  {state:<40}  job {st.job_id or '-'}  log {st.log or '-'}"


def run_stage(
    tasks: list[RunTask],
    out,
    config: SweepConfig,
    state: dict | None,
    executor,
    *,
    wait: bool = True,
    timeout: float | None = None,
    log=print,
) -> tuple[dict[str, RunStatus], dict, set[str]]:
    """Submit what is neither finished, queued nor running; wait for everything unless ``wait`` is False.

    Returns the final statuses, the updated state and the names submitted now.
    """
    out = Path(out)
    state = recover_submission(out, config, state, log=log)
    statuses = run_statuses(out, tasks, state, executor=executor)
    todo = [t for t in tasks if statuses[t.name].state in (FAILED, MISSING)]
    active = [t.name for t in tasks if statuses[t.name].state in (QUEUED, RUNNING)]
    n_done = sum(s.state == FINISHED for s in statuses.values())
    retry = [t.name for t in todo if statuses[t.name].state == FAILED]
    log(
        f"{len(tasks)} runs: {n_done} finished, {len(active)} queued or running, {len(todo)} to run now"
        + (f" (again: {', '.join(retry)})" if retry else "")
        + (f" on {executor.name}" if todo else "")
    )
    if todo:
        state = _submit(out, config, state, executor, todo)
    elif not (out / SWEEP_FILE).is_file():
        state = _write_state(out, config, state, status="running")
    submitted = {t.name for t in todo}
    if not wait:
        if executor.name == "local" and todo:
            log("the local executor runs in this process: --no-wait applies to SLURM only; running now")
        else:
            return run_statuses(out, tasks, state, executor=executor), state, submitted
    waiting = [t.name for t in tasks if t.name in submitted or t.name in active]
    _wait_for(out, state, executor, waiting, total=len(tasks), done=n_done, timeout=timeout, progress=config.progress)
    return run_statuses(out, tasks, state, executor=executor), state, submitted


def _submit(out: Path, config: SweepConfig, state: dict | None, executor, todo: list[RunTask]) -> dict:
    """Submit ``todo`` and record its jobs; returns the new state.

    The plan goes into sweep.json (``submitting``: the runs, in the job array's order) before sbatch runs, and the
    job ids as soon as it returns, so that a driver killed in between leaves a mark that the next one follows to
    the jobs (:func:`recover_submission`): none is lost, none runs twice.
    """
    slurm = isinstance(executor, SlurmExecutor)
    if slurm:
        executor.check()  # a bad option or no sbatch: one line, nothing written
        executor.clean_leftovers()  # of earlier refused or interrupted submissions (no other driver: the lock)
    before, new = state, not (out / SWEEP_FILE).is_file()
    mark = {"id": uuid.uuid4().hex[:12], "executor": executor.name, "runs": [t.name for t in todo], "time": time.time()}
    state = _write_state(out, config, state, status="running", submitting=mark)
    try:
        kw = {"name": slurm_job_name(state), "comment": _submission_comment(mark)} if slurm else {}
        handles = executor.submit(todo, **kw)
    except RedrepError:  # refused, and said why: nothing was submitted, so nothing stays recorded
        if slurm:
            executor.clean_leftovers()
        if new:
            (out / SWEEP_FILE).unlink(missing_ok=True)
        else:
            io.write_json(out / SWEEP_FILE, before)  # as it was
        raise
    io.crash_point("sweep:submitted")
    jobs = dict(state.get("jobs", {}))
    for name, h in handles.items():
        jobs[name] = {**h, "executor": executor.name, "driver": os.getpid(), "host": socket.gethostname()}
    return _write_state(out, config, state, status="running", jobs=jobs, submitting=None)


def recover_submission(out, config: SweepConfig, state: dict | None, *, log=print) -> dict | None:
    """Follow the mark of a submission whose driver was killed before it recorded the job ids; clear it.

    Its SLURM jobs (found by the sweep's job name and the submission's comment) are adopted where their task
    reached its job folder, and cancelled where it did not (they would fail at their start); the runs not adopted
    are missing, submitted again by this driver. A submission that reached SLURM not at all may still be on its
    way (an sbatch outliving its driver): its mark stays in ``abandoned`` for an hour, and any job of the sweep's
    that is not recorded is cancelled meanwhile. Returns the new state.
    """
    if not state or not (state.get("submitting") or state.get("abandoned")):
        return state
    out = Path(out)
    mark = state.get("submitting") or {}
    now = time.time()
    abandoned = [a for a in state.get("abandoned", []) if now - a["time"] < 3600]
    jobs = dict(state["jobs"])
    adopted, cancelled = {}, []
    if mark.get("executor") == "slurm" or abandoned:
        ex = SlurmExecutor(out / SLURM_DIR)
        recorded = {h["job_id"] for h in jobs.values() if h.get("job_id")}
        comment = _submission_comment(mark) if mark.get("executor") == "slurm" else None
        adopted, cancelled = ex.recover(slurm_job_name(state), comment, mark.get("runs", []), recorded)
        ex.clean_leftovers()
        if comment and not adopted and not cancelled:
            abandoned.append({"id": mark["id"], "time": float(mark.get("time", now))})
    for name, h in adopted.items():
        jobs[name] = {**h, "executor": "slurm", "driver": None, "host": socket.gethostname()}
    if mark:
        n = len(mark.get("runs", []))
        log(
            f"an interrupted submission of {n} runs ({mark.get('executor')}): {len(adopted)} jobs adopted, "
            f"{len(cancelled)} cancelled (their task never reached them); {n - len(adopted)} runs to submit again"
        )
    elif cancelled:
        log(f"cancelled {len(cancelled)} jobs of an interrupted submission that reached SLURM late")
    return _write_state(out, config, state, jobs=jobs, submitting=None, abandoned=abandoned)


def _wait_for(out: Path, state: dict, executor, names, *, total: int, done: int, timeout, progress: bool) -> None:
    """Wait for the runs ``names`` with a progress bar: finished runs, and what the others do (SLURM's reasons)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=done, desc="finished runs", unit="run", disable=not progress, dynamic_ncols=True)
    try:
        for ex, handles in _by_executor(out, {n: state["jobs"][n] for n in names}, executor):
            if ex is None:
                continue  # another local driver's runs: nothing to wait on from here
            # SLURM's view after each look at the queue: how many run, how many wait and why
            kw = {"on_poll": lambda st: bar.set_postfix_str(waiting_line(st))} if isinstance(ex, SlurmExecutor) else {}
            ex.wait(handles, on_done=lambda _n, _s: bar.update(1), timeout=timeout, **kw)
    finally:
        bar.close()
        executor.shutdown()


# ---------------------------------------------------------------- collect
def analyse_runs(config: SweepConfig, out: Path, runs: list[dict]) -> tuple[dict[int, Path], list[dict]]:
    """The per-run analyses of the collect stage: the chunk analysis of each finished widest network.

    ``runs`` are the finished runs' results (run.json). Returns seed -> analysis folder, and
    the tidy chunk rows (source, width, seed, test_error, train_error) of Fig. 3a.
    This is the place for further per-run analyses (one per finished run of any width).
    """
    widest = max(config.widths)
    analyses, chunk_rows = {}, []
    for r in sorted((r for r in runs if r["width"] == widest), key=lambda r: r["seed"]):
        s = r["seed"]
        rs = RepresentationSet.load(out / "runs" / r["run"] / "representations")
        an = ChunkAnalysis(
            chunk_sizes=list(config.widths),
            acc_rep=config.acc_rep,
            r2_rep=config.r2_rep,
            random_state=config.analysis_seed,
            progress=False,
            device=config.train.device,
        ).fit(rs)
        adir = out / "analysis" / f"seed{s}"
        write_results(an, rs, adir, extra={"sweep": str(out), "seed": s})
        analyses[s] = adir
        test, train = an.mean("accuracy", "test"), an.mean("accuracy", "train")
        for i, w in enumerate(an.chunk_sizes_):
            chunk_rows.append(
                {"source": "chunk", "width": int(w), "seed": s, "test_error": 1 - test[i], "train_error": 1 - train[i]}
            )
    return analyses, chunk_rows


def check_collectable(config: SweepConfig, statuses: dict[str, RunStatus]) -> None:
    """Refuse to aggregate while a width has no finished run: one line naming the runs it lacks."""
    lacking = []
    for w in sorted(config.widths):
        names = [run_name(w, s) for s in range(config.seeds)]
        if not any(statuses[n].state == FINISHED for n in names):
            lacking.append(f"W = {w} ({', '.join(f'{n} {statuses[n].state}' for n in names)})")
    if lacking:
        raise RedrepError(
            f"cannot collect the sweep: no finished run at {'; '.join(lacking)}; "
            f"re-run the same command to submit the failed or missing runs (see redrep sweep-status)"
        )


@dataclass
class SweepResult:
    """What :func:`run_sweep` produced.

    Attributes
    ----------
    out : the sweep folder
    runs : list of per-run dicts (width, seed, test_error, train_error, ...)
    error_inf : ensemble test error of the widest networks (None with one seed)
    table : list of per-width dicts (width, full_test_mean, full_test_sem, chunk_test_mean, ...)
    summary : dict (w_c*, exponent, number of clones) of the first seed's widest network
    report : path of report.html
    missing : runs not finished (failed), left out of this aggregate
    """

    out: Path
    runs: list
    error_inf: float | None
    table: list
    summary: dict
    report: Path
    figures: list = field(default_factory=list)
    missing: list = field(default_factory=list)


def run_sweep(
    config: SweepConfig,
    out,
    *,
    executor=None,
    wait: bool = True,
    timeout: float | None = None,
    log=print,
) -> SweepResult | None:
    """Plan, run and collect a width sweep into ``out``.

    Parameters
    ----------
    config : SweepConfig
    out : sweep folder; one that holds this sweep already is resumed
    executor : a :class:`~redrep.experiments.executors.LocalExecutor` or
        :class:`~redrep.experiments.executors.SlurmExecutor`;
        None: ``config.jobs`` local workers on ``config.train.device``
    wait : wait for the submitted runs (False: submit and return None unless all are finished)
    timeout : seconds to wait at most; runs still queued or running then give a RedrepError
    log : receives one-line messages

    Returns
    -------
    SweepResult, or None when not waiting and runs are still queued or running
    """
    config = config.validated()
    out = Path(out)
    _check_resume(read_state(out), out, config)
    if executor is None:
        executor = LocalExecutor(config.jobs, local_devices(resolve_device(config.train.device), config.jobs))
    check_sweep(config, executor, plan_sweep(config, out))  # data, device, options: once, before any run
    # one driver per sweep folder: two would submit the same runs
    with io.folder_lock(out, what="sweep"):
        return _run_sweep_locked(config, out, executor, wait=wait, timeout=timeout, log=log)


def _run_sweep_locked(config: SweepConfig, out: Path, executor, *, wait, timeout, log) -> SweepResult | None:
    state = read_state(out)  # again, under the lock
    out.mkdir(parents=True, exist_ok=True)
    io.remove_stale_temps(out)  # of a driver killed while writing sweep.json (no other writer: the lock)
    t_start = time.perf_counter()
    tasks = plan_sweep(config, out)
    statuses, state, submitted = run_stage(tasks, out, config, state, executor, wait=wait, timeout=timeout, log=log)
    t_run = time.perf_counter() - t_start
    pending = [n for n, s in statuses.items() if s.state in (QUEUED, RUNNING)]
    failed = [n for n, s in statuses.items() if s.state in (FAILED, MISSING)]
    if pending:
        if not wait:
            log(f"{len(pending)} runs queued or running; see redrep sweep-status {out}; re-run to collect")
            return None
        raise RedrepError(
            f"timed out after {t_run:.0f} s with {len(pending)} runs still queued or running "
            f"({', '.join(pending)}); re-run the same command later to collect"
        )
    for n in failed:
        log(f"run {status_line(n, statuses[n])}")
    try:
        check_collectable(config, statuses)
    except RedrepError:
        _write_state(out, config, state, status="stopped")  # nothing runs any more: say so on the way out
        raise
    runs = []
    for t in tasks:
        if statuses[t.name].state == FINISHED:
            r = read_run_result(t.run_dir)
            runs.append({**r, "trained_now": t.name in submitted})
    runs.sort(key=lambda r: (r["width"], r["seed"]))
    n_new = sum(r["trained_now"] for r in runs)
    log(f"{len(runs)} runs ready ({n_new} trained now, {len(runs) - n_new} already finished) in {t_run:.0f} s")
    result = collect_sweep(config, out, runs, state, missing=failed, log=log, t_run=t_run)
    if failed:
        raise RedrepError(
            f"{len(failed)} runs failed ({', '.join(failed)}): the report at {result.report} leaves them out; "
            f"re-run the same command to resubmit them"
        )
    return result


def collect_sweep(
    config: SweepConfig, out, runs: list[dict], state: dict | None, *, missing=(), log=print, t_run: float = 0.0
) -> SweepResult:
    """Ensemble, chunk analyses, CSVs, figures and report from the finished ``runs`` (their run.json)."""
    out = Path(out)
    t_start = time.perf_counter()
    widest = max(config.widths)
    wide = sorted(r["seed"] for r in runs if r["width"] == widest)
    sets = {s: out / "runs" / run_name(widest, s) / "representations" for s in wide}
    error_inf, ensemble = None, None
    if len(wide) >= 2:
        from ..nets.ensemble import ensemble_error, store_error_inf

        ens = ensemble_error([sets[s] for s in wide])
        for s in sets:
            store_error_inf(sets[s], ens)
        error_inf, ensemble = ens.error_inf, ens.to_dict()
        log(f"ensemble of the {len(wide)} widest networks (W = {widest}): error_inf = {error_inf:.4f}")
    else:
        log("one finished seed of the widest network: no ensemble, error_inf unknown")

    t0 = time.perf_counter()
    analyses, chunk_rows = analyse_runs(config, out, runs)
    t_analysis = time.perf_counter() - t0

    tidy = [
        {
            "source": "full",
            "width": r["width"],
            "seed": r["seed"],
            "test_error": r["test_error"],
            "train_error": r["train_error"],
        }
        for r in runs
    ] + chunk_rows
    table = width_table(tidy, config.widths)
    io.write_text(out / "sweep.csv", rows_to_csv(tidy, ("source", "width", "seed", "test_error", "train_error")))
    io.write_text(out / "width_comparison.csv", rows_to_csv(table, tuple(table[0])))

    from ..core.summary import ChunkCurves, summarize
    from ..report.figures import save_figure, three_panel_figure, width_figure
    from ..report.pages import write_sweep_report

    first = min(analyses)
    main_results = load_results(analyses[first])
    curves = ChunkCurves.from_results(main_results)
    summ = summarize(curves)
    summary = summ.to_dict()
    main_results.update_json(summary=summary)
    col = {k: np.array([row[k] for row in table], dtype=float) for k in table[0]}
    t = config.train
    label = f"{t.dataset}, {t.arch}" + (f" depth {t.depth}" if t.arch == "mlp" else "")
    n_seeds = len({r["seed"] for r in runs})
    fig_w = width_figure(
        col["width"],
        (col["full_test_mean"], col["full_test_sem"]),
        (col["chunk_test_mean"], col["chunk_test_sem"]),
        full_train=(col["full_train_mean"], col["full_train_sem"]),
        chunk_train=(col["chunk_train_mean"], col["chunk_train_sem"]),
        error_inf=error_inf,
        widest=widest,
        title=f"{label}: full networks of width W against chunks of W neurons of the W = {widest} network "
        f"({n_seeds} seed{'s' if n_seeds > 1 else ''})",
    )
    fig_c = three_panel_figure(main_results, summ)
    figures = save_figure(fig_w, out / "figures", stem="width_comparison")
    figures += save_figure(fig_c, out / "figures", stem="chunks")

    # -- clones across widths (redrep.experiments.clones): every finished run analysed with chunk sizes W, W/2, ..., 1
    from .clones import CloneConfig, RunSet, analyse_sweep, section_html

    t0 = time.perf_counter()
    clone_runs = [RunSet(r["width"], r["seed"], out / "runs" / r["run"] / "representations", r["run"]) for r in runs]
    clone_cfg = CloneConfig(
        acc_rep=config.acc_rep, r2_rep=config.r2_rep, seed=config.analysis_seed, device=config.train.device
    )
    clones = analyse_sweep(
        out,
        config=clone_cfg,
        error_inf=error_inf,
        runs=clone_runs,
        title=f"{label}: clones across widths",
        progress=config.progress,
    )
    figures += clones.figures
    t_clones = time.perf_counter() - t0
    # -- end clones

    reading = sweep_reading(table, error_inf, summary, widest) + clones.reading[-1:]
    if missing:
        reading.append(f"Left out because they did not finish: {', '.join(missing)}.")
    _write_state(
        out,
        config,
        state,
        status="partial" if missing else "done",
        runs=runs,
        missing=list(missing),
        error_inf=error_inf,
        ensemble=ensemble,
        width_comparison=table,
        summary=summary,
        reading=reading,
        analysis={str(s): str(p.relative_to(out)) for s, p in analyses.items()},
        clones={
            "csv": str(clones.csv.relative_to(out)),
            "reading": clones.reading,
            "onset_width": clones.growth.onset,
            "slope": clones.growth.slope,
            "slope_se": clones.growth.slope_se,
            "fit_widths": list(clones.growth.fit_widths),
        },
        timings_s={
            "runs": round(t_run, 2),
            "analysis": round(t_analysis, 2),
            "clones": round(t_clones, 2),
            "collect": round(time.perf_counter() - t_start, 2),
        },
    )
    report = write_sweep_report(
        main_results,
        out / "report.html",
        sweep_reading=reading,
        width_table=table,
        widest=widest,
        runs=runs,
        config=_flat_config(config),
        curves=curves,
        summary=summ,
        figures=[
            (
                f"Full networks of width W against chunks of W neurons of the W = {widest} network "
                f"(mean and sem over seeds). Dashed: error of the ensemble of the widest networks.",
                fig_w,
            )
        ],
        extra_figures=[(f"Chunk analysis of the W = {widest} network, seed {first}.", fig_c)],
        lead_sections=[("Clones across widths", section_html(clones))],
        title=f"redrep sweep: {label}",
    )
    return SweepResult(out, runs, error_inf, table, summary, report, figures, list(missing))


def _flat_config(config: SweepConfig) -> dict:
    d = config.to_dict()
    train = d.pop("train")
    return {**d, **{k: v for k, v in train.items() if k not in PER_RUN_FIELDS}}


def width_table(tidy, widths) -> list[dict]:
    """Per width: mean, sem and count over seeds of the test and training error of both sources."""
    table = []
    for w in sorted(widths):
        row = {"width": int(w)}
        for source in ("full", "chunk"):
            sel = [r for r in tidy if r["source"] == source and r["width"] == w]
            for metric, key in (("test_error", "test"), ("train_error", "train")):
                row[f"{source}_{key}_mean"], row[f"{source}_{key}_sem"], _ = mean_sem([r[metric] for r in sel])
            row[f"{source}_n"] = len(sel)
        table.append(row)
    return table


def sweep_reading(table, error_inf, summary, widest) -> list[str]:
    """Plain sentences on what the sweep shows, with the numbers; says so when a signature is absent."""
    out = []
    full = {r["width"]: r for r in table}
    ws = sorted(full)
    first, last = full[ws[0]], full[ws[-1]]
    out.append(
        f"Full-network test error goes from {first['full_test_mean']:.4f} at W = {ws[0]} to "
        f"{last['full_test_mean']:.4f} at W = {ws[-1]}"
        + (
            " (wider is better)."
            if last["full_test_mean"] < first["full_test_mean"]
            else " (widening did not help here)."
        )
    )
    if error_inf is not None:
        out.append(f"The ensemble of the widest networks reaches error_inf = {error_inf:.4f}.")
    zero = [w for w in ws if full[w]["full_train_mean"] == 0]
    out.append(
        f"Full networks fit the training set (training error 0 on every seed) from W = {zero[0]} on."
        if zero
        else "No full network reached zero training error on every seed: the training budget may be short."
    )
    czero = [w for w in ws if full[w]["chunk_train_mean"] == 0]
    out.append(
        f"Chunks of the W = {widest} network fit the training set (on every seed) from w_c = {czero[0]} on."
        if czero
        else f"No chunk smaller than the whole W = {widest} layer fits the training set."
    )
    close = [
        w
        for w in ws
        if w < widest
        and abs(full[w]["chunk_test_mean"] - full[w]["full_test_mean"])
        <= 2 * max(_nz(full[w]["chunk_test_sem"]) + _nz(full[w]["full_test_sem"]), 1e-3)
    ]
    if close:
        out.append(
            "Chunks of w_c neurons of the widest network match full networks of width W = w_c "
            f"(within two standard errors) at W = {', '.join(map(str, close))}."
        )
    else:
        out.append(
            "At no width below the widest do chunks match full networks of that width within two standard errors."
        )
    wcs = summary.get("w_c_star") if summary else None
    if wcs:
        msg = f"The critical chunk size is w_c* = {wcs}, so the widest layer holds about {widest / wcs:g} clones"
        exp, se = summary.get("exponent"), summary.get("exponent_se")
        if exp is not None and se is not None and se < EXPONENT_UNRESOLVED_SE:
            msg += f"; above it, test error - error_inf decays like w_c^({exp:.2f} ± {se:.2f}) (the paper: -1/2)."
        elif exp is not None:
            msg += (
                f"; the decay of test error - error_inf above it is not resolved at this budget (fitted exponent "
                f"{exp:.2f}" + (f" ± {se:.2f}" if se is not None else ", from two points") + "; the paper: -1/2)."
            )
        else:
            msg += "; too few chunk sizes above it to fit the decay of test error - error_inf."
        out.append(msg)
    else:
        out.append(
            "No chunk size meets the criterion of w_c* (see the summary below): the redundancy "
            "signature does not show at this budget."
        )
    return out


def _nz(v):
    return 0.0 if v is None or not math.isfinite(v) else v


def demo_config(
    *, quick: bool = False, data_dir: str | None = "data", jobs: int | None = None, progress: bool = True
) -> SweepConfig:
    """The sweep `redrep demo` runs: bundled offline data, about 3 minutes on 2 CPU cores.

    Parity-digits (scikit-learn's digits on their first 10 principal components,
    label = parity) with 3-hidden-layer MLPs of widths 16 ... 1024 is where the
    paper's signatures showed on this budget: chunks of the widest network fit
    the training set from 256 neurons on and match full networks of the same
    width. MNIST-1D and digits at the same cost showed no chunk below the full
    layer fitting the training set (see the README). These are
    :class:`SweepConfig`'s defaults.
    """
    if jobs is None:
        jobs = min(2, os.cpu_count() or 1)
    full = SweepConfig(train=replace(_default_template(), data_dir=data_dir), jobs=jobs, progress=progress)
    if quick:
        return replace(
            full, train=replace(full.train, epochs=30), widths=(16, 32, 64, 128), seeds=2, acc_rep=20, r2_rep=10
        )
    return full
