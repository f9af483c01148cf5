"""`redrep analyze` end to end through the command line."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from redrep.cli import main
from redrep.storage.results import AUTHORS_RESULT_FILES, load_results
from redrep.storage.synthetic import known_critical_size
from repsets import arrays, random_set, write_authors


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def native(tmp_path):
    random_set(0, width=16).save(tmp_path / "set")
    return tmp_path / "set"


def test_analyze_native_set(native):
    r = run(
        "analyze",
        "--device",
        "cpu",
        "--repr",
        native,
        "--acc-rep",
        "5",
        "--r2-rep",
        "3",
        "--seed",
        "4",
        "--refine",
        "0",
        "-q",
    )
    assert r.exit_code == 0, r.output
    out = native / "results"
    sizes = [1, 2, 4, 8, 16]
    # a set that is not the authors' gets neutral names only, one per metric computed
    for name in AUTHORS_RESULT_FILES.values():
        assert not (out / name).exists()
    for name in ("accuracy_train", "accuracy_test", "r2_test", "mean_corr_test", "mean_corr_outside_test"):
        arr = np.load(out / f"{name}.npy")
        assert arr.shape == (2, 5)
        assert arr[0].tolist() == sizes
    acc = np.load(out / "accuracy_test.npy")[1]
    assert np.all((acc >= 0) & (acc <= 1))
    r2 = np.load(out / "r2_test.npy")[1]
    assert r2[-1] == pytest.approx(1.0)
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 * 5  # 6 metric/split pairs x 5 sizes
    assert {(r["metric"], r["split"]) for r in rows} == {
        ("accuracy", "train"),
        ("accuracy", "test"),
        ("r2", "test"),
        ("mean_corr", "test"),
        ("mean_corr_outside", "test"),
        ("r2_heldout", "test"),
    }
    acc_rows = [r for r in rows if r["metric"] == "accuracy" and r["split"] == "test"]
    np.testing.assert_allclose([float(r["mean"]) for r in acc_rows], acc)
    assert all(int(r["n"]) == 5 for r in acc_rows)
    doc = json.loads((out / "results.json").read_text())
    assert doc["params"]["seed"] == 4 and doc["params"]["acc_rep"] == 5 and doc["params"]["r2_rep"] == 3
    assert doc["input"]["width"] == 16 and doc["error_inf"] == 0.05
    assert "numpy" in doc["versions"] and doc["timings_s"]["total"] > 0
    res = load_results(out)
    assert res.series("r2")["mean"][-1] == pytest.approx(1.0)


def test_analyze_is_reproducible_with_seed(native, tmp_path):
    run(
        "analyze", "--device", "cpu", "--repr", native, "--acc-rep", "4", "--r2-rep", "2", "--out", tmp_path / "a", "-q"
    )
    run(
        "analyze", "--device", "cpu", "--repr", native, "--acc-rep", "4", "--r2-rep", "2", "--out", tmp_path / "b", "-q"
    )
    names = sorted(p.name for p in (tmp_path / "a").glob("*.npy"))
    assert len(names) >= 5
    for name in names:
        np.testing.assert_array_equal(np.load(tmp_path / "a" / name), np.load(tmp_path / "b" / name))


def test_authors_spellings_and_chunk_sizes(native, tmp_path):
    r = run(
        "analyze",
        "--repr",
        native,
        "--acc_rep",
        "3",
        "--r2_rep",
        "2",
        "--chunk-sizes",
        "3, 5,16",
        "--out",
        tmp_path / "o",
        "--device",
        "cpu",
        "-q",
    )
    assert r.exit_code == 0, r.output
    assert np.load(tmp_path / "o" / "r2_test.npy")[0].tolist() == [3, 5, 16]


def test_analyze_authors_layout_via_path(tmp_path):
    write_authors(
        tmp_path / "data" / "download_repr", arrays(n_train=60, n_test=40, width=8, n_classes=10), ensemble_acc=0.9
    )
    r = run("analyze", "--device", "cpu", "--path", tmp_path / "data", "--acc-rep", "3", "--r2-rep", "2")
    assert r.exit_code == 0, r.output
    assert "results written to" in r.output
    doc = json.loads((tmp_path / "data" / "results" / "results.json").read_text())
    assert doc["error_inf"] == pytest.approx(0.1) and doc["input"]["meta"]["layout"] == "authors"
    # the authors' set keeps the authors' names (their plotting script reads them) besides the neutral ones
    out = tmp_path / "data" / "results"
    for (metric, split), name in AUTHORS_RESULT_FILES.items():
        np.testing.assert_array_equal(np.load(out / name), np.load(out / f"{metric}_{split}.npy"))
    assert set(AUTHORS_RESULT_FILES.values()) == {
        "acc_chunk_c10_train_wr28_8.npy",
        "acc_chunk_c10_test_wr28_8.npy",
        "r2_c10_test_wr28_8.npy",
        "mean_corr_c10_test_wr28_8.npy",
    }


@pytest.mark.parametrize(
    "args, message",
    [
        (["--chunk-sizes", "0"], r"chunk_sizes: expected chunk sizes in \[1, 16\] \(the layer width\), found 0"),
        (["--chunk-sizes", "17"], r"found 17"),
        (["--chunk-sizes", "a,b"], r"expected a comma-separated list of integers"),
        (["--r2-rep", "0"], r"r2_rep: expected an integer >= 1, found 0"),
        (["--acc-rep", "0"], r"acc_rep: expected an integer >= 1, found 0"),
        (["--acc-rep", "x"], r"'x' is not a valid integer"),
        # the probe's reproductions: an _ArrayMemoryError traceback, and minutes without a word
        (["--acc-rep", str(10**18)], r"^Error: acc_rep: expected an integer <= 1000000, found 10{18} \[--acc-rep\]$"),
        (["--acc-rep", "30000000"], r"^Error: acc_rep: expected an integer <= 1000000, found 30000000 \[--acc-rep\]$"),
        (["--r2-rep", "30000000"], r"^Error: r2_rep: expected an integer <= 1000000, found 30000000 \[--r2-rep\]$"),
        (["--bogus"], r"No such option '--bogus'"),
    ],
)
def test_bad_flags_exit_2_and_write_nothing(native, args, message):
    r = run("analyze", "--device", "cpu", "--repr", native, *args)
    assert r.exit_code == 2
    assert re.search(message, r.stderr.strip()), r.stderr
    assert "Traceback" not in r.output
    assert not (native / "results").exists()


def test_errors_keep_existing_results(native):
    assert run("analyze", "--device", "cpu", "--repr", native, "--acc-rep", "2", "--r2-rep", "2", "-q").exit_code == 0
    before = {p.name: p.read_bytes() for p in (native / "results").iterdir()}
    r = run("analyze", "--device", "cpu", "--repr", native, "--chunk-sizes", "99")
    assert r.exit_code == 2
    assert {p.name: p.read_bytes() for p in (native / "results").iterdir()} == before


def test_missing_inputs(tmp_path, native):
    r = run("analyze", "--device", "cpu", "--path", tmp_path / "nodata")
    assert r.exit_code == 2
    assert "download_repr: no such folder (expected the authors' representations: run `redrep download" in r.stderr
    (native / "features_test.npy").unlink()
    r = run("analyze", "--device", "cpu", "--repr", native)
    assert r.exit_code == 2 and "missing 1 file(s)" in r.stderr and "features_test.npy" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_nan_features_from_the_command_line(native):
    arr = np.load(native / "features_test.npy", mmap_mode="r+")
    arr[2, 1] = np.inf
    arr.flush()
    del arr
    r = run("analyze", "--device", "cpu", "--repr", native, "--acc-rep", "2", "--r2-rep", "2", "-q")
    assert r.exit_code == 2
    assert r.stderr.strip() == (
        f"Error: {native / 'features_test.npy'}: expected finite values, found inf at index "
        f"(2, 1) (1 non-finite values in this block)"
    )
    assert not (native / "results").exists()


def test_console_script_exit_status_and_no_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.run(
        [sys.executable, "-m", "redrep", "analyze", "--device", "cpu", "--repr", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert p.returncode == 2
    assert p.stderr.strip().startswith("Error: ") and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_example_command_writes_a_loadable_set(tmp_path):
    r = run(
        "example", "--out", tmp_path / "ex", "--n-train", "50", "--n-test", "20", "--n-latent", "4", "--n-copies", "3"
    )
    assert r.exit_code == 0, r.output
    from redrep.storage.repset import RepresentationSet

    rs = RepresentationSet.load(tmp_path / "ex")
    assert rs.width == 12 and rs.n_train == 50
    assert sorted(rs.meta["latent_of_neuron"]) == sorted([0, 1, 2, 3] * 3)
    assert rs.meta["class_means"] == "axes" and rs.n_classes == 8
    assert f"known answer: w_c* = {known_critical_size(4, 3)}, the smallest chunk" in r.output


def test_help_states_the_limit_of_the_repetitions():
    r = CliRunner().invoke(main, ["analyze", "--help"], terminal_width=200)
    assert "At most 1,000,000" in r.output and "half the memory" in r.output and "limits as for --acc-rep" in r.output


def test_output_into_a_closed_pipe_ends_quietly(native, tmp_path):
    """`redrep analyze | head -1` said "Error: Broken pipe", rc 2. Now: no message, status 141 (128 + SIGPIPE,
    as a tool the signal ends), the results written. The pipe's reader is closed before the command starts, so
    every write fails, with no timing involved (device="cpu")."""
    import procs

    read, write = os.pipe()
    os.close(read)
    try:
        p = subprocess.run(
            [sys.executable, "-m", "redrep", "analyze", "--repr", str(native), "--acc-rep", "2", "--r2-rep", "2"]
            + ["--device", "cpu", "--out", str(tmp_path / "res")],
            stdout=write,
            stderr=subprocess.PIPE,
            env=procs.env(),
            text=True,
            timeout=300,
        )
    finally:
        os.close(write)
    assert p.returncode == 141
    said = [line for line in p.stderr.splitlines() if line.strip() and "chunk analysis" not in line]  # progress bar
    assert said == []  # no "Error: Broken pipe", no "Exception ignored" at exit
    assert load_results(tmp_path / "res").doc["params"]["acc_rep"] == 2  # the work before the printing is kept


def test_example_then_analyze_gives_the_known_answer(tmp_path):
    """`redrep example` then `redrep analyze` with its default options: the coupon-collector size."""
    r = run("example", "--out", tmp_path / "ex", "--n-train", "1000", "--n-test", "500", "--seed", "3")
    assert r.exit_code == 0, r.output
    r = run("analyze", "--repr", tmp_path / "ex")
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "ex" / "results" / "results.json").read_text())["summary"]
    grid = json.loads((tmp_path / "ex" / "results" / "results.json").read_text())["params"]["chunk_sizes"]
    i = next(j for j, w in enumerate(grid) if w >= 68)  # 68: 16 directions x 16 copies, probability 0.9
    assert s["w_c_star"] in grid[i - 1 : i + 2] and s["refinement"]["sizes"]
    assert f"w_c* = {s['w_c_star']} (95 % bootstrap interval" in r.output
    assert "criterion: at least 90 % of random chunks misclassify at most 1 training sample" in r.output
