"""Training with the authors' recipes, on CPU or GPU, resumable.

A run is defined by a :class:`~redrep.nets.config.TrainConfig` (in
:mod:`redrep.nets.config`, with the recipes). The WRN recipe
(docs/method.md#published-values): SGD with momentum 0.9, lr 0.1, weight
decay 5e-4, batch 128, cosine annealing to 1e-5 over 200 epochs (one step per
epoch), cross-entropy with optional label smoothing, random crops and flips
for CIFAR. The fully connected recipe (docs/method.md#the-authors-fc-recipe):
the squared hinge on one output, Adam at a constant learning rate (the
authors' rule), orthogonal initialization, and a stop once the full-batch
training loss falls below 10 float32 epsilons.

A run directory holds::

    config.json            the TrainConfig (also inside every checkpoint)
    metrics.jsonl          one JSON line per epoch
    summary.json           progress, the epoch where training error reached 0, why and when training stopped,
                           devices, versions
    checkpoints/last.pt    the latest epoch (what a resumed run starts from)
    checkpoints/epoch_NNNN.pt  kept at epoch 0 (the initialization), the paper's checkpoint epochs and the last

Checkpoints hold the config, model, optimizer and gradient-scaler states, the
epoch, the metrics so far and every random-number state, and are written
atomically: a run killed at any moment resumes from its last finished epoch
and continues as if it had not been interrupted (bit for bit on the CPU; on a
GPU up to the nondeterminism of cuDNN kernels).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import __version__
from ..core.device import resolve_device
from ..core.validation import RedrepError, exception_line
from ..storage import io
from .config import (  # noqa: F401  (PAPER_CHECKPOINT_EPOCHS, RESUME_FREE_FIELDS: where they were before)
    PAPER_CHECKPOINT_EPOCHS,
    RESUME_FREE_FIELDS,
    TrainConfig,
    config_differences,
    output_units,
)
from .data import Dataset, augment_draws, load_dataset
from .models import create_model, initialize

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"
CHECKPOINT_FORMAT = "redrep.checkpoint"


def load_run_data(config: TrainConfig, data_dir=None) -> Dataset:
    """The data a run of ``config`` trains on: its data set (from ``data_dir`` if given), cut to its training subset."""
    dataset = load_dataset(config.dataset, data_dir if data_dir is not None else config.data_dir)
    if config.train_subset is not None:
        dataset = dataset.subset_train(config.train_subset)
    return dataset


# ------------------------------------------------------------------- devices
def resolve_amp(amp: bool | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full precision: auto is on for CUDA and off for the CPU.

    bfloat16 where the GPU supports it (no loss scaling needed), else float16.
    """
    if amp is None:
        amp = device.type == "cuda"
    if not amp:
        return None
    if device.type != "cuda":
        raise RedrepError(f"amp: mixed precision needs a CUDA device, found {device} (leave amp unset for auto)")
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    """A factory of autocast contexts; a no-op when ``dtype`` is None (so one loop serves CPU and GPU)."""
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


# ----------------------------------------------------------------- schedule
def cosine_lr(epoch: int, epochs: int, lr: float, lr_min: float) -> float:
    """Learning rate of epoch ``epoch`` (0-based) out of ``epochs``: cosine from ``lr`` down towards ``lr_min``.

    Constant within an epoch, as a CosineAnnealingLR stepped once per epoch.
    """
    return lr_min + (lr - lr_min) * (1.0 + math.cos(math.pi * epoch / epochs)) / 2.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


# -------------------------------------------------------------- checkpoints
def checkpoint_path(run_dir, epoch: int | None = None) -> Path:
    """``checkpoints/epoch_NNNN.pt``, or ``checkpoints/last.pt`` when ``epoch`` is None."""
    d = Path(run_dir) / CHECKPOINT_DIR
    return d / LAST_CHECKPOINT if epoch is None else d / f"epoch_{epoch:04d}.pt"


def list_checkpoints(run_dir) -> dict[int, Path]:
    """Kept checkpoints of a run by epoch (``last.pt`` not included)."""
    d = Path(run_dir) / CHECKPOINT_DIR
    out = {}
    for p in sorted(d.glob("epoch_*.pt")):
        try:
            out[int(p.stem.split("_", 1)[1])] = p
        except ValueError:
            continue
    return out


def load_checkpoint(path) -> dict:
    """Read a checkpoint on the CPU; a missing or unreadable file is a RedrepError.

    Only the file's kind is checked here; :func:`check_checkpoint` checks its
    content against its run (every reader of a run's checkpoints calls it).
    """
    path = Path(path)
    if not path.is_file():
        raise RedrepError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise RedrepError(
            f"{path}: expected a redrep checkpoint, could not read it ({type(exc).__name__}: {exception_line(exc)})"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise RedrepError(f"{path}: expected a redrep checkpoint, found another kind of file")
    return ckpt


def load_run_checkpoint(path, config: TrainConfig, *, resume: bool = False) -> dict:
    """:func:`load_checkpoint`, then :func:`check_checkpoint` against the run's ``config``."""
    ckpt = load_checkpoint(path)
    check_checkpoint(ckpt, config, path, resume=resume)
    return ckpt


def checkpoint_config(ckpt: dict, path) -> TrainConfig:
    """The validated TrainConfig a checkpoint holds; one line naming the file when it is missing or invalid."""
    d = ckpt.get("config")
    if not isinstance(d, dict):
        raise RedrepError(f"{path}: expected the training config (an object) under 'config', found {_kind(d)}")
    try:
        return TrainConfig.from_dict(d, where="config").validated()
    except (RedrepError, TypeError) as exc:
        raise RedrepError(f"{path}: expected a valid training config under 'config', found {exc}") from None


def check_checkpoint(ckpt: dict, config: TrainConfig, path, *, resume: bool = False) -> TrainConfig:
    """Check that a checkpoint read by :func:`load_checkpoint` belongs to the run of ``config``; returns its config.

    The one check of every checkpoint that ``train`` (resuming), ``extract``
    and ``dynamics`` read: its entries and their types; its epoch in
    ``[0, config.epochs]`` with one history line per epoch; its config equal
    to the run's on every field but those of :data:`RESUME_FREE_FIELDS` (so
    a checkpoint copied from another run is refused); its weights of the
    names and shapes the config's network has. With ``resume``, also the
    optimizer, gradient scaler and random states that resuming restores.

    Raises
    ------
    RedrepError
        One line naming the file and what was expected.
    """
    saved = checkpoint_config(ckpt, path)
    a, b = saved.to_dict(), config.validated().to_dict()
    diffs = [f"{k} {a[k]!r} where the run has {b[k]!r}" for k in b if k not in RESUME_FREE_FIELDS and a[k] != b[k]]
    if diffs:
        raise RedrepError(
            f"{path}: expected a checkpoint of this run, found one of another config ({'; '.join(diffs)})"
        )
    epoch = ckpt.get("epoch")
    if not _is_int(epoch) or not 0 <= epoch <= saved.epochs:
        raise RedrepError(f"{path}: expected 'epoch' to be an integer in [0, {saved.epochs}], found {epoch!r}")
    history = ckpt.get("history")
    if not isinstance(history, list) or len(history) != epoch:
        raise RedrepError(f"{path}: expected 'history' to be a list of {epoch} epochs' metrics, found {_kind(history)}")
    for i, m in enumerate(history, start=1):
        if not isinstance(m, dict) or m.get("epoch") != i or not _is_number(m.get("seconds")):
            raise RedrepError(f"{path}: expected the metrics of epoch {i} in 'history', found {str(m)[:80]}")
    zero = ckpt.get("zero_train_error_epoch")
    if zero is not None and not (_is_int(zero) and 1 <= zero <= epoch):
        raise RedrepError(f"{path}: expected 'zero_train_error_epoch' to be null or in [1, {epoch}], found {zero!r}")
    stop = ckpt.get("stop")
    if stop is not None and not (
        isinstance(stop, dict) and stop.get("reason") in STOP_REASONS and stop.get("epoch") == epoch
    ):
        raise RedrepError(
            f"{path}: expected 'stop' to be null or why training ended at epoch {epoch}, found {str(stop)[:80]}"
        )
    model = _check_weights(ckpt, saved, path)
    if resume:
        _check_resume_state(ckpt, model, path, saved.optimizer)
    return saved


def _check_weights(ckpt: dict, config: TrainConfig, path) -> torch.nn.Module:
    """The network of ``config`` (shapes only, on the meta device), once ``ckpt['model']`` is shown to fit it."""
    info = ckpt.get("model_info")
    classes = info.get("num_classes") if isinstance(info, dict) else None
    shape = info.get("in_shape") if isinstance(info, dict) else None
    good_shape = isinstance(shape, list) and shape and all(_is_int(s) and s >= 1 for s in shape)
    if not (_is_int(classes) and classes >= 1 and good_shape):
        raise RedrepError(
            f"{path}: expected 'model_info' with num_classes (an integer >= 1) and in_shape (a list of sizes), "
            f"found {str(info)[:80]}"
        )
    with torch.device("meta"):  # shapes only: no memory, no random numbers drawn
        model = build_model(config, classes, shape)  # one output for the squared hinge
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    weights = ckpt.get("model")
    if not isinstance(weights, dict):
        raise RedrepError(
            f"{path}: expected the network's weights (a state dict) under 'model', found {_kind(weights)}"
        )
    names = f"{config.arch} ({_size_option(config)}={getattr(config, _size_option(config))})"
    missing, extra = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or extra:
        found = [
            f"{what} {', '.join(map(str, keys[:3]))}" for what, keys in (("no", missing), ("unknown", extra)) if keys
        ]
        raise RedrepError(f"{path}: expected the weights of {names}, found {'; '.join(found)}")
    for k, want in expected.items():
        v = weights[k]
        if not isinstance(v, torch.Tensor) or tuple(v.shape) != want:
            found = f"shape {tuple(v.shape)}" if isinstance(v, torch.Tensor) else _kind(v)
            raise RedrepError(f"{path}: expected {k} of shape {want} (the weights of {names}), found {found}")
    return model


#: The per-parameter tensors of the optimizers' states, by their names in torch, with what messages call them.
_OPTIMIZER_BUFFERS = {
    "momentum_buffer": "the momentum",
    "exp_avg": "Adam's first moment",
    "exp_avg_sq": "Adam's second moment",
}


def _check_resume_state(ckpt: dict, model: torch.nn.Module, path, optimizer: str = "sgd") -> None:
    """The optimizer, gradient-scaler and random states a resumed run restores, tried on throwaway objects."""
    params = [tuple(p.shape) for p in model.parameters()]
    opt = ckpt.get("optimizer")
    groups = opt.get("param_groups") if isinstance(opt, dict) else None
    state = opt.get("state") if isinstance(opt, dict) else None
    ids = None
    if isinstance(groups, list) and all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups):
        ids = [i for g in groups for i in g["params"]]
    if ids != list(range(len(params))) or not isinstance(state, dict):
        raise RedrepError(
            f"{path}: expected the {'SGD' if optimizer == 'sgd' else 'Adam'} state of the network's "
            f"{len(params)} parameters under 'optimizer', "
            f"found {str(opt)[:80]}"
        )
    for i, s in state.items():
        if not (_is_int(i) and 0 <= i < len(params) and isinstance(s, dict)):
            raise RedrepError(
                f"{path}: expected the optimizer state of parameters 0-{len(params) - 1}, found one of {i!r}"
            )
        for key, what in _OPTIMIZER_BUFFERS.items():
            buf = s.get(key)
            if buf is not None and not (isinstance(buf, torch.Tensor) and tuple(buf.shape) == params[i]):
                found = f"shape {tuple(buf.shape)}" if isinstance(buf, torch.Tensor) else _kind(buf)
                raise RedrepError(f"{path}: expected {what} of parameter {i} of shape {params[i]}, found {found}")
    rng = ckpt.get("rng")
    try:
        if ckpt.get("scaler"):
            torch.amp.GradScaler("cpu").load_state_dict(dict(ckpt["scaler"]))
        _try_rng_states(rng)
    except Exception as exc:  # noqa: BLE001 - whatever a crafted state makes torch, numpy or random raise
        raise RedrepError(
            f"{path}: expected the gradient-scaler and random-number states of a run under 'scaler' and 'rng', "
            f"could not restore them ({type(exc).__name__}: {exception_line(exc)})"
        ) from None


def _try_rng_states(st: dict) -> None:
    """Restore the random states of a checkpoint onto fresh generators: raises what a bad one makes them raise."""
    torch.Generator().set_state(st["torch"])
    torch.Generator().set_state(st["data"])
    s = st["numpy"]
    np.random.RandomState().set_state(
        (s["kind"], np.asarray(s["keys"], dtype=np.uint32), s["pos"], s["has_gauss"], s["cached"])
    )
    random.Random().setstate(tuple(st["python"][:1]) + (tuple(st["python"][1]),) + tuple(st["python"][2:]))
    if not all(isinstance(t, torch.Tensor) for t in st.get("cuda", [])):
        raise TypeError("'cuda' is not a list of generator states")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _kind(v) -> str:
    return "nothing" if v is None else f"a {type(v).__name__}"


def read_run_config(run_dir) -> TrainConfig:
    """The TrainConfig saved in a run directory."""
    f = Path(run_dir) / CONFIG_FILE
    if not f.is_file():
        raise RedrepError(f"{run_dir}: expected a run directory holding {CONFIG_FILE}, found none")
    return TrainConfig.from_dict(io.read_json_object(f, "a JSON training config"), where=str(f))


def _np_rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"kind": kind, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}


def _set_np_rng_state(s: dict) -> None:
    np.random.set_state((s["kind"], np.asarray(s["keys"], dtype=np.uint32), s["pos"], s["has_gauss"], s["cached"]))


def _rng_states(gen: torch.Generator, device: torch.device) -> dict:
    st = {
        "torch": torch.get_rng_state(),
        "numpy": _np_rng_state(),
        "python": random.getstate(),
        "data": gen.get_state(),
    }
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _restore_rng_states(st: dict, gen: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(st["torch"])
    _set_np_rng_state(st["numpy"])
    random.setstate(tuple(st["python"][:1]) + (tuple(st["python"][1]),) + tuple(st["python"][2:]))
    gen.set_state(st["data"])
    # a run resumed on a machine with another number of GPUs keeps its fresh CUDA states
    if device.type == "cuda" and len(st.get("cuda", [])) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(st["cuda"])


# ------------------------------------------------------------ loss, outputs
def squared_hinge(out: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """The squared hinge loss of one output: max(0, 1 - t f)^2 with f = ``out[:, 0]`` and t = +1 for label 1, -1 for 0.

    Parameters
    ----------
    out : Tensor of shape (n, 1)
    y : int64 Tensor of shape (n,), labels 0 or 1
    reduction : "mean" or "sum" over the n samples
    """
    t = y.to(out.dtype) * 2 - 1
    per = F.relu(1 - t * out[:, 0]).square()
    return per.sum() if reduction == "sum" else per.mean()


def loss_function(config: TrainConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training loss of ``config``: mean cross-entropy (with its label smoothing) or the squared hinge."""
    if config.loss == "squared-hinge":
        return squared_hinge
    return torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)


def predictions(out: torch.Tensor) -> torch.Tensor:
    """Predicted classes of readout outputs of shape (n, C): the first class of largest output, as ``argmax``
    takes it; with one output (C = 1), class 1 where the output is > 0 and class 0 where it is <= 0.

    The same rule as the chunk analysis (docs/method.md#one-output-readout).
    """
    if out.shape[1] == 1:
        return (out[:, 0] > 0).long()
    return out.argmax(1)


# --------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(
    model,
    dataset: Dataset,
    x,
    y,
    *,
    batch_size: int = 256,
    autocast=contextlib.nullcontext,
    loss: str = "cross-entropy",
):
    """Mean loss (cross-entropy without smoothing, or the squared hinge) and accuracy of ``model`` in eval
    mode, without augmentation.

    Parameters
    ----------
    x : Tensor of shape (n, *in_shape), stored samples on the model's device
    y : int64 Tensor of shape (n,)
    loss : "cross-entropy" or "squared-hinge" (a one-output model)

    Returns
    -------
    (loss, accuracy) : floats
    """
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=y.device)
    correct = torch.zeros((), dtype=torch.int64, device=y.device)
    for i in range(0, x.shape[0], batch_size):
        xb = _to_model_layout(dataset.prepare(x[i : i + batch_size]))
        yb = y[i : i + batch_size]
        with autocast():
            out = model(xb)
        out = out.float()
        if loss == "squared-hinge":
            total += squared_hinge(out, yb, reduction="sum").double()
        else:
            total += F.cross_entropy(out, yb, reduction="sum").double()
        correct += (predictions(out) == yb).sum()
    model.train(was_training)
    n = max(1, int(x.shape[0]))
    return float(total) / n, int(correct) / n


def _to_model_layout(x: torch.Tensor) -> torch.Tensor:
    # channels-last convolutions are markedly faster on GPUs; on the CPU layout is left alone
    if x.is_cuda and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


# ------------------------------------------------------------------ results
@dataclass
class TrainResult:
    """What a call to :func:`train` did.

    Attributes
    ----------
    run_dir : the run directory
    config : the validated TrainConfig
    epochs_done : last finished epoch
    history : list of per-epoch metrics dicts (the lines of metrics.jsonl)
    zero_train_error_epoch : first epoch with training error 0, or None
    resumed_from : epoch this call started from (0 for a fresh run)
    device : the device used, as a string
    amp_dtype : autocast dtype name, or None
    stop : why training ended, once it has: ``{"reason": "stop_loss" | "epochs", "epoch": E, ...}``, else None
    """

    run_dir: Path
    config: TrainConfig
    epochs_done: int
    history: list = field(default_factory=list)
    zero_train_error_epoch: int | None = None
    resumed_from: int = 0
    device: str = "cpu"
    amp_dtype: str | None = None
    stop: dict | None = None

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}

    @property
    def complete(self) -> bool:
        """Whether training has ended: all its epochs done, or stopped by the loss rule."""
        return self.stop is not None or self.epochs_done >= self.config.epochs


def _zero_error(metrics: dict, eval_train: bool) -> bool:
    # the clean evaluation where there is one (epochs between evaluations have none), else the running accuracy
    acc = metrics.get("train_eval_acc") if eval_train else metrics["train_acc"]
    return acc is not None and acc >= 1.0


#: Why a run ends: its training loss below ``stop_loss``, or its last epoch.
STOP_REASONS = ("stop_loss", "epochs")


def _stop(config: TrainConfig, epoch: int, metrics: dict) -> dict | None:
    """Why training ends after ``epoch``, or None: the full-batch training loss below ``stop_loss``, or the last
    epoch."""
    loss = metrics.get("train_eval_loss")
    if config.stop_loss is not None and loss is not None and loss < config.stop_loss:
        return {"reason": "stop_loss", "epoch": epoch, "train_loss": loss, "stop_loss": config.stop_loss}
    if epoch >= config.epochs:
        return {"reason": "epochs", "epoch": epoch}
    return None


def _done(config: TrainConfig, ckpt: dict) -> bool:
    return ckpt.get("stop") is not None or int(ckpt["epoch"]) >= config.epochs


# --------------------------------------------------------------------- loop
@dataclass
class _Session:
    """What one call of :func:`train` works with, set up once by :func:`_setup`."""

    config: TrainConfig
    run_dir: Path
    device: torch.device
    autocast: Callable
    dataset: Dataset
    model: torch.nn.Module
    net: torch.nn.Module  # what the batches go through: the model, or its torch.compile wrapper
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    gen: torch.Generator
    criterion: Callable
    history: list
    zero_epoch: int | None
    start: int
    model_info: dict
    env: dict
    keep: set
    stop: dict | None = None


def train(
    config: TrainConfig,
    run_dir,
    *,
    device: str | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train (or resume) the run ``config`` in ``run_dir``.

    A run directory that already holds a run with the same config resumes
    from its last checkpoint (fields in :data:`RESUME_FREE_FIELDS` may
    differ); a different config is an error, and so is a non-empty folder
    that is not a run. The folder is locked while training
    (:func:`redrep.storage.io.folder_lock`): a second training into it fails at once.

    Parameters
    ----------
    config : TrainConfig
    run_dir : folder of the run
    device : an already-resolved device name (:func:`redrep.core.device.resolve_device`);
        None resolves ``config.device``
    progress : show progress bars on stderr
    on_epoch_end : called as ``on_epoch_end(epoch, metrics)`` after each epoch is saved
    log : receives one-line messages (what is trained where, when training error reaches 0)

    Returns
    -------
    TrainResult

    Notes
    -----
    A config whose ``lr`` is None (Adam with the authors' rule) gets its
    learning rate here, from the network's parameter count, before it is
    compared with a saved run or written: ``config.json`` holds the value used.
    Training ends after ``config.epochs`` epochs, or at the first evaluated
    epoch whose full-batch training loss is below ``config.stop_loss``.
    """
    config = config.validated()
    run_dir = Path(run_dir)
    log = log or (lambda _msg: None)
    with io.folder_lock(run_dir, what="train"):
        dataset = None
        if config.lr is None:
            dataset = load_run_data(config)
            config = config.with_lr(count_parameters(config, dataset))
        ckpt = _existing_run(run_dir, config)
        if ckpt is not None and _done(config, ckpt):
            return _result_from_checkpoint(run_dir, config, ckpt)
        s = _setup(config, run_dir, ckpt, device, dataset)
        log(
            f"{config.arch} (W = {s.model_info['num_features']}, {s.model_info['num_params']:,} parameters) on "
            f"{config.dataset} ({s.dataset.n_train} train / {s.dataset.n_test} test), {config.optimizer} lr "
            f"{config.lr:g}{' (the authors rule)' if config.lr_rule else ''}, device {s.device}, "
            f"amp {s.env['amp_dtype'] or 'off'}{', torch.compile' if config.compile else ''}, "
            f"epochs {s.start + 1}-{config.epochs}" + (f" (resumed after epoch {s.start})" if s.start else "")
        )
        s.dataset = s.dataset.to(s.device)
        bar = tqdm(
            total=config.epochs, initial=s.start, desc="epochs", unit="ep", disable=not progress, file=sys.stderr
        )
        try:
            if s.start == 0:
                _save_epoch(s, 0, None)  # the network at initialization, the null baseline of later analyses
            epoch = s.start
            while s.stop is None:
                epoch += 1
                metrics = _train_epoch(s, epoch, progress)
                io.crash_point(f"train:epoch:{epoch}:trained")
                s.history.append(metrics)
                if s.zero_epoch is None and _zero_error(metrics, config.eval_train):
                    s.zero_epoch = epoch
                    log(f"epoch {epoch}: training error reached 0")
                s.stop = _stop(config, epoch, metrics)
                if s.stop is not None and s.stop["reason"] == "stop_loss":
                    log(f"epoch {epoch}: training loss {s.stop['train_loss']:.3g} < {config.stop_loss:.3g}, stopping")
                _save_epoch(s, epoch, metrics)
                bar.update(1)
                bar.set_postfix({k: f"{v:.3f}" for k, v in _progress_values(metrics).items()})
                if on_epoch_end is not None:
                    on_epoch_end(epoch, metrics)
        finally:
            bar.close()
    return TrainResult(
        run_dir, config, epoch, s.history, s.zero_epoch, s.start, str(s.device), s.env["amp_dtype"], s.stop
    )


def _progress_values(metrics: dict) -> dict:
    """The numbers the progress bar shows: training loss, training and test accuracy (where evaluated)."""
    train_acc = metrics["train_eval_acc"] if metrics["train_eval_acc"] is not None else metrics["train_acc"]
    out = {"loss": metrics["train_loss"], "train": train_acc}
    if metrics["test_acc"] is not None:
        out["test"] = metrics["test_acc"]
    return out


def _setup(config: TrainConfig, run_dir: Path, ckpt: dict | None, device: str | None, dataset=None) -> _Session:
    """Device, data, model, optimizer and random states of a fresh run, or restored from ``ckpt``.

    ``dataset``: the run's data if already loaded. Writes ``config.json`` first
    (atomically), then the metrics log as the checkpoint has it, so that a kill
    at any point leaves a resumable folder.
    """
    device = torch.device(resolve_device(config.device if device is None else device))
    amp_dtype = resolve_amp(config.amp, device)
    if dataset is None:
        dataset = load_run_data(config)
    _check_model_fits(config, dataset, device)

    model = _create_model(config, dataset)
    gen = torch.Generator().manual_seed(config.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    try:
        model = model.to(device)
    except (RuntimeError, MemoryError) as exc:  # out of GPU memory
        raise RedrepError(
            f"{_size_option(config)}: the network does not fit on {device} ({exception_line(exc)})"
        ) from None
    if device.type == "cuda" and len(dataset.in_shape) == 3:
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if config.compile else model  # checkpoints keep `model`'s own state_dict
    optimizer = make_optimizer(config, model.parameters())
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    history: list[dict] = []
    zero_epoch = stop = None
    start = 0
    if ckpt is not None:
        info = ckpt["model_info"]  # checked against the config (check_checkpoint); here against the data
        if (info["num_classes"], list(info["in_shape"])) != (dataset.num_classes, list(dataset.in_shape)):
            raise RedrepError(
                f"{checkpoint_path(run_dir)}: expected a network of {dataset.num_classes} classes and inputs of "
                f"shape {list(dataset.in_shape)} ({config.dataset}), found {info['num_classes']} and {info['in_shape']}"
            )
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        _restore_rng_states(ckpt["rng"], gen, device)
        history = list(ckpt["history"])
        zero_epoch = ckpt.get("zero_train_error_epoch")
        stop = ckpt.get("stop")
        start = int(ckpt["epoch"])
    try:
        io.write_json(run_dir / CONFIG_FILE, config.to_dict())
        io.crash_point("train:config-written")
        # the metrics log is rewritten from the checkpoint: a kill may have left an extra or half line
        io.write_text(run_dir / METRICS_FILE, "".join(json.dumps(m) + "\n" for m in history))
    except OSError as exc:
        raise io.write_error(exc, run_dir) from None
    model_info = {
        "num_features": int(model.num_features),
        "num_params": int(sum(p.numel() for p in model.parameters())),
        "num_classes": dataset.num_classes,
        "num_outputs": output_units(config.loss, dataset.num_classes),
        "in_shape": list(dataset.in_shape),
        "n_train": dataset.n_train,
        "n_test": dataset.n_test,
    }
    env = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "amp_dtype": None if amp_dtype is None else str(amp_dtype).replace("torch.", ""),
        "torch": torch.__version__,
        "redrep": __version__,
        "python": sys.version.split()[0],
    }
    return _Session(
        config=config,
        run_dir=run_dir,
        device=device,
        autocast=autocast_context(device, amp_dtype),
        dataset=dataset,
        model=model,
        net=net,
        optimizer=optimizer,
        scaler=scaler,
        gen=gen,
        criterion=loss_function(config),
        history=history,
        zero_epoch=zero_epoch,
        start=start,
        model_info=model_info,
        env=env,
        keep={0, *(e for e in config.checkpoint_epochs if e <= config.epochs), config.epochs},
        stop=stop,
    )


def make_optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    """SGD with momentum, or Adam with its L2 penalty (``weight_decay`` added to the gradient), at ``config.lr``."""
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def epoch_lr(config: TrainConfig, epoch: int) -> float:
    """The learning rate of ``epoch`` (1-based): SGD's cosine schedule, Adam's constant rate (as the authors')."""
    if config.optimizer == "adam":
        return config.lr
    return cosine_lr(epoch - 1, config.epochs, config.lr, config.lr_min)


def _epoch_draws(dataset, n_batches: int, batch_size: int, gen, device):
    """The augmentation draws of a whole epoch on the device (None where the data set is not augmented).

    Drawn batch by batch from ``gen`` in the order the batches use them, so they are the numbers each batch would
    draw itself; moved to the device at once, so that no batch waits on the GPU for its own.
    """
    if not dataset.augment:
        return None
    per = [augment_draws(min(batch_size, dataset.n_train - b * batch_size), generator=gen) for b in range(n_batches)]
    return tuple(torch.cat(parts).to(device) for parts in zip(*per))


def _train_epoch(s: _Session, epoch: int, progress: bool) -> dict:
    """One epoch of the optimizer over the shuffled training set, then the evaluations (every
    ``eval_every`` epochs and at the last); returns its metrics."""
    config, dataset, model, device = s.config, s.dataset, s.model, s.device
    t0 = time.perf_counter()
    lr = epoch_lr(config, epoch)
    for g in s.optimizer.param_groups:
        g["lr"] = lr
    model.train()
    n = dataset.n_train
    perm = torch.randperm(n, generator=s.gen).to(device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    n_batches = math.ceil(n / config.batch_size)
    draws = _epoch_draws(dataset, n_batches, config.batch_size, s.gen, device)
    batches = tqdm(range(n_batches), desc=f"epoch {epoch}", leave=False, disable=not progress, file=sys.stderr)
    for b in batches:
        sl = slice(b * config.batch_size, (b + 1) * config.batch_size)
        idx = perm[sl]
        xb = dataset.prepare(dataset.x_train[idx], augment=True, draws=draws and tuple(d[sl] for d in draws))
        xb = _to_model_layout(xb)
        yb = dataset.y_train[idx]
        with s.autocast():
            out = s.net(xb)
            loss = s.criterion(out, yb)
        s.optimizer.zero_grad(set_to_none=True)
        s.scaler.scale(loss).backward()
        s.scaler.step(s.optimizer)
        s.scaler.update()
        loss_sum += loss.detach().double() * yb.shape[0]
        correct += (predictions(out.detach()) == yb).sum()
    train_loss = float(loss_sum) / n
    if not math.isfinite(train_loss):
        raise RedrepError(
            f"training diverged at epoch {epoch} (train loss {train_loss}): expected a finite loss; "
            f"lower lr (now {config.lr})"
        )
    train_seconds = time.perf_counter() - t0
    metrics = {
        "epoch": epoch,
        "lr": lr,
        "train_loss": train_loss,
        "train_acc": int(correct) / n,
        "train_eval_loss": None,
        "train_eval_acc": None,
    }
    kw = dict(batch_size=config.eval_batch_size, autocast=s.autocast, loss=config.loss)
    evaluated = epoch % config.eval_every == 0 or epoch >= config.epochs
    if config.eval_train and evaluated:
        metrics["train_eval_loss"], metrics["train_eval_acc"] = evaluate(
            s.net, dataset, dataset.x_train, dataset.y_train, **kw
        )
    metrics["test_loss"], metrics["test_acc"] = (
        evaluate(s.net, dataset, dataset.x_test, dataset.y_test, **kw) if evaluated else (None, None)
    )
    metrics["train_seconds"] = train_seconds
    metrics["seconds"] = time.perf_counter() - t0
    return metrics


def _save_epoch(s: _Session, epoch: int, metrics: dict | None) -> None:
    """Checkpoint after ``epoch`` (0: before any step), then its metrics line and the summary.

    The checkpoint comes first: a kill before the metrics line is appended
    is repaired on resume, which rewrites the log from the checkpoint.
    """
    state = {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "config": s.config.to_dict(),
        "epoch": epoch,
        "model": s.model.state_dict(),
        "optimizer": s.optimizer.state_dict(),
        "scaler": s.scaler.state_dict(),
        "rng": _rng_states(s.gen, s.device),
        "history": s.history,
        "zero_train_error_epoch": s.zero_epoch,
        "stop": s.stop,
        "model_info": s.model_info,
    }
    try:
        # the epoch training stopped at is kept, as the last always is
        _save_checkpoint(s.run_dir, state, keep_epoch=epoch in s.keep or s.stop is not None)
        io.crash_point(f"train:epoch:{epoch}:checkpointed")
        if metrics is not None:
            with open(s.run_dir / METRICS_FILE, "a", encoding="utf-8") as f:
                f.write(json.dumps(metrics) + "\n")
        _write_summary(s, epoch)
    except OSError as exc:
        raise io.write_error(exc, s.run_dir) from None


def _size_option(config: TrainConfig) -> str:
    """The option that sets the network's size, for messages."""
    return "width" if config.width is not None else "widening_factor"


def build_model(config: TrainConfig, num_classes: int, in_shape) -> torch.nn.Module:
    """The network of ``config`` for data of ``num_classes`` classes, with the architecture's own initialization.

    Its readout has one output with the squared-hinge loss, ``num_classes`` otherwise.
    """
    return create_model(config.arch, output_units(config.loss, num_classes), in_shape, **config.model_options)


def initial_model(config: TrainConfig, num_classes: int, in_shape) -> torch.nn.Module:
    """The network a run of ``config`` starts from: every random generator seeded with its seed, then the model
    built and initialized (``config.init``).

    The same calls as :func:`train`'s, so the weights are those of the run's epoch 0, bit for bit.
    """
    seed_everything(config.seed)
    return initialize(build_model(config, num_classes, in_shape), config.init)


def count_parameters(config: TrainConfig, dataset: Dataset) -> int:
    """Parameters of the network of ``config`` on ``dataset`` (counted on the meta device: no memory, no
    random numbers drawn)."""
    with torch.device("meta"):
        model = build_model(config, dataset.num_classes, dataset.in_shape)
    return sum(p.numel() for p in model.parameters())


def _create_model(config: TrainConfig, dataset: Dataset) -> torch.nn.Module:
    """:func:`initial_model` for ``dataset``; a failed allocation is a one-line :class:`RedrepError`."""
    try:
        return initial_model(config, dataset.num_classes, dataset.in_shape)
    except (RuntimeError, MemoryError) as exc:  # an allocation the size check let through
        raise RedrepError(
            f"{_size_option(config)}: could not allocate the network {config.arch} "
            f"({_size_option(config)}={getattr(config, _size_option(config))}): {exception_line(exc)}"
        ) from None


#: Bytes per parameter during training, by optimizer: float32 weights, gradients and SGD's momentum
#: or Adam's two moments.
_TRAIN_BYTES_PER_PARAM = {"sgd": 12, "adam": 16}


def _check_model_fits(config: TrainConfig, dataset: Dataset, device: torch.device) -> None:
    """Refuse a network whose parameters alone exceed the device's memory, before allocating any of it."""
    n = count_parameters(config, dataset)
    need = n * _TRAIN_BYTES_PER_PARAM[config.optimizer]
    have = device_memory(device)
    if have is not None and need > have:
        opt = _size_option(config)
        state = "momentum" if config.optimizer == "sgd" else "Adam's moments"
        raise RedrepError(
            f"{opt}: {config.arch} with {opt}={getattr(config, opt)} has {n:,} parameters, about "
            f"{need / 1e9:,.1f} GB with gradients and {state}; expected it to fit the {have / 1e9:,.1f} GB "
            f"of {device} (choose a smaller {opt})"
        )


def device_memory(device: torch.device) -> int | None:
    """Total memory in bytes of ``device`` (the machine's RAM for the CPU); None where unknown."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def _existing_run(run_dir: Path, config: TrainConfig) -> dict | None:
    """The last checkpoint of a compatible run in ``run_dir``, None for a fresh run; errors otherwise.

    Called under the folder's lock: temporary files of a killed writer are
    removed, and a folder killed at its very first start (a metrics log and
    no config or checkpoint) starts over.
    """
    if not run_dir.exists():
        return None
    if not run_dir.is_dir():
        raise RedrepError(f"{run_dir}: expected a run directory, found a file")
    io.remove_stale_temps(run_dir)
    io.remove_stale_temps(run_dir / CHECKPOINT_DIR)
    if not (run_dir / CONFIG_FILE).is_file():
        if not _first_start_leftovers(run_dir):
            raise RedrepError(
                f"{run_dir}: expected a new or empty folder or a redrep run (with {CONFIG_FILE}), "
                f"found other files; choose another out folder"
            )
        for name in (METRICS_FILE, SUMMARY_FILE):
            (run_dir / name).unlink(missing_ok=True)
        if (run_dir / CHECKPOINT_DIR).is_dir():
            (run_dir / CHECKPOINT_DIR).rmdir()
        return None
    last = checkpoint_path(run_dir)
    ckpt = load_checkpoint(last) if last.is_file() else None
    saved = checkpoint_config(ckpt, last) if ckpt is not None else read_run_config(run_dir)
    diffs = config_differences(saved, config)
    if diffs:
        raise RedrepError(
            f"{run_dir}: holds a run with another config ({'; '.join(diffs)}); "
            f"expected the same options to resume it, or choose another out folder"
        )
    if ckpt is not None:
        check_checkpoint(ckpt, config, last, resume=True)
    return ckpt


def _first_start_leftovers(run_dir: Path) -> bool:
    """True when ``run_dir`` holds only what a run killed before its config was written can leave.

    That is a metrics log, a summary and an empty checkpoints folder: no
    checkpoint, so nothing was trained that could be lost.
    """
    for p in run_dir.iterdir():
        if p.name in (METRICS_FILE, SUMMARY_FILE) and p.is_file():
            continue
        if p.name == CHECKPOINT_DIR and p.is_dir() and not any(p.iterdir()):
            continue
        return False
    return True


#: Parts of a checkpoint that only resuming needs; kept epoch checkpoints leave them out.
RESUME_ONLY_KEYS = ("optimizer", "scaler", "rng")


def _save_checkpoint(run_dir: Path, state: dict, *, keep_epoch: bool) -> None:
    last = checkpoint_path(run_dir)
    if keep_epoch:
        # a kept epoch is for extraction and dynamics, not for resuming (last.pt is): after epoch 0 it
        # holds the network alone, about half the bytes of the full state with the optimizer's momentum;
        # epoch 0, the state every run starts from, is whole (its optimizer holds nothing yet)
        kept = checkpoint_path(run_dir, state["epoch"])
        if state["epoch"] > 0:
            state_kept = {k: v for k, v in state.items() if k not in RESUME_ONLY_KEYS}
        else:
            state_kept = state
        with io.atomic_path(kept) as tmp:
            _torch_save(state_kept, tmp)
    with io.atomic_path(last) as tmp:
        _torch_save(state, tmp)


def _torch_save(state: dict, path: Path) -> None:
    # through a Python file, so a full disk is an OSError (ENOSPC) rather than torch's RuntimeError
    with open(path, "wb") as f:
        torch.save(state, f)


def _write_summary(s: _Session, epoch: int) -> None:
    """summary.json: progress, why and when training stopped (``stop``: null while it runs), the lr used."""
    config = s.config
    io.write_json(
        s.run_dir / SUMMARY_FILE,
        {
            "epochs_done": epoch,
            "epochs": config.epochs,
            "complete": s.stop is not None or epoch >= config.epochs,
            "stop": s.stop,
            "zero_train_error_epoch": s.zero_epoch,
            "lr": config.lr,
            "lr_rule": config.lr_rule,
            "final": s.history[-1] if s.history else None,
            "kept_checkpoints": sorted(list_checkpoints(s.run_dir)),
            "model": s.model_info,
            "environment": s.env,
            "total_seconds": sum(m["seconds"] for m in s.history),
        },
    )


def _result_from_checkpoint(run_dir: Path, config: TrainConfig, ckpt: dict) -> TrainResult:
    return TrainResult(
        run_dir,
        config,
        int(ckpt["epoch"]),
        list(ckpt["history"]),
        ckpt.get("zero_train_error_epoch"),
        int(ckpt["epoch"]),
        "none",
        None,
        ckpt.get("stop"),
    )
