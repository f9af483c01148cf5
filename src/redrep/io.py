"""Atomic file writes: a temporary file in the target's folder, then a rename.

A reader never sees a half-written file, and a failure leaves what was there
before untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Temporary files and folders are created private (0600 / 0700); what lands gets the usual mode.
_FILE_MODE = 0o666 & ~_umask()
_DIR_MODE = 0o777 & ~_umask()


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_json_object(path, what: str = "a JSON object") -> dict:
    """The JSON object in ``path``; a :class:`RedrepError` naming the file when it is unreadable or not an object."""
    from .validation import RedrepError

    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RedrepError(f"{path}: expected {what}, could not parse it ({exc})") from None
    if not isinstance(doc, dict):
        raise RedrepError(f"{path}: expected {what}, found a JSON {type(doc).__name__}")
    return doc


def write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def save_npy(path, array) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(array), allow_pickle=False)


@contextlib.contextmanager
def atomic_dir(path, *, keep=None):
    """Yield a temporary folder beside ``path``; move it onto ``path`` on success.

    An existing ``path`` is replaced only once the new folder is complete;
    entries of the old folder for which ``keep(name)`` is true (and that the
    new one lacks) are moved over, so a folder can hold more than what writes it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, _DIR_MODE)
        swap_into_place(tmp, path, keep=keep)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def swap_into_place(src, target, *, keep=None) -> None:
    """Rename the complete folder ``src`` onto ``target``; an old ``target`` is removed only once replaced.

    Entries of the old ``target`` for which ``keep(name)`` is true, and that
    ``src`` does not have, move into the new one. Were this interrupted, they
    would wait in the hidden ``.<name>.*.old`` folder beside it, never deleted.
    """
    src, target = Path(src), Path(target)
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        os.replace(target, old / "x")
        os.replace(src, target)
        if keep is not None:
            for entry in (old / "x").iterdir():
                if keep(entry.name) and not (target / entry.name).exists():
                    os.replace(entry, target / entry.name)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, target)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
