"""Atomic file writes, folder swaps and folder locks.

A file is written to a temporary file in the target's folder, synced to disk,
then renamed onto the target; a folder is built aside and swapped in at once.
A reader never sees a half-written file or folder, and a failure leaves what
was there before untouched. :func:`folder_lock` keeps a second writer out of a
folder, and repairs what a killed writer left behind.

A path that is a symbolic link (a results folder kept on another disk, say) is
written through: the temporary file or folder is made beside the link's
target, the swap replaces the target, and the lock is taken on the target's
name (:func:`real_path`), so the link stays a link and two names of one folder
share one lock.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..core.validation import RedrepError

try:
    import fcntl
except ImportError:  # no advisory locks on this system: writers are not guarded
    fcntl = None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Temporary files and folders are created private (0600 / 0700); what lands gets the usual mode.
_FILE_MODE = 0o666 & ~_umask()
_DIR_MODE = 0o777 & ~_umask()


def real_path(path) -> Path:
    """The absolute path that writes to ``path`` land on: symbolic links followed, in the last part too.

    A link whose target's folder does not exist (a disk that is not mounted,
    say) is a :class:`RedrepError`: writing would create that folder elsewhere.
    """
    path = Path(path).expanduser()
    real = Path(os.path.realpath(path))
    if real != Path(os.path.abspath(path)) and not real.parent.is_dir():
        raise RedrepError(
            f"{path}: a link to {real}, whose folder {real.parent} does not exist; "
            "expected the link's target folder to exist (is its disk mounted?)"
        )
    return real


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path`` (beside its target, for a link); rename it onto that on success."""
    path = real_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, _FILE_MODE)
            fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_json_object(path, what: str = "a JSON object", *, text: str | None = None) -> dict:
    """The JSON object in ``path``; a :class:`RedrepError` naming the file when it is unreadable or not an object.

    Every reader of redrep's own JSON files (results.json, meta.json,
    config.json, sweep.json, ...) goes through here. ``text``, when given, is
    the file's content already read (``path`` then only names it).
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8") if text is None else text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RedrepError(f"{path}: expected {what}, could not parse it ({exc})") from None
    except RecursionError:
        raise RedrepError(f"{path}: expected {what}, found JSON nested too deeply to read") from None
    except ValueError as exc:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
        raise RedrepError(f"{path}: expected {what}, found a number too long to read ({exc})") from None
    if not isinstance(doc, dict):
        raise RedrepError(f"{path}: expected {what}, found a JSON {type(doc).__name__}")
    return doc


def write_error(exc: OSError, path):
    """A one-line :class:`RedrepError` for a failed write of ``path``: a full disk said as such."""
    if disk_full(exc):
        return RedrepError(f"no space left on device writing {path}")
    return RedrepError(f"{path}: cannot write ({exc.strerror or exc})")


def disk_full(exc: OSError) -> bool:
    """Whether ``exc`` says the disk (or the quota) is full, numpy's short writes included."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    # numpy's tofile reports a full disk as "N requested and M written", without an errno
    return exc.errno is None and " requested and " in str(exc) and str(exc).endswith(" written")


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

    An existing ``path`` is replaced only once the new folder is complete and
    synced to disk; entries of the old folder for which ``keep(name)`` is true
    (and that the new one lacks) are carried over, so a folder can hold more
    than what writes it. A ``path`` that is a link is written through: the
    temporary folder is made beside its target, which the swap replaces.
    """
    path = real_path(path)
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
    """Put the complete folder ``src`` at ``target``; an old ``target`` is removed only once replaced.

    Entries of the old ``target`` for which ``keep(name)`` is true, and that
    ``src`` does not have, are linked (or copied) into ``src`` first, so the
    new folder is whole at the moment it appears. On Linux the two folders are
    exchanged in one step (``renameat2(RENAME_EXCHANGE)``), so ``target``
    never goes missing; elsewhere two renames are used, and a process killed
    between them leaves the old folder in a hidden ``.<name>.*.old`` folder,
    which :func:`recover_leftovers` puts back. A ``target`` that is a link is
    written through (its target is replaced; a ``src`` on another file system
    is copied beside it first).
    """
    src, target = Path(src), real_path(target)
    if (target.exists() or target.is_symlink()) and not target.is_dir():
        raise RedrepError(f"{target}: expected a folder (or nothing) to replace, found a file")
    target.parent.mkdir(parents=True, exist_ok=True)
    if os.stat(src).st_dev != os.stat(target.parent).st_dev:  # a rename cannot cross file systems
        near = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        try:
            near.rmdir()
            shutil.copytree(src, near, symlinks=True)
            swap_into_place(near, target, keep=keep)
        finally:
            shutil.rmtree(near, ignore_errors=True)
        shutil.rmtree(src, ignore_errors=True)
        return
    if keep is not None and target.is_dir():
        for entry in target.iterdir():
            if keep(entry.name) and not (src / entry.name).exists():
                _link_tree(entry, src / entry.name)
    sync_tree(src)
    if not target.exists():
        os.replace(src, target)
        fsync_dir(target.parent)
        return
    if _exchange(src, target):
        crash_point("swap:exchanged")
        fsync_dir(target.parent)
        shutil.rmtree(src, ignore_errors=True)  # now the old folder
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    os.replace(target, old / "x")
    crash_point("swap:between-renames")
    os.replace(src, target)
    fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link a file or a folder tree (copying where links are refused): cheap and leaves ``src`` alone."""

    def link(a, b):
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    if src.is_dir() and not src.is_symlink():
        shutil.copytree(src, dst, symlinks=True, copy_function=link)
    elif src.is_symlink():
        os.symlink(os.readlink(src), dst)
    else:
        link(src, dst)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with Linux's renameat2; False where the system cannot (then nothing moved)."""
    if sys.platform != "linux" or os.environ.get("REDREP_NO_RENAME_EXCHANGE"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False  # not supported by this file system or kernel
    raise OSError(err, os.strerror(err), str(b))


# ------------------------------------------------------------------- syncing
def fsync_file(path) -> None:
    """Flush a written file's data to disk (before the rename that publishes it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path) -> None:
    """Flush a folder's entries (after a rename in it), where the system allows it."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on folders; the rename itself still happened
    finally:
        os.close(fd)


def sync_tree(path) -> None:
    """fsync every file and folder below ``path`` (and ``path`` itself)."""
    path = Path(path)
    if path.is_file():
        fsync_file(path)
        return
    for root, _dirs, files in os.walk(path):
        for name in files:
            f = os.path.join(root, name)
            if not os.path.islink(f):
                fsync_file(f)
        fsync_dir(root)


# ----------------------------------------------------------------- leftovers
def _leftovers(path: Path, suffix: str) -> list[Path]:
    # exactly tempfile's names for this path (".NAME." + 8 random characters + suffix): never ".NAME.json.*.tmp"
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.[A-Za-z0-9_]{{8}}{re.escape(suffix)}$")
    try:
        return [p for p in path.parent.iterdir() if pattern.match(p.name)]
    except FileNotFoundError:
        return []


def recover_leftovers(path) -> list[str]:
    """Repair what a killed writer of ``path`` left beside it; returns what was done, one line each.

    A missing ``path`` whose old copy survives in a ``.<name>.*.old`` folder
    (a kill between the two renames of :func:`swap_into_place`) is put back;
    then the writer's temporary ``.<name>.*.tmp`` and ``.<name>.*.old``
    entries are removed. Call it only while holding :func:`folder_lock` on
    ``path``, so that no live writer's temporary folder is deleted.
    """
    path = real_path(path)
    done = []
    olds = _leftovers(path, ".old")
    for old in olds:
        saved = old / "x"
        if not path.exists() and saved.exists():
            os.replace(saved, path)
            fsync_dir(path.parent)
            done.append(f"{path}: restored from {old.name} (an earlier writer was killed mid-swap)")
    for stale in _leftovers(path, ".tmp") + olds:
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        done.append(f"removed {stale} (left by an earlier, killed writer)")
    return done


def remove_stale_temps(folder) -> list[Path]:
    """Remove the hidden ``.<name>.*.tmp`` files of :func:`atomic_path` directly in ``folder`` (under its lock)."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for p in entries:
        if p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file() and not p.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
            removed.append(p)
    return removed


# --------------------------------------------------------------------- locks
#: Locks held by this process: resolved path -> depth, so that a holder may lock again (a library call inside a CLI
#: command that already holds the folder).
_HELD: dict[str, int] = {}


def lock_file(path) -> Path:
    """The lock file of a folder: ``.<name>.lock`` beside it (beside its target, for a link)."""
    path = real_path(path)
    return path.parent / f".{path.name}.lock"


@contextlib.contextmanager
def folder_lock(path, *, what: str):
    """Hold an exclusive advisory lock on the folder ``path`` while writing it.

    The lock is ``fcntl.flock`` on ``.<name>.lock`` beside the folder, so it
    ends with its holder, even one killed by ``kill -9``: there are no stale
    locks. The holder's pid, host, command line and start time are written into
    the lock file for the message a second writer gets. Leftovers of an
    earlier, killed writer are repaired or removed once the lock is held
    (:func:`recover_leftovers`). Re-entrant within one process.

    Parameters
    ----------
    path : the folder (it need not exist yet)
    what : what the holder does, e.g. "analyze"; goes into the lock file

    A ``path`` that is a link is locked by its target's name (the lock file
    sits beside the target), so every name of a folder takes the same lock.

    Raises
    ------
    RedrepError
        When another process holds the lock: one line naming it.
    """
    given = Path(path)
    path = real_path(given)
    key = str(path)
    if _HELD.get(key):
        _HELD[key] += 1
        try:
            yield given
        finally:
            _HELD[key] -= 1
        return
    lock = lock_file(path)
    fd = None
    if fcntl is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RedrepError(f"{path.parent}: cannot create the folder ({exc.strerror or exc})") from None
        fd = _acquire(lock, given)
        try:
            info = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "command": " ".join(sys.argv) or sys.executable,
                "what": what,
                "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
            except OSError as exc:  # a full disk: fail now rather than after the work
                raise write_error(exc, path) from None
            recover_leftovers(path)
        except BaseException:
            _release(lock, fd)
            raise
    _HELD[key] = 1
    try:
        yield given
    finally:
        del _HELD[key]
        if fd is not None:
            _release(lock, fd)


def _acquire(lock: Path, path: Path) -> int:
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RedrepError(f"{lock}: cannot create the lock file of {path} ({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise RedrepError(f"{lock}: cannot lock {path} ({exc.strerror or exc})") from None
            raise RedrepError(f"{path}: {_holder_line(lock)}; expected no other writer: wait for it to end") from None
        # the previous holder unlinks the file on release: make sure we locked the file now at that name
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _release(lock: Path, fd: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        lock.unlink()  # while still locked, so no one else holds this inode's lock
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _holder_line(lock: Path) -> str:
    try:
        info = read_json_object(lock)
    except RedrepError:  # unreadable, half written, or not an object
        return "locked by another process (its details are not written yet)"
    return (
        f"locked by another {info.get('what', 'writer')} (pid {info.get('pid')} on {info.get('host')}, "
        f"`{info.get('command')}`, since {info.get('since')})"
    )


# ------------------------------------------------------------------ testing
def crash_point(name: str) -> None:
    """Kill this process with SIGKILL here when ``REDREP_CRASH_AT`` names this point.

    Lets the tests interrupt a real process at an exact place in a write
    (``kill -9`` at a chosen moment, without timing); a no-op otherwise.
    """
    if os.environ.get("REDREP_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
