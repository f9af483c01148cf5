"""One device decision: redrep.core.device.resolve_device, used by every command's --device."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

import procs
from redrep.cli import main
from redrep.core.device import check_device_name, resolve_device
from redrep.core.validation import RedrepError


@pytest.mark.parametrize("name", ["gpu", "CUDA", "cuda:", "cuda:x", "cuda:-1", "cuda:0:1", " cpu", "", 0, None])
def test_malformed_names(name):
    with pytest.raises(RedrepError, match=r"^device: expected one of auto, cpu, cuda or cuda:N, found "):
        check_device_name(name)
    with pytest.raises(RedrepError, match=r"^device: expected one of auto, cpu, cuda or cuda:N"):
        resolve_device(name)


def test_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == "cpu"
    for name in ("cuda", "cuda:0", "cuda:7"):
        with pytest.raises(RedrepError, match=rf"^device: expected a CUDA GPU for '{name}', found none on this"):
            resolve_device(name)


@pytest.mark.parametrize("count", [1, 2, 4])
def test_with_gpus_the_index_is_checked(monkeypatch, count):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda") == "cuda"
    assert resolve_device(f"cuda:{count - 1}") == f"cuda:{count - 1}"
    have = ", ".join(f"cuda:{i}" for i in range(count))
    with pytest.raises(RedrepError, match=rf"^device: expected one of the {count} CUDA device\(s\) .*\({have}\), "):
        resolve_device(f"cuda:{count}")
    # resolving is idempotent: a resolved name passes through unchanged
    assert resolve_device(resolve_device("cuda:0")) == "cuda:0"


def test_cpu_and_auto_without_a_driver_do_not_import_torch():
    code = (
        "import os, sys\nfrom redrep.core.device import resolve_device\n"
        "assert resolve_device('cpu') == 'cpu'\n"
        "if not os.path.exists('/dev/nvidiactl'):\n    assert resolve_device('auto') == 'cpu'\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    r = subprocess.run([sys.executable, "-c", code], env=procs.env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(torch.cuda.is_available() and torch.cuda.device_count() > 7, reason="this machine has cuda:7")
@pytest.mark.parametrize(
    "args",
    [
        ["train", "--out", "{tmp}/run", "--dataset", "synthetic", "--arch", "mlp", "--epochs", "1"],
        ["analyze", "--repr", "{tmp}/nothing"],
        ["extract", "{tmp}/nothing"],
        ["ensemble", "{tmp}/nothing"],
    ],
)
def test_every_command_refuses_a_missing_gpu_in_one_line(tmp_path, args):
    args = [a.format(tmp=tmp_path) for a in args] + ["--device", "cuda:7"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    assert r.output.startswith("Error: device: expected ") and r.output.count("\n") == 1
    assert "'cuda:7'" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "run").exists()
