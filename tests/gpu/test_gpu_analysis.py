"""The CUDA engine (redrep.core.cuda) on a real GPU against the CPU path: counts bit for bit, the rest to rounding.

These tests need a CUDA GPU (marker ``gpu``); where there is none they are
skipped with the reason. tests/core/test_cuda.py runs the same code on torch's
CPU device everywhere.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from redrep.core import cuda
from redrep.core.accuracy import _unique_chunks, chunk_accuracy
from redrep.core.analysis import ChunkAnalysis
from redrep.core.validation import RedrepError
from redrep.storage.repset import RepresentationSet
from repsets import random_set


def _no_cuda() -> str | None:
    try:
        import torch
    except ImportError:
        return "torch not installed"
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # asks NVML: CUDA is not started in this process
    return None if torch.cuda.is_available() else "no CUDA GPU: torch.cuda.is_available() is False"


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_no_cuda() is not None, reason=str(_no_cuda()))]

#: As in tests/core/test_cuda.py: R^2 and correlations of ordinary sets to rtol 1e-9.
RTOL, ATOL = 1e-9, 1e-10


def _compare(gpu, cpu):
    assert gpu.device_.startswith("cuda") and cpu.device_ == "cpu"
    assert set(gpu.values_) == set(cpu.values_)
    for key, v in cpu.values_.items():
        if key[0] == "accuracy":
            np.testing.assert_array_equal(gpu.values_[key], v, err_msg=str(key))  # the same counts, chunk by chunk
        else:
            np.testing.assert_allclose(gpu.values_[key], v, rtol=RTOL, atol=ATOL, equal_nan=True, err_msg=str(key))


@pytest.mark.parametrize("n_classes", [2, 10, 13])
@pytest.mark.parametrize("seed", [0, 1])
def test_the_gpu_analysis_counts_as_the_cpu(seed, n_classes):
    """ReLU-like zeros, all-zero rows and tied biases: exact ties that the bound leaves to the exact pass."""
    rs = random_set(seed, n_train=5000, n_test=2000, width=96, n_classes=n_classes)
    x = rs.features_train.copy()
    x[x < 2.5] = 0.0
    x[::11] = 0.0
    bias = rs.bias.copy()
    bias[-1] = bias[0]
    rs = RepresentationSet.from_arrays(x, rs.features_test, rs.labels_train, rs.labels_test, rs.weight, bias)
    kw = dict(acc_rep=20, r2_rep=6, random_state=seed, chunk_sizes=[1, 2, 3, 7, 24, 50, 95, 96])
    _compare(ChunkAnalysis(device="cuda", **kw).fit(rs), ChunkAnalysis(device="cpu", **kw).fit(rs))


def test_many_blocks_streamed_from_a_memory_map(tmp_path, monkeypatch):
    """Blocks of 1024 rows from a file: reading, pinned copies and computation overlap; the numbers do not move."""
    rs = random_set(2, n_train=9000, n_test=3100, width=40, n_classes=5)
    rs.save(tmp_path / "set")
    mm = RepresentationSet.load(tmp_path / "set")
    assert isinstance(mm.features_train, np.memmap)
    monkeypatch.setattr(cuda, "block_rows_for", lambda width: 1024)
    kw = dict(acc_rep=10, r2_rep=5, random_state=2)
    _compare(ChunkAnalysis(device="cuda", **kw).fit(mm), ChunkAnalysis(device="cpu", **kw).fit(mm))


@pytest.mark.parametrize("memory", [1, 2**20])
def test_small_budgets_change_no_count(memory):
    rs = random_set(3, n_train=3000, width=64, n_classes=10)
    rng = np.random.default_rng(3)
    chunks = [np.sort(rng.choice(64, w, replace=False)) for w in (1, 2, 5, 16, 40, 64) for _ in range(4)]
    X = np.round(rs.features_train * 2) / 2  # near and exact ties
    uniq, index = _unique_chunks(chunks)
    got = cuda.count_correct(X, rs.labels_train, rs.weight, rs.bias, uniq, device="cuda", memory_bytes=memory)
    cpu = chunk_accuracy(X, rs.labels_train, rs.weight, rs.bias, uniq)
    np.testing.assert_array_equal(got, np.round(cpu * len(X)).astype(np.int64))


def test_nan_on_the_gpu_is_named_as_on_the_cpu(tmp_path):
    rs = random_set(0, n_train=3000, n_test=500, width=12)
    rs.save(tmp_path / "set")
    arr = np.load(tmp_path / "set" / "features_train.npy", mmap_mode="r+")
    arr[2345, 7] = np.inf
    arr.flush()
    del arr
    mm = RepresentationSet.load(tmp_path / "set")
    with pytest.raises(
        RedrepError, match=r"features_train\.npy: expected finite values, found inf at index \(2345, 7\)"
    ):
        ChunkAnalysis(acc_rep=2, r2_rep=2, device="cuda").fit(mm)


def test_the_float32_settings_are_restored_after_the_analysis():
    import torch

    before = (torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32)
    torch.set_float32_matmul_precision("high")
    try:
        ChunkAnalysis(acc_rep=2, r2_rep=2, device="cuda").fit(random_set(0))
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cuda.matmul.allow_tf32 = before[1]
