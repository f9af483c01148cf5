"""The recipes from the command line: a squared-hinge network end to end, overrides, sweeps (CPU)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from redrep.cli import main
from redrep.core.accuracy import readout_predictions
from redrep.nets.config import TrainConfig, authors_lr
from redrep.nets.extract import load_run_model
from redrep.nets.train import load_run_data
from redrep.storage.repset import RepresentationSet

SMALL = ["--dataset", "parity-digits", "--width", "16", "--depth", "2", "--device", "cpu"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def one_line_error(result, match):
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.startswith("Error: ") and "\n" not in err, err
    assert match in err, err


def test_squared_hinge_network_train_extract_analyze_plot(tmp_path):
    run = tmp_path / "run"
    r = invoke("train", "--out", run, "--recipe", "authors-fc", *SMALL, "--epochs", "8", "--lr", "3e-3")
    assert r.exit_code == 0, r.output
    assert "8/8 epochs of mlp on parity-digits" in r.stdout
    # config.json holds every setting, the recipe's and the flags'
    cfg = json.loads((run / "config.json").read_text())
    assert set(cfg) == set(TrainConfig().to_dict())
    assert (cfg["recipe"], cfg["loss"], cfg["optimizer"], cfg["init"]) == (
        "authors-fc",
        "squared-hinge",
        "adam",
        "orthogonal",
    )
    assert (cfg["width"], cfg["depth"], cfg["epochs"], cfg["lr"], cfg["lr_rule"]) == (16, 2, 8, 3e-3, None)
    assert (cfg["weight_decay"], cfg["batch_size"], cfg["stop_loss"]) == (0.03, 256, 10 * 2.0**-23)

    r = invoke("extract", run, "--device", "cpu", "-q")
    assert r.exit_code == 0, r.output
    rs = RepresentationSet.load(run / "representations")
    assert rs.weight.shape == (1, 16) and rs.bias.shape == (1,) and rs.n_classes == 1
    assert rs.meta["loss"] == "squared-hinge" and set(np.unique(rs.labels_test)) == {0, 1}
    # the set reproduces the network's output, and its accuracy is the output's sign against the labels
    _, _, model = load_run_model(run)
    ds = load_run_data(TrainConfig.from_dict(cfg))
    with torch.no_grad():
        out = model(ds.x_test).numpy()
    np.testing.assert_allclose(np.asarray(rs.features_test) @ rs.weight.T + rs.bias, out, atol=1e-5)
    assert rs.meta["test_accuracy"] == np.mean(readout_predictions(out) == ds.y_test.numpy())
    final = json.loads((run / "summary.json").read_text())["final"]
    assert rs.meta["test_accuracy"] == pytest.approx(final["test_acc"])

    res = tmp_path / "results"
    r = invoke("analyze", "--repr", run / "representations", "--acc-rep", 4, "--r2-rep", 2, "--out", res, "-q",
               "--device", "cpu")  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(res / "results.csv")))
    full = [x for x in rows if x["metric"] == "accuracy" and x["split"] == "test" and int(x["chunk_size"]) == 16]
    assert float(full[0]["mean"]) == pytest.approx(rs.meta["test_accuracy"])  # the whole layer is the network
    half = [x for x in rows if x["metric"] == "accuracy" and x["split"] == "train" and int(x["chunk_size"]) == 8]
    assert 0.0 < float(half[0]["mean"]) < 1.0
    r = invoke("plot", "--results", res, "--out", tmp_path / "plots", "--format", "png", "--name", "fc", "-q")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "plots" / "fc.png").stat().st_size > 10_000


def test_flags_override_the_recipe_and_a_resume_keeps_its_own(tmp_path):
    run = tmp_path / "run"
    args = ["--recipe", "authors-fc", *SMALL, "--epochs", "2", "--stop-loss", "off", "--weight-decay", "0"]
    r = invoke("train", "--out", run, *args, "--optimizer", "sgd", "--lr", "0.01", "-q")
    assert r.exit_code == 0, r.output
    cfg = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    assert (cfg.optimizer, cfg.lr, cfg.stop_loss, cfg.weight_decay, cfg.loss) == (
        "sgd",
        0.01,
        None,
        0.0,
        "squared-hinge",
    )
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["lr"] == 0.01 and lines[1]["lr"] < 0.01  # sgd keeps its cosine schedule
    r = invoke("train", "--out", run, "--recipe", "demo-mlp", "-q")
    one_line_error(r, "recipe: the run was made with recipe authors-fc, found demo-mlp")
    r = invoke("train", "--out", run, "--recipe", "authors-fc")  # the same recipe, nothing else: complete
    assert r.exit_code == 0 and "already complete" in r.stdout
    # adam without --lr: the authors' rule, stated in config.json
    r = invoke(
        "train", "--out", tmp_path / "adam", *SMALL, "--arch", "mlp", "--optimizer", "adam", "--epochs", "1", "-q"
    )
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "adam" / "config.json").read_text())
    n = json.loads((tmp_path / "adam" / "summary.json").read_text())["model"]["num_params"]
    assert (cfg["recipe"], cfg["loss"], cfg["lr"], cfg["lr_rule"]) == (
        "paper-wrn",
        "cross-entropy",
        authors_lr(n, 2),
        "authors",
    )
    r = invoke(
        "train", "--out", tmp_path / "x", *SMALL, "--arch", "mlp", "--dataset", "digits", "--loss", "squared-hinge"
    )
    one_line_error(r, "loss: squared-hinge trains one output for two classes, found dataset digits with 10 classes")
    r = invoke("train", "--out", tmp_path / "x", "--recipe", "authors-fc", "--stop-loss", "small")
    assert r.exit_code == 2 and "expected a number or off, found 'small'" in r.stderr


def test_sweep_passes_the_recipe_to_every_run(tmp_path):
    out = tmp_path / "sweep"
    r = invoke(
        "sweep", "--recipe", "authors-fc", "--dataset", "parity-digits", "--depth", "2", "--widths", "8,16",
        "--seeds", "1", "--epochs", "3", "--stop-loss", "off", "--acc-rep", "2", "--r2-rep", "2", "--jobs", "1",
        "--device", "cpu", "--out", out, "-q",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    state = json.loads((out / "sweep.json").read_text())
    assert state["config"]["train"]["recipe"] == "authors-fc" and state["config"]["train"]["lr"] is None
    for w in (8, 16):
        run = out / "runs" / f"w{w:05d}_s0"
        cfg = json.loads((run / "config.json").read_text())
        n = json.loads((run / "summary.json").read_text())["model"]["num_params"]
        assert (cfg["recipe"], cfg["loss"], cfg["optimizer"], cfg["init"], cfg["width"]) == (
            "authors-fc",
            "squared-hinge",
            "adam",
            "orthogonal",
            w,
        )
        assert (cfg["lr"], cfg["lr_rule"]) == (authors_lr(n, 2), "authors")  # each width its own lr
        rs = RepresentationSet.load(run / "representations")
        assert rs.weight.shape == (1, w)
    assert (out / "report.html").is_file()
