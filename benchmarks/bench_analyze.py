"""Speed and memory of `redrep analyze` on paper-shaped data.

1. Speed: synthetic representations shaped like the authors' WRN-28-8 /
   CIFAR-10 set (50000 x 512 train, 10000 x 512 test, 10 classes, written in
   their .pt layout) are analysed end to end by `redrep analyze --r2-rep 40
   --acc-rep 100` in a subprocess, and by a baseline that follows the authors'
   algorithm (a ridge fit per chunk with scikit-learn, a gather per chunk for
   the accuracies). Both times and their ratio are printed; target >= 50x.
2. Memory: peak RSS of `redrep analyze` on a memory-mapped 400000 x 2048
   float32 training set (3.3 GB on disk); target < 1.5 GB.

Usage: python benchmarks/bench_analyze.py [--skip-memory] [--skip-speed] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def clone_features(rng, n, means, latent_of_neuron, y, noise=0.5):
    z = means[y] + rng.standard_normal((n, means.shape[1]), dtype=np.float32)
    x = z[:, latent_of_neuron]
    x += noise * rng.standard_normal(x.shape, dtype=np.float32)
    np.maximum(x, 0, out=x)  # post-BN-like, non-negative activations with clone structure
    return x


def write_authors_set(folder: Path, n_train=50000, n_test=10000, width=512, n_classes=10, seed=0):
    import torch

    from redrep.repset import AUTHORS_FILES

    rng = np.random.default_rng(seed)
    n_latent = 64
    means = rng.standard_normal((n_classes, n_latent)).astype(np.float32) * 1.5
    latent_of_neuron = rng.integers(0, n_latent, width)
    y_tr = rng.integers(0, n_classes, n_train)
    y_te = rng.integers(0, n_classes, n_test)
    x_tr = clone_features(rng, n_train, means, latent_of_neuron, y_tr)
    x_te = clone_features(rng, n_test, means, latent_of_neuron, y_te)
    # a least-squares readout on the training features (one-hot targets)
    onehot = np.eye(n_classes, dtype=np.float64)[y_tr]
    xm = np.hstack([x_tr, np.ones((n_train, 1), np.float32)]).astype(np.float64)
    coef = np.linalg.lstsq(xm, onehot, rcond=None)[0]
    weight, bias = coef[:-1].T.astype(np.float32), coef[-1].astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "features_train": torch.from_numpy(x_tr),
        "features_test": torch.from_numpy(x_te),
        "labels_train": torch.from_numpy(y_tr),
        "labels_test": torch.from_numpy(y_te),
        "weight": torch.from_numpy(weight),
        "bias": torch.from_numpy(bias),
    }
    for key, name in AUTHORS_FILES.items():
        torch.save(arrays[key], folder / name)


def baseline(folder: Path, acc_rep=100, r2_rep=40, seed=0):
    """The authors' algorithm: a gather per chunk, a scikit-learn ridge fit per chunk."""
    import torch
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score

    from redrep.repset import AUTHORS_FILES

    t = {k: torch.load(folder / v, weights_only=True).numpy() for k, v in AUTHORS_FILES.items()}
    width = t["weight"].shape[1]
    sizes = sorted({width >> i for i in range(width.bit_length())})
    rng = np.random.default_rng(seed)
    acc = {"train": [], "test": []}
    r2s, corrs = [], []
    for w in sizes:
        for split in ("train", "test"):
            x, y = t[f"features_{split}"], t[f"labels_{split}"]
            vals = []
            for _ in range(acc_rep):
                c = rng.choice(width, w, replace=False)
                logits = x[:, c] @ t["weight"][:, c].T + t["bias"]
                vals.append(np.mean(logits.argmax(1) == y))
            acc[split].append(np.mean(vals))
        f = t["features_test"]
        r2_w, corr_w = [], []
        for _ in range(r2_rep):
            c = rng.choice(width, w, replace=False)
            model = Ridge(alpha=1e-8).fit(f[:, c], f)
            pred = model.predict(f[:, c])
            r2_w.append(r2_score(f, pred, multioutput="variance_weighted"))
            cov = np.cov(f - pred, rowvar=False)
            sd = np.sqrt(np.diag(cov))
            corr = cov / (np.outer(sd, sd) + 1e-8)
            corr_w.append(np.abs(corr[np.tril_indices(width, -1)]).mean())
        r2s.append(np.mean(r2_w))
        corrs.append(np.mean(corr_w))
    return sizes, acc, r2s, corrs


_PEAK_WRAPPER = """
import atexit, sys
def _peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            sys.stderr.write("PEAK_KB " + line.split()[1] + "\\n")
atexit.register(_peak)
from redrep.cli import main
sys.argv[0] = "redrep"
main()
"""


def peak_rss_of(args) -> tuple[float, float]:
    """Run `redrep ARGS` in a new process; return (seconds, its peak RSS in GB).

    The peak is the child's own VmHWM, read at its exit: the rusage of children
    would also count the memory of this (forked) benchmark process.
    """
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", _PEAK_WRAPPER, *args], capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"redrep {' '.join(args)} failed: {p.stderr.strip()}")
    kb = [int(line.split()[1]) for line in p.stderr.splitlines() if line.startswith("PEAK_KB ")][-1]
    return dt, kb / 2**20


def bench_speed(work: Path):
    data = work / "speed"
    t0 = time.perf_counter()
    write_authors_set(data / "download_repr")
    print(f"wrote paper-shaped data (50000 x 512 train, 10000 x 512 test) in {time.perf_counter() - t0:.1f} s")
    cmd = [sys.executable, "-m", "redrep", "analyze", "--path", str(data), "--r2-rep", "40", "--acc-rep", "100", "-q"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    t_ours = time.perf_counter() - t0
    print(f"redrep analyze (end to end, new process): {t_ours:.2f} s")
    t0 = time.perf_counter()
    sizes, acc, r2s, corrs = baseline(data / "download_repr")
    t_base = time.perf_counter() - t0
    print(f"baseline (ridge fit + gather per chunk):  {t_base:.2f} s")
    print(f"speed-up: {t_base / t_ours:.1f}x (target >= 50x)")
    res = np.load(data / "results" / "r2_c10_test_wr28_8.npy")
    print(f"max |R^2 difference| between the two (different random chunks): {np.max(np.abs(res[1] - r2s)):.4f}")


def bench_memory(work: Path, n=400_000, width=2048, n_test=10_000):
    folder = work / "memory"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    ftr = np.lib.format.open_memmap(folder / "features_train.npy", mode="w+", dtype=np.float32, shape=(n, width))
    block = 20_000
    for s in range(0, n, block):
        ftr[s : s + block] = rng.standard_normal((min(block, n - s), width), dtype=np.float32)
    ftr.flush()
    del ftr
    np.save(folder / "features_test.npy", rng.standard_normal((n_test, width), dtype=np.float32))
    np.save(folder / "labels_train.npy", rng.integers(0, 10, n))
    np.save(folder / "labels_test.npy", rng.integers(0, 10, n_test))
    np.save(folder / "readout_weight.npy", rng.standard_normal((10, width), dtype=np.float32))
    np.save(folder / "readout_bias.npy", np.zeros(10, np.float32))
    (folder / "meta.json").write_text('{"format": "redrep.representation_set", "format_version": 1}\n')
    print(f"wrote a memory-mapped {n} x {width} float32 training set (3.3 GB) in {time.perf_counter() - t0:.1f} s")
    args = ["analyze", "--repr", str(folder), "--acc-rep", "2", "--r2-rep", "2", "--chunk-sizes", "16,256,2048", "-q"]
    dt, gb = peak_rss_of(args)
    print(f"memory: peak RSS {gb:.2f} GB analysing it (target < 1.5 GB), {dt:.1f} s")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = p.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="redrep-bench-"))
    try:
        if not args.skip_speed:
            bench_speed(work)
        if not args.skip_memory:
            bench_memory(work)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    os.sys.stdout.flush()


if __name__ == "__main__":
    main()
