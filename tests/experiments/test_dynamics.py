"""`redrep dynamics`: the chunk analysis at every checkpoint against `redrep analyze`, epoch 0, bad input."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner

import redrep.nets.train as train_mod
from redrep.cli import main
from redrep.core.analysis import ChunkAnalysis
from redrep.core.summary import ChunkCurves, Criterion, summarize
from redrep.core.validation import RedrepError
from redrep.experiments.dynamics import DynamicsConfig, read_dynamics_csv, run_dynamics
from redrep.nets.train import TrainConfig, list_checkpoints, load_checkpoint, train
from redrep.storage.results import load_results
from results_factory import read_csv


def _tiny(**kw):
    base = dict(dataset="synthetic", data_dir=None, arch="mlp", width=16, depth=2, epochs=3, lr=0.05,
                checkpoint_epochs=(1,), device="cpu", seed=3)  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A trained run, and the weights its network had when train() built it."""
    run_dir = tmp_path_factory.mktemp("dyn") / "run"
    built = []
    real = train_mod.create_model

    def spy(*a, **k):
        m = real(*a, **k)
        if not any(p.is_meta for p in m.parameters()):  # train() may build a shapes-only model first
            built.append({k: v.clone() for k, v in m.state_dict().items()})
        return m

    train_mod.create_model = spy
    try:
        train(_tiny(), run_dir, progress=False)
    finally:
        train_mod.create_model = real
    ckpt0 = run_dir / "checkpoints" / "epoch_0000.pt"
    # train() keeps epoch 0 itself; without it (older runs) dynamics rebuilds the initialization: test that path
    shutil.move(ckpt0, run_dir.parent / "epoch_0000.pt")
    res = run_dynamics(run_dir, config=DynamicsConfig(acc_rep=5, r2_rep=3, seed=2, device="cpu"), progress=False)
    return run_dir, res, built[0]


def test_last_epoch_equals_redrep_analyze_on_the_extracted_set(run):
    run_dir, res, _ = run
    runner = CliRunner()
    r = runner.invoke(main, ["extract", str(run_dir), "--device", "cpu", "-q"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        main,
        ["analyze", "--repr", str(run_dir / "representations"), "--acc-rep", "5", "--r2-rep", "3", "--seed", "2",
         "--device", "cpu", "--refine", "0", "--out", str(run_dir / "analyzed"), "-q"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    ref = read_csv(run_dir / "analyzed" / "results.csv")
    dyn = [r for r in read_csv(res.out / "dynamics.csv") if r["epoch"] == "3"]
    key = ("metric", "split", "chunk_size")
    assert len(dyn) == len(ref) > 0
    got = {tuple(r[k] for k in key): r for r in dyn}
    for row in ref:
        d = got[tuple(row[k] for k in key)]
        assert (d["mean"], d["sem"], d["n"]) == (row["mean"], row["sem"], row["n"])  # exact, as written


def test_every_epoch_is_there_with_its_summary(run):
    run_dir, res, _ = run
    doc = json.loads((res.out / "dynamics.json").read_text())
    assert doc["epochs"] == [0, 1, 3] == sorted({r["epoch"] for r in read_dynamics_csv(res.out / "dynamics.csv")})
    summary = json.loads((run_dir / "summary.json").read_text())
    assert doc["zero_train_error_epoch"] == summary["zero_train_error_epoch"]
    assert doc["epoch0"] == "rebuilt from the run's seed" and doc["seed"] == 2
    for e in doc["epochs"]:
        results = load_results(res.out / "epochs" / f"epoch_{e:04d}")
        s = summarize(ChunkCurves.from_results(results))
        assert doc["w_c_star"][str(e)] == s.w_c_star and doc["n_clones"][str(e)] == s.n_clones
        assert results.doc["params"]["seed"] == 2 and results.doc["params"]["chunk_sizes"] == [1, 2, 4, 8, 16]
    assert (res.out / "figures" / "dynamics.png").stat().st_size > 0
    html = (res.out / "dynamics.html").read_text()
    assert "null baseline" in html and "<img" in html


def test_epoch_0_is_the_network_train_built(run, tmp_path):
    run_dir, _, init = run
    from redrep.experiments.dynamics import _model_at, run_checkpoints

    _, last = run_checkpoints(run_dir)
    model, source = _model_at(None, 0, last)
    assert source == "rebuilt from the run's seed"
    state = model.state_dict()
    assert state.keys() == init.keys() and all(torch.equal(state[k], init[k]) for k in init)
    saved = load_checkpoint(run_dir.parent / "epoch_0000.pt")  # what train() kept at epoch 0
    assert saved["epoch"] == 0 and all(torch.equal(state[k], saved["model"][k]) for k in init)
    # and the features of epoch 0 differ from those after training
    e0 = load_results(run_dir / "dynamics" / "epochs" / "epoch_0000").rows
    e3 = load_results(run_dir / "dynamics" / "epochs" / "epoch_0003").rows
    assert [r["mean"] for r in e0] != [r["mean"] for r in e3]


def test_the_kept_epoch_0_checkpoint_gives_the_same_numbers(run, tmp_path):
    run_dir, res, _ = run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("dynamics"))
    shutil.copy(run_dir.parent / "epoch_0000.pt", copy / "checkpoints" / "epoch_0000.pt")
    again = run_dynamics(copy, config=DynamicsConfig(acc_rep=5, r2_rep=3, seed=2, device="cpu"), progress=False)
    assert again.doc["epoch0"] == "checkpoint" and again.epochs[0]["model"] == "checkpoint"
    assert (again.out / "dynamics.csv").read_text() == (res.out / "dynamics.csv").read_text()


def test_a_second_call_reads_the_epochs_back(run, tmp_path, monkeypatch):
    run_dir, res, _ = run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)

    def boom(self, repset):
        raise AssertionError("recomputed an epoch that was already analysed")

    monkeypatch.setattr(ChunkAnalysis, "fit", boom)
    again = run_dynamics(copy, config=DynamicsConfig(acc_rep=5, r2_rep=3, seed=2, device="cpu"), progress=False)
    assert (again.out / "dynamics.csv").read_text() == (res.out / "dynamics.csv").read_text()
    # other thresholds of w_c*: only the reading changes, the epochs are read back
    stricter = Criterion(train_error_max=0.0, r2_min=0.99)
    third = run_dynamics(copy, config=DynamicsConfig(acc_rep=5, r2_rep=3, seed=2, device="cpu", criterion=stricter),
                         progress=False)  # fmt: skip
    assert third.doc["params"]["criterion"]["train_error_max"] == 0.0
    assert third.doc["params"]["criterion"]["r2_min"] == 0.99
    assert "mean training error ≤ 0, and mean held-out R² ≥ 0.99" in " ".join(third.doc["reading"])
    assert (third.out / "dynamics.csv").read_text() == (res.out / "dynamics.csv").read_text()
    # other analysis parameters: refused without force, nothing touched; recomputed with it
    before = {p: p.read_bytes() for p in sorted(copy.joinpath("dynamics").rglob("*")) if p.is_file()}
    other = DynamicsConfig(acc_rep=5, r2_rep=4, seed=4, device="cpu")
    expected = (
        r"dynamics: holds the dynamics of another analysis \(r2_rep: 3 -> 4; seed: 2 -> 4\); "
        r"expected the same options .* or force \(--force\) to replace it$"
    )
    with pytest.raises(RedrepError, match=expected):
        run_dynamics(copy, config=other, progress=False)
    assert {p: p.read_bytes() for p in sorted(copy.joinpath("dynamics").rglob("*")) if p.is_file()} == before
    with pytest.raises(AssertionError, match="recomputed"):
        run_dynamics(copy, config=other, progress=False, force=True)


def test_overwrite_needs_force_cli(run, tmp_path):
    """`redrep dynamics` with other analysis options: one line and exit 2; --force replaces, the same reads back."""
    run_dir, res, _ = run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    runner = CliRunner()
    base = ["dynamics", str(copy), "--device", "cpu", "--acc-rep", "5", "--r2-rep", "3", "-q"]
    r = runner.invoke(main, [*base, "--seed", "2"])  # the same options: read back, same numbers
    assert r.exit_code == 0, r.output
    assert (copy / "dynamics" / "dynamics.csv").read_text() == (res.out / "dynamics.csv").read_text()
    r = runner.invoke(main, [*base, "--seed", "5"])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert "seed: 2 -> 5" in r.output and "--force" in r.output and "Traceback" not in r.output
    # a stale epoch folder of the replaced analysis goes away with it
    (copy / "dynamics" / "epochs" / "epoch_0099").mkdir()
    r = runner.invoke(main, [*base, "--seed", "5", "--force"])
    assert r.exit_code == 0, r.output
    doc = json.loads((copy / "dynamics" / "dynamics.json").read_text())
    assert doc["params"]["seed"] == 5 and not (copy / "dynamics" / "epochs" / "epoch_0099").exists()
    # another run's folder as --out: refused, naming both runs
    r = runner.invoke(main, ["dynamics", str(run_dir), "--out", str(copy / "dynamics"), "--device", "cpu",
                             "--acc-rep", "5", "--r2-rep", "3", "--seed", "5", "-q"])  # fmt: skip
    assert r.exit_code == 2 and f"run: {copy.resolve()} -> {run_dir.resolve()}" in r.output, r.output
    # a folder of other files: refused, even before anything is computed
    other = tmp_path / "notdyn"
    other.mkdir()
    (other / "mine.txt").write_text("keep")
    r = runner.invoke(main, [*base, "--out", str(other)])
    assert r.exit_code == 2 and "found other files" in r.output and (other / "mine.txt").read_text() == "keep"


def test_refined_epochs(run, tmp_path):
    run_dir, res, _ = run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("dynamics"))
    # a criterion that R² decides (these three epochs fit no training set), so that there is a w_c* to refine
    crit = Criterion(train_tolerance=10**6, r2_min=0.99)
    cfg = DynamicsConfig(acc_rep=5, r2_rep=3, seed=2, device="cpu", refine=1, criterion=crit)
    again = run_dynamics(copy, config=cfg, progress=False)
    assert again.doc["params"]["refine"] == 1 and again.doc["params"]["criterion"] == crit.to_dict()
    refined = 0
    for e in again.epochs:
        plain = load_results(res.out / e["results"])  # the same epoch, analysed without refinement
        first = summarize(ChunkCurves.from_results(plain), crit).w_c_star
        ref = load_results(again.out / e["results"]).doc["refinement"]
        if first is None or first <= 2:  # nothing below, or no size strictly between 1 and 2
            assert ref is None
        else:  # one size halfway between the size below the first pass's w_c* and it
            assert ref["between"] == [first // 2, first] and ref["sizes"] == [first * 3 // 4]
            assert e["w_c_star"] in (first * 3 // 4, first)
            refined += 1
    assert refined > 0


def test_bad_input_is_one_line_and_exit_2(run, tmp_path):
    run_dir, _, _ = run
    runner = CliRunner()
    (tmp_path / "notarun").mkdir()
    bare = tmp_path / "bare"
    shutil.copytree(run_dir, bare)
    for p in list_checkpoints(bare).values():
        p.unlink()
    cases = [
        (tmp_path / "missing", "no such folder"),
        (tmp_path / "notarun", "expected a run directory holding config.json"),
        (bare, "no kept checkpoints"),
    ]
    for path, message in cases:
        r = runner.invoke(main, ["dynamics", "--device", "cpu", str(path), "-q"])
        assert r.exit_code == 2, r.output
        assert message in r.output and len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    r = runner.invoke(main, ["dynamics", "--device", "cpu", str(run_dir), "--acc-rep", "0", "-q"])
    assert r.exit_code == 2 and "acc_rep: expected an integer >= 1" in r.output
    r = runner.invoke(main, ["dynamics", "--device", "cpu", str(run_dir), "--chunk-sizes", "4,x", "-q"])
    assert r.exit_code == 2 and "--chunk-sizes" in r.output
    with pytest.raises(RedrepError, match="r2_min: expected a number <= 1.0"):
        DynamicsConfig(criterion=Criterion(r2_min=3)).validated()
    with pytest.raises(RedrepError, match="refine: expected an integer >= 0"):
        DynamicsConfig(refine=-1).validated()
    r = runner.invoke(main, ["dynamics", str(run_dir), "--fit-fraction", "1.5", "-q"])
    assert r.exit_code == 2 and "--fit-fraction: expected a number <= 1.0, found 1.5" in r.output


def test_reading_known_answers():
    from redrep.experiments.dynamics import dynamics_reading

    def ep(e, w, train=0.0):
        return {"epoch": e, "w_c_star": w, "n_clones": None if w is None else 64 / w, "width": 64,
                "train_error": train, "test_error": 0.1, "model": "checkpoint"}  # fmt: skip

    text = dynamics_reading([ep(0, None, 0.5), ep(5, 64), ep(10, 16), ep(20, 32)], 4, DynamicsConfig())
    assert text[0].startswith("At initialization (epoch 0, checkpoint)") and "training error 0.5." in text[0]
    assert text[1] == "Training error of the network reaches 0 at epoch 4."
    assert text[2] == (
        "A chunk size first meets the criterion at epoch 5 (w_c* = 64); w_c* first falls below W at epoch 10 "
        "(w_c* = 16, 4 clones). At the last epoch (20) w_c* = 32 (2 clones)."
    )
    base = dynamics_reading([ep(0, 32), ep(3, None, 0.25)], None, DynamicsConfig())
    assert "w_c* = 32 (2 clones) already" in base[0] and "never reached zero training error" in base[1]
    assert "At no trained epoch" in base[2] and "0.25" in base[2]
    flat = dynamics_reading([ep(0, None), ep(3, 64)], 3, DynamicsConfig())
    assert "never falls below W = 64" in flat[2]
