"""``redrep report``: one self-contained HTML file with figures, tables and a reading of the results."""

from __future__ import annotations

from pathlib import Path

import click

from ..report.pages import REPORT_NAME, write_report
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
def command(path, results_dir, train_error_max, r2_min, out, title, quiet):
    """Self-contained HTML report: summary, reading, embedded figure, tables, input metadata.

    Builds the figure itself (no need to run `redrep plot` first) and stores
    the summary in results.json as `redrep plot` does.
    """
    results, curves, summary = load_and_summarize(path, results_dir, train_error_max, r2_min)
    written = write_report(results, out, curves=curves, summary=summary, title=title)
    results.update_json(summary=summary.to_dict())
    if not quiet:
        echo_summary(summary)
        click.echo(f"wrote {written}")
