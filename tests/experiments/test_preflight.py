"""A sweep checks its data, device and options once, before any run starts (CPU machine; no CUDA assumed)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

import redrep.experiments.sweep as sweep_mod
from redrep.cli import main
from redrep.core.validation import RedrepError
from redrep.experiments.executors import LocalExecutor, SlurmExecutor, SlurmOptions
from redrep.experiments.preflight import DATA_FACTS, check_sweep
from redrep.experiments.runs import RUN_RESULT
from redrep.experiments.sweep import plan_sweep, run_sweep
from redrep.nets.data import CIFAR, load_dataset
from results_factory import tiny


def _cuda_present() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.parametrize("name", [n for n in DATA_FACTS if n not in CIFAR and "mnist" not in n or n == "mnist1d"])
def test_data_facts_are_those_of_the_loaders(name):
    if name in ("digits", "parity-digits"):
        pytest.importorskip("sklearn", reason="the digits sets need scikit-learn (redrep[train])")
    if name == "mnist1d":
        pytest.importorskip("mnist1d", reason="MNIST-1D needs the mnist1d package (redrep[train])")
    d, f = load_dataset(name, None), DATA_FACTS[name]
    assert (d.in_shape, d.num_classes, d.n_train) == (f.in_shape, f.num_classes, f.n_train)


def test_data_facts_cover_every_data_set():
    from redrep.nets.config import DATASET_CLASSES
    from redrep.nets.data import MNIST_FILES, PARITY_COMPONENTS

    assert set(DATA_FACTS) == set(DATASET_CLASSES)
    assert all(DATA_FACTS[n].num_classes == c for n, c in DATASET_CLASSES.items())
    # the MNIST files need a download: their shapes are those the reader checks, the training set's 60000 images
    assert DATA_FACTS["parity-mnist"].in_shape == (PARITY_COMPONENTS,) and len(MNIST_FILES) == 4


def test_missing_mnist_is_one_line(tmp_path):
    cfg = tiny(dataset="parity-mnist", data_dir=str(tmp_path / "nodata")).validated()
    with pytest.raises(RedrepError, match=r"^sweep data: .*nodata: no MNIST files found .*run `redrep data mnist"):
        check_sweep(cfg, LocalExecutor(1, ["cpu"]), plan_sweep(cfg, tmp_path / "s"))


def test_missing_cifar_is_one_line_before_any_run_cli(tmp_path):
    """Without CIFAR every run used to fail and the sweep said 'no finished run at W = 64'; now: one line, exit 2."""
    out, data = tmp_path / "sweep", tmp_path / "nodata"
    t0 = time.perf_counter()
    r = CliRunner().invoke(main, ["sweep", "--dataset", "cifar10", "--data-dir", str(data), "--arch", "wide_resnet16",
                                  "--widths", "16,32", "--seeds", "1", "--epochs", "1", "--device", "cpu",
                                  "--out", str(out), "-q"])  # fmt: skip
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert lines == [
        f"Error: sweep data: {data}: no cifar10 data found (expected cifar-10-python.tar.gz or cifar-10-batches-py/ "
        f"there): run `redrep data cifar10 --data-dir {data}`"
    ]
    assert not (out / "runs").exists() and not (out / "sweep.json").exists()  # nothing was planned or started
    assert time.perf_counter() - t0 < 60


def test_slurm_says_the_path_was_checked_as_the_driver_sees_it(tmp_path):
    cfg = tiny(dataset="cifar10", data_dir=str(tmp_path / "nodata"), arch="wide_resnet16", depth=None,
               widths=(16, 32)).validated()  # fmt: skip
    ex = SlurmExecutor(tmp_path / "slurm", SlurmOptions(), arch="wide_resnet16")
    with pytest.raises(RedrepError, match=r"^sweep data: .*no cifar10 data found.* \(checked .*nodata as this driver "
                       r"sees it: the SLURM compute nodes read the same path\)$"):  # fmt: skip
        check_sweep(cfg, ex, plan_sweep(cfg, tmp_path / "s"))
    # the archive there: the check passes (its content is the runs' to read)
    (tmp_path / "nodata").mkdir()
    (tmp_path / "nodata" / CIFAR["cifar10"].archive).write_bytes(b"x")
    check_sweep(cfg, ex, plan_sweep(cfg, tmp_path / "s"))


def test_a_sweep_with_every_run_finished_does_not_need_its_data(tmp_path):
    """Collecting a finished sweep reads the runs' representations, not the data set: no data check then."""
    cfg = tiny(dataset="cifar10", data_dir=str(tmp_path / "nodata"), arch="wide_resnet16", depth=None,
               widths=(16, 32)).validated()  # fmt: skip
    tasks = plan_sweep(cfg, tmp_path / "s")
    with pytest.raises(RedrepError, match="no cifar10 data found"):
        check_sweep(cfg, LocalExecutor(1, ["cpu"]), tasks)
    for t in tasks:
        Path(t.run_dir).mkdir(parents=True)
        Path(t.run_dir, RUN_RESULT).write_text(json.dumps({"epochs": t.train_config["epochs"]}))
    check_sweep(cfg, LocalExecutor(1, ["cpu"]), tasks)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(arch="wide_resnet28", depth=None),
         r"^sweep options: arch wide_resnet28 needs image inputs \(cifar10, cifar100, digits, mnist\), found synthetic "
         r"with inputs of shape \(16,\); use --arch mlp$"),
        (dict(train_subset=600),
         r"^sweep options: train_subset 600 is larger than the 512 training samples of synthetic$"),
    ],
)  # fmt: skip
def test_inconsistent_options_are_refused_before_any_run(tmp_path, kw, message):
    with pytest.raises(RedrepError, match=message):
        run_sweep(tiny(**kw), tmp_path / "s", log=lambda _m: None)
    assert not (tmp_path / "s").exists()


def test_a_width_the_architecture_cannot_make_is_refused(tmp_path, monkeypatch):
    """A width option that does not give W neurons (here a widening factor off by 10 %) is found before training."""
    monkeypatch.setitem(sweep_mod.WIDTH_OPTIONS, "wide_resnet16", ("widening_factor", lambda w: w / 64 * 1.1))
    cfg = tiny(dataset="digits", arch="wide_resnet16", depth=None, widths=(16, 64)).validated()
    with pytest.raises(RedrepError, match=r"^sweep options: width W = 16 gives wide_resnet16 a last hidden layer of "
                       r"18 neurons, expected 16; choose widths that wide_resnet16 can make$"):  # fmt: skip
        check_sweep(cfg, LocalExecutor(1, ["cpu"]), plan_sweep(cfg, tmp_path / "s"))


@pytest.mark.skipif("_cuda_present()", reason="checks the refusal of CUDA on a machine without it")
def test_local_device_that_is_not_there_cpu(tmp_path):
    cfg = tiny().validated()
    with pytest.raises(RedrepError, match=r"^device: expected a CUDA GPU for 'cuda:1', found none on this machine"):
        run_sweep(cfg, tmp_path / "s", executor=LocalExecutor(1, ["cuda:1"]), log=lambda _m: None)
    with pytest.raises(RedrepError, match=r"^sweep device: amp \(mixed precision\) needs a CUDA device, found cpu"):
        run_sweep(replace(cfg, train=replace(cfg.train, amp=True)), tmp_path / "s", log=lambda _m: None)
    assert not (tmp_path / "s").exists()


@pytest.fixture
def fake_sbatch(tmp_path, monkeypatch):
    """An sbatch on PATH that the preflight finds (it never submits anything)."""
    pytest.importorskip("submitit", reason="the SLURM executor needs submitit (redrep[slurm])")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "sbatch").write_text("#!/bin/sh\nexit 1\n")
    (bindir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ.get('PATH', '')}")


def test_slurm_without_sbatch_is_said_before_anything_is_planned(tmp_path, monkeypatch):
    pytest.importorskip("submitit", reason="the SLURM executor needs submitit (redrep[slurm])")
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    r = CliRunner().invoke(main, ["sweep", "--dataset", "synthetic", "--widths", "8,16", "--seeds", "1",
                                  "--executor", "slurm", "--out", str(tmp_path / "s")])  # fmt: skip
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == [
        "Error: executor: slurm needs SLURM's sbatch on PATH, found none (is this a SLURM login node?)"
    ]


def test_slurm_run_on_cuda_needs_a_gpu(tmp_path, fake_sbatch):
    cfg = tiny(device="cuda").validated()
    tasks = plan_sweep(cfg, tmp_path / "s")
    with pytest.raises(RedrepError, match=r"^sweep device: device cuda needs a GPU on the compute nodes, but each "
                       r"SLURM run asks for 0 GPUs \(set --slurm-gpus 1, or --device auto\)$"):  # fmt: skip
        check_sweep(cfg, SlurmExecutor(tmp_path, SlurmOptions(), arch="mlp"), tasks)
    # with a GPU per run it passes, although this machine (the driver's) may have none
    check_sweep(cfg, SlurmExecutor(tmp_path, SlurmOptions(gpus=1), arch="mlp"), tasks)
