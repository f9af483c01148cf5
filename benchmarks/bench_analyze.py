"""Speed and memory of `redrep analyze` on paper-shaped data, and how they scale.

1. Speed: synthetic representations shaped like the authors' WRN-28-8 /
   CIFAR-10 set (50000 x W train, 10000 x W test, 10 classes, written in
   their .pt layout; W = 512 unless --width) are analysed end to end by
   `redrep analyze --r2-rep 40 --acc-rep 100` in a subprocess, and by a
   baseline that follows the authors' algorithm (a ridge fit per chunk with
   scikit-learn, a gather per chunk for the accuracies). Both times, their
   ratio (target >= 50x), the time of each part (from results.json) and the
   cost model of each part against the machine's matrix-product throughput,
   measured in the same run, are printed. The baseline runs at W = 512 only,
   unless --baseline.
2. Memory: peak memory of `redrep analyze` and its worker processes (the
   sum of their proportional set sizes) on a memory-mapped 400000 x 2048
   float32 training set (3.3 GB on disk); target < 1.5 GB.
3. --scaling (instead of 1 and 2): time and peak memory as N, W, C and
   acc-rep grow, one `redrep analyze` per row on memory-mapped native sets,
   printed as the README's table (about 10 minutes on 2 cores).

--native-blas reruns the whole benchmark (children included) with the
OpenBLAS kernel pins of this machine and CI unset: numpy and SciPy then use
the CPU's own (SkylakeX/AVX512) kernels instead of Haswell/AVX2 ones.

Usage: python benchmarks/bench_analyze.py [--width W] [--baseline] [--skip-memory] [--skip-speed]
       [--scaling] [--workdir DIR] [--native-blas] [--json FILE]

--json FILE also writes the printed figures as JSON (scripts/readme_numbers.py renders the README's
tables from it).
"""

from __future__ import annotations

import argparse
import json
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

    from redrep.storage.repset import AUTHORS_FILES

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

    from redrep.storage.repset import AUTHORS_FILES

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


def _process_tree(root: int) -> list[int]:
    """``root`` and its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = (Path("/proc") / entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def _pss_kb(pid: int) -> int:
    """Proportional set size of ``pid`` (its private pages plus its share of those it shares), in kB."""
    try:
        for line in (Path("/proc") / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_rss_of(args) -> tuple[float, float, float]:
    """Run `redrep ARGS` in a new process; return (seconds, its peak RSS in GB, peak memory of all its processes).

    The first peak is the main process's own VmHWM, read at its exit: the
    rusage of children would also count the memory of this (forked) benchmark
    process. The second is the largest sum, over the main process and its
    worker processes, of their proportional set sizes (pages they share,
    such as the memory-mapped features, counted once), sampled every 20 ms.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", _PEAK_WRAPPER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    peak_all = 0
    while proc.poll() is None:
        peak_all = max(peak_all, sum(_pss_kb(pid) for pid in _process_tree(proc.pid)))
        time.sleep(0.02)
    _, stderr = proc.communicate()
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"redrep {' '.join(args)} failed: {stderr.strip()}")
    kb = [int(line.split()[1]) for line in stderr.splitlines() if line.startswith("PEAK_KB ")][-1]
    return dt, kb / 2**20, max(peak_all, kb) / 2**20 if peak_all else kb / 2**20


def matmul_throughput() -> dict:
    """Multiply-adds per second of large float32 and float64 matrix products on this machine, all threads."""
    rng = np.random.default_rng(0)
    out = {}
    for dtype, shape in ((np.float32, (4096, 513, 2048)), (np.float64, (2048, 2048, 2048))):
        m, k, n = shape
        a, b = rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)
        a @ b
        best = min(_timed(lambda a=a, b=b: a @ b) for _ in range(3))
        out[np.dtype(dtype).name] = m * k * n / best
    return out


def _timed(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def cost_model(n_train, n_test, width, n_classes, acc_rep, r2_rep) -> dict:
    """Multiply-adds of each part of `redrep analyze` with default chunk sizes, as the implementation does them.

    accuracies, float32: N C acc_rep sum_w (w + 1) with the compiled fast pass (each chunk its own terms and
    the bias; the chunk of all W neurons once); with the numpy one, (W + 1) instead of (w + 1) for chunks of
    more than W/4 neurons (masked product). regression: per chunk a Cholesky
    w^3/3, four triangular solves W w^2 and a rank-2w update W^2 w, in float64.
    gram: N_test W^2 / 2 (one triangle), float64.
    """
    sizes = sorted({width >> i for i in range(width.bit_length())})
    n = n_train + n_test
    masked = sum((1 if w == width else acc_rep) * ((w + 1) if 4 * w <= width else (width + 1)) for w in sizes)
    own = sum((1 if w == width else acc_rep) * (w + 1) for w in sizes)
    reg = sum((1 if w == width else r2_rep) * (w**3 / 3 + 4 * width * w**2 + width**2 * w) for w in sizes)
    return {
        "accuracies_numpy": n * n_classes * masked,
        "accuracies_compiled": n * n_classes * own,
        "regression": reg,
        "gram": n_test * width**2 / 2,
    }


def print_cost_model(
    cost: dict, timings: dict, peak: dict, n_train, n_test, width, n_classes, acc_rep, r2_rep, accuracy_pass="numpy"
):
    f32, f64 = peak["float32"], peak["float64"]
    if accuracy_pass.startswith("compiled"):
        acc_cost = cost["accuracies_compiled"]
        acc_model = "N*C*acc_rep*sum_w (w+1)"
    else:
        acc_cost = cost["accuracies_numpy"]
        acc_model = "N*C*acc_rep*sum_w (w+1 if w <= W/4 else W+1)"
    n = n_train + n_test
    acc_t = timings.get("accuracy_train", 0) + timings.get("accuracy_test", 0)
    gram = (
        f"  gram matrix: N_test*W^2/2 = {cost['gram'] / 1e9:.2f} G float64: {cost['gram'] / f64:.2f} s at peak, "
        f"{timings.get('gram_test', float('nan')):.2f} s measured"
    )
    if "gram_train" in timings:  # the held-out R^2 needs the training set's too
        g = n_train * width**2 / 2
        gram += f"; training set N_train*W^2/2 = {g / 1e9:.2f} G: {g / f64:.2f} s at peak, "
        gram += f"{timings['gram_train']:.2f} s"
    print(f"machine: float32 products {f32 / 1e9:.0f} GFMA/s, float64 {f64 / 1e9:.0f} GFMA/s (all cores, measured now)")
    print(
        f"cost model (N={n}, W={width}, C={n_classes}, acc-rep {acc_rep}, r2-rep {r2_rep}), one line per part:\n"
        f"  accuracies ({accuracy_pass} fast pass): {acc_model} = {acc_cost / 1e9:.1f} G float32 multiply-adds: "
        f"{acc_cost / f32:.2f} s at numpy's measured peak, {acc_t:.2f} s measured "
        f"({100 * acc_cost / f32 / max(acc_t, 1e-9):.0f}% of that peak)\n"
        f"{gram}\n"
        f"  regression: r2_rep*sum_w (w^3/3 + 4*W*w^2 + W^2*w) = {cost['regression'] / 1e9:.1f} G float64: "
        f"{cost['regression'] / f64:.2f} s at peak, {timings.get('regression_test', float('nan')):.2f} s measured\n"
        f"  loading: N*W*4 bytes = {n * width * 4 / 1e9:.2f} GB"
    )


def read_results(results_dir: Path) -> dict:
    """The results.json of an analysis under ``results_dir`` ({} if there is none)."""
    found = sorted(results_dir.rglob("results.json"))
    return json.loads(found[0].read_text()) if found else {}


def bench_speed(work: Path, width=512, run_baseline=None):
    data = work / f"speed{width}"
    t0 = time.perf_counter()
    write_authors_set(data / "download_repr", width=width)
    print(f"wrote paper-shaped data (50000 x {width} train, 10000 x {width} test) in {time.perf_counter() - t0:.1f} s")
    cmd = [sys.executable, "-m", "redrep", "analyze", "--path", str(data), "--r2-rep", "40", "--acc-rep", "100", "-q"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    t_ours = time.perf_counter() - t0
    doc = read_results(data / "results")
    timings = doc.get("timings_s", {})
    print(f"redrep analyze (end to end, new process): {t_ours:.2f} s")
    parts = ", ".join(f"{k} {v:.2f} s" for k, v in timings.items() if k != "total")
    workers = doc.get("threads", {}).get("workers", 1)
    print(
        f"  by part (each part's share of the time its {workers} worker processes ran side "
        f"by side): {parts}; the rest (start-up, loading, forking, writing) "
        f"{t_ours - sum(v for k, v in timings.items() if k != 'total'):.2f} s"
    )
    peak = matmul_throughput()
    cost = cost_model(50000, 10000, width, 10, 100, 40)
    figures = {
        "width": width,
        "analyze_s": t_ours,
        "timings_s": {k: v for k, v in timings.items() if k != "total"},
        "workers": workers,
        "rest_s": t_ours - sum(v for k, v in timings.items() if k != "total"),
        "peak_gfma_s": {k: v / 1e9 for k, v in peak.items()},
        "cost_gfma": {k: v / 1e9 for k, v in cost.items()},
        "accuracy_pass": doc.get("accuracy_pass", "numpy"),
    }
    print_cost_model(
        cost,
        timings,
        peak,
        50000,
        10000,
        width,
        10,
        100,
        40,
        doc.get("accuracy_pass", "numpy"),
    )
    if run_baseline is None:
        run_baseline = width == 512
    if not run_baseline:
        print("baseline skipped (it runs at W = 512 by default; --baseline to run it here)")
        return figures
    t0 = time.perf_counter()
    sizes, acc, r2s, corrs = baseline(data / "download_repr")
    t_base = time.perf_counter() - t0
    print(f"baseline (ridge fit + gather per chunk):  {t_base:.2f} s")
    print(f"speed-up: {t_base / t_ours:.1f}x (target >= 50x)")
    res = np.load(data / "results" / "r2_c10_test_wr28_8.npy")
    print(f"max |R^2 difference| between the two (different random chunks): {np.max(np.abs(res[1] - r2s)):.4f}")
    return {**figures, "baseline_s": t_base, "speedup": t_base / t_ours}


def write_native_set(folder: Path, n_train, n_test, width, n_classes, seed=0, slab=20_000):
    """A memory-mapped native set with clone structure and a least-squares readout, written slab by slab."""
    rng = np.random.default_rng(seed)
    n_latent = 64
    means = rng.standard_normal((n_classes, n_latent)).astype(np.float32) * 1.5
    latent_of_neuron = rng.integers(0, n_latent, width)
    folder.mkdir(parents=True, exist_ok=True)
    readout = None
    for split, n in (("train", n_train), ("test", n_test)):
        y = rng.integers(0, n_classes, n)
        np.save(folder / f"labels_{split}.npy", y)
        f = np.lib.format.open_memmap(folder / f"features_{split}.npy", mode="w+", dtype=np.float32, shape=(n, width))
        for s in range(0, n, slab):
            x = clone_features(rng, min(slab, n - s), means, latent_of_neuron, y[s : s + slab])
            if readout is None:  # fitted on the first slab: enough for realistic margins
                onehot = np.eye(n_classes)[y[s : s + slab]]
                xm = np.hstack([x, np.ones((len(x), 1), np.float32)]).astype(np.float64)
                readout = np.linalg.lstsq(xm, onehot, rcond=None)[0]
            f[s : s + slab] = x
        f.flush()
        del f
    np.save(folder / "readout_weight.npy", readout[:-1].T.astype(np.float32))
    np.save(folder / "readout_bias.npy", readout[-1].astype(np.float32))
    (folder / "meta.json").write_text('{"format": "redrep.representation_set", "format_version": 1}\n')


#: (axis, n_train, n_test, width, n_classes, acc_rep, r2_rep) of the scaling table.
SCALING = (
    ("base", 50_000, 10_000, 512, 10, 100, 40),
    ("N", 240_000, 10_000, 512, 10, 100, 40),
    ("N", 990_000, 10_000, 512, 10, 100, 40),
    ("W", 50_000, 10_000, 1024, 10, 100, 40),
    ("W", 50_000, 10_000, 2048, 10, 100, 40),
    ("W", 50_000, 10_000, 4096, 10, 100, 10),
    # the logits grow as C: 1000 classes cost some 100x, so this axis runs on 5000 + 5000 samples
    ("C", 5_000, 5_000, 512, 10, 100, 40),
    ("C", 5_000, 5_000, 512, 100, 100, 40),
    ("C", 5_000, 5_000, 512, 1000, 100, 40),
    ("acc-rep", 50_000, 10_000, 512, 10, 300, 40),
    ("acc-rep", 50_000, 10_000, 512, 10, 1000, 40),
)


def bench_scaling(work: Path) -> dict:
    peak = matmul_throughput()
    rows = []
    print(
        f"machine: float32 products {peak['float32'] / 1e9:.0f} GFMA/s, float64 {peak['float64'] / 1e9:.0f} GFMA/s; "
        f"{os.cpu_count()} CPUs (shared: other processes may have run too)"
    )
    print(
        "| grows | N | W | C | acc-rep | r2-rep | total s | accuracies s | regression s | peak memory GB "
        "| accuracy G FMA | accuracy % of float32 peak |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for axis, n_train, n_test, width, n_classes, acc_rep, r2_rep in SCALING:
        folder = work / f"scale_{n_train}_{width}_{n_classes}"
        if not (folder / "meta.json").exists():
            write_native_set(folder, n_train, n_test, width, n_classes)
        out = work / f"out_{n_train}_{width}_{n_classes}_{acc_rep}"
        args = ["analyze", "--repr", str(folder), "--out", str(out), "--acc-rep", str(acc_rep), "--r2-rep", str(r2_rep)]
        dt, _, gb = peak_rss_of([*args, "-q"])
        doc = read_results(out)
        t = doc.get("timings_s", {})
        acc_t = t.get("accuracy_train", 0) + t.get("accuracy_test", 0)
        reg_t = t.get("gram_test", 0) + t.get("gram_train", 0) + t.get("regression_test", 0)
        cost = cost_model(n_train, n_test, width, n_classes, acc_rep, r2_rep)
        compiled = doc.get("accuracy_pass", "numpy").startswith("compiled")
        acc_cost = cost["accuracies_compiled" if compiled else "accuracies_numpy"]
        print(
            f"| {axis} | {n_train + n_test:,} | {width} | {n_classes} | {acc_rep} | {r2_rep} | {dt:.1f} | {acc_t:.1f} "
            f"| {reg_t:.1f} | {gb:.2f} | {acc_cost / 1e9:.0f} "
            f"| {100 * acc_cost / peak['float32'] / max(acc_t, 1e-9):.0f}% |",
            flush=True,
        )
        rows.append(
            {
                "axis": axis,
                "n": n_train + n_test,
                "width": width,
                "classes": n_classes,
                "acc_rep": acc_rep,
                "r2_rep": r2_rep,
                "total_s": dt,
                "accuracies_s": acc_t,
                "regression_s": reg_t,
                "peak_gb": gb,
                "accuracy_gfma": acc_cost / 1e9,
                "accuracy_pct_of_peak": 100 * acc_cost / peak["float32"] / max(acc_t, 1e-9),
            }
        )
        shutil.rmtree(out, ignore_errors=True)
    return {"peak_gfma_s": {k: v / 1e9 for k, v in peak.items()}, "rows": rows}


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
    dt, gb_main, gb_all = peak_rss_of(args)
    print(
        f"memory: peak {gb_all:.2f} GB analysing it, all processes (the sum of their proportional set sizes; "
        f"target < 1.5 GB); the main process's own peak RSS {gb_main:.2f} GB; {dt:.1f} s"
    )
    return {"n_train": n, "width": width, "peak_gb_all": gb_all, "peak_gb_main": gb_main, "seconds": dt}


#: Environment variables that pin OpenBLAS's kernels (set on this machine and in CI).
_BLAS_PINS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def blas_description() -> str:
    """The BLAS libraries threadpoolctl finds loaded (numpy's and SciPy's), their kernels and threads."""
    import scipy.linalg  # noqa: F401  (loads SciPy's own OpenBLAS)
    from threadpoolctl import threadpool_info

    pins = ", ".join(f"{k}={os.environ[k]}" for k in _BLAS_PINS if k in os.environ) or "no kernel pins"
    libs = "; ".join(
        f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} kernels, {i.get('num_threads')} threads "
        f"({Path(i.get('filepath', '')).name})"
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    )
    return f"{libs} [{pins}]"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--width", type=int, default=512, choices=(512, 1024, 2048), help="layer width of the speed data")
    p.add_argument("--baseline", action="store_true", default=None, help="run the baseline at any width")
    p.add_argument("--scaling", action="store_true", help="the scaling table instead of the speed and memory runs")
    p.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    p.add_argument(
        "--native-blas",
        action="store_true",
        help=f"rerun with {', '.join(_BLAS_PINS)} unset, so that OpenBLAS picks this CPU's own kernels "
        "(SkylakeX/AVX512 here) rather than the pinned Haswell/AVX2 ones",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the printed figures to this JSON file")
    args = p.parse_args()
    if args.native_blas and any(v in os.environ for v in _BLAS_PINS):
        env = {k: v for k, v in os.environ.items() if k not in _BLAS_PINS}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)  # the variables are read when OpenBLAS loads
    blas = blas_description()
    print(f"BLAS: {blas}")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="redrep-bench-"))
    figures = {"blas": blas, "native_blas": not any(v in os.environ for v in _BLAS_PINS), "cpus": os.cpu_count()}
    try:
        if args.scaling:
            figures["scaling"] = bench_scaling(work)
        else:
            if not args.skip_speed:
                figures["speed"] = bench_speed(work, args.width, args.baseline)
            if not args.skip_memory:
                figures["memory"] = bench_memory(work)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    if args.json is not None:  # the figures printed above, for scripts/readme_numbers.py
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
