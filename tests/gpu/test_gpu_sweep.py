"""Sweeps on one GPU: several workers share it (--jobs 2 and 4), started without CUDA in the driver."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import procs
from cifar_archive import write_cifar_archive

pytestmark = pytest.mark.gpu


def test_the_driver_looks_for_gpus_without_initialising_cuda():
    # a process forked after these calls can still use the GPU: they asked NVML, not the CUDA runtime
    code = (
        "import os, torch\n"
        "from redrep.core.device import resolve_device\n"
        "from redrep.experiments.executors import local_devices, start_method\n"
        "assert resolve_device('auto') == 'cuda' and resolve_device('cuda:0') == 'cuda:0'\n"
        "devs = local_devices('cuda', 4)\n"
        "assert len(devs) == 4 and start_method(devs) == 'spawn'\n"
        "assert not torch.cuda.is_initialized()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    ok = torch.ones(3, device='cuda').sum().item() == 3.0\n"
        "    os._exit(0 if ok else 3)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "assert os.waitstatus_to_exitcode(status) == 0, status\n"
    )
    r = subprocess.run([sys.executable, "-c", code], env=procs.env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("jobs", [2, 4])
def test_a_sweep_with_several_workers_on_one_gpu_finishes_and_collects(tmp_path, jobs):
    write_cifar_archive(tmp_path / "data" / "cifar-10-python.tar.gz", n_train=512, n_test=256)
    out = tmp_path / "sweep"
    # one GPU, however many this machine has
    r = procs.redrep("sweep", "--dataset", "cifar10", "--data-dir", tmp_path / "data", "--arch", "wide_resnet16",
                     "--widths", "16,32", "--seeds", "2", "--epochs", "2", "--jobs", jobs, "--device", "cuda",
                     "--acc-rep", "4", "--r2-rep", "3", "--out", out, "-q", CUDA_VISIBLE_DEVICES="0")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "4 runs ready (4 trained now, 0 already finished)" in r.stdout
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["status"] == "done" and len(doc["runs"]) == 4
    assert {run["device"] for run in doc["runs"]} == {"cuda"}  # one GPU: every worker on it
    for run in doc["runs"]:
        env = json.loads((out / "runs" / run["run"] / "summary.json").read_text())["environment"]
        assert env["device"].startswith("cuda") and env["amp_dtype"] == "bfloat16"
    st = procs.redrep("sweep-status", out)
    assert st.returncode == 0 and st.stdout.splitlines()[-1] == "4 finished; sweep done"
