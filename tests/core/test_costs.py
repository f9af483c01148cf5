"""The cost model of --device auto, with given throughputs (device-independent: nothing here touches a GPU)."""

from __future__ import annotations

import pytest

from redrep.core.costs import CpuRates, GpuRates, Workload, choose_device, estimate_cpu, estimate_gpu

PAPER = Workload(50_000, 10_000, 512, 10, tuple(2**i for i in range(10)), 100, 40)
IMAGENET = Workload(256_000, 50_000, 2048, 1000, tuple(2**i for i in range(12)), 100, 40)


def no_gpu_asked():
    raise AssertionError("the GPU was looked for (torch imported)")


def test_workload_counts_each_chunks_own_terms():
    work = Workload(3, 2, 4, 5, (1, 2, 4), acc_rep=10, r2_rep=6)
    # 10 chunks of 1 and of 2 neurons, one distinct chunk of all 4; each its neurons and the bias
    assert work.accuracy_fma() == 5 * 5 * (10 * 2 + 10 * 3 + 1 * 5)
    # a masked product above 1 neuron: W + 1 terms instead
    assert work.accuracy_fma(masked_above=1) == 5 * 5 * (10 * 2 + 10 * 5 + 1 * 5)
    assert work.logits() == 5 * 5 * 21
    assert work.gram_fma() == (2 + 3) * 16 / 2
    assert Workload(3, 2, 4, 5, (1,), 10, 6, heldout=False).gram_fma() == 2 * 16 / 2


def test_cpu_estimate_divides_the_work_among_the_workers():
    rates = CpuRates(acc_compiled=1e9, acc_numpy=5e8, gram=1e9, regression=1e9, fixed=0.5)
    one, four = estimate_cpu(PAPER, 1, True, rates), estimate_cpu(PAPER, 4, True, rates)
    for part in ("accuracies", "gram", "regression"):
        assert four[part] == pytest.approx(one[part] / 4)
    assert one["fixed"] == four["fixed"] == 0.5
    assert one["accuracies"] == pytest.approx(PAPER.accuracy_fma() / 1e9)
    numpy = estimate_cpu(PAPER, 1, False, rates)
    assert numpy["accuracies"] == pytest.approx(PAPER.accuracy_fma(masked_above=128) / 5e8)
    assert one["total"] == pytest.approx(sum(v for k, v in one.items() if k != "total"))


def test_gpu_estimate_carries_the_start_up_and_the_transfer():
    rates = GpuRates(startup=2.0, float32=1e13, float64=5e12, bandwidth=1e12, transfer=1e10, launch=0.0)
    est = estimate_gpu(PAPER, rates)
    assert est["startup"] == 2.0
    assert est["transfer"] == pytest.approx(60_000 * 512 * 4 / 1e10)
    assert est["accuracies"] == pytest.approx(PAPER.accuracy_fma() / 1e13 + PAPER.logits() * 8 / 1e12)
    assert est["total"] == pytest.approx(sum(v for k, v in est.items() if k != "total"))


def test_the_paper_shape_stays_on_the_cpu_without_looking_for_a_gpu():
    """Paper shape on 8 workers: the CPU's estimate is below any GPU's start-up, so torch is not even imported."""
    device, record = choose_device(PAPER, workers=8, compiled=True, resolve=no_gpu_asked)
    assert (device, record["device"], record["estimate_s"]["cuda"]) == ("cpu", "cpu", None)  # the model's choice
    assert record["estimate_s"]["cpu"] < GpuRates().startup
    assert "below the GPU's start-up" in record["reason"]


def test_the_imagenet_shape_goes_to_the_gpu():
    device, record = choose_device(
        IMAGENET, workers=8, compiled=True, resolve=lambda: "cuda", describe=lambda d: GpuRates()
    )
    assert device == "cuda"
    assert record["estimate_s"]["cuda"] < record["estimate_s"]["cpu"] / 10
    assert record == {**record, "asked": "auto", "device": "cuda"}


def test_no_gpu_or_a_slow_one_leaves_the_cpu():
    device, record = choose_device(IMAGENET, workers=8, compiled=True, resolve=lambda: "cpu")
    assert (device, record["reason"]) == ("cpu", "no CUDA GPU on this machine")
    slow = GpuRates(float32=1e8, float64=1e7)
    device, record = choose_device(IMAGENET, workers=8, compiled=True, resolve=lambda: "cuda:1", gpu_rates=slow)
    assert (device, record["device"]) == ("cpu", "cpu")
    assert record["estimate_s"]["cuda"] > record["estimate_s"]["cpu"]


def test_a_wide_paper_shape_goes_to_the_gpu_on_few_cores():
    """W = 2048 on 2 workers: minutes of regressions on the CPU against seconds on a GPU, start-up included."""
    wide = Workload(50_000, 10_000, 2048, 10, tuple(2**i for i in range(12)), 100, 40)
    device, _ = choose_device(wide, workers=2, compiled=True, resolve=lambda: "cuda", describe=lambda d: GpuRates())
    assert device == "cuda"


def test_device_rates_follow_the_multiprocessors_and_the_float64_units():
    h200, consumer = GpuRates.for_device(132, 9, 0), GpuRates.for_device(128, 8, 9)
    assert h200.float64 == pytest.approx(h200.float32)  # float64 tensor cores (measured: 30.2 against 25.6 TFMA/s)
    assert GpuRates.for_device(80, 7, 0).float64 == pytest.approx(GpuRates.for_device(80, 7, 0).float32 / 2)
    assert consumer.float64 == pytest.approx(consumer.float32 / 32)
    assert h200.float32 == pytest.approx(0.6 * 132 * 128 * 1.7e9)
    assert GpuRates.for_device(132, 9, 0, started=True).startup < h200.startup
