"""The authors' fully connected recipe, piece by piece: squared hinge on one output, Adam and its lr rule,
orthogonal initialization, the stopping rule on the training loss, resuming (all on the CPU)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

import procs
import redrep.nets.train as tr
from redrep.core.validation import RedrepError
from redrep.nets.config import ORTHOGONAL_GAIN, TrainConfig, authors_lr
from redrep.nets.extract import load_run_model
from redrep.nets.models import create_model, initialize
from redrep.nets.train import load_checkpoint, predictions, squared_hinge, train


def fc(**kw):
    """The authors-fc recipe, small: parity-digits, width 16, depth 2, a few epochs."""
    base = dict(dataset="parity-digits", width=16, depth=2, epochs=6, device="cpu", eval_every=1)
    base.update(kw)
    return TrainConfig.from_recipe("authors-fc", **base)


def _lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.mark.parametrize("seed", [0, 1])
def test_squared_hinge_against_its_definition(seed):
    g = torch.Generator().manual_seed(seed)
    out = torch.randn(50, 1, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, 2, (50,), generator=g)
    direct = [max(0.0, 1.0 - (1.0 if int(c) == 1 else -1.0) * float(f)) ** 2 for f, c in zip(out[:, 0], y)]
    assert float(squared_hinge(out, y)) == pytest.approx(np.mean(direct), rel=1e-12)
    assert float(squared_hinge(out, y, reduction="sum")) == pytest.approx(np.sum(direct), rel=1e-12)
    # margins of 1 or more cost nothing
    assert float(squared_hinge(torch.tensor([[1.0], [-3.0]]), torch.tensor([1, 0]))) == 0.0


def test_predictions_of_one_output_are_its_sign_with_zero_as_class_0():
    out = torch.tensor([[0.5], [-0.5], [0.0], [-0.0], [1e-45], [-1e-45]])
    assert predictions(out).tolist() == [1, 0, 0, 0, 1, 0]
    # several outputs: the first of the largest, as argmax
    assert predictions(torch.tensor([[1.0, 1.0], [0.0, 2.0]])).tolist() == [0, 1]


@pytest.mark.parametrize("width, depth", [(16, 2), (64, 4), (5, 3)])
def test_orthogonal_init_makes_every_linear_layer_orthogonal(width, depth):
    torch.manual_seed(0)
    model = initialize(create_model("mlp", 1, (10,), width=width, depth=depth), "orthogonal")
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == depth + 1
    for m in linears:
        w = m.weight.detach().double()
        gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w  # orthonormal rows or columns, whichever fewer
        assert torch.allclose(gram, ORTHOGONAL_GAIN**2 * torch.eye(gram.shape[0], dtype=torch.float64), atol=1e-5)
        assert torch.count_nonzero(m.bias) == 0
    assert model.fc.out_features == 1


def test_authors_fc_run_one_output_adam_lr_rule_and_init(tmp_path):
    res = train(fc(), tmp_path / "run", progress=False)
    cfg = res.config
    # the lr of the rule, from the network's parameters, in the config and in every metrics line
    n = (10 * 16 + 16) + (16 * 16 + 16) + (16 + 1)
    assert (cfg.lr, cfg.lr_rule) == (authors_lr(n, 2), "authors")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (saved["lr"], saved["lr_rule"], saved["recipe"]) == (cfg.lr, "authors", "authors-fc")
    lines = _lines(tmp_path / "run" / "metrics.jsonl")
    assert [m["lr"] for m in lines] == [cfg.lr] * 6  # constant: no cosine schedule for Adam
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["lr"] == cfg.lr and summary["model"]["num_params"] == n and summary["model"]["num_outputs"] == 1
    assert summary["stop"] == {"reason": "epochs", "epoch": 6} and summary["complete"]
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert last["model"]["fc.weight"].shape == (1, 16)
    assert set(last["optimizer"]["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}  # Adam's state
    assert last["optimizer"]["param_groups"][0]["weight_decay"] == 0.03
    # epoch 0 is the orthogonal initialization drawn after seeding, as initial_model builds it
    _, _, model0 = load_run_model(tmp_path / "run", epoch=0)
    again = tr.initial_model(cfg, 2, (10,))
    assert all(torch.equal(a, b) for a, b in zip(model0.state_dict().values(), again.state_dict().values()))
    w0 = model0.body[2].weight.detach().double()
    assert torch.allclose(w0 @ w0.T, torch.eye(16, dtype=torch.float64), atol=1e-5)
    # the loss and accuracy the run reports are those of the sign rule and the squared hinge, recomputed here
    _, _, model = load_run_model(tmp_path / "run")
    ds = tr.load_run_data(cfg)
    with torch.no_grad():
        out = model(ds.x_train)
    assert res.final["train_eval_acc"] == pytest.approx(float((predictions(out) == ds.y_train).double().mean()))
    assert res.final["train_eval_loss"] == pytest.approx(float(squared_hinge(out, ds.y_train)), rel=1e-5)


def test_the_stopping_rule_ends_training_and_is_recorded(tmp_path):
    cfg = fc(epochs=200, lr=3e-3, stop_loss=0.3, eval_every=4, checkpoint_epochs=(1,))
    res = train(cfg, tmp_path / "run", progress=False)
    e = res.epochs_done
    assert e < 200 and e % 4 == 0 and res.stop["reason"] == "stop_loss" and res.stop["epoch"] == e
    hist = res.history
    assert hist[-1]["train_eval_loss"] == res.stop["train_loss"] < 0.3
    # statistics every 4 epochs: the rule reads only those, and the first below the threshold stops
    evaluated = [m for m in hist if m["train_eval_loss"] is not None]
    assert [m["epoch"] for m in evaluated] == list(range(4, e + 1, 4))
    assert all(m["train_eval_loss"] >= 0.3 for m in evaluated[:-1])
    assert all(m["test_acc"] is None for m in hist if m["epoch"] % 4)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stop"] == res.stop and summary["complete"] and summary["epochs_done"] == e
    assert sorted(tr.list_checkpoints(tmp_path / "run")) == [0, 1, e]  # the stopping epoch is kept
    # a finished run is not trained further
    again = train(cfg, tmp_path / "run", progress=False)
    assert again.epochs_done == e and again.resumed_from == e and again.stop == res.stop and again.complete


def _cli(run, *extra, **env):
    args = ["train", "--out", run, "--recipe", "authors-fc", "--dataset", "parity-digits", "--width", "32"]
    args += ["--depth", "2", "--epochs", "40", "--lr", "3e-3", "--stop-loss", "0.25", "--eval-every", "2"]
    args += ["--checkpoint-epochs", "2", "--device", "cpu", "-q", *extra]
    return procs.redrep(*args, OMP_NUM_THREADS=1, **env)


def test_kill_9_resumes_the_recipe_bit_for_bit(tmp_path):
    straight = _cli(tmp_path / "a")
    assert straight.returncode == 0, straight.stderr
    stop = json.loads((tmp_path / "a" / "summary.json").read_text())["stop"]
    assert stop["reason"] == "stop_loss" and 6 < stop["epoch"] < 40, stop
    run = tmp_path / "b"
    for point, done in (("train:epoch:3:trained", 2), (f"train:epoch:{stop['epoch'] - 2}:checkpointed", None)):
        r = _cli(run, REDREP_CRASH_AT=point)
        assert r.returncode == -signal.SIGKILL, r.stderr
        if done is not None:
            assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == done
    r = _cli(run)
    assert r.returncode == 0, r.stderr
    assert json.loads((run / "summary.json").read_text())["stop"] == stop
    a, b = (load_checkpoint(d / "checkpoints" / "last.pt") for d in (tmp_path / "a", run))
    assert a["epoch"] == b["epoch"] == stop["epoch"] and b["stop"] == stop
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(x, y) for x, y in zip(_adam_state(a), _adam_state(b)))
    strip = [{k: v for k, v in m.items() if "seconds" not in k} for m in _lines(tmp_path / "a" / "metrics.jsonl")]
    assert strip == [{k: v for k, v in m.items() if "seconds" not in k} for m in _lines(run / "metrics.jsonl")]


def _adam_state(ckpt):
    return [t for s in ckpt["optimizer"]["state"].values() for t in (s["exp_avg"], s["exp_avg_sq"])]


class Interrupt(Exception):
    pass


@pytest.mark.parametrize(
    "craft, match",
    [
        (lambda ck: ck["optimizer"]["state"][0].update(exp_avg=torch.zeros(3)),
         r"expected Adam's first moment of parameter 0 of shape \(16, 10\), found shape \(3,\)"),
        (lambda ck: ck["optimizer"]["state"][2].update(exp_avg_sq=[1.0]),
         r"expected Adam's second moment of parameter 2 of shape \(16, 16\), found a list"),
        (lambda ck: ck.update(stop="yes"), r"expected 'stop' to be null or why training ended at epoch 1, found yes"),
        (lambda ck: ck.update(stop={"reason": "stop_loss", "epoch": 7}), r"expected 'stop' to be null or why training"),
    ],
)  # fmt: skip
def test_a_crafted_adam_state_or_stop_is_refused_in_one_line(tmp_path, craft, match):
    cfg = fc(epochs=3)

    def interrupt(epoch, _m):
        raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg, tmp_path / "run", progress=False, on_epoch_end=interrupt)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    ck = torch.load(last, weights_only=True)
    craft(ck)
    torch.save(ck, last)
    with pytest.raises(RedrepError, match=match) as e:
        train(cfg, tmp_path / "run", progress=False)
    assert "\n" not in str(e.value)
