"""The ``redrep`` command line.

Each command lives in its own module of this package, parses its options,
builds the library objects and calls them; library code never reads the
command line. User errors (:class:`~redrep.core.validation.RedrepError`, and
operating-system errors such as a full disk) become one line on stderr and
exit status 2, with no traceback. Output into a pipe closed early
(``redrep analyze | head -1``) ends the command quietly with status 141, as
a command killed by SIGPIPE ends (:data:`EXIT_BROKEN_PIPE`).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path

import click

from .. import __version__
from ..core.validation import RedrepError

#: Exit status of a command whose output pipe was closed early: 128 + SIGPIPE, what a shell reports for a tool the
#: signal ends (``seq 1000000 | head -1``). Not 0, since the command stopped before its end (a training stops when
#: its summary cannot be printed), so ``set -o pipefail`` scripts see it as they see any cut-short tool.
EXIT_BROKEN_PIPE = 141

#: Command modules of this package, each defining ``command``.
COMMAND_MODULES = (
    "data",
    "train",
    "extract",
    "ensemble",
    "download",
    "analyze",
    "plot",
    "report",
    "example",
    "sweep",
    "sweep_status",
    "demo",
    "dynamics",
    "compare",
)


class RedrepGroup(click.Group):
    """A click group that turns user errors into one line and exit status 2.

    Commands are imported when used, so that `redrep analyze` does not pay for
    matplotlib or torch, and `redrep --help` imports none of them: it reads
    each command's help from its module's source.
    """

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | {m.replace("_", "-") for m in COMMAND_MODULES})

    def get_command(self, ctx, cmd_name):
        if cmd_name.replace("-", "_") in COMMAND_MODULES and cmd_name not in self.commands:
            self.add_command(importlib.import_module(_module_name(cmd_name)).command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx, formatter):
        limit = formatter.width - 6 - max(len(name) for name in self.list_commands(ctx))
        rows = []
        for name in self.list_commands(ctx):
            if name in self.commands or name.replace("-", "_") not in COMMAND_MODULES:
                cmd = self.get_command(ctx, name)
                if cmd is not None and not cmd.hidden:
                    rows.append((name, cmd.get_short_help_str(limit)))
            else:
                rows.append((name, click.Command(name, help=_source_help(name)).get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx):
        # the command's name before it is resolved: resolving it imports its module, which may be what fails
        protected = getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", None) or []
        pending = [*protected, *ctx.args]
        try:
            return super().invoke(ctx)
        except RedrepError as exc:
            click.echo(f"Error: {user_paths(_with_flag(ctx, str(exc)))}", err=True)
            ctx.exit(2)
        except BrokenPipeError:  # the reader of our output is gone (`| head -1`): stop quietly, as other tools do
            _discard_stdout()
            ctx.exit(EXIT_BROKEN_PIPE)
        except OSError as exc:
            click.echo(f"Error: {os_error_line(exc)}", err=True)
            ctx.exit(2)
        except ModuleNotFoundError as exc:
            line = missing_extra_line(exc, ctx.invoked_subcommand or (pending[0] if pending else None))
            if line is None:
                raise
            click.echo(f"Error: {line}", err=True)
            ctx.exit(2)


#: Packages of the optional extras (pyproject.toml), by the name they are imported as: the extra that installs each.
EXTRAS = {"torch": "train", "sklearn": "train", "mnist1d": "train", "submitit": "slurm"}


def missing_extra_line(exc: ModuleNotFoundError, command: str | None) -> str | None:
    """The one line for a command that needs a package of an extra that is not installed, or None for another."""
    name = (exc.name or "").split(".")[0]
    extra = EXTRAS.get(name)
    if extra is None:
        return None
    what = f"redrep {command}" if command else "this command"
    return f"{what} needs {name}, which is not installed: pip install 'redrep[{extra}]'"


def _discard_stdout() -> None:
    """Point standard output at the null device, so that what is still buffered is dropped at exit, not an error."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
    except (OSError, ValueError, AttributeError):  # no real file behind stdout (a test runner's): nothing to flush
        pass


def _module_name(cmd_name: str) -> str:
    """The module of a command: ``redrep.cli.NAME``, a hyphen in the command's name read as an underscore."""
    return f"{__name__}.{cmd_name.replace('-', '_')}"


def _source_help(cmd_name: str) -> str:
    """The help text of a command's ``command`` function, read from its source without importing it."""
    spec = importlib.util.find_spec(_module_name(cmd_name))
    try:
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    except (AttributeError, TypeError, OSError, SyntaxError):
        return ""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "command":
            return (ast.get_docstring(node) or "").split("\f", 1)[0]  # as click reads a docstring
    return ""


@click.group(cls=RedrepGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="redrep")
def main():
    """redrep: redundant representations in wide neural networks.

    Train networks, extract the last hidden layer, measure how its neurons
    split into redundant chunks, and plot and report the result.
    """


def _with_flag(ctx, message: str) -> str:
    """A library message that names a parameter (``weight_decay: ...``) gets the command's flag for it at its end."""
    m = re.match(r"^([a-z][a-z0-9_]*)(?=: )", message)
    name = ctx.invoked_subcommand
    if m is None or name is None:
        return message
    try:
        command = ctx.command.get_command(ctx, name)
    except Exception:  # noqa: BLE001 - only a nicer message is at stake
        return message
    for param in getattr(command, "params", ()):
        flags = [o for o in param.opts if o.startswith("--")]
        if param.name == m.group(1) and flags and flags[0] != "--" + m.group(1):
            return f"{message} [{flags[0]}]"
    return message


def os_error_line(exc: OSError) -> str:
    """One line for an operating-system error: a full disk said as such, the path the user knows."""
    where = f": {user_paths(str(exc.filename))}" if getattr(exc, "filename", None) else ""
    from ..storage.io import disk_full  # here: the command list is printed without importing more than it needs

    if disk_full(exc):
        return f"no space left on device{where}"
    return f"{exc.strerror or exc}{where}"


#: A hidden temporary entry of redrep.storage.io (``.NAME.abc123.tmp``), to be named as the ``NAME`` it becomes.
_TEMP_PART = re.compile(r"(^|[/\\\s'\"(])\.([^/\\\s]+?)\.[A-Za-z0-9_]{8}\.(?:tmp|old)(?![\w.-])")


def user_paths(text: str) -> str:
    """``text`` with redrep's temporary names (``.NAME.*.tmp``) replaced by the user's ``NAME``."""
    return _TEMP_PART.sub(lambda m: m.group(1) + m.group(2), text)


def parse_int_list(value: str | None, option: str) -> list[int] | None:
    """Parse ``"1,2,4"`` (spaces allowed) into a list of ints; None stays None."""
    if value is None:
        return None
    items = [v.strip() for v in str(value).replace(" ", ",").split(",") if v.strip()]
    try:
        return [int(v) for v in items]
    except ValueError:
        raise click.BadParameter(
            f"expected a comma-separated list of integers, found {value!r}", param_hint=option
        ) from None


def int_list_callback(ctx, param, value):
    """click callback: a comma-separated list of integers, errors named by the option's own flag."""
    return parse_int_list(value, param.opts[0])


def data_path_option(help: str):
    """The ``--path DIR`` data-folder option (default ``./data``) that several commands share."""
    return click.option(
        "--path",
        "path",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("data"),
        show_default=True,
        help=help,
    )
