"""The cost model behind ``--device auto``: which device finishes an analysis first, start-up included.

The CPU's time is estimated from the shapes (samples, width, classes, chunk
sizes, repetitions), the worker processes and the accuracy pass (compiled or
numpy), with per-worker throughputs calibrated on ``benchmarks/bench_analyze.py``
(its scaling table in the README); the GPU's from its throughputs, the bytes
it must receive and the kernels it launches, plus the start-up of torch and
CUDA (1.5 to 3 s in a fresh process, nothing where CUDA already runs in this
one). Where the CPU's estimate is below the GPU's start-up alone, the CPU is
chosen without importing torch. The decision, with both estimates, is stored
in ``results.json`` (``device_choice``). docs/method.md#the-analysis-on-a-gpu
describes the model.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

#: The held-out R^2's share of a chunk's regression cost (RegressionJob in :mod:`redrep.core.regression`).
_HELDOUT_SHARE = 0.5


@dataclass(frozen=True)
class Workload:
    """The shapes of one analysis (see :class:`redrep.core.analysis.ChunkAnalysis`)."""

    n_train: int
    n_test: int
    width: int
    n_classes: int
    chunk_sizes: tuple
    acc_rep: int
    r2_rep: int
    heldout: bool = True

    def distinct(self, size: int, rep: int) -> int:
        """Distinct chunks of ``size`` among ``rep`` draws (every chunk of the whole layer is the same one)."""
        return 1 if size >= self.width else rep

    @property
    def n(self) -> int:
        return self.n_train + self.n_test

    def accuracy_fma(self, masked_above: float | None = None) -> float:
        """float32 multiply-adds of the accuracies: each chunk its own neurons and the bias, over both splits.

        ``masked_above``: chunks of more than this many neurons cost ``W + 1`` (a masked product) instead.
        """
        total = 0.0
        for w in self.chunk_sizes:
            terms = self.width + 1 if masked_above is not None and w > masked_above else w + 1
            total += self.distinct(w, self.acc_rep) * terms
        return float(self.n) * self.n_classes * total

    def logits(self) -> float:
        """Logits formed by a GPU's products (all chunks, both splits): each is written once and read once."""
        k = sum(self.distinct(w, self.acc_rep) for w in self.chunk_sizes)
        return float(self.n) * self.n_classes * k

    def gram_fma(self) -> float:
        """float64 multiply-adds of the Gram matrices (a triangle each)."""
        rows = self.n_test + (self.n_train if self.heldout else 0)
        return rows * self.width**2 / 2

    def regression_units(self) -> float:
        """The regression's cost in the units of RegressionJob (multiply-adds, element-wise passes weighted)."""
        W = self.width
        per = [100 * W**2 + w**3 + 6 * W * w**2 + W**2 * w for w in self.chunk_sizes]
        total = sum(self.distinct(w, self.r2_rep) * c for w, c in zip(self.chunk_sizes, per))
        return total * (1 + (_HELDOUT_SHARE if self.heldout else 0.0))

    def regression_fma(self) -> float:
        """float64 multiply-adds of the batched regressions on a GPU: factor, solves, the update of the pairs."""
        W = self.width
        total = 0.0
        for w in self.chunk_sizes:
            m = W - w
            per = w**3 / 3 + 3 * w**2 * m + m * m * w + 2 * w**3
            total += self.distinct(w, self.r2_rep) * per * (2 if self.heldout else 1)
        return total

    def pair_bytes(self) -> float:
        """Bytes the GPU's element-wise passes over the residual scatter of every chunk move (about 10 passes)."""
        return sum(self.distinct(w, self.r2_rep) * 80.0 * (self.width - w) ** 2 for w in self.chunk_sizes)


@dataclass(frozen=True)
class CpuRates:
    """Throughputs of one worker process of the CPU path (``benchmarks/bench_analyze.py``, scaling table).

    Measured on quiet machines: the compiled pass ran 75-80 G float32 multiply-adds per second per core on
    an AVX-512 machine (the README's table) and 33 G per worker on a 16-core GPU host; the numpy pass about
    half as fast; the Gram matrices 25-30 G float64 multiply-adds per second; the regressions, held-out R^2
    included, 55-80 G of RegressionJob's cost units per second (W = 512 to 2048).
    """

    acc_compiled: float = 5e10
    acc_numpy: float = 2.5e10
    gram: float = 3e10
    regression: float = 6e10
    #: Seconds that do not scale: forking the workers, drawing the chunks, summaries.
    fixed: float = 0.1


@dataclass(frozen=True)
class GpuRates:
    """Throughputs of the CUDA path as achieved (not peak), and its start-up."""

    #: import torch, create the CUDA context and the BLAS/solver handles, load the kernels.
    startup: float = 2.5
    float32: float = 2e13
    float64: float = 1e13
    #: device memory bytes per second of the element-wise passes.
    bandwidth: float = 2e12
    #: host to device bytes per second, reading the (memory-mapped) file included.
    transfer: float = 4e9
    #: seconds per kernel launch and per synchronisation.
    launch: float = 2e-5

    @classmethod
    def for_device(cls, multiprocessors: int, major: int, minor: int, started: bool = False) -> GpuRates:
        """Rates scaled to a device: 128 float32 lanes per multiprocessor at about 1.7 GHz, 60 % achieved.

        Data-centre parts run float64 at the float32 rate from compute capability 8.0 on (float64 tensor
        cores: one H200 measured 25.6 TFMA/s in float32 and 30.2 in float64 products, benchmarks/bench_gpu.py),
        at half of it on 6.0 and 7.0, and other parts at 1/32.
        """
        f32 = 0.6 * multiprocessors * 128 * 1.7e9
        if minor == 0 and major >= 8:
            f64 = f32
        elif minor == 0 and major >= 6:
            f64 = f32 / 2
        else:
            f64 = f32 / 32
        return cls(startup=0.2 if started else cls.startup, float32=f32, float64=f64)


def estimate_cpu(work: Workload, workers: int, compiled: bool, rates: CpuRates = CpuRates()) -> dict:
    """Seconds of each part of the CPU path, and their ``total``."""
    workers = max(1, int(workers))
    if compiled:
        acc = work.accuracy_fma() / rates.acc_compiled
    else:
        acc = work.accuracy_fma(masked_above=work.width / 4) / rates.acc_numpy
    parts = {
        "accuracies": acc / workers,
        "gram": work.gram_fma() / rates.gram / workers,
        "regression": work.regression_units() / rates.regression / workers,
        "fixed": rates.fixed,
    }
    parts["total"] = sum(parts.values())
    return parts


def estimate_gpu(work: Workload, rates: GpuRates = GpuRates(), block_bytes: float = 64 * 2**20) -> dict:
    """Seconds of each part of the CUDA path (:mod:`redrep.core.cuda`), start-up included, and their ``total``."""
    W = work.width
    blocks = max(1.0, work.n * W * 4 / block_bytes) + 2
    groups = len(work.chunk_sizes) + work.logits() * 4 / (2 * 2**30) / blocks  # per block
    launches = blocks * groups * 14 + len(work.chunk_sizes) * 120
    parts = {
        "startup": rates.startup,
        "transfer": work.n * W * 4 / rates.transfer,
        "accuracies": work.accuracy_fma() / rates.float32 + work.logits() * 4 * 2 / rates.bandwidth,
        "gram": 2 * work.gram_fma() / rates.float64,
        "regression": work.regression_fma() / rates.float64 + work.pair_bytes() / rates.bandwidth,
        "launches": launches * rates.launch,
    }
    parts["total"] = sum(parts.values())
    return parts


def cuda_started() -> bool:
    """Whether this process already runs CUDA (torch imported and initialised): its start-up is then spent."""
    torch = sys.modules.get("torch")
    try:
        return bool(torch is not None and torch.cuda.is_initialized())
    except AttributeError:
        return False


def choose_device(
    work: Workload,
    *,
    workers: int,
    compiled: bool,
    cpu_rates: CpuRates = CpuRates(),
    gpu_rates: GpuRates | None = None,
    resolve=None,
    describe=None,
) -> tuple[str, dict]:
    """The device ``auto`` takes for ``work``, and the record of why (estimates in seconds).

    Parameters
    ----------
    work : the analysis's shapes
    workers : worker processes the CPU path would run
    compiled : whether the compiled fast pass would count the accuracies
    cpu_rates, gpu_rates : throughputs; by default those of :class:`CpuRates` and of the device found
    resolve : callable returning the CUDA device to use or "cpu" (default:
        :func:`redrep.core.device.resolve_device` of "auto"); called, and torch
        imported, only where the CPU's estimate exceeds the GPU's start-up
    describe : callable ``describe(device) -> GpuRates`` (default: from the device's properties)

    Returns
    -------
    (device, record): record holds ``asked``, ``device``, ``reason`` and ``estimate_s`` (``cpu`` and ``cuda``).
    """
    cpu = estimate_cpu(work, workers, compiled, cpu_rates)["total"]
    started = cuda_started()
    floor = (gpu_rates or GpuRates()).startup if not started else 0.2
    record = {"asked": "auto", "estimate_s": {"cpu": round(cpu, 3), "cuda": None}}
    if cpu <= floor:
        reason = f"the CPU's estimate ({cpu:.2f} s) is below the GPU's start-up ({floor:.1f} s): torch not imported"
        return "cpu", {**record, "device": "cpu", "reason": reason}
    if resolve is None:
        from .device import resolve_device

        def resolve():
            return resolve_device("auto")

    device = resolve()
    if device == "cpu":
        return "cpu", {**record, "device": "cpu", "reason": "no CUDA GPU on this machine"}
    rates = gpu_rates if gpu_rates is not None else (describe or _rates_of)(device)
    gpu = estimate_gpu(work, rates)["total"]
    record["estimate_s"]["cuda"] = round(gpu, 3)
    if gpu < cpu:
        return device, {**record, "device": device, "reason": f"the GPU's estimate ({gpu:.2f} s) beats the CPU's"}
    return "cpu", {**record, "device": "cpu", "reason": f"the CPU's estimate ({cpu:.2f} s) beats the GPU's"}


def _rates_of(device: str) -> GpuRates:
    from .cuda import device_properties

    return GpuRates.for_device(*device_properties(device), started=cuda_started())
