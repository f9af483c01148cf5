"""Training throughput of WRN-28-k at batch 128, with and without torch.compile, alone and packed.

    python benchmarks/bench_train_gpu.py                 # on the GPU (CUDA when present): k = 1, 2, 4, 8, 16
    python benchmarks/bench_train_gpu.py --quick         # a tiny setting that runs on a CPU in a minute or two
    python benchmarks/bench_train_gpu.py --budget 90 --json out.json

Each measurement runs the training step of ``redrep train`` (redrep.nets.train) on
CIFAR-shaped random images held on the device: a batch of 128 cut from a
permutation, normalised, cropped and flipped on the device, in channels-last
layout with bf16 autocast on CUDA, cross-entropy, SGD with momentum and weight
decay. Pixel values do not change the speed. It prints:

1. images per second of training, each WRN-28-k alone (``plain``), and of the
   evaluation forward pass (batch 256, eval mode) that ``redrep train`` runs
   on the training and test sets after every epoch;
2. the same training step through ``torch.compile`` (``redrep train
   --compile``), its compile time and its gain over plain; it is worth
   keeping where it gains at least 20%;
3. packed: P processes training the same narrow network at once on one GPU,
   their aggregate images per second against one process alone (what
   ``redrep sweep --jobs P`` gains on a 1-GPU machine);
4. the estimate, from the rates measured above, of the paper's grid on one
   GPU (WRN-28, W = 64 .. 1024 i.e. k = 1 .. 16, 10 seeds, 200 epochs of
   50000 images, each epoch evaluated on 50000 + 10000 images), run one after
   the other and packed.

``--budget`` bounds the seconds spent: the optional parts (packed, then
compiled) that would not fit are skipped, and say so. ``--json`` writes every
figure to a file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, replace

import torch

from redrep.core.device import resolve_device
from redrep.nets.data import CIFAR, Dataset
from redrep.nets.models import create_model
from redrep.nets.train import _epoch_draws, autocast_context, resolve_amp

#: The paper's grid: widening factors (W = 64 k), seeds, epochs, training and test images.
GRID_K = (1, 2, 4, 8, 16)
GRID_SEEDS, GRID_EPOCHS, GRID_TRAIN, GRID_TEST = 10, 200, 50000, 10000
#: A compiled step counts as worth keeping from this gain on.
COMPILE_KEEP = 1.20
#: Seconds a compile may take, for the budget (WRN-28's graph, forward and backward, with inductor).
COMPILE_GUESS_S = 45.0


@dataclass
class Setting:
    widths: tuple[float, ...]
    batch: int
    eval_batch: int
    n_images: int
    warmup: int
    steps: int
    eval_steps: int
    packed_widths: tuple[float, ...]
    packs: tuple[int, ...]
    packed_seconds: float
    compile_widths: tuple[float, ...]


FULL = Setting((1, 2, 4, 8, 16), 128, 256, 128 * 40, 8, 30, 8, (1, 2), (4, 2), 4.0, (16, 1))
QUICK = Setting((1, 2), 16, 32, 64, 1, 2, 2, (1,), (2,), 2.0, ())


class Stepper:
    """One WRN-28-k with its optimizer and data on ``device``: ``step()`` is one training step of redrep train."""

    def __init__(self, k: float, device: str, s: Setting, *, compiled: bool = False, seed: int = 0):
        torch.manual_seed(seed)
        self.device = torch.device(device)
        info = CIFAR["cifar10"]
        g = torch.Generator().manual_seed(seed)
        n = s.n_images
        self.data = Dataset(
            "bench",
            torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
            torch.randint(0, 10, (n,), generator=g),
            torch.randint(0, 256, (s.eval_batch, 3, 32, 32), dtype=torch.uint8, generator=g),
            torch.randint(0, 10, (s.eval_batch,), generator=g),
            10,
            info.mean,
            info.std,
            augment=True,
        ).to(self.device)
        self.model = create_model("wide_resnet28", 10, (3, 32, 32), widening_factor=k).to(self.device)
        if self.device.type == "cuda":  # as redrep train: cuDNN picks its kernels, channels-last layout
            torch.backends.cudnn.benchmark = True
            self.model = self.model.to(memory_format=torch.channels_last)
        self.net = torch.compile(self.model) if compiled else self.model
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        amp = resolve_amp(None, self.device)
        self.autocast = autocast_context(self.device, amp)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp == torch.float16)
        self.criterion = torch.nn.CrossEntropyLoss()
        self.gen = g
        self.batch = s.batch
        self.perm = torch.randperm(n, generator=g).to(self.device)
        # the augmentation draws of an epoch, made at once as redrep.nets.train does (no wait on the GPU per batch)
        self.draws = _epoch_draws(self.data, n // self.batch, self.batch, g, self.device)
        self.i = 0
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.correct = torch.zeros((), dtype=torch.int64, device=self.device)

    def _layout(self, x):
        return x.contiguous(memory_format=torch.channels_last) if x.is_cuda else x

    def step(self) -> None:
        """One SGD step on the next batch, as redrep.nets.train._train_epoch does it."""
        n = self.data.n_train
        if (self.i + 1) * self.batch > n:
            self.i = 0
        idx = self.perm[self.i * self.batch : (self.i + 1) * self.batch]
        self.i += 1
        self.model.train()
        sl = slice((self.i - 1) * self.batch, self.i * self.batch)
        xb = self._layout(
            self.data.prepare(self.data.x_train[idx], augment=True, draws=tuple(d[sl] for d in self.draws))
        )
        yb = self.data.y_train[idx]
        with self.autocast():
            out = self.net(xb)
            loss = self.criterion(out, yb)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.loss_sum += loss.detach().double() * yb.shape[0]
        self.correct += (out.detach().argmax(1) == yb).sum()

    @torch.no_grad()
    def eval_step(self) -> None:
        """One forward pass of the evaluation batch in eval mode (redrep.nets.train.evaluate)."""
        self.model.eval()
        xb = self._layout(self.data.prepare(self.data.x_test))
        with self.autocast():
            out = self.model(xb)
        self.correct += (out.float().argmax(1) == self.data.y_test).sum()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def timed(fn, stepper: Stepper, n: int) -> float:
    """Seconds of ``n`` calls of ``fn``, the device's queue drained before and after."""
    stepper.sync()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    stepper.sync()
    return time.perf_counter() - t0


def measure(k: float, device: str, s: Setting, *, compiled: bool = False) -> dict:
    """Images per second of training (and, plain, of evaluation) of WRN-28-k; the first steps warm up."""
    t0 = time.perf_counter()
    st = Stepper(k, device, s, compiled=compiled)
    warm = timed(st.step, st, s.warmup)  # cuDNN's kernel choice, and the compile where asked
    train_s = timed(st.step, st, s.steps)
    out = {
        "k": k,
        "width": round(64 * k),
        "compiled": compiled,
        "train_images_per_s": s.steps * s.batch / train_s,
        "warmup_s": round(warm, 2),
        "setup_s": round(time.perf_counter() - t0 - warm - train_s, 2),
        "params": sum(p.numel() for p in st.model.parameters()),
    }
    if not compiled:
        timed(st.eval_step, st, 1)
        out["eval_images_per_s"] = s.eval_steps * s.eval_batch / timed(st.eval_step, st, s.eval_steps)
    del st
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return out


def compiled(k: float, device: str, s: Setting, rates: dict) -> dict:
    """The training step of WRN-28-k through torch.compile: images per second and its gain over plain."""
    try:
        m = measure(k, device, s, compiled=True)
    except Exception as exc:  # noqa: BLE001 - a compiler that fails here is a finding, not a crash
        print(f"compiled k = {k:g}: torch.compile failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        return {"k": k, "error": f"{type(exc).__name__}: {exc}"[:500]}
    base = rates.get(k)
    m["gain"] = None if base is None else m["train_images_per_s"] / base
    verdict = (
        ""
        if base is None
        else f", {m['gain']:.2f}x plain " + ("(>= 1.20: worth keeping)" if m["gain"] >= COMPILE_KEEP else "(< 1.20)")
    )
    print(f"compiled k = {k:g} (redrep train --compile): {m['train_images_per_s']:,.0f} img/s after "
          f"{m['warmup_s']:.0f} s of compile and warm-up{verdict}")  # fmt: skip
    return m


def optional_parts(s: Setting) -> list[tuple[str, float, int]]:
    """("compiled", k, 0) and ("packed", k, P) in the order they are measured while the budget lasts."""
    first = [("compiled", k, 0) for k in s.compile_widths[:1]]
    most = [("packed", k, max(s.packs)) for k in s.packed_widths]
    rest = [("packed", k, p) for k in s.packed_widths for p in s.packs if p != max(s.packs)]
    return first + most + [("compiled", k, 0) for k in s.compile_widths[1:]] + rest


# ------------------------------------------------------------------ packed
def worker(args) -> None:
    """One of P processes: warm up, say ready, wait for go, train for --seconds, print images per second."""
    s = QUICK if args.quick else FULL
    # on a GPU the cores are split between the processes; the quick CPU setting compares one thread each
    torch.set_num_threads(1 if args.quick else max(1, (os.cpu_count() or 1) // max(1, args.of)))
    st = Stepper(args.worker, args.device, s, seed=args.seed)
    timed(st.step, st, s.warmup)
    print("ready", flush=True)
    sys.stdin.readline()  # go
    st.sync()
    t0 = time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < args.seconds:
        st.step()
        n += 1
    st.sync()
    print(json.dumps({"images": n * s.batch, "seconds": time.perf_counter() - t0}), flush=True)


def packed(k: float, p: int, device: str, s: Setting, quick: bool) -> dict:
    """Aggregate training images per second of ``p`` processes each training WRN-28-k on ``device`` at once."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(k), "--of", str(p), "--device", device]
    cmd += ["--seconds", str(s.packed_seconds)] + (["--quick"] if quick else [])
    procs = [
        subprocess.Popen(cmd + ["--seed", str(i)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for i in range(p)
    ]
    try:
        for pr in procs:  # all warmed up before any is timed
            if pr.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a packed worker of k = {k} did not start (exit status {pr.wait()})")
        for pr in procs:
            pr.stdin.write("go\n")
            pr.stdin.flush()
        results = [json.loads(pr.stdout.readline()) for pr in procs]
    finally:
        for pr in procs:
            if pr.poll() is None:
                pr.kill()
            pr.wait()
    rates = [r["images"] / r["seconds"] for r in results]
    return {"k": k, "processes": p, "aggregate_images_per_s": sum(rates), "per_process": rates}


# ---------------------------------------------------------------- estimate
def grid_hours(rates: dict, evals: dict, gains: dict | None = None) -> tuple[float, dict]:
    """Hours of the paper's grid on one GPU from per-k training and evaluation images per second.

    ``gains`` (k -> aggregate / alone) packs the narrow runs; the k without a
    measured gain run alone. The widths not measured are estimated from the
    nearest measured one, scaled by the parameter count (compute grows with it).
    """
    per_k = {}
    for k in GRID_K:
        tr, ev = _rate(rates, k), _rate(evals, k)
        epoch_s = GRID_TRAIN / tr + (GRID_TRAIN + GRID_TEST) / ev
        g = (gains or {}).get(k, 1.0)
        per_k[k] = GRID_SEEDS * GRID_EPOCHS * epoch_s / max(g, 1.0) / 3600
    return sum(per_k.values()), per_k


def _rate(rates: dict, k: float) -> float:
    if k in rates:
        return rates[k]
    near = min(rates, key=lambda m: abs(math.log(m / k)))
    return rates[near] * (near / k) ** 2  # a WRN's multiply-adds grow as k^2


def print_grid(name: str, rates: dict, evals: dict, gains: dict, comp: list) -> dict:
    """Print the estimate of the paper's grid on one device (sequential, packed, compiled); return its figures."""
    seq, per_k = grid_hours(rates, evals)
    pk, per_k_packed = grid_hours(rates, evals, gains)
    train_only = sum(GRID_SEEDS * GRID_EPOCHS * GRID_TRAIN / _rate(rates, k) / 3600 for k in GRID_K)
    print(
        f"\nthe paper's grid on one {name}: WRN-28 k = {', '.join(map(str, GRID_K))}, {GRID_SEEDS} seeds, "
        f"{GRID_EPOCHS} epochs of {GRID_TRAIN} images, each evaluated on {GRID_TRAIN} + {GRID_TEST}"
    )
    for k in GRID_K:
        src = "measured" if k in rates else "scaled from the nearest measured k"
        print(f"  k = {k:>2}: {per_k[k]:6.1f} h one after the other, {per_k_packed[k]:6.1f} h packed ({src})")
    print(f"  sequential: {seq:.1f} h ({train_only:.1f} h of it training)")
    faster = {m["k"]: rates[m["k"]] * m["gain"] for m in comp if m.get("gain")}
    if faster:
        comp_h, _ = grid_hours({**rates, **faster}, evals)
        print(f"  sequential with --compile where it was measured (k = {', '.join(f'{k:g}' for k in faster)}): "
              f"{comp_h:.1f} h")  # fmt: skip
    print(f"  packed (narrow runs {', '.join(f'k = {k:g} {g:.2f}x' for k, g in gains.items()) or 'none'}): "
          f"{pk:.1f} h")  # fmt: skip
    return {
        "sequential_h": seq,
        "training_only_h": train_only,
        "packed_h": pk,
        "per_k_h": per_k,
        "per_k_packed_h": per_k_packed,
        "compiled_h": comp_h if faster else None,
    }


def save(path: str | None, report: dict) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(report, f, indent=1, default=float)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    ap.add_argument("--quick", action="store_true", help="tiny setting that runs on a CPU")
    ap.add_argument("--widths", default=None, help="widening factors k, comma-separated [default: 1,2,4,8,16]")
    ap.add_argument("--compile-widths", default=None, help="k measured through torch.compile [default: 16,1]")
    ap.add_argument("--budget", type=float, default=None, help="seconds at most; optional parts beyond are skipped")
    ap.add_argument("--json", default=None, help="write every figure to this file")
    ap.add_argument("--worker", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--of", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=4.0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.device = resolve_device(args.device)
    if args.worker is not None:
        return worker(args)
    t_start = time.perf_counter()
    s = QUICK if args.quick else FULL
    if args.widths:
        s = replace(s, widths=tuple(float(x) for x in args.widths.split(",")))
    if args.compile_widths is not None:
        s = replace(s, compile_widths=tuple(float(x) for x in args.compile_widths.split(",") if x.strip()))
    if args.quick:
        torch.set_num_threads(1)  # as each packed process: the CPU figures compare like with like

    def left() -> float:
        return math.inf if args.budget is None else args.budget - (time.perf_counter() - t_start)

    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    amp = resolve_amp(None, torch.device(args.device))
    print(f"device {args.device} ({name}), torch {torch.__version__}, autocast {amp or 'off'}, batch {s.batch}")
    report: dict = {"device": args.device, "device_name": name, "torch": torch.__version__, "batch": s.batch}

    print(f"\n{'WRN-28-k':>9} {'W':>5} {'params':>10} {'train img/s':>12} {'eval img/s':>11} {'warm-up s':>10}")
    plain = []
    for k in s.widths:
        m = measure(k, args.device, s)
        plain.append(m)
        print(f"{k:>9g} {m['width']:>5} {m['params']:>10,} {m['train_images_per_s']:>12,.0f} "
              f"{m['eval_images_per_s']:>11,.0f} {m['warmup_s']:>10.1f}")  # fmt: skip
    report["plain"] = plain
    save(args.json, report)  # what is measured so far, should the rest be stopped
    rates = {m["k"]: m["train_images_per_s"] for m in plain}
    evals = {m["k"]: m["eval_images_per_s"] for m in plain}

    # the optional parts in order of what they tell, each where the budget leaves room for it: the widest
    # network compiled (most of the grid's time), the narrow ones packed at the most processes, then the rest
    packs, gains, comp = [], {}, []
    print()
    for kind, k, p in optional_parts(s):
        if kind == "packed":
            if k not in rates:
                continue
            if left() < 20 + 4 * p:
                print(f"packed k = {k:g}, P = {p}: skipped (budget)")
                continue
            try:
                r = packed(k, p, args.device, s, args.quick)
            except Exception as exc:  # noqa: BLE001 - say what failed, go on with the rest
                print(f"packed k = {k:g}, P = {p}: failed: {type(exc).__name__}: {exc}")
                continue
            r["gain"] = r["aggregate_images_per_s"] / rates[k]
            packs.append(r)
            gains[k] = max(gains.get(k, 1.0), r["gain"])
            print(f"packed k = {k:g}, P = {p} processes on one device: {r['aggregate_images_per_s']:,.0f} img/s "
                  f"together, {r['gain']:.2f}x one process alone")  # fmt: skip
        else:
            if left() < COMPILE_GUESS_S:
                print(f"compiled k = {k:g}: skipped (budget)")
                continue
            m = compiled(k, args.device, s, rates)
            comp.append(m)
    report["packed"] = packs
    report["compiled"] = comp
    save(args.json, report)

    if rates:
        report["grid"] = print_grid(name, rates, evals, gains, comp)
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    print(f"\n{report['seconds']:.0f} s")
    save(args.json, report)


if __name__ == "__main__":
    sys.exit(main())
