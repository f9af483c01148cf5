"""Shared fixtures: small representation sets built in the test, never downloaded.

Tests marked ``gpu`` (tests/gpu) need a CUDA GPU; where torch sees none they are
skipped with the reason. Every other test pins ``device="cpu"`` where a device
enters, so that it checks the same path on a machine with a GPU.
"""

from __future__ import annotations

import os

import pytest

from repsets import random_set


def no_cuda_reason() -> str | None:
    """Why the gpu tests cannot run here, or None where torch sees a CUDA GPU."""
    try:
        import torch
    except ImportError:
        return "torch not installed"
    # ask NVML, which does not initialise CUDA in this process: later tests fork workers that may use it
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    if not torch.cuda.is_available():
        return "no CUDA GPU: torch.cuda.is_available() is False"
    return None


def pytest_collection_modifyitems(config, items):
    gpu = [item for item in items if item.get_closest_marker("gpu") is not None]
    reason = no_cuda_reason() if gpu else None
    if reason is not None:
        for item in gpu:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def small_set():
    return random_set()
