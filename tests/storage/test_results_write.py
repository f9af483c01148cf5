"""A results folder is replaced whole or not at all, by one writer at a time (kill -9, full disk, two writers)."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest
from click.testing import CliRunner

import procs
from redrep.cli import main
from redrep.core.accuracy import fastpass_library
from redrep.core.analysis import ChunkAnalysis
from redrep.core.validation import RedrepError
from redrep.storage.results import CSV_NAME, JSON_NAME, write_results
from repsets import random_set

ARGS = ("--acc-rep", "3", "--r2-rep", "2", "-q")


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def native(tmp_path):
    random_set(0, width=8, n_train=120, n_test=80).save(tmp_path / "set")
    return tmp_path / "set"


def snapshot(out):
    """Every result file's bytes, by name (a report or figures beside them excluded)."""
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != "report.html"}
    assert {CSV_NAME, JSON_NAME, "r2_test.npy"} <= set(files)
    return files


def seed_of(out):
    return json.loads((out / JSON_NAME).read_text())["params"]["seed"]


def test_kill_during_the_writes_leaves_the_old_results(native, tmp_path):
    out = tmp_path / "res"
    assert run("analyze", "--device", "cpu", "--repr", native, "--out", out, "--seed", "0", *ARGS).exit_code == 0
    (out / "report.html").write_text("<p>kept</p>")
    before = snapshot(out)
    for point in ("results:half-written", "results:before-swap"):
        r = procs.redrep(
            "analyze", "--device", "cpu", "--repr", native, "--out", out, "--seed", "1", *ARGS, REDREP_CRASH_AT=point
        )
        assert r.returncode == -signal.SIGKILL, r.stderr
        assert snapshot(out) == before  # not one new file beside the old ones
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".res.")]
    assert leftovers  # the killed writer's folder, until the next writer cleans it
    r = procs.redrep("analyze", "--device", "cpu", "--repr", native, "--out", out, "--seed", "1", *ARGS)
    assert r.returncode == 0, r.stderr
    assert seed_of(out) == 1 and (out / "report.html").read_text() == "<p>kept</p>"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res", "set"]


def test_second_analyze_exits_2_naming_the_first(native, tmp_path):
    out = tmp_path / "res"
    with procs.lock_holder(out, what="analyze") as holder:
        r = procs.redrep("analyze", "--device", "cpu", "--repr", native, "--out", out, *ARGS)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert f"locked by another analyze (pid {holder.pid} on " in r.stderr
    assert not out.exists()


@pytest.mark.parametrize("seed", [0, 1])
def test_full_disk_keeps_the_old_results(tmp_path, seed):
    rs = random_set(seed, width=8, n_train=120, n_test=80)
    an = ChunkAnalysis(device="cpu", acc_rep=3, r2_rep=2, random_state=seed, progress=False).fit(rs)
    with procs.small_disk(tmp_path / "disk", 256) as disk:
        out = disk / "res"
        write_results(an, rs, out)
        before = snapshot(out)
        filler = procs.fill_disk(disk, 2 * 4096)
        # a results.json larger than the free space: the small files fit, the last one does not
        with pytest.raises(RedrepError, match=f"^no space left on device writing {out}$"):
            write_results(an, rs, out, extra={"note": "x" * 40000})
        assert snapshot(out) == before
        assert sorted(p.name for p in disk.iterdir()) == ["filler", "res"]
        filler.unlink()
        write_results(an, rs, out, extra={"note": "x" * 40000})
        assert json.loads((out / JSON_NAME).read_text())["note"] == "x" * 40000


def test_full_disk_cli_says_so_naming_the_users_folder(native, tmp_path):
    with procs.small_disk(tmp_path / "disk", 256) as disk:
        out = disk / "res"
        assert run("analyze", "--device", "cpu", "--repr", native, "--out", out, *ARGS).exit_code == 0
        before = snapshot(out)
        procs.fill_disk(disk, 0)
        r = procs.redrep("analyze", "--device", "cpu", "--repr", native, "--out", out, "--seed", "3", *ARGS)
        assert r.returncode == 2
        assert r.stderr == f"Error: no space left on device writing {out}\n"
        assert ".tmp" not in r.stderr and r.stderr.count("\n") == 1
        assert snapshot(out) == before


def test_results_record_threads_and_block_rows(native, tmp_path):
    out = tmp_path / "res"
    assert run("analyze", "--device", "cpu", "--repr", native, "--out", out, "--block-rows", "50", *ARGS).exit_code == 0
    doc = json.loads((out / JSON_NAME).read_text())
    assert doc["params"]["block_rows"] == 50
    pools = doc["threads"]["pools"]
    assert pools and all(isinstance(p["num_threads"], int) and p["num_threads"] >= 1 for p in pools)
    lib = fastpass_library()
    level = {4: "x86-64-v4", 3: "x86-64-v3", 0: "base"}[lib.redrep_fastpass_level()] if lib else None
    assert doc["accuracy_pass"] == (f"compiled ({level})" if lib else "numpy")
    np.testing.assert_array_equal(np.load(out / "r2_test.npy")[0], [1, 2, 4, 8])


def test_example_on_a_full_disk_says_no_space(tmp_path):
    with procs.small_disk(tmp_path / "disk", 64) as disk:
        r = procs.redrep("example", "--out", disk / "set", "--n-train", "2000", "--n-test", "500")
        assert r.returncode == 2
        assert r.stderr == f"Error: no space left on device writing {disk / 'set'}\n"
        assert sorted(p.name for p in disk.iterdir()) == []  # nothing half-written, no temporary folder


def test_a_file_in_place_of_the_results_folder_is_left_alone(tmp_path):
    rs = random_set(2, width=8, n_train=120, n_test=80)
    an = ChunkAnalysis(device="cpu", acc_rep=3, r2_rep=2, random_state=2, progress=False).fit(rs)
    out = tmp_path / "res"
    out.write_text("my notes")
    with pytest.raises(RedrepError, match=rf"^{out}: expected a folder \(or nothing\) to replace, found a file$"):
        write_results(an, rs, out)
    assert out.read_text() == "my notes" and sorted(p.name for p in tmp_path.iterdir()) == ["res"]


def test_analyze_into_a_linked_results_folder(native, tmp_path):
    """The probe's reproduction: data/results -> ../bigdisk/results_real stays a link, written through, twice."""
    real = tmp_path / "bigdisk" / "results_real"
    real.mkdir(parents=True)
    (tmp_path / "data").mkdir()
    link = tmp_path / "data" / "results"
    link.symlink_to("../bigdisk/results_real")
    for seed in (0, 1):
        r = procs.redrep("analyze", "--device", "cpu", "--repr", native, "--out", link, "--seed", seed, *ARGS)
        assert r.returncode == 0, r.stderr
        assert link.is_symlink() and seed_of(real) == seed
        assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["results"]  # no hidden link or lock left
        assert sorted(p.name for p in (tmp_path / "bigdisk").iterdir()) == ["results_real"]
    with procs.lock_holder(real, what="analyze") as holder:  # one lock, whichever name is used
        r = procs.redrep("analyze", "--device", "cpu", "--repr", native, "--out", link, *ARGS)
        assert r.returncode == 2 and f"locked by another analyze (pid {holder.pid}" in r.stderr
