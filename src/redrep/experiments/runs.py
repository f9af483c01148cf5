"""One run of a sweep: a (width, seed) network trained, extracted and its result written.

The run folder is the truth about a run: it is finished when it holds :data:`RUN_RESULT`, written by
the run itself once trained and extracted. :class:`RunTask` is the callable that executors start
(in a local worker, or pickled by submitit onto a compute node).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ..core.validation import RedrepError
from ..storage import io
from ..storage.repset import NATIVE_META

#: Written into a run folder by the run itself once trained and extracted: its final metrics.
RUN_RESULT = "run.json"
#: Written into a run folder by a local run that raised: the traceback.
RUN_ERROR = "error.log"

QUEUED, RUNNING, FINISHED, FAILED, MISSING = "queued", "running", "finished", "failed", "missing"

try:  # requeue-and-resume on SLURM (the slurm extra); a local run needs none of it
    from submitit.helpers import Checkpointable
except ImportError:  # pragma: no cover - without the slurm extra

    class Checkpointable:  # type: ignore[no-redef]
        """Stands in for submitit's when it is not installed: local runs are never requeued."""


@dataclass
class RunStatus:
    """The state of one run: one of queued, running, finished, failed, missing; ``detail`` says why.

    ``reason`` is SLURM's pending reason of a queued job (squeue's ``%r``, e.g. ``Resources``), else empty.
    """

    state: str
    detail: str = ""
    job_id: str | None = None
    log: str | None = None
    reason: str = ""


@dataclass
class RunTask(Checkpointable):
    """One (width, seed) run of a sweep, as a callable job: train, extract, write :data:`RUN_RESULT`.

    submitit pickles this object and calls it on a compute node. When SLURM
    preempts the job or its time runs out, submitit calls its ``checkpoint()``
    (``submitit.helpers.Checkpointable``'s) and requeues what that returns: the
    same task with the same arguments, which resumes from the run's last
    checkpoint (``train`` resumes from ``checkpoints/last.pt``); the task itself
    holds no state to save.
    """

    name: str
    width: int
    seed: int
    run_dir: str
    train_config: dict
    threads: int | None = None

    def __call__(self, device: str | None = None) -> dict:
        """Train and extract the run, on ``device`` (None: the run's own; a local worker passes its GPU)."""
        threads = self.threads
        if threads is None and os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
            threads = int(os.environ["SLURM_CPUS_PER_TASK"])
        return train_and_extract(self, device=device, threads=threads)


def read_run_result(run_dir) -> dict | None:
    """The final metrics a finished run wrote, or None while it is not finished."""
    f = Path(run_dir) / RUN_RESULT
    if not f.is_file():
        return None
    try:
        return io.read_json_object(f, "the result of a sweep run")
    except RedrepError:
        return None


def train_and_extract(task: RunTask, *, device: str | None = None, threads: int | None = None) -> dict:
    """One run: train (or resume, or skip if finished), then extract, then write its metrics to run.json.

    ``device`` overrides the config's (the local executor gives each worker its own GPU).
    """
    import torch

    from ..nets.extract import extract_run
    from ..nets.train import TrainConfig, train

    if threads:
        torch.set_num_threads(threads)
    cfg = TrainConfig.from_dict(task.train_config, where="train_config")
    if device is not None:
        cfg = replace(cfg, device=device)
    t0 = time.perf_counter()
    result = train(cfg, task.run_dir, progress=False)
    rep = Path(task.run_dir) / "representations"
    meta = _read_meta(rep)
    if meta is None or meta.get("epoch") != result.epochs_done:
        extract_run(task.run_dir, out=rep, device=cfg.device, progress=False)
        meta = _read_meta(rep)
    # errors of the extracted layer through the readout, in float32 like the chunks' (the
    # training loop's evaluation may run under autocast on a GPU)
    out = {
        "width": task.width,
        "seed": task.seed,
        "run": task.name,
        "test_error": 1.0 - float(meta["test_accuracy"]),
        "train_error": 1.0 - float(meta["train_accuracy"]),
        "zero_train_error_epoch": result.zero_train_error_epoch,
        "epochs": result.epochs_done,
        "stop_reason": (result.stop or {}).get("reason"),
        "lr": result.config.lr,
        "resumed_from_epoch": result.resumed_from,
        "seconds": round(time.perf_counter() - t0, 3),
        "device": cfg.device,
    }
    io.write_json(Path(task.run_dir) / RUN_RESULT, out)
    return out


def _read_meta(set_dir: Path) -> dict | None:
    f = set_dir / NATIVE_META
    if not f.is_file():
        return None
    try:
        return io.read_json_object(f, "the meta of a representation set").get("meta", {})
    except RedrepError:
        return None
