"""Crafted, damaged or foreign checkpoints: one line naming the file in train (resuming), extract and dynamics.

CPU only (device="cpu"): tiny MLPs on the synthetic data set.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from click.testing import CliRunner

from redrep.cli import main
from redrep.core.validation import RedrepError
from redrep.experiments.dynamics import DynamicsConfig, run_dynamics
from redrep.nets.extract import extract_run
from redrep.nets.train import TrainConfig, check_checkpoint, checkpoint_path, load_checkpoint, train


def config(**kw):
    base = dict(
        dataset="synthetic", arch="mlp", width=32, depth=2, epochs=3, batch_size=64, lr=0.05, seed=0, data_dir=None
    )
    base.update(kw)
    return TrainConfig(checkpoint_epochs=(1,), device="cpu", **base)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished run of W = 32 (kept epochs 0, 1, 3) and one of W = 64."""
    root = tmp_path_factory.mktemp("ckpt")
    train(config(), root / "w32", progress=False)
    train(config(width=64), root / "w64", progress=False)
    return root


@pytest.fixture
def run(runs, tmp_path):
    shutil.copytree(runs / "w32", tmp_path / "run")
    return tmp_path / "run"


def craft(path, change):
    ckpt = load_checkpoint(path)
    change(ckpt)
    torch.save(ckpt, path)


def _pop(key):
    return lambda c: c.pop(key)


def _set(key, value):
    return lambda c: c.__setitem__(key, value)


def _weight(name, shape):
    return lambda c: c["model"].__setitem__(name, torch.zeros(shape))


CRAFTED = [
    (_pop("config"), r"expected the training config \(an object\) under 'config', found nothing"),
    (_set("config", "x"), r"expected the training config \(an object\) under 'config', found a str"),
    (_set("config", {"arch": "mlp", "epochs": "3"}), r"expected a valid training config under 'config', found "),
    (_pop("model"), r"expected the network's weights \(a state dict\) under 'model', found nothing"),
    (_set("model", [1, 2]), r"expected the network's weights \(a state dict\) under 'model', found a list"),
    (_pop("epoch"), r"expected 'epoch' to be an integer in \[0, 3\], found None"),
    (_set("epoch", "3"), r"expected 'epoch' to be an integer in \[0, 3\], found '3'"),
    (_set("epoch", -7), r"expected 'epoch' to be an integer in \[0, 3\], found -7"),
    (_set("epoch", 9), r"expected 'epoch' to be an integer in \[0, 3\], found 9"),
    (_pop("history"), r"expected 'history' to be a list of 3 epochs' metrics, found nothing"),
    (_set("history", [{"epoch": 1}]), r"expected 'history' to be a list of 3 epochs' metrics, found a list"),
    (_pop("model_info"), r"expected 'model_info' with num_classes .* found None"),
    (_weight("fc.weight", (10, 64)), r"expected fc.weight of shape \(\d+, 32\) \(the weights of mlp \(width=32\)\)"),
    (lambda c: c["model"].pop("fc.bias"), r"expected the weights of mlp \(width=32\), found no fc.bias"),
    (_set("zero_train_error_epoch", "1"), r"expected 'zero_train_error_epoch' to be null or in \[1, 3\]"),
]


@pytest.mark.parametrize("change, message", CRAFTED)
def test_crafted_last_checkpoint_is_one_line_in_train_extract_and_dynamics(run, change, message):
    last = checkpoint_path(run)
    craft(last, change)
    before = last.read_bytes()
    for call in (
        lambda: train(config(), run, progress=False),
        lambda: extract_run(run, device="cpu", progress=False),
        lambda: run_dynamics(run, config=DynamicsConfig(acc_rep=2, r2_rep=2, device="cpu"), progress=False),
    ):
        with pytest.raises(RedrepError, match=rf"^{last}: {message}"):
            call()
    assert last.read_bytes() == before  # nothing retrained or overwritten
    assert not (run / "representations").exists() and not (run / "dynamics").exists()


def test_negative_epoch_no_longer_retrains_the_run(run):
    """The probe's `"epoch": -7`: it used to train the run again from there and overwrite it, rc 0."""
    craft(checkpoint_path(run), _set("epoch", -7))
    metrics = (run / "metrics.jsonl").read_bytes()
    r = CliRunner().invoke(main, ["train", "--out", str(run), "-q"])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert "last.pt: expected 'epoch' to be an integer in [0, 3], found -7" in r.stderr
    assert (run / "metrics.jsonl").read_bytes() == metrics


@pytest.mark.parametrize(
    "change, message",
    [
        (_pop("optimizer"), r"expected the SGD state of the network's 6 parameters under 'optimizer'"),
        (
            lambda c: c["optimizer"]["state"][0].__setitem__("momentum_buffer", torch.zeros(3)),
            r"expected the momentum of parameter 0 of shape \(32, \d+\), found shape \(3,\)",
        ),
        (
            lambda c: c["rng"].pop("numpy"),
            r"expected the gradient-scaler and random-number states .* could not restore them \(KeyError: 'numpy'\)",
        ),
        (
            lambda c: c["rng"].__setitem__("torch", torch.zeros(5, dtype=torch.uint8)),
            r"expected the .* states of a run under 'scaler' and 'rng', could not restore them \(RuntimeError: .*size",
        ),
    ],
)
def test_crafted_resume_state_is_one_line_before_training(tmp_path, change, message):
    run = tmp_path / "run"
    with pytest.raises(Stop):
        train(config(), run, progress=False, on_epoch_end=_stop_at(2))  # last.pt of epoch 2 out of 3
    last = checkpoint_path(run)
    craft(last, change)
    with pytest.raises(RedrepError, match=rf"^{last}: {message}"):
        train(config(), run, progress=False)
    assert load_checkpoint(last)["epoch"] == 2  # not trained further


class Stop(Exception):
    pass


def _stop_at(epoch):
    def stop(e, _m):
        if e == epoch:
            raise Stop

    return stop


def test_dynamics_refuses_a_checkpoint_of_another_run(runs, run):
    """The probe's reproduction: an epoch of a W = 64 run copied into a W = 32 run used to be analysed, rc 0."""
    foreign = checkpoint_path(run, 1)
    shutil.copy(checkpoint_path(runs / "w64", 1), foreign)
    r = CliRunner().invoke(main, ["dynamics", str(run), "--acc-rep", "2", "--r2-rep", "2", "--device", "cpu", "-q"])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert (
        f"{foreign}: expected a checkpoint of this run, found one of another config (width 64 where the run has 32)"
        in (r.stderr)
    )
    assert not (run / "dynamics").exists()
    r = CliRunner().invoke(main, ["extract", str(run), "--epoch", "1", "--device", "cpu", "-q"])
    assert r.exit_code == 2 and "width 64 where the run has 32" in r.stderr


def test_a_valid_checkpoint_passes_and_gives_its_config(runs):
    path = checkpoint_path(runs / "w32")
    ckpt = load_checkpoint(path)
    assert check_checkpoint(ckpt, config(), path, resume=True) == config().validated()
    kept = load_checkpoint(checkpoint_path(runs / "w32", 1))  # a kept epoch: no optimizer, which only resuming needs
    assert check_checkpoint(kept, config(), path).width == 32
    with pytest.raises(RedrepError, match=r"expected the SGD state"):
        check_checkpoint(kept, config(), path, resume=True)
