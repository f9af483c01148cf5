"""`redrep analyze --device cuda` against the CPU on the same set: the counts bit for bit, the rest to rounding."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import procs
from redrep.storage.synthetic import make_clone_set

pytestmark = pytest.mark.gpu

#: R², correlations and held-out R² of the GPU against the CPU: both solve the ridge regressions in float64,
#: in another order of the sums (other BLAS, other block sizes), so they agree to rounding, not to the bit.
RTOL, ATOL = 1e-9, 1e-12
#: Sets of two shapes: the default chunk sizes of a layer of 128, and odd sizes on a layer of 120.
SHAPES = {
    "w128": (dict(n_train=4000, n_test=1000, n_latent=16, n_copies=8), []),
    "w120": (dict(n_train=3001, n_test=999, n_latent=12, n_copies=10, n_classes=7), ["--chunk-sizes", "1,7,30,120"]),
}


def _read_csv(path) -> dict:
    with open(path, newline="") as f:
        return {(r["metric"], r["split"], int(r["chunk_size"])): r for r in csv.DictReader(f)}


@pytest.fixture(scope="module", params=sorted(SHAPES))
def analysed(request, tmp_path_factory):
    kw, extra = SHAPES[request.param]
    root = tmp_path_factory.mktemp(f"gpu_analyze_{request.param}")
    make_clone_set(random_state=1, **kw).save(root / "set")
    for dev in ("cpu", "cuda"):
        r = procs.redrep("analyze", "--repr", root / "set", "--device", dev, "--acc-rep", "20", "--r2-rep", "8",
                         "--seed", "3", "--out", root / dev, "-q", *extra)  # fmt: skip
        assert r.returncode == 0, r.stderr
    return root


def test_the_gpu_ran_it(analysed):
    doc = json.loads((analysed / "cuda" / "results.json").read_text())
    assert doc["params"]["device"].startswith("cuda")
    assert json.loads((analysed / "cpu" / "results.json").read_text())["params"]["device"] == "cpu"


def test_accuracies_are_the_cpus_bit_for_bit(analysed):
    cpu, gpu = _read_csv(analysed / "cpu" / "results.csv"), _read_csv(analysed / "cuda" / "results.csv")
    assert cpu.keys() == gpu.keys()
    acc = [k for k in cpu if k[0] == "accuracy"]
    assert acc and all(cpu[k] == gpu[k] for k in acc)  # the same counts: every digit of mean, std, sem, n
    files = sorted(p.name for p in (analysed / "cpu").glob("*.npy"))
    assert files == sorted(p.name for p in (analysed / "cuda").glob("*.npy"))
    for name in (f for f in files if f.startswith("accuracy")):
        np.testing.assert_array_equal(np.load(analysed / "cuda" / name), np.load(analysed / "cpu" / name))


def test_regression_statistics_agree_to_rounding(analysed):
    cpu, gpu = _read_csv(analysed / "cpu" / "results.csv"), _read_csv(analysed / "cuda" / "results.csv")
    others = [k for k in cpu if k[0] != "accuracy"]
    assert {k[0] for k in others} >= {"r2", "mean_corr"}
    for k in others:
        assert cpu[k]["n"] == gpu[k]["n"], k  # the same chunks, each finite on both or on neither
        for col in ("mean", "std", "sem"):
            np.testing.assert_allclose(float(gpu[k][col]), float(cpu[k][col]), rtol=RTOL, atol=ATOL, err_msg=str(k))
    for p in (analysed / "cpu").glob("*.npy"):
        if not p.name.startswith("accuracy"):
            np.testing.assert_allclose(np.load(analysed / "cuda" / p.name), np.load(p), rtol=RTOL, atol=ATOL)
