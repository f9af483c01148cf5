"""The training pipeline from the command line: train, resume, extract, ensemble, analyze."""

import csv
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cifar_archive import make_cifar_dir, write_cifar_archive
from redrep.cli import main
from redrep.nets.extract import load_run_model
from redrep.nets.train import TrainConfig, load_checkpoint, train
from redrep.storage.repset import RepresentationSet


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    return make_cifar_dir(tmp_path_factory)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


class Interrupt(Exception):
    pass


def test_wide_resnet_on_tiny_cifar_train_resume_extract_analyze(cifar_dir, tmp_path):
    data, _ = cifar_dir
    opts = ["--dataset", "cifar10", "--data-dir", data, "--arch", "wide_resnet16", "--widening-factor", "1"]
    opts += ["--epochs", "2", "--batch-size", "16", "--seed", "3"]
    straight = invoke("train", "--device", "cpu", "--out", tmp_path / "straight", *opts)
    assert straight.exit_code == 0, straight.output
    assert "2/2 epochs of wide_resnet16 on cifar10" in straight.stdout

    # the same run interrupted after its first epoch, then resumed by `redrep train --out RUN` alone
    cfg = TrainConfig(
        dataset="cifar10",
        data_dir=str(data),
        arch="wide_resnet16",
        widening_factor=1,
        epochs=2,
        batch_size=16,
        seed=3,
        device="cpu",
    )

    def stop(epoch, _m):
        raise Interrupt

    run = tmp_path / "run"
    with pytest.raises(Interrupt):
        train(cfg, run, progress=False, on_epoch_end=stop)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 1
    resumed = invoke("train", "--device", "cpu", "--out", run, "-q")
    assert (resumed.exit_code, resumed.output) == (0, "")  # -q: nothing printed
    assert json.loads((run / "summary.json").read_text())["epochs_done"] == 2
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # BN statistics and augmentation draws included
    again = invoke("train", "--device", "cpu", "--out", run)
    assert "already complete" in again.stdout and "2/2 epochs" in again.stdout

    ext = invoke("extract", "--device", "cpu", run, "-q")
    assert ext.exit_code == 0, ext.output
    assert "W = 64, 64 train / 32 test" in ext.output
    rs = RepresentationSet.load(run / "representations")
    assert rs.width == 64 and rs.meta["arch"] == "wide_resnet16" and rs.meta["epoch"] == 2

    # the features reproduce the network's own logits through the stored readout
    _, _, model = load_run_model(run)
    from redrep.nets.data import load_dataset

    ds = load_dataset("cifar10", data)
    with torch.no_grad():
        logits = model(ds.prepare(ds.x_test)).numpy()
    np.testing.assert_allclose(np.asarray(rs.features_test) @ rs.weight.T + rs.bias, logits, atol=1e-4)
    np.testing.assert_array_equal(rs.labels_test, ds.y_test.numpy())

    res_dir = tmp_path / "results"
    ana = invoke("analyze", "--repr", run / "representations", "--r2-rep", 2, "--acc-rep", 2, "--out", res_dir, "-q",
                 "--device", "cpu")  # fmt: skip
    assert ana.exit_code == 0, ana.output
    rows = list(csv.DictReader(open(res_dir / "results.csv")))
    full = [r for r in rows if r["metric"] == "accuracy" and r["split"] == "test" and int(r["chunk_size"]) == 64]
    assert float(full[0]["mean"]) == pytest.approx(rs.meta["test_accuracy"])  # the whole layer is the network


def test_mlp_runs_ensemble_into_a_set(tmp_path):
    common = ["--dataset", "parity-digits", "--arch", "mlp", "--width", "32", "--depth", "2", "--epochs", "2", "-q"]
    for seed in (0, 1):
        r = invoke("train", "--device", "cpu", "--out", tmp_path / f"r{seed}", "--seed", seed, *common)
        assert r.exit_code == 0, r.output
    ext = invoke("extract", "--device", "cpu", tmp_path / "r0", "-q")
    assert ext.exit_code == 0, ext.output
    ens = invoke(
        "ensemble", "--device", "cpu", tmp_path / "r0", tmp_path / "r1", "--into", tmp_path / "r0" / "representations"
    )
    assert ens.exit_code == 0, ens.output
    assert "ensemble of 2: error_inf = " in ens.output
    err = float(ens.output.split("error_inf = ")[1].split()[0])
    meta = json.loads((tmp_path / "r0" / "representations" / "meta.json").read_text())
    assert meta["error_inf"] == pytest.approx(err, abs=5e-5)
    assert meta["meta"]["ensemble"]["n_members"] == 2


def _check_one_line_error(result, match):
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.startswith("Error: ") and "\n" not in err, err
    assert match in err, err


def test_bad_configs_exit_2_with_one_line(tmp_path):
    out = tmp_path / "run"
    r = invoke("train", "--device", "cpu", "--out", out, "--dataset", "synthetic", "--arch", "resnet9000")
    _check_one_line_error(r, "arch: expected one of wide_resnet16, wide_resnet22")
    r = invoke("train", "--device", "cpu", "--out", out, "--dataset", "synthetic", "--arch", "mlp", "--width", "0")
    _check_one_line_error(r, "width: expected an integer >= 1, found 0")
    r = invoke("train", "--out", out, "--dataset", "cifar10", "--data-dir", tmp_path / "missing", "--arch", "mlp",
               "--device", "cpu")  # fmt: skip
    _check_one_line_error(r, "no cifar10 data found")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)) * 4)
    r = invoke(
        "train", "--device", "cpu", "--out", out, "--dataset", "cifar10", "--data-dir", bad, "--arch", "wide_resnet16"
    )
    _check_one_line_error(r, "expected the official cifar10 python archive")
    r = invoke("train", "--device", "cpu", "--out", out, "--dataset", "synthetic", "--arch", "wide_resnet16")
    _check_one_line_error(r, "expected image inputs")
    r = invoke("train", "--out", out, "--dataset", "synthetic", "--arch", "mlp", "--device", "tpu")
    _check_one_line_error(r, "device: expected one of auto, cpu, cuda")
    # the library names its parameter, the command adds its flag where the spelling differs
    r = invoke(
        "train", "--device", "cpu", "--out", out, "--dataset", "synthetic", "--arch", "mlp", "--weight-decay", "-1"
    )
    _check_one_line_error(r, "Error: weight_decay: expected a number >= 0.0, found -1.0 [--weight-decay]")
    r = invoke("train", "--device", "cpu", "--out", out, "--dataset", "synthetic", "--arch", "mlp", "--lr", "-1")
    _check_one_line_error(r, "Error: lr: expected a number > 0, found -1.0")
    assert r.stderr.endswith("found -1.0\n")  # the flag is spelled as the parameter: nothing added
    assert not out.exists()  # a bad config writes nothing


def test_resume_with_conflicting_options_and_extract_errors(tmp_path):
    run = tmp_path / "run"
    r = invoke("train", "--out", run, "--dataset", "synthetic", "--arch", "mlp", "--width", "8", "--epochs", "1", "-q",
               "--device", "cpu")  # fmt: skip
    assert r.exit_code == 0, r.output
    r = invoke("train", "--device", "cpu", "--out", run, "--width", "16", "-q")
    _check_one_line_error(r, "holds a run with another config (width: 8 -> 16)")
    r = invoke("extract", "--device", "cpu", run, "--epoch", "7", "-q")
    _check_one_line_error(r, "no checkpoint of epoch 7")
    r = invoke("extract", "--device", "cpu", tmp_path / "nothing", "-q")
    _check_one_line_error(r, "expected a run directory holding config.json")
    r = invoke("ensemble", "--device", "cpu", run)
    _check_one_line_error(r, "expected at least 2 runs or sets")


def test_cifar100_archive_trains_a_densenet(tmp_path):
    write_cifar_archive(tmp_path / "cifar-100-python.tar.gz", "cifar100", n_train=20, n_test=10)
    r = invoke(
        "train", "--device", "cpu", "--out", tmp_path / "run", "--dataset", "cifar100", "--data-dir", tmp_path,
        "--arch", "densenet40", "--widening-factor", "0.5", "--epochs", "1", "--batch-size", "10", "-q",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    r = invoke("extract", "--device", "cpu", tmp_path / "run", "-q")
    assert r.exit_code == 0, r.output
    rs = RepresentationSet.load(tmp_path / "run" / "representations")
    assert rs.n_classes == 100 and rs.width == 44 and rs.n_train == 20  # growth 4, 8 initial features


def test_train_compile_is_recorded(tmp_path, monkeypatch):
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: real_compile(model, backend="eager"))  # quick here
    args = ["--dataset", "synthetic", "--arch", "mlp", "--width", "8", "--depth", "1", "--epochs", "1"]
    r = invoke("train", "--out", tmp_path / "run", *args, "--compile", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "amp off, torch.compile, epochs 1-1" in r.stderr
    assert json.loads((tmp_path / "run" / "config.json").read_text())["compile"] is True
    assert "_orig_mod" not in "".join(load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["model"])
    r = invoke("train", "--out", tmp_path / "plain", *args, "--device", "cpu")
    assert r.exit_code == 0 and "torch.compile" not in r.stderr
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["compile"] is False
