import contextlib
import json
import os
import shutil
import signal
import subprocess
import types
from pathlib import Path

import pytest
import torch

import procs
import redrep.nets.train as tr
from redrep.core.device import resolve_device
from redrep.core.validation import RedrepError
from redrep.nets.train import (
    PAPER_CHECKPOINT_EPOCHS,
    RESUME_ONLY_KEYS,
    TrainConfig,
    autocast_context,
    cosine_lr,
    list_checkpoints,
    load_checkpoint,
    resolve_amp,
    train,
)


def small(**kw):
    base = dict(
        dataset="synthetic", arch="mlp", width=32, depth=2, epochs=4, batch_size=64, lr=0.05, seed=0, device="cpu"
    )
    base.update(kw)
    return TrainConfig(**base)


def _lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


# ------------------------------------------------------------------ pieces
@pytest.mark.parametrize("epochs", [1, 7, 200])
def test_cosine_lr_matches_torch_scheduler_stepped_per_epoch(epochs):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=1e-5)
    for e in range(epochs):
        assert cosine_lr(e, epochs, 0.1, 1e-5) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9, abs=1e-12)
        opt.step()
        sched.step()
    assert cosine_lr(0, epochs, 0.1, 1e-5) == 0.1
    assert cosine_lr(epochs, epochs, 0.1, 1e-5) == pytest.approx(1e-5)


def test_device_and_amp_resolution(monkeypatch):
    assert resolve_device("cpu") == "cpu"  # the one device decision: a name, which torch.device takes
    assert resolve_amp(None, torch.device("cpu")) is None
    assert autocast_context(torch.device("cpu"), None) is contextlib.nullcontext
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(RedrepError, match=r"device: expected a CUDA GPU for 'cuda', found none"):
        resolve_device("cuda")
    with pytest.raises(RedrepError, match=r"amp: mixed precision needs a CUDA device, found cpu"):
        resolve_amp(True, torch.device("cpu"))
    with pytest.raises(RedrepError, match=r"device: expected one of auto, cpu, cuda"):
        resolve_device("tpu")
    # with a GPU present, auto picks it and amp defaults on (bf16 where supported, else fp16)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_amp(None, torch.device("cuda")) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_amp(None, torch.device("cuda")) == torch.float16
    assert resolve_amp(False, torch.device("cuda")) is None


def test_config_defaults_are_the_authors_recipe():
    c = TrainConfig().validated()
    assert (c.dataset, c.arch, c.widening_factor, c.epochs, c.batch_size) == ("cifar10", "wide_resnet28", 8.0, 200, 128)
    assert (c.lr, c.lr_min, c.momentum, c.weight_decay, c.label_smoothing) == (0.1, 1e-5, 0.9, 5e-4, 0.0)
    assert c.checkpoint_epochs == PAPER_CHECKPOINT_EPOCHS and c.device == "auto" and c.amp is None
    assert TrainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"arch": "vgg"}, r"arch: expected one of .*found 'vgg'"),
        ({"width": 0}, r"width: expected an integer >= 1, found 0"),
        ({"epochs": 0}, r"epochs: expected an integer >= 1"),
        ({"lr": -1.0}, r"lr: expected a number > 0"),
        ({"lr_min": 1.0}, r"lr_min: expected a number <= 0.05"),
        ({"label_smoothing": 1.5}, r"label_smoothing: expected a number <= 0.999"),
        ({"dataset": "emnist"}, r"dataset: expected one of .*found 'emnist'"),
        ({"device": "gpu"}, r"device: expected one of auto, cpu, cuda"),
        ({"checkpoint_epochs": (-1,)}, r"checkpoint_epochs: expected an integer >= 0"),
        ({"arch": "wide_resnet16", "width": None, "depth": None, "widening_factor": -2}, r"widening_factor"),
    ],
)
def test_bad_configs(kw, match, tmp_path):
    with pytest.raises(RedrepError, match=match):
        train(small(**kw), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # nothing written for a bad config


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(RedrepError, match=r"expected only TrainConfig fields, found unknown colour"):
        TrainConfig.from_dict({"colour": "red"})


# ------------------------------------------------------------------- runs
def test_run_directory_contents(tmp_path):
    cfg = small(epochs=5)
    res = train(cfg, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    assert res.epochs_done == 5 and res.resumed_from == 0 and res.device == cfg.device  # the device asked for
    # the initialization, the paper's epochs below 5, and the last
    assert sorted(list_checkpoints(run)) == [0, 1, 2, 5]
    ck = load_checkpoint(run / "checkpoints" / "epoch_0002.pt")
    assert ck["epoch"] == 2 and ck["config"] == json.loads((run / "config.json").read_text())
    # a kept epoch holds the network, not what only resuming needs (that is last.pt's)
    assert {"model", "history", "model_info"} <= set(ck) and not set(RESUME_ONLY_KEYS) & set(ck)
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert {"model", "optimizer", "scaler", "rng", "history", "model_info"} <= set(last) and last["epoch"] == 5
    assert set(last["rng"]) >= {"torch", "numpy", "python", "data"}
    kept5 = load_checkpoint(run / "checkpoints" / "epoch_0005.pt")["model"]
    assert kept5.keys() == last["model"].keys()
    assert all(bool((kept5[k] == v).all()) for k, v in last["model"].items())  # the same network as last.pt
    lines = _lines(run / "metrics.jsonl")
    assert [m["epoch"] for m in lines] == [1, 2, 3, 4, 5]
    keys = {"epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "seconds"}
    assert all(keys <= set(m) for m in lines)
    assert [m["lr"] for m in lines] == [cosine_lr(e, 5, 0.05, 1e-5) for e in range(5)]
    assert lines == res.history
    summary = json.loads((run / "summary.json").read_text())
    assert summary["complete"] and summary["epochs_done"] == 5 and summary["kept_checkpoints"] == [0, 1, 2, 5]
    # the training loss goes down on this easy task
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]


def test_mlp_on_digits_reaches_zero_training_error(tmp_path):
    cfg = TrainConfig(
        dataset="digits",
        arch="mlp",
        width=256,
        depth=2,
        epochs=15,
        batch_size=32,
        lr=0.1,
        weight_decay=0.0,
        device="cpu",
    )
    res = train(cfg, tmp_path / "run", progress=False)
    e0 = res.zero_train_error_epoch
    assert e0 is not None and e0 <= 15
    hist = res.history
    assert hist[e0 - 1]["train_eval_acc"] == 1.0
    assert all(m["train_eval_acc"] < 1.0 for m in hist[: e0 - 1])  # the first such epoch
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["zero_train_error_epoch"] == e0
    assert hist[-1]["test_acc"] > 0.9


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("seed", [0, 3])
def test_interrupted_run_resumes_exactly(tmp_path, seed):
    cfg = small(seed=seed, epochs=5, checkpoint_epochs=(2,))
    straight = train(cfg, tmp_path / "a", progress=False)

    def stop(epoch, _m):
        if epoch == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg, tmp_path / "b", progress=False, on_epoch_end=stop)
    assert load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["epoch"] == 3
    # a half-written metrics line, as a kill during the append would leave
    with open(tmp_path / "b" / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 4, "lr"')
    resumed = train(cfg, tmp_path / "b", progress=False)
    assert resumed.resumed_from == 3 and resumed.epochs_done == 5
    assert [m["epoch"] for m in _lines(tmp_path / "b" / "metrics.jsonl")] == [1, 2, 3, 4, 5]
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    strip = [{k: v for k, v in m.items() if "seconds" not in k} for m in straight.history]
    assert strip == [{k: v for k, v in m.items() if "seconds" not in k} for m in resumed.history]


def test_resume_refuses_another_config_and_other_folders(tmp_path):
    train(small(epochs=2), tmp_path / "run", progress=False)
    with pytest.raises(RedrepError, match=r"holds a run with another config \(lr: 0.05 -> 0.1\)"):
        train(small(epochs=2, lr=0.1), tmp_path / "run", progress=False)
    # where and how it runs may change
    again = train(small(epochs=2, eval_batch_size=7), tmp_path / "run", progress=False)
    assert again.resumed_from == 2 and again.epochs_done == 2  # complete: nothing re-run
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(RedrepError, match=r"other: expected a new or empty folder or a redrep run"):
        train(small(), tmp_path / "other", progress=False)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_damaged_checkpoint_is_a_clear_error(tmp_path):
    train(small(epochs=1), tmp_path / "run", progress=False)
    (tmp_path / "run" / "checkpoints" / "last.pt").write_bytes(b"garbage")
    with pytest.raises(RedrepError, match=r"last.pt: expected a redrep checkpoint, could not read it") as e:
        train(small(epochs=2), tmp_path / "run", progress=False)
    assert "\n" not in str(e.value)


def test_divergence_is_reported(tmp_path):
    with pytest.raises(RedrepError, match=r"training diverged at epoch 1 .*lower lr \(now 1e\+30\)"):
        train(small(lr=1e30, epochs=2, momentum=0.0), tmp_path / "run", progress=False)


def _cli(run, *extra, epochs=6, **env):
    args = ["train", "--out", run, "--dataset", "synthetic", "--arch", "mlp", "--width", "64", "--depth", "2"]
    args += ["--device", "cpu"]
    args += ["--epochs", str(epochs), "--batch-size", "64", "--lr", "0.05", "--checkpoint-epochs", "2", "-q", *extra]
    # one thread: OpenMP spinning makes a run crawl when the two cores are shared with other tests
    return procs.redrep(*args, OMP_NUM_THREADS=1, **env)


def _same_model(a, b):
    a, b = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_kill_9_loses_at_most_the_epoch_in_progress(tmp_path):
    """A real process killed (SIGKILL) at a named point of epoch 4 resumes as if never stopped: no timing."""
    straight = _cli(tmp_path / "a")
    assert straight.returncode == 0, straight.stderr
    run = tmp_path / "b"
    r = _cli(run, REDREP_CRASH_AT="train:config-written")  # the very first start
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert (run / "config.json").is_file() and not (run / "checkpoints" / "last.pt").exists()
    for point, done in (("train:epoch:4:trained", 3), ("train:epoch:5:checkpointed", 5)):
        r = _cli(run, REDREP_CRASH_AT=point)
        assert r.returncode == -signal.SIGKILL, r.stderr
        assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == done
    r = _cli(run)
    assert (r.returncode, r.stdout) == (0, ""), r.stderr  # -q: nothing printed
    assert json.loads((run / "summary.json").read_text())["epochs_done"] == 6
    assert [m["epoch"] for m in _lines(run / "metrics.jsonl")] == list(range(1, 7))
    for name in ("last.pt", "epoch_0000.pt", "epoch_0002.pt", "epoch_0006.pt"):
        assert _same_model(tmp_path / "a" / "checkpoints" / name, run / "checkpoints" / name), name
    assert sorted(list_checkpoints(run)) == [0, 2, 6]


def test_epoch_0_is_the_initialization_and_resumes_exactly(tmp_path):
    cfg = small(epochs=3, checkpoint_epochs=())
    straight = train(cfg, tmp_path / "a", progress=False)
    ck0 = load_checkpoint(tmp_path / "a" / "checkpoints" / "epoch_0000.pt")
    assert ck0["epoch"] == 0 and ck0["history"] == [] and ck0["zero_train_error_epoch"] is None
    tr.seed_everything(cfg.seed)
    init = tr.create_model("mlp", 4, (16,), width=32, depth=2).state_dict()
    assert init.keys() == ck0["model"].keys() and all(torch.equal(init[k], ck0["model"][k]) for k in init)

    def stop(epoch, _m):
        raise Interrupt

    # a run stopped right after its first checkpoint (epoch 0 only) continues bit for bit
    with pytest.raises(Interrupt):
        train(cfg, tmp_path / "b", progress=False, on_epoch_end=stop)
    shutil.copyfile(tmp_path / "b" / "checkpoints" / "epoch_0000.pt", tmp_path / "b" / "checkpoints" / "last.pt")
    resumed = train(cfg, tmp_path / "b", progress=False)
    assert resumed.resumed_from == 0 and resumed.epochs_done == 3
    assert _same_model(tmp_path / "a" / "checkpoints" / "last.pt", tmp_path / "b" / "checkpoints" / "last.pt")
    strip = [{k: v for k, v in m.items() if "seconds" not in k} for m in straight.history]
    assert strip == [{k: v for k, v in m.items() if "seconds" not in k} for m in resumed.history]


@pytest.mark.parametrize(
    "leftovers", [{"metrics.jsonl": ""}, {"metrics.jsonl": '{"epoch": 1, "lr"', "checkpoints": None}]
)
def test_folder_killed_at_its_first_start_starts_over(tmp_path, leftovers):
    run = tmp_path / "run"
    run.mkdir()
    for name, text in leftovers.items():
        if text is None:
            (run / name).mkdir()
        else:
            (run / name).write_text(text)
    res = train(small(epochs=2), run, progress=False)
    assert res.resumed_from == 0 and [m["epoch"] for m in _lines(run / "metrics.jsonl")] == [1, 2]


def test_a_checkpoint_in_a_folder_without_config_is_not_discarded(tmp_path):
    train(small(epochs=1), tmp_path / "run", progress=False)
    (tmp_path / "run" / "config.json").unlink()
    with pytest.raises(RedrepError, match=r"expected a new or empty folder or a redrep run"):
        train(small(epochs=2), tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


def test_second_training_into_a_run_exits_2_naming_the_first(tmp_path):
    run = tmp_path / "run"
    with procs.lock_holder(run, what="train") as holder:
        r = _cli(run, epochs=1)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    assert f"{run}: locked by another train (pid {holder.pid} on " in r.stderr
    assert not run.exists()


def test_a_network_too_big_for_memory_is_refused_before_allocating(tmp_path, monkeypatch):
    r = _cli(tmp_path / "run", "--width", "100000000", epochs=1)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("Error: width: mlp with width=100000000 has 10,000,")
    assert "choose a smaller width" in r.stderr
    # a Wide-ResNet names its widening factor; the memory is the device's (here made small)
    cfg = TrainConfig(arch="wide_resnet16", widening_factor=1).validated()
    images = types.SimpleNamespace(num_classes=10, in_shape=(3, 32, 32))
    n = sum(p.numel() for p in tr.create_model("wide_resnet16", 10, (3, 32, 32), widening_factor=1).parameters())
    monkeypatch.setattr(tr, "device_memory", lambda _d: 12 * n - 1)
    with pytest.raises(RedrepError, match=rf"^widening_factor: wide_resnet16 with widening_factor=1.0 has {n:,} "):
        tr._check_model_fits(cfg, images, torch.device("cpu"))
    monkeypatch.setattr(tr, "device_memory", lambda _d: 12 * n)
    tr._check_model_fits(cfg, images, torch.device("cpu"))


def test_full_disk_during_training_is_one_line_and_resumable(tmp_path):
    big = dict(epochs=3)
    straight = _cli(tmp_path / "a", "--width", "256", **big)
    assert straight.returncode == 0
    ck = (tmp_path / "a" / "checkpoints" / "last.pt").stat().st_size
    with procs.small_disk(tmp_path / "disk", (3 * ck) // 1024) as disk:
        run = disk / "run"
        r = _cli(run, "--width", "256", **big)
        assert r.returncode == 2, r.stderr
        assert r.stderr == f"Error: no space left on device writing {run}\n"
        # what is there is whole: a loadable checkpoint, no temporary file
        done = load_checkpoint(run / "checkpoints" / "last.pt")["epoch"]
        assert done < 3
        assert not [p for p in run.rglob(".*")], list(run.rglob(".*"))
        subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)
        r = _cli(run, "--width", "256", **big)
        assert r.returncode == 0, r.stderr
        assert _same_model(tmp_path / "a" / "checkpoints" / "last.pt", run / "checkpoints" / "last.pt")


def test_a_training_holds_its_folder_against_another_process(tmp_path):
    run = tmp_path / "run"
    seen = []

    def second_writer(epoch, _m):
        if epoch == 1:
            seen.append(_cli(run, epochs=2))

    train(small(epochs=2), run, progress=False, on_epoch_end=second_writer)
    (r,) = seen
    assert r.returncode == 2 and f"{run}: locked by another train (pid {os.getpid()} on " in r.stderr
    assert [m["epoch"] for m in _lines(run / "metrics.jsonl")] == [1, 2]  # not 4 lines from two writers


def test_compile_is_an_option_that_leaves_checkpoints_and_resuming_alone(tmp_path, monkeypatch):
    compiled, real_compile = [], torch.compile

    def compile_eager(model, **kw):  # dynamo without code generation: quick on the CPU, and the same arithmetic
        compiled.append(model)
        return real_compile(model, backend="eager")

    def stop(epoch, _m):
        if epoch == 2:
            raise Interrupt

    monkeypatch.setattr(torch, "compile", compile_eager)
    plain = train(small(epochs=3), tmp_path / "plain", progress=False)
    assert compiled == []
    with pytest.raises(Interrupt):
        train(small(epochs=3, compile=True), tmp_path / "run", progress=False, on_epoch_end=stop)
    assert len(compiled) == 1 and json.loads((tmp_path / "run" / "config.json").read_text())["compile"] is True
    a, b = (
        load_checkpoint(d / "checkpoints" / "epoch_0002.pt")["model"] for d in (tmp_path / "plain", tmp_path / "run")
    )
    assert a.keys() == b.keys()  # the network's own state_dict, not its compiled wrapper's ("_orig_mod." ...)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # resumed without compile (where and how a run trains may change), it ends where the plain run did
    resumed = train(small(epochs=3), tmp_path / "run", progress=False)
    assert resumed.resumed_from == 2 and len(compiled) == 1
    assert _same_model(tmp_path / "plain" / "checkpoints" / "last.pt", tmp_path / "run" / "checkpoints" / "last.pt")
    assert [m["test_loss"] for m in resumed.history] == [m["test_loss"] for m in plain.history]
    with pytest.raises(RedrepError, match=r"compile: expected true or false, found 'yes'"):
        train(small(compile="yes"), tmp_path / "bad", progress=False)
