"""What a sweep checks once, before any run starts: its data, its device and its options.

Without it, a sweep whose data is missing starts every run, every run fails
with the same error in its own log, and the sweep ends with "no finished run
at W = ...". :func:`check_sweep` finds such a problem first and says it in one
line (a :class:`~redrep.core.validation.RedrepError`, exit status 2 on the
command line), the way ``redrep train`` does for one run:

* data: the dataset is there, or can be built offline (CIFAR archives in
  ``data_dir``; scikit-learn for the digits sets; the MNIST-1D cache or the
  mnist1d package). For SLURM the path is checked as the driver sees it, and
  the message says so: the compute nodes must see the same path.
* device: the local executor's devices exist on this machine; SLURM's
  submitit and sbatch are there; a SLURM run asked to train on CUDA gets a
  GPU; mixed precision has a CUDA device.
* options: the architecture takes the dataset's inputs, every width builds a
  network whose last hidden layer has W neurons, a training subset is no
  larger than the training set.

Runs already finished are not trained again, so a sweep that only has to be
collected checks its options alone.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from ..core.device import check_device_name, resolve_device
from ..core.validation import RedrepError, exception_line
from ..nets.config import ARCHS, TrainConfig  # torch-free: `redrep sweep --help` imports this module
from .runs import read_run_result

#: Data sets read from files in ``data_dir`` (the others are bundled or generated).
CIFAR_SETS = ("cifar10", "cifar100")
MNIST_SETS = ("mnist", "parity-mnist")


@dataclass(frozen=True)
class DataFacts:
    """What a dataset gives a network: the shape of one input, the classes, the training samples."""

    in_shape: tuple
    num_classes: int
    n_train: int


#: The datasets of :data:`redrep.nets.data.DATASETS`, without loading them (tests hold these to the loaders).
DATA_FACTS = {
    "cifar10": DataFacts((3, 32, 32), 10, 50000),
    "cifar100": DataFacts((3, 32, 32), 100, 50000),
    "digits": DataFacts((1, 8, 8), 10, 1198),
    "parity-digits": DataFacts((10,), 2, 1198),
    "mnist": DataFacts((1, 28, 28), 10, 60000),
    "parity-mnist": DataFacts((10,), 2, 60000),
    "mnist1d": DataFacts((40,), 10, 4000),
    "synthetic": DataFacts((16,), 4, 512),
}


def check_sweep(config, executor, tasks) -> None:
    """Check a sweep's data, device and options before anything is submitted; one-line RedrepError otherwise.

    Parameters
    ----------
    config : a validated :class:`~redrep.experiments.sweep.SweepConfig`
    executor : the executor the runs go to (its ``name`` is ``local`` or ``slurm``)
    tasks : the planned :class:`~redrep.experiments.runs.RunTask` of the sweep; the data and the device
        are checked only when one of them is still to train
    """
    train = config.train
    slurm = getattr(executor, "name", "local") == "slurm"
    check_options(config)
    to_train = [t for t in tasks if not _finished(t)]
    if not to_train:
        return
    check_data(train, where="slurm" if slurm else "local")
    if slurm:
        _check_slurm_device(train, executor)
    else:
        _check_local_device(train, executor)


def _finished(task) -> bool:
    res = read_run_result(task.run_dir)
    return res is not None and res.get("epochs") == task.train_config.get("epochs")


# --------------------------------------------------------------------------- data
def check_data(train: TrainConfig, *, where: str = "local") -> None:
    """The dataset of ``train`` is present in its ``data_dir``, or can be built offline."""
    from ..nets.data import MNIST1D_CACHE, find_cifar, find_mnist

    name, data_dir = train.dataset, train.data_dir
    if name in CIFAR_SETS or name in MNIST_SETS:
        try:
            path = find_cifar(name, data_dir) if name in CIFAR_SETS else find_mnist(data_dir)
        except RedrepError as exc:
            seen = (
                f" (checked {data_dir} as this driver sees it: the SLURM compute nodes read the same path)"
                if where == "slurm"
                else ""
            )
            raise RedrepError(f"sweep data: {exc}{seen}") from None
        if path.is_file() and path.stat().st_size == 0:
            raise RedrepError(f"sweep data: {path} is empty (expected the official {name} archive)")
        return
    if name in ("digits", "parity-digits") and importlib.util.find_spec("sklearn") is None:
        raise RedrepError(
            f"sweep data: {name} comes from scikit-learn's bundled digits, found no scikit-learn "
            "(pip install 'redrep[train]')"
        )
    if name == "mnist1d":
        cache = Path(data_dir) / MNIST1D_CACHE if data_dir is not None else None
        if (cache is None or not cache.is_file()) and importlib.util.find_spec("mnist1d") is None:
            raise RedrepError(
                f"sweep data: mnist1d needs its cache ({cache or 'DATA_DIR/' + MNIST1D_CACHE}) or the mnist1d "
                "package to generate it, found neither (pip install 'redrep[train]', or `redrep data mnist1d`)"
            )


# --------------------------------------------------------------------------- device
def _check_local_device(train: TrainConfig, executor) -> None:
    devices = list(getattr(executor, "devices", None) or []) or [train.device]
    resolved = [resolve_device(d) for d in dict.fromkeys(devices)]  # one line for a GPU that is not there
    if train.amp and not any(d.startswith("cuda") for d in resolved):
        raise RedrepError(
            f"sweep device: amp (mixed precision) needs a CUDA device, found {', '.join(resolved)} "
            "(leave amp unset for auto)"
        )


def _check_slurm_device(train: TrainConfig, executor) -> None:
    import shutil

    # the same words as the executor's, said before "N runs to run now"
    if importlib.util.find_spec("submitit") is None:
        raise RedrepError("executor: slurm needs the submitit package (pip install 'redrep[slurm]')")
    if shutil.which("sbatch") is None:
        raise RedrepError("executor: slurm needs SLURM's sbatch on PATH, found none (is this a SLURM login node?)")
    # the device is resolved on each compute node: only what the job asks for can be checked here
    check_device_name(train.device)
    options = getattr(executor, "options", None)
    gpus = getattr(options, "gpus", None)
    if gpus is None:
        gpus = 0 if getattr(executor, "arch", train.arch) == "mlp" else 1
    wants_cuda = train.device.startswith("cuda") or bool(train.amp)
    if wants_cuda and not gpus:
        what = f"device {train.device}" if train.device.startswith("cuda") else "amp (mixed precision)"
        raise RedrepError(
            f"sweep device: {what} needs a GPU on the compute nodes, but each SLURM run asks for 0 GPUs "
            "(set --slurm-gpus 1, or --device auto)"
        )


# --------------------------------------------------------------------------- options
def check_options(config) -> None:
    """The architecture takes the dataset's inputs, every width gives W neurons, the subset fits the data."""
    train = config.train
    facts = DATA_FACTS.get(train.dataset)
    if facts is None:  # a dataset this check does not know: the runs say what is wrong
        return
    if ARCHS[train.arch].needs_image and len(facts.in_shape) != 3:
        images = ", ".join(n for n, f in DATA_FACTS.items() if len(f.in_shape) == 3)
        raise RedrepError(
            f"sweep options: arch {train.arch} needs image inputs ({images}), found {train.dataset} with inputs "
            f"of shape {facts.in_shape}; use --arch mlp"
        )
    if train.train_subset is not None and train.train_subset > facts.n_train:
        raise RedrepError(
            f"sweep options: train_subset {train.train_subset} is larger than the {facts.n_train} training "
            f"samples of {train.dataset}"
        )
    for w in sorted(config.widths):
        got = _readout_width(config.train_config(w, 0), facts)
        if got != w:
            raise RedrepError(
                f"sweep options: width W = {w} gives {train.arch} a last hidden layer of {got} neurons, "
                f"expected {w}; choose widths that {train.arch} can make"
            )


def _readout_width(cfg: TrainConfig, facts: DataFacts) -> int:
    """The width of the last hidden layer the run's network would have, built without memory (meta device)."""
    import torch

    from ..nets.train import build_model

    try:
        with torch.device("meta"):
            model = build_model(cfg, facts.num_classes, facts.in_shape)
    except RedrepError as exc:
        raise RedrepError(f"sweep options: {exc}") from None
    except (RuntimeError, ValueError, ZeroDivisionError) as exc:
        raise RedrepError(
            f"sweep options: {cfg.arch} with {cfg.model_options} cannot be built ({exception_line(exc)})"
        ) from None
    return int(model.get_classifier().in_features)
