"""Atomic writes: a failure leaves the previous file or folder untouched and no temporary behind."""

from __future__ import annotations

import numpy as np
import pytest

from redrep import io


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
    import os

    mask = os.umask(0o022)
    try:
        io.write_text(tmp_path / "f.txt", "x")
        with io.atomic_dir(tmp_path / "d") as tmp:
            (tmp / "g").write_text("1")
    finally:
        os.umask(mask)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == io._FILE_MODE
    assert (tmp_path / "d").stat().st_mode & 0o777 == io._DIR_MODE
