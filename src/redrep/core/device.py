"""One device decision for the whole package: which processor computes.

Every command resolves its ``--device`` once, at its entry point, with
:func:`resolve_device`, and passes the resolved name down; library functions
accept either a name to resolve or an already-resolved one (resolving is
idempotent). ``"cpu"`` never imports torch, and ``"auto"`` imports it only on
a machine that has NVIDIA's device files.
"""

from __future__ import annotations

import os
import re
import sys

from .validation import RedrepError

#: What ``device`` may be: one of these, or ``cuda:N``.
DEVICE_NAMES = ("auto", "cpu", "cuda")
_CUDA_N = re.compile(r"^cuda:(\d+)$")


def check_device_name(device) -> str:
    """Check the spelling of a device name (``auto``, ``cpu``, ``cuda`` or ``cuda:N``) without looking for one."""
    if not isinstance(device, str) or not (device in DEVICE_NAMES or _CUDA_N.match(device)):
        raise RedrepError(f"device: expected one of {', '.join(DEVICE_NAMES)} or cuda:N, found {device!r}")
    return device


def _torch_cuda():
    """torch.cuda, or None where torch is not installed.

    Its ``is_available()`` is set to ask NVML (torch's documented switch) rather than the
    CUDA runtime, whose cudaGetDeviceCount initialises CUDA in this process: a sweep
    driver that looked for a GPU could then not fork workers that use it.
    """
    try:
        import torch
    except ImportError:
        return None
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    return torch.cuda


def resolve_device(device: str = "auto") -> str:
    """The device to compute on, as a torch device name: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Parameters
    ----------
    device : str
        ``"auto"`` (a CUDA GPU when present, else the CPU), ``"cpu"``,
        ``"cuda"`` or ``"cuda:N"``.

    Raises
    ------
    RedrepError
        A malformed name, a CUDA device on a machine without one, or a
        ``cuda:N`` beyond the GPUs present; the message names ``device`` and
        what this machine has.
    """
    check_device_name(device)
    if device == "cpu":
        return "cpu"
    if device == "auto":
        # without the driver's device files there is no GPU: spare the import of torch
        if "torch" not in sys.modules and not os.path.exists("/dev/nvidiactl"):
            return "cpu"
        cuda = _torch_cuda()
        return "cuda" if cuda is not None and cuda.is_available() else "cpu"
    cuda = _torch_cuda()
    if cuda is None or not cuda.is_available():
        raise RedrepError(f"device: expected a CUDA GPU for {device!r}, found none on this machine (use cpu or auto)")
    m = _CUDA_N.match(device)
    count = cuda.device_count()
    if m and int(m.group(1)) >= count:
        have = ", ".join(f"cuda:{i}" for i in range(count))
        raise RedrepError(
            f"device: expected one of the {count} CUDA device(s) of this machine ({have}), found {device!r}"
        )
    return device
