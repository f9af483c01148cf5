"""The command line starts light: help and `redrep analyze` import neither torch nor matplotlib."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import click
import pytest

import procs
from redrep.cli import COMMAND_MODULES, RedrepGroup, _source_help
from repsets import random_set

HEAVY = ("torch", "matplotlib")
# run redrep in a fresh interpreter and report, at its exit, which heavy modules it imported
_PROBE = """
import atexit, sys
atexit.register(lambda: sys.stderr.write("LOADED " + ",".join(m for m in {heavy!r} if m in sys.modules) + "\\n"))
from redrep.cli import main
sys.argv[0] = "redrep"
main()
"""


def loaded_by(*args):
    p = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY), *map(str, args)],
        capture_output=True,
        text=True,
        env=procs.env(),
    )
    lines = [line for line in p.stderr.splitlines() if line.startswith("LOADED ")]
    assert lines, p.stderr
    return p, [m for m in lines[-1][len("LOADED ") :].split(",") if m]


def test_import_of_the_cli_is_light():
    code = f"import sys, redrep.cli; print(','.join(m for m in {HEAVY!r} + ('scipy',) if m in sys.modules))"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=procs.env(), check=True)
    assert p.stdout.strip() == ""


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["analyze", "--help"],
        ["train", "--help"],
        ["sweep", "--help"],
        ["sweep-status", "--help"],
        ["demo", "--help"],
    ],
)
def test_help_imports_no_heavy_module(args):
    p, loaded = loaded_by(*args)
    assert p.returncode == 0, p.stderr
    assert "Usage:" in p.stdout
    assert loaded == []


def test_help_lists_every_command_with_its_own_help():
    p, _ = loaded_by("--help")
    for module in COMMAND_MODULES:
        command = importlib.import_module(f"redrep.cli.{module}").command
        short = command.get_short_help_str(10_000).split("...")[0][:30]
        assert f"  {module.replace('_', '-')} " in p.stdout  # commands spell a module's underscore as a hyphen
        assert short in " ".join(p.stdout.split())


@pytest.mark.parametrize("name", COMMAND_MODULES)
def test_source_help_is_the_commands_help(name):
    command = importlib.import_module(f"redrep.cli.{name}").command
    assert _source_help(name) == inspect.cleandoc((command.help or "").split("\f", 1)[0])


def test_help_from_sources_matches_the_imported_commands():
    """Once a command is imported its own short help is shown: the same words as read from its source."""
    from click.testing import CliRunner

    lazy, loaded = RedrepGroup(name="redrep"), RedrepGroup(name="redrep")
    for module in COMMAND_MODULES:
        assert loaded.get_command(click.Context(loaded), module.replace("_", "-")) is not None
    assert not lazy.commands and len(loaded.commands) == len(COMMAND_MODULES)
    out_lazy, out_loaded = (CliRunner().invoke(g, ["--help"]).output for g in (lazy, loaded))
    assert "Commands:" in out_lazy
    assert out_lazy == out_loaded


def test_analyze_imports_no_heavy_module(tmp_path):
    random_set(0, width=8, n_train=50, n_test=30).save(tmp_path / "set")
    p, loaded = loaded_by(
        "analyze", "--device", "cpu", "--repr", tmp_path / "set", "--acc-rep", "2", "--r2-rep", "2", "-q"
    )
    assert p.returncode == 0, p.stderr
    assert loaded == []
    assert (tmp_path / "set" / "results").is_dir()


def test_unknown_command_exits_2():
    p, loaded = loaded_by("no-such-command")
    assert p.returncode == 2
    assert "No such command 'no-such-command'" in p.stderr
    assert loaded == []


@pytest.mark.parametrize("name", COMMAND_MODULES)
def test_every_option_has_help_text(name):
    command = importlib.import_module(f"redrep.cli.{name}").command
    bare = [p.opts[0] for p in command.params if isinstance(p, click.Option) and not (p.help or "").strip()]
    assert bare == []


@pytest.mark.parametrize("name", ["train", "sweep"])
def test_training_defaults_in_the_help_are_the_recipes(name):
    """train and sweep state the same defaults, read from the recipes; each names its own default recipe."""
    from redrep.nets.config import RECIPES, recipe_defaults_text

    p, _ = loaded_by(name, "--help")
    text = " ".join(p.stdout.split()).replace("- ", "-")  # click wraps lines after hyphens
    default = {"train": "paper-wrn", "sweep": "demo-mlp"}[name]
    assert f"[default: {default}]" in text and all(f"{r}:" in text for r in RECIPES)
    for field, none_means in (("lr", "the authors rule"), ("epochs", ""), ("weight_decay", ""), ("optimizer", "")):
        assert recipe_defaults_text(field, none_means) in text
