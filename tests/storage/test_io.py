"""Atomic writes: a failure leaves the previous file or folder untouched and no temporary behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import procs
from redrep.core.validation import RedrepError
from redrep.storage import io


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk died")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_writers_replace_content(tmp_path):
    io.write_text(tmp_path / "t.txt", "x")
    io.write_text(tmp_path / "t.txt", "y")
    io.write_json(tmp_path / "j.json", {"a": np.float32(1.5), "b": np.arange(2)})
    io.save_npy(tmp_path / "a.npy", np.arange(3))
    assert (tmp_path / "t.txt").read_text() == "y"
    assert (tmp_path / "j.json").read_text() == '{\n  "a": 1.5,\n  "b": [\n    0,\n    1\n  ]\n}\n'
    assert np.load(tmp_path / "a.npy").tolist() == [0, 1, 2]


def test_atomic_dir(tmp_path):
    target = tmp_path / "d"
    with io.atomic_dir(target) as tmp:
        (tmp / "f").write_text("1")
    with pytest.raises(RuntimeError):
        with io.atomic_dir(target) as tmp:
            (tmp / "f").write_text("2")
            raise RuntimeError
    assert (target / "f").read_text() == "1"
    with io.atomic_dir(target) as tmp:
        (tmp / "g").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["g"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_written_files_get_the_usual_mode(tmp_path):
    # a fresh process under umask 027: files 0640 and folders 0750, whatever the module computed
    code = (
        "import sys\nfrom pathlib import Path\nfrom redrep.storage import io\n"
        "t = Path(sys.argv[1])\nio.write_text(t / 'f.txt', 'x')\n"
        "with io.atomic_dir(t / 'd') as tmp:\n    (tmp / 'g').write_text('1')\n"
    )
    r = subprocess.run(
        ["sh", "-c", f'umask 027 && exec "{sys.executable}" -c "$0" "$1"', code, str(tmp_path)],
        env=procs.env(),
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o750


# ---------------------------------------------------------------- folder swaps
def _folder(path, **files):
    path.mkdir()
    for k, v in files.items():
        (path / k).write_text(v)


def _listing(path):
    return sorted(p.name for p in path.iterdir())


def test_atomic_dir_keeps_entries_and_exchanges(tmp_path):
    target = tmp_path / "d"
    _folder(target, a="old", report="r")
    (target / "figs").mkdir()
    (target / "figs" / "f.png").write_text("png")
    with io.atomic_dir(target, keep=lambda name: name != "a") as tmp:
        (tmp / "a").write_text("new")
    assert (target / "a").read_text() == "new"
    assert (target / "report").read_text() == "r" and (target / "figs" / "f.png").read_text() == "png"
    assert _listing(tmp_path) == ["d"]


@pytest.mark.parametrize("exchange", [True, False])
def test_swap_replaces_whole_folder(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setenv("REDREP_NO_RENAME_EXCHANGE", "1")
    target = tmp_path / "d"
    _folder(target, a="1", b="1")
    src = tmp_path / "src"
    _folder(src, a="2")
    io.swap_into_place(src, target)
    assert _listing(target) == ["a"] and (target / "a").read_text() == "2"
    assert _listing(tmp_path) == ["d"]


def _swap_in_child(tmp_path, crash_at, **env):
    code = (
        "import sys\nfrom pathlib import Path\nfrom redrep.storage import io\n"
        "t = Path(sys.argv[1])\n"
        "with io.atomic_dir(t / 'd') as tmp:\n    (tmp / 'a').write_text('new')\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        env=procs.env(REDREP_CRASH_AT=crash_at, **env),
        capture_output=True,
        text=True,
    )


def test_kill_between_the_two_renames_is_recovered(tmp_path):
    _folder(tmp_path / "d", a="old")
    r = _swap_in_child(tmp_path, "swap:between-renames", REDREP_NO_RENAME_EXCHANGE="1")
    assert r.returncode == -signal.SIGKILL
    # the gap: the target is gone, its content sits in a hidden .old folder
    assert not (tmp_path / "d").exists()
    assert any(n.startswith(".d.") and n.endswith(".old") for n in _listing(tmp_path))
    with io.folder_lock(tmp_path / "d", what="test"):
        assert (tmp_path / "d" / "a").read_text() == "old"
        assert _listing(tmp_path) == [".d.lock", "d"]
    assert _listing(tmp_path) == ["d"]


def test_kill_after_the_exchange_leaves_the_new_folder(tmp_path):
    _folder(tmp_path / "d", a="old")
    r = _swap_in_child(tmp_path, "swap:exchanged")
    assert r.returncode == -signal.SIGKILL
    assert (tmp_path / "d" / "a").read_text() == "new"  # never missing: one atomic exchange
    stale = [n for n in _listing(tmp_path) if n != "d"]
    assert len(stale) == 1 and stale[0].endswith(".tmp")  # the old folder, to be cleaned
    with io.folder_lock(tmp_path / "d", what="test"):
        pass
    assert _listing(tmp_path) == ["d"]


def test_leftovers_of_a_live_writer_are_not_touched(tmp_path):
    """A temporary folder is removed by the next writer only once it holds the lock."""
    live = tmp_path / ".d.abcdefgh.tmp"
    with procs.lock_holder(tmp_path / "d"):
        live.mkdir()  # the holder's folder in the making
        with pytest.raises(RedrepError):
            with io.folder_lock(tmp_path / "d", what="test"):
                pass
        assert live.is_dir()
    with io.folder_lock(tmp_path / "d", what="test"):
        assert not live.exists()


def test_recovery_touches_only_the_folders_own_temporaries(tmp_path):
    others = [".d.json.abcdefgh.tmp", ".d.abc.tmp", ".dd.abcdefgh.tmp", "d.abcdefgh.tmp"]
    for name in others:
        (tmp_path / name).write_text("someone else's")
    (tmp_path / ".d.abcdefgh.tmp").mkdir()
    assert len(io.recover_leftovers(tmp_path / "d")) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(others)


# ----------------------------------------------------------------------- locks
def test_second_writer_is_refused_naming_the_first(tmp_path):
    d = tmp_path / "results"
    with procs.lock_holder(d, what="analyze") as holder:
        with pytest.raises(RedrepError, match=rf"{d}: locked by another analyze \(pid {holder.pid} on .*since "):
            with io.folder_lock(d, what="analyze"):
                pass
    with io.folder_lock(d, what="analyze"):  # free again once the holder ended
        assert json.loads(io.lock_file(d).read_text())["pid"] == os.getpid()
    assert not io.lock_file(d).exists()


def test_lock_of_a_killed_holder_is_free(tmp_path):
    d = tmp_path / "run"
    with procs.lock_holder(d) as holder:
        holder.kill()
        holder.wait()
        with io.folder_lock(d, what="train"):
            pass


def test_lock_is_reentrant_in_one_process(tmp_path):
    d = tmp_path / "x"
    with io.folder_lock(d, what="outer"):
        with io.folder_lock(d, what="inner"):
            pass
        assert io.lock_file(d).exists()
    assert not io.lock_file(d).exists()


# ------------------------------------------------------------------- reading
def test_read_json_object_too_deep(tmp_path):
    f = tmp_path / "meta.json"
    f.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(RedrepError, match=rf"{f}: expected a JSON object, found JSON nested too deeply"):
        io.read_json_object(f)


def test_crash_point_is_a_no_op_unless_named(monkeypatch):
    monkeypatch.setenv("REDREP_CRASH_AT", "elsewhere")
    io.crash_point("here")


def test_files_and_folders_are_synced_before_they_are_published(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(a, b):
        events.append(("rename", str(b)))
        real_replace(a, b)

    monkeypatch.setattr(io.os, "fsync", fsync)
    monkeypatch.setattr(io.os, "replace", replace)
    io.write_text(tmp_path / "f.txt", "x")
    kinds = [e[0] for e in events]
    assert kinds == ["fsync", "rename", "fsync"]  # the data, the rename, then the folder holding the name
    assert events[0][1].startswith(str(tmp_path / ".f.txt.")) and events[2][1] == str(tmp_path)
    events.clear()
    with io.atomic_dir(tmp_path / "d") as tmp:
        (tmp / "a").write_text("1")
    synced = [e[1] for e in events if e[0] == "fsync"]
    assert synced[0].endswith("/a") and synced[-1] == str(tmp_path)  # every file first, the parent last


def test_user_paths_name_what_the_user_asked_for():
    from redrep.cli import user_paths

    assert user_paths("no space left on device writing /a/.results.k2j_3abc.tmp/r.csv") == (
        "no space left on device writing /a/results/r.csv"
    )
    assert user_paths("/d/.download_repr.ab12cd34.tmp: x; /d/.x.json.abcdefgh.tmp") == "/d/download_repr: x; /d/x.json"
    assert user_paths("/a/.hidden/file.tmp") == "/a/.hidden/file.tmp"  # not one of ours: left alone


def test_a_full_disk_is_said_as_such_even_by_numpy(tmp_path):
    """numpy's tofile reports a full disk as a short write without an errno: both error paths name the cause."""
    from redrep.cli import os_error_line

    with procs.small_disk(tmp_path / "disk", 64) as disk:
        with pytest.raises(OSError) as info, open(disk / "big.bin", "wb") as f:
            np.zeros(10**6).tofile(f)
    exc = info.value
    assert exc.errno is None and " requested and " in str(exc)  # the short write, not ENOSPC
    assert io.disk_full(exc) and os_error_line(exc) == "no space left on device"
    assert str(io.write_error(exc, "/x/big.bin")) == "no space left on device writing /x/big.bin"
    assert not io.disk_full(PermissionError(13, "Permission denied"))


def test_read_json_object_number_too_long(tmp_path):
    """An integer of more digits than Python converts is one line naming the file, not a ValueError traceback."""
    f = tmp_path / "results.json"
    f.write_text('{"acc_rep": ' + "9" * 5000 + "}")
    with pytest.raises(RedrepError, match=rf"^{f}: expected a JSON object, found a number too long to read \("):
        io.read_json_object(f)


# ---------------------------------------------------------------- linked folders
@pytest.fixture
def other_disk(tmp_path):
    """A folder on another file system when there is one (/dev/shm), else another folder of tmp_path."""
    import shutil
    import tempfile

    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK) and os.stat(shm).st_dev != os.stat(tmp_path).st_dev:
        d = tempfile.mkdtemp(prefix="redrep-test-", dir=shm)
        yield __import__("pathlib").Path(d)
        shutil.rmtree(d, ignore_errors=True)
    else:
        d = tmp_path / "bigdisk"
        d.mkdir()
        yield d


def _linked(tmp_path, other_disk, **files):
    """data/results -> OTHER/results_real holding ``files``; returns (link, real)."""
    real = other_disk / "results_real"
    _folder(real, **files)
    (tmp_path / "data").mkdir()
    link = tmp_path / "data" / "results"
    link.symlink_to(real)
    return link, real


def test_atomic_dir_writes_through_a_link(tmp_path, other_disk):
    link, real = _linked(tmp_path, other_disk, a="old", report="r")
    with io.folder_lock(link, what="test"):
        assert io.lock_file(link) == other_disk / ".results_real.lock"  # the target's lock, beside it
        with io.atomic_dir(link, keep=lambda name: name != "a") as tmp:
            assert tmp.parent == other_disk  # built on the target's disk
            (tmp / "a").write_text("new")
    assert link.is_symlink() and link.resolve() == real  # still a link to the same folder
    assert (real / "a").read_text() == "new" and (real / "report").read_text() == "r"
    assert _listing(tmp_path / "data") == ["results"]  # no hidden link or folder left on the original disk
    assert _listing(other_disk) == ["results_real"]


def test_a_linked_folder_has_one_lock_under_both_names(tmp_path, other_disk):
    link, real = _linked(tmp_path, other_disk, a="1")
    with procs.lock_holder(real, what="analyze") as holder:
        with pytest.raises(RedrepError, match=rf"^{link}: locked by another analyze \(pid {holder.pid} "):
            with io.folder_lock(link, what="analyze"):
                pass
    with procs.lock_holder(link, what="analyze"):
        with pytest.raises(RedrepError, match="locked by another analyze"):
            with io.folder_lock(real, what="analyze"):
                pass


def test_a_file_written_through_a_link(tmp_path, other_disk):
    real = other_disk / "config.json"
    real.write_text("{}")
    link = tmp_path / "config.json"
    link.symlink_to(real)
    io.write_json(link, {"a": 1})
    assert link.is_symlink() and json.loads(real.read_text()) == {"a": 1}
    assert _listing(tmp_path) == ["config.json"] and _listing(other_disk) == ["config.json"]


def test_swap_from_another_disk_into_a_linked_folder(tmp_path, other_disk):
    """A folder staged beside the link (as a download stages its files) is moved onto the link's target."""
    link, real = _linked(tmp_path, other_disk, a="old")
    staging = tmp_path / "data" / "results.partial"
    _folder(staging, a="new", b="2")
    io.swap_into_place(staging, link)
    assert link.is_symlink() and _listing(real) == ["a", "b"] and (real / "a").read_text() == "new"
    assert _listing(tmp_path / "data") == ["results"] and _listing(other_disk) == ["results_real"]


def test_a_dangling_link_is_refused(tmp_path):
    link = tmp_path / "results"
    link.symlink_to(tmp_path / "unmounted" / "results_real")
    msg = r"results: a link to .*results_real, whose folder .*unmounted does not exist"
    with pytest.raises(RedrepError, match=msg):
        with io.atomic_dir(link) as tmp:
            (tmp / "a").write_text("x")
    assert not (tmp_path / "unmounted").exists() and link.is_symlink()
