"""``redrep report``: one self-contained HTML file with figures, tables and a reading of the results."""

from __future__ import annotations

from pathlib import Path

import click

from ..report.pages import REPORT_NAME, write_report
from ..storage.io import real_path
from .plot import echo_summary, load_and_summarize, results_options


@click.command("report")
@results_options
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"HTML file to write [default: RESULTS/{REPORT_NAME}].",
)
@click.option("--title", default=None, help="Title of the page.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing.")
def command(path, results_dir, out, title, quiet, **crit):
    """Self-contained HTML report: summary, reading, embedded figure, tables, input metadata.

    Builds the figure itself (no need to run `redrep plot` first); w_c* and its
    criterion are those of `redrep analyze` (stored with the results, or the
    options given); a summary for another criterion is kept in results.json as
    `redrep plot` keeps it.
    """
    results, curves, summary = load_and_summarize(path, results_dir, **crit)
    target = out if out is not None else results.path / REPORT_NAME
    if real_path(target).parent == real_path(results.path):
        # a page inside the results folder: written under its lock, and only beside the analysis it describes
        with results.locked("report"):
            written = write_report(results, out, curves=curves, summary=summary, title=title)
            results.add_summary(summary.to_dict())
    else:
        results.add_summary(summary.to_dict())
        written = write_report(results, out, curves=curves, summary=summary, title=title)
    if not quiet:
        echo_summary(summary)
        click.echo(f"wrote {written}")
