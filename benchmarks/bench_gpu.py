"""The analysis on a CUDA GPU, against the GPU's own measured limits and against this machine's CPU path.

1. The machine: float32 and float64 matrix-product throughput of the device (TF32
   off, as the analysis runs) and the host -> device copy rate from pinned
   memory, all measured in this run.
2. Paper shape (50000+10000 x 512, C = 10, r2-rep 40, acc-rep 100, the authors'
   .pt layout): each part of the analysis on the GPU (upload, Gram matrices,
   regression, accuracies train/test) with its work and its throughput as a
   fraction of the measured peak; target: the analysis after start-up < 0.3 s.
   The CPU path on the same set (a fresh process): the counts compared chunk by
   chunk (identical), the regression values (relative difference). Then
   `redrep analyze` end to end in fresh processes, --device auto, cpu and cuda;
   target: auto never slower than cpu.
3. ImageNet shape (256000+50000 x 2048, C = 1000, a memory-mapped native set):
   the GPU analysis in full, its parts against the peaks; the CPU path on a
   subset of the rows, every part of which but the regression grows linearly
   in N (its time is extrapolated to the full set: the per-row parts scaled by
   N / N_subset, the regression as measured); the GPU on the same subset, its
   counts compared with the CPU's chunk by chunk; target: >= 30x.

Every figure comes from one run (about 3 minutes on one H200, the set written
included). Files go under --workdir (default: a temporary folder, removed).

Usage: python benchmarks/bench_gpu.py [--quick] [--budget SECONDS] [--skip-imagenet] [--workdir DIR]
  --quick: small shapes, on torch's CPU device where there is no GPU (seconds: the script's own check)
  --budget: seconds for the whole run; the ImageNet part shrinks its CPU subset to fit, or is skipped
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
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

#: (n_train, n_test, width, classes, acc_rep, r2_rep) of each shape, full and --quick.
SHAPES = {
    "paper": ((50_000, 10_000, 512, 10, 100, 40), (3_000, 1_000, 64, 10, 10, 5)),
    "imagenet": ((256_000, 50_000, 2048, 1000, 100, 40), (6_000, 1_500, 128, 50, 6, 4)),
}
#: Seconds of per-row CPU work the ImageNet subset aims at (less when the budget is short).
CPU_SUBSET_SECONDS = 20.0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small shapes (torch's CPU device where there is no GPU)")
    p.add_argument("--budget", type=float, default=180.0, help="seconds for the whole run (default 180)")
    p.add_argument("--skip-imagenet", action="store_true")
    p.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one, removed)")
    p.add_argument("--cpu-analysis", nargs=2, metavar=("SET", "OUT"), help=argparse.SUPPRESS)  # internal
    p.add_argument("--rows", type=int, nargs=2, default=None, help=argparse.SUPPRESS)
    p.add_argument("--reps", type=int, nargs=2, default=(100, 40), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.cpu_analysis:
        return cpu_analysis(*args.cpu_analysis, args.rows, *args.reps)
    import torch

    t_start = time.perf_counter()
    if torch.cuda.is_available():
        dev = "cuda"
        print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    elif args.quick:
        dev = "cpu"
        print(f"no CUDA GPU: the GPU path runs on torch's CPU device (--quick), torch {torch.__version__}")
    else:
        raise SystemExit("bench_gpu: no CUDA GPU here (torch.cuda.is_available() is False); --quick runs on the CPU")
    print(f"CPU: {os.cpu_count()} cores; this run's budget {args.budget:.0f} s")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="redrep-bench-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    summary = []
    try:
        peak = machine(torch, dev, args.quick)
        lines, cpu_rate = _stage("paper shape", paper_shape, torch, dev, peak, work, args.quick) or ([], 5e11)
        summary += lines
        left = args.budget - (time.perf_counter() - t_start)
        if args.skip_imagenet:
            print("\nImageNet shape: skipped (--skip-imagenet)")
        elif left < (15 if args.quick else 60):
            print(f"\nImageNet shape: skipped (the budget leaves {left:.0f} s)")
        else:
            summary += (
                _stage("ImageNet shape", imagenet_shape, torch, dev, peak, work, args.quick, left, cpu_rate) or []
            )
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n==== summary ({time.perf_counter() - t_start:.0f} s) ====")
    for line in summary:
        print(line)


def _stage(name, f, *args):
    """``f(*args)``, or None after printing why it failed (the other stages still run: one run, every figure)."""
    try:
        return f(*args)
    except Exception:  # reported, and the run goes on
        traceback.print_exc()
        print(f"{name}: FAILED (the traceback above)")
        return None


# --------------------------------------------------------------------------- the machine


def _timer(torch, dev):
    """``timed(f)``: seconds of ``f()`` on the device, synchronised."""

    def timed(f, repeat=3):
        best = float("inf")
        for _ in range(repeat):
            if dev == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            f()
            if dev == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        return best

    return timed


def machine(torch, dev, quick) -> dict:
    """Multiply-adds per second of float32 and float64 products (TF32 off), bytes per second host -> device."""
    from redrep.core.cuda import ieee_float32

    timed = _timer(torch, dev)
    n = 1024 if quick else 8192
    peak = {}
    with ieee_float32(torch):
        for dtype in (torch.float32, torch.float64):
            a = torch.randn((n, n), dtype=dtype, device=dev)
            b = torch.randn((n, n), dtype=dtype, device=dev)
            (a @ b).sum().item()  # warm-up
            peak[str(dtype).split(".")[1]] = n**3 / timed(lambda a=a, b=b: a @ b)
    size = (64 if quick else 1024) * 2**20
    host = torch.empty(size // 4, dtype=torch.float32, pin_memory=dev == "cuda")
    host.fill_(1.0)
    on_dev = torch.empty_like(host, device=dev)
    peak["h2d"] = size / timed(lambda: on_dev.copy_(host, non_blocking=True))
    print(
        f"machine ({dev}): float32 products {peak['float32'] / 1e12:.2f} TFMA/s, float64 {peak['float64'] / 1e12:.2f} "
        f"TFMA/s (n = {n}, TF32 off), host -> device {peak['h2d'] / 1e9:.1f} GB/s (pinned, {size >> 20} MB)"
    )
    return peak


# --------------------------------------------------------------------------- one GPU analysis, its parts


def gpu_analysis(torch, dev, repset, acc_rep, r2_rep):
    """The analysis on ``dev`` (the engine of ChunkAnalysis(device="cuda")): values, timings, seconds, peak bytes."""
    from redrep.core import cuda
    from redrep.core.analysis import ChunkDraws, default_chunk_sizes

    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    draws = ChunkDraws.draw(repset.width, default_chunk_sizes(repset.width), acc_rep, r2_rep, 0)
    values, timings = cuda.analyze(repset, draws, device=dev)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() if dev == "cuda" else 0
    return values, timings, seconds, peak


def print_parts(work, timings, seconds, gpu_bytes, peak, label):
    """Each part's seconds, its work and its throughput as a fraction of the measured peak."""
    f32, f64 = peak["float32"], peak["float64"]
    n_bytes = work.n * work.width * 4
    gram = (work.n_test + (work.n_train if work.heldout else 0)) * work.width**2  # full products on the device
    rows = [
        ("start-up (torch, CUDA, libraries)", timings.get("startup", 0.0), None, None),
        ("upload (waited for, not hidden)", timings.get("upload", 0.0), n_bytes, peak["h2d"]),
        ("gram_test + gram_train (float64)", timings.get("gram_test", 0) + timings.get("gram_train", 0), gram, f64),
        (
            "accuracy_train (float32)",
            timings.get("accuracy_train", 0),
            work.accuracy_fma() * work.n_train / work.n,
            f32,
        ),
        ("accuracy_test (float32)", timings.get("accuracy_test", 0), work.accuracy_fma() * work.n_test / work.n, f32),
        ("regression_test (float64)", timings.get("regression_test", 0), work.regression_fma(), f64),
    ]
    print(f"  {label}: {seconds:.3f} s in all, device memory peak {gpu_bytes / 2**30:.2f} GiB")
    for name, t, amount, rate in rows:
        if amount is None:
            print(f"    {name:38s} {t:7.3f} s")
        elif name.startswith("upload"):
            print(f"    {name:38s} {t:7.3f} s   {amount / 1e9:8.2f} GB,  at the copy rate {amount / rate:.3f} s")
        else:
            achieved = amount / max(t, 1e-9)
            print(
                f"    {name:38s} {t:7.3f} s   {amount / 1e9:8.1f} G FMA, {achieved / 1e12:6.2f} TFMA/s "
                f"= {100 * achieved / rate:5.1f}% of peak"
            )
    return seconds - timings.get("startup", 0.0)


def compare(cpu_values, gpu_values) -> tuple[bool, float, float]:
    """(counts identical, largest relative difference of R^2, largest absolute difference of the correlations)."""
    same = all(np.array_equal(cpu_values[k], gpu_values[k]) for k in cpu_values if k[0] == "accuracy")
    r2 = max(_rel(cpu_values[k], gpu_values[k]) for k in cpu_values if k[0] in ("r2", "r2_heldout"))
    corr = max(_abs(cpu_values[k], gpu_values[k]) for k in cpu_values if k[0].startswith("mean_corr"))
    return same, r2, corr


def _rel(a, b):
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.max(np.abs(a[ok] - b[ok]) / np.maximum(np.abs(a[ok]), 1e-300), initial=0.0))


def _abs(a, b):
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.max(np.abs(a[ok] - b[ok]), initial=0.0))


# --------------------------------------------------------------------------- the CPU path, in a fresh process


def cpu_analysis(set_path, out, rows, acc_rep, r2_rep):
    """(Internal) the CPU path on a set (its first rows), values to OUT.npz and timings to OUT.json."""
    from redrep.core.analysis import ChunkAnalysis
    from redrep.storage.repset import RepresentationSet

    t0 = time.perf_counter()
    rs = RepresentationSet.load(set_path)
    if rows is not None:
        rs = RepresentationSet.from_arrays(
            rs.features_train[: rows[0]], rs.features_test[: rows[1]], rs.labels_train[: rows[0]],
            rs.labels_test[: rows[1]], rs.weight, rs.bias, names=rs.names,
        )  # fmt: skip
    t1 = time.perf_counter()
    an = ChunkAnalysis(acc_rep=acc_rep, r2_rep=r2_rep, device="cpu", random_state=0, refine=0).fit(
        rs
    )  # as the GPU runs it
    t2 = time.perf_counter()
    np.savez(out + ".npz", **{f"{m}|{s}": v for (m, s), v in an.values_.items()})
    doc = {
        "timings": an.timings_,
        "fit_s": t2 - t1,
        "load_s": t1 - t0,
        "workers": an.n_workers_,
        "pass": an.accuracy_pass_,
    }
    Path(out + ".json").write_text(json.dumps(doc))


def run_cpu(set_path, out, acc_rep, r2_rep, rows=None):
    cmd = [sys.executable, __file__, "--cpu-analysis", str(set_path), str(out), "--reps", str(acc_rep), str(r2_rep)]
    if rows is not None:
        cmd += ["--rows", str(rows[0]), str(rows[1])]
    subprocess.run(cmd, check=True)
    values = {tuple(k.split("|")): v for k, v in np.load(str(out) + ".npz").items()}
    return values, json.loads(Path(str(out) + ".json").read_text())


def end_to_end(path, device, out, acc_rep, r2_rep):
    """Seconds of `redrep analyze` in a fresh process, and its results.json."""
    cmd = [sys.executable, "-m", "redrep", "analyze", "--path", str(path), "--out", str(out), "--device", device]
    cmd += ["--acc-rep", str(acc_rep), "--r2-rep", str(r2_rep), "-q"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    seconds = time.perf_counter() - t0
    return seconds, json.loads((Path(out) / "results.json").read_text())


# --------------------------------------------------------------------------- paper shape


def paper_shape(torch, dev, peak, work_dir, quick) -> tuple[list[str], float]:
    """The paper-shaped figures: summary lines, and the CPU path's accuracy throughput (multiply-adds per second)."""
    from bench_analyze import write_authors_set
    from redrep.core.analysis import default_chunk_sizes
    from redrep.core.costs import Workload
    from redrep.storage.repset import RepresentationSet

    n_train, n_test, width, n_classes, acc_rep, r2_rep = SHAPES["paper"][quick]
    print(f"\n==== paper shape: {n_train}+{n_test} x {width}, C = {n_classes}, acc-rep {acc_rep}, r2-rep {r2_rep}")
    folder = work_dir / "paper"
    t0 = time.perf_counter()
    write_authors_set(folder / "download_repr", n_train, n_test, width, n_classes)
    print(f"wrote the set (the authors' .pt layout) in {time.perf_counter() - t0:.1f} s")
    work = Workload(n_train, n_test, width, n_classes, tuple(default_chunk_sizes(width)), acc_rep, r2_rep)
    rs = RepresentationSet.load(folder)
    lines = []
    gpu = _stage("paper shape on the GPU", _paper_gpu, torch, dev, rs, work, peak)
    cpu_values, cpu_doc = run_cpu(folder, work_dir / "paper_cpu", acc_rep, r2_rep)
    print(f"  CPU path ({cpu_doc['workers']} workers, {cpu_doc['pass']} pass): fit {cpu_doc['fit_s']:.3f} s")
    if gpu is not None:
        gpu_values, after, after2 = gpu
        same, r2_diff, corr_diff = compare(cpu_values, gpu_values)
        print(
            f"  counts of the GPU {'identical' if same else 'DIFFERENT'} to the CPU's, chunk by chunk; R^2 relative "
            f"difference <= {r2_diff:.1e}, correlations <= {corr_diff:.1e}"
        )
        lines += [
            f"paper shape, analysis after start-up on the GPU: {after:.3f} s (again: {after2:.3f} s); target < 0.3 s",
            f"paper shape, counts GPU vs CPU: {'identical' if same else 'DIFFERENT'}; R^2 rel. diff {r2_diff:.1e}",
        ]
    walls = _paper_end_to_end(folder, dev, work_dir, acc_rep, r2_rep)
    auto_ok = "auto" in walls and "cpu" in walls and walls["auto"] <= walls["cpu"] * 1.05 + 0.05
    lines.append(
        "paper shape, end to end: "
        + ", ".join(f"{d} {t:.2f} s" for d, t in walls.items())
        + f"; target auto <= cpu (5 % + 0.05 s for noise): {'met' if auto_ok else 'NOT met'}"
    )
    t = cpu_doc["timings"]
    cpu_rate = work.accuracy_fma() / max(1e-9, t.get("accuracy_train", 0) + t.get("accuracy_test", 0))
    return lines, cpu_rate


def _paper_gpu(torch, dev, rs, work, peak):
    """The GPU analysis twice (the first pays the kernels' loading): values, seconds after start-up, again."""
    gpu_values, timings, seconds, gpu_bytes = gpu_analysis(torch, dev, rs, work.acc_rep, work.r2_rep)
    after = print_parts(work, timings, seconds, gpu_bytes, peak, f"GPU analysis ({dev}), first in this process")
    _, timings2, seconds2, _ = gpu_analysis(torch, dev, rs, work.acc_rep, work.r2_rep)
    after2 = seconds2 - timings2.get("startup", 0.0)
    print(f"  again (kernels loaded): {seconds2:.3f} s, {after2:.3f} s after start-up")
    return gpu_values, after, after2


def _paper_end_to_end(folder, dev, work_dir, acc_rep, r2_rep) -> dict:
    """Seconds of `redrep analyze` per device, the best of three interleaved runs."""
    print("end to end, `redrep analyze` in a fresh process (best of three, interleaved):")
    walls, docs = {}, {}
    devices = ["cpu", "auto"] + (["cuda"] if dev == "cuda" else [])
    for _ in range(3):
        for d in list(devices):
            try:
                t, docs[d] = end_to_end(folder, d, work_dir / f"paper_e2e_{d}", acc_rep, r2_rep)
            except subprocess.CalledProcessError as exc:
                print(f"  --device {d}: FAILED ({exc})")
                devices.remove(d)
                continue
            walls[d] = min(walls.get(d, float("inf")), t)
    for d in walls:
        choice = docs[d].get("device_choice") or {}
        extra = ""
        if d == "auto":
            decided = 1e3 * docs[d].get("timings_s", {}).get("device_choice", float("nan"))
            extra = f" -> {choice.get('device')} ({decided:.0f} ms to decide): {choice.get('reason')}"
        print(f"  --device {d:5s} {walls[d]:6.2f} s{extra}")
    return walls


# --------------------------------------------------------------------------- ImageNet shape


def write_native_set(torch, dev, folder, n_train, n_test, width, n_classes, seed=0):
    """A memory-mapped native set with clone structure (64 latent directions), its readout a ridge fit on 32768 rows.

    The features are generated on the device (torch) and written slab by slab.
    """
    gen = torch.Generator(device=dev).manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    means = 1.5 * torch.randn((n_classes, 64), generator=gen, device=dev)
    latent = torch.randint(0, 64, (width,), generator=gen, device=dev)
    readout = None
    slab = 32768
    for split, n in (("train", n_train), ("test", n_test)):
        y = torch.randint(0, n_classes, (n,), generator=gen, device=dev)
        np.save(folder / f"labels_{split}.npy", y.cpu().numpy())
        f = np.lib.format.open_memmap(folder / f"features_{split}.npy", mode="w+", dtype=np.float32, shape=(n, width))
        for s in range(0, n, slab):
            ys = y[s : s + slab]
            z = means[ys] + torch.randn((len(ys), 64), generator=gen, device=dev)
            x = torch.relu(z[:, latent] + 0.5 * torch.randn((len(ys), width), generator=gen, device=dev))
            if readout is None:
                xm = torch.cat([x, torch.ones((len(x), 1), device=dev)], dim=1).double()
                onehot = torch.nn.functional.one_hot(ys, n_classes).double()
                readout = torch.linalg.solve(
                    xm.T @ xm + 1e-3 * torch.eye(width + 1, device=dev, dtype=torch.float64), xm.T @ onehot
                )
            f[s : s + len(ys)] = x.cpu().numpy()
        f.flush()
        del f
    np.save(folder / "readout_weight.npy", readout[:-1].T.float().cpu().numpy())
    np.save(folder / "readout_bias.npy", readout[-1].float().cpu().numpy())
    (folder / "meta.json").write_text('{"format": "redrep.representation_set", "format_version": 1}\n')


def imagenet_shape(torch, dev, peak, work_dir, quick, budget_left, cpu_rate) -> list[str]:
    """The ImageNet-shaped figures (summary lines); ``cpu_rate``: the CPU's accuracy multiply-adds per second."""
    from redrep.core.analysis import default_chunk_sizes
    from redrep.core.costs import Workload
    from redrep.storage.repset import RepresentationSet

    t_begin = time.perf_counter()
    n_train, n_test, width, n_classes, acc_rep, r2_rep = SHAPES["imagenet"][quick]
    n = n_train + n_test
    print(f"\n==== ImageNet shape: {n_train}+{n_test} x {width}, C = {n_classes}, acc-rep {acc_rep}, r2-rep {r2_rep}")
    folder = work_dir / "imagenet"
    t0 = time.perf_counter()
    write_native_set(torch, dev, folder, n_train, n_test, width, n_classes)
    print(f"wrote the memory-mapped set ({n * width * 4 / 1e9:.2f} GB of features) in {time.perf_counter() - t0:.1f} s")
    work = Workload(n_train, n_test, width, n_classes, tuple(default_chunk_sizes(width)), acc_rep, r2_rep)
    rs = RepresentationSet.load(folder)
    assert isinstance(rs.features_train, np.memmap)
    _, timings, seconds, gpu_bytes = gpu_analysis(torch, dev, rs, acc_rep, r2_rep)
    print_parts(work, timings, seconds, gpu_bytes, peak, f"GPU analysis ({dev}), the whole set")
    # the CPU on a subset of rows sized to the time left: its per-row parts take about CPU_SUBSET_SECONDS
    left = budget_left - (time.perf_counter() - t_begin)
    per_row = work.accuracy_fma() / n / cpu_rate  # seconds per row at the paper shape's measured rate
    target = min(CPU_SUBSET_SECONDS, max(2.0, left / 4))
    n_sub = int(min(n // 2 if quick else n, max(200, target / per_row)))  # --quick: half, to exercise the scaling
    rows = (max(100, round(n_sub * n_train / n)), max(50, round(n_sub * n_test / n)))
    rows = (min(rows[0], n_train), min(rows[1], n_test))
    print(f"CPU path on the first {rows[0]} + {rows[1]} rows ({100 * sum(rows) / n:.1f}% of them; the rest scaled):")
    cpu_values, cpu_doc = run_cpu(folder, work_dir / "imagenet_cpu", acc_rep, r2_rep, rows=rows)
    t = cpu_doc["timings"]
    scale = {"train": n_train / rows[0], "test": n_test / rows[1]}
    per_row_parts = sum(t.get(f"{p}_{s}", 0.0) * scale[s] for p in ("accuracy", "gram") for s in ("train", "test"))
    fixed = cpu_doc["fit_s"] - sum(v for k, v in t.items() if k != "device_choice")
    cpu_full = per_row_parts + t.get("regression_test", 0.0) + max(0.0, fixed)
    print(
        f"  subset fit {cpu_doc['fit_s']:.2f} s ({cpu_doc['workers']} workers, {cpu_doc['pass']} pass): "
        + ", ".join(f"{k} {v:.2f} s" for k, v in t.items())
    )
    print(
        f"  extrapolated to all {n} rows: accuracies and Gram matrices x N/N_subset = {per_row_parts:.1f} s, "
        f"regression (independent of N) {t.get('regression_test', 0.0):.1f} s, the rest {max(0.0, fixed):.2f} s: "
        f"{cpu_full:.1f} s"
    )
    sub = RepresentationSet.from_arrays(
        rs.features_train[: rows[0]], rs.features_test[: rows[1]], rs.labels_train[: rows[0]],
        rs.labels_test[: rows[1]], rs.weight, rs.bias, names=rs.names,
    )  # fmt: skip
    gpu_sub, _, _, _ = gpu_analysis(torch, dev, sub, acc_rep, r2_rep)
    same, r2_diff, corr_diff = compare(cpu_values, gpu_sub)
    print(
        f"  the GPU on the same rows: counts {'identical' if same else 'DIFFERENT'} to the CPU's, chunk by chunk; "
        f"R^2 relative difference <= {r2_diff:.1e}, correlations <= {corr_diff:.1e}"
    )
    after = seconds - timings.get("startup", 0.0)
    startup = 2.5  # a fresh process's import of torch and CUDA start-up, as `redrep analyze --device cuda` pays it
    ratio, ratio_fresh = cpu_full / after, cpu_full / (after + startup)
    print(f"  speed-up: {ratio:.0f}x the CPU path ({ratio_fresh:.0f}x counting a fresh process's {startup} s start-up)")
    return [
        f"ImageNet shape, GPU {after:.1f} s (after start-up) against the CPU path's {cpu_full:.0f} s (extrapolated "
        f"from {100 * sum(rows) / n:.1f}% of the rows): {ratio:.0f}x ({ratio_fresh:.0f}x with a fresh start-up); "
        f"target >= 30x: {'met' if ratio_fresh >= 30 else 'NOT met'}",
        f"ImageNet shape, counts GPU vs CPU on the subset: {'identical' if same else 'DIFFERENT'}; "
        f"R^2 rel. diff {r2_diff:.1e}",
    ]


if __name__ == "__main__":
    main()
