"""The install's extras: analysis without torch, and one line naming the extra a command needs (CPU only)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from click.testing import CliRunner

import procs
import redrep.core.accuracy as acc_mod
from redrep.cli import main, missing_extra_line
from repsets import arrays, random_set, write_authors

ROOT = Path(__file__).resolve().parents[2]

# run redrep with some packages made unimportable, as in an install without their extra
_BLOCKED = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None  # `import name` now raises ModuleNotFoundError(name=name)
from redrep.cli import main
sys.argv[0] = "redrep"
main()
"""


def run_without(blocked, *args, cwd=None):
    return subprocess.run(
        [sys.executable, "-c", _BLOCKED.format(blocked=tuple(blocked)), *map(str, args)],
        capture_output=True,
        text=True,
        env=procs.env(),
        cwd=cwd,
        timeout=300,
    )


@pytest.mark.parametrize(
    "blocked, args, extra",
    [
        (("torch",), ["train", "--out", "run", "--device", "cpu"], "train"),
        (("sklearn",), ["train", "--out", "run", "--dataset", "parity-digits", "--device", "cpu"], "train"),
        (("torch",), ["extract", "run", "--device", "cpu"], "train"),
    ],
)
def test_a_command_without_its_extra_says_which_in_one_line(tmp_path, blocked, args, extra):
    if args[0] == "extract":  # a run folder to extract, so that the command gets as far as needing torch
        (tmp_path / "run").mkdir()
    p = run_without(blocked, *args, cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith(f"Error: redrep {args[0]} needs {blocked[0]}, which is not installed")
    assert f"pip install 'redrep[{extra}]'" in lines[0]


def test_missing_extra_line_names_only_the_extras_packages():
    assert missing_extra_line(ModuleNotFoundError("x", name="submitit"), "sweep") == (
        "redrep sweep needs submitit, which is not installed: pip install 'redrep[slurm]'"
    )
    assert missing_extra_line(ModuleNotFoundError("x", name="torch.cuda"), "train").startswith(
        "redrep train needs torch"
    )
    assert missing_extra_line(ModuleNotFoundError("x", name="numpy"), "analyze") is None  # a broken install: traceback


def test_analyze_without_the_compiled_pass_says_so_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(acc_mod, "fastpass_library", lambda: None)
    random_set(0, n_train=60, n_test=40, width=8).save(tmp_path / "set")
    r = CliRunner().invoke(main, ["analyze", "--repr", str(tmp_path / "set"), "--device", "cpu", "--acc-rep", "3"])
    assert r.exit_code == 0, r.output
    notes = [line for line in r.stderr.splitlines() if line.startswith("note:")]
    assert notes == [
        "note: the compiled fast pass is not built here, so the numpy pass counted the accuracies (the same counts, "
        "about half as fast); a C compiler and `pip install -e .` build it"
    ]


def _pip_reaches_an_index() -> str | None:
    """Why an install into a new venv cannot be tried here, or None."""
    if os.environ.get("PIP_NO_INDEX"):
        return "PIP_NO_INDEX is set"
    if not shutil.which("git") and not (ROOT / "pyproject.toml").is_file():
        return "no source tree"
    return None


def test_the_analysis_only_install_analyses_plots_and_reports_without_torch(tmp_path):
    """`pip install redrep` (no extras) in a new venv: analyze, plot and report the authors' .pt layout, no torch."""
    why = _pip_reaches_an_index()
    if why:
        pytest.skip(f"cannot install into a new venv: {why}")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    pip = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if pip.returncode != 0 and ("Could not find a version" in pip.stderr or "NewConnectionError" in pip.stderr):
        pytest.skip(f"the package index cannot be reached: {pip.stderr.strip().splitlines()[-1]}")
    assert pip.returncode == 0, pip.stderr
    listed = subprocess.run([str(py), "-m", "pip", "list"], capture_output=True, text=True).stdout.lower()
    for pkg in ("torch", "scikit-learn", "mnist1d", "submitit"):
        assert f"\n{pkg} " not in listed, f"{pkg} came with the analysis-only install"

    data = tmp_path / "data"
    a = arrays(n_train=300, n_test=200, width=16, n_classes=4, seed=3)
    write_authors(data / "download_repr", a, ensemble_acc=0.9)  # written here, where torch is
    redrep = env_dir / "bin" / "redrep"
    clean_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the venv's redrep, not the checkout's
    for args in (
        ["analyze", "--path", data, "--device", "auto", "--acc-rep", "5", "--r2-rep", "3", "-q"],
        ["plot", "--path", data, "--out", tmp_path / "plots"],
        ["report", "--path", data],
    ):
        r = subprocess.run([str(redrep), *map(str, args)], capture_output=True, text=True, env=clean_env, timeout=600)
        assert r.returncode == 0, (args, r.stderr)
    assert (data / "results" / "results.csv").is_file()
    assert (data / "results" / "report.html").is_file()
    assert list((tmp_path / "plots").glob("*.png"))
    r = subprocess.run([str(redrep), "train", "--out", tmp_path / "run"], capture_output=True, text=True, env=clean_env)
    assert r.returncode == 2
    assert r.stderr.strip() == "Error: redrep train needs torch, which is not installed: pip install 'redrep[train]'"
