"""State files with an integer of more digits than Python converts: one line naming the file, exit 2.

The probe's reproductions (a ValueError traceback before): meta.json, results.json, config.json and sweep.json,
each read through storage.io.read_json_object. CPU only.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from redrep.cli import main
from repsets import random_set
from results_factory import paper_like, write_results_dir

HUGE = "9" * 5000


def _poison(path, key):
    doc = json.loads(path.read_text())
    doc[key] = 0
    path.write_text(json.dumps(doc).replace(f'"{key}": 0', f'"{key}": {HUGE}'))


def _one_line(r, path):
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith(f"Error: {path}: expected ") and r.stderr.count("\n") == 1, r.stderr
    assert "a number too long to read" in r.stderr


def test_meta_json(tmp_path):
    random_set(0, width=8, n_train=40, n_test=30).save(tmp_path / "set")
    _poison(tmp_path / "set" / "meta.json", "n_train")
    _one_line(
        CliRunner().invoke(main, ["analyze", "--repr", str(tmp_path / "set"), "--device", "cpu", "-q"]),
        tmp_path / "set" / "meta.json",
    )


def test_results_json(tmp_path):
    write_results_dir(tmp_path, paper_like(width=16, w_star=4))
    _poison(tmp_path / "results.json", "error_inf")
    for cmd in (["plot", "--out", str(tmp_path / "p")], ["report"]):
        _one_line(CliRunner().invoke(main, [*cmd, "--results", str(tmp_path)]), tmp_path / "results.json")


@pytest.mark.parametrize("command", ["train", "extract", "dynamics"])
def test_config_json(tmp_path, command):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"dataset": "synthetic", "arch": "mlp", "seed": ' + HUGE + "}")
    args = ["train", "--out", str(run)] if command == "train" else [command, str(run)]
    _one_line(CliRunner().invoke(main, [*args, "--device", "cpu", "-q"]), run / "config.json")


def test_sweep_json(tmp_path):
    (tmp_path / "sweep.json").write_text('{"tool": "redrep sweep", "version": ' + HUGE + "}")
    _one_line(CliRunner().invoke(main, ["sweep-status", str(tmp_path)]), tmp_path / "sweep.json")
