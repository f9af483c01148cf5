"""Helpers for tests that need real processes and real disks: a lock holder, a tiny file system."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")


def env(**extra) -> dict:
    """The environment of a child process that imports this checkout's redrep."""
    e = dict(os.environ)
    e["PYTHONPATH"] = SRC + os.pathsep + e.get("PYTHONPATH", "")
    e.update({k: str(v) for k, v in extra.items()})
    return e


def redrep(*args, **extra_env) -> subprocess.CompletedProcess:
    """Run ``python -m redrep ARGS`` in a child process (stdin closed), capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "redrep", *map(str, args)],
        env=env(**extra_env),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )


@contextlib.contextmanager
def lock_holder(path, what="analyze"):
    """A separate process that holds ``folder_lock(path)`` until the block ends; yields its pid.

    It reports on stdout once it holds the lock and waits on its stdin, so the test
    knows the state without sleeping.
    """
    code = (
        "import sys\nfrom redrep.storage.io import folder_lock\n"
        f"with folder_lock({str(path)!r}, what={what!r}):\n"
        "    print('locked', flush=True)\n    sys.stdin.read()\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], env=env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline().strip() == b"locked"
        yield p
    finally:
        if p.poll() is None:
            p.stdin.close()
            p.wait(timeout=30)


@contextlib.contextmanager
def small_disk(path: Path, size_kb: int):
    """A tmpfs of ``size_kb`` kB mounted at ``path`` (root only); skips the test where it cannot be mounted."""
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("a small tmpfs needs root and mount(8)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode(errors='replace').strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill_disk(path: Path, leave_bytes: int) -> Path:
    """Write a filler file in ``path`` so that about ``leave_bytes`` stay free; returns it."""
    filler = path / "filler"
    size = max(0, free_bytes(path) - leave_bytes)
    with open(filler, "wb") as f:
        f.write(b"\0" * size)
    return filler


def free_bytes(path: Path) -> int:
    """Bytes free for an unprivileged writer on the file system of ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def alive(pid: int) -> bool:
    """Whether process ``pid`` is still running (a zombie has ended; only its parent's bookkeeping is left)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:  # gone, or gone while being read (ESRCH)
        return False
    return state not in ("Z", "X")
