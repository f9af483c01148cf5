"""``redrep plot``: the three-panel figure of a results folder; a summary at other thresholds kept in results.json."""

from __future__ import annotations

from pathlib import Path

import click

from ..core.summary import R2_MIN, TRAIN_ERROR_MAX, ChunkCurves, summarize
from ..core.validation import check_float
from ..report.figures import DEFAULT_STEM, MIN_CHUNK_SIZE_A, check_formats, check_stem, save_figure, three_panel_figure
from ..storage.results import load_results
from . import data_path_option


def results_options(f):
    """--path, --results and the thresholds of w_c*, shared by plot and report."""
    f = click.option(
        "--r2-min",
        type=float,
        default=R2_MIN,
        show_default=True,
        help="w_c* threshold: smallest mean R^2 a chunk must reach.",
    )(f)
    f = click.option(
        "--train-error-max",
        type=float,
        default=TRAIN_ERROR_MAX,
        show_default=True,
        help="w_c* threshold: largest mean training error a chunk may have.",
    )(f)
    f = click.option(
        "--results",
        "results_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Results folder of `redrep analyze` (overrides --path).",
    )(f)
    f = data_path_option("Data folder: reads PATH/results.")(f)
    return f


def load_and_summarize(path, results_dir, train_error_max, r2_min):
    """Read the results and compute the summary (the callers keep it with :meth:`Results.add_summary`)."""
    check_float(train_error_max, "--train-error-max", min_value=0.0, max_value=1.0)
    check_float(r2_min, "--r2-min", max_value=1.0)
    results = load_results(results_dir if results_dir is not None else path / "results")
    curves = ChunkCurves.from_results(results)
    summary = summarize(curves, train_error_max=train_error_max, r2_min=r2_min)
    return results, curves, summary


def echo_summary(summary):
    if summary.w_c_star is None:
        click.echo("w_c*: none")
    else:
        exp = "n/a" if summary.exponent is None else f"{summary.exponent:.3f}"
        if summary.exponent_se is not None:
            exp += f" +/- {summary.exponent_se:.3f}"
        click.echo(f"w_c* = {summary.w_c_star}  clones W/w_c* = {summary.n_clones:.3g}  exponent = {exp}")
    for note in summary.notes:
        click.echo(f"note: {note}")


@click.command("plot")
@results_options
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("plots"),
    show_default=True,
    help="Folder of the figure files.",
)
@click.option("--format", "formats", default="png,pdf", show_default=True, help="Comma-separated: png, pdf, svg.")
@click.option("--name", "stem", default=DEFAULT_STEM, show_default=True, help="File name without extension.")
@click.option(
    "--min-chunk-size",
    type=float,
    default=MIN_CHUNK_SIZE_A,
    show_default=True,
    help="Panel (a) shows chunk sizes from this one on.",
)
@click.option("--dpi", type=click.IntRange(20, 1200), default=150, show_default=True, help="Resolution of PNG files.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing.")
def command(path, results_dir, train_error_max, r2_min, out, formats, stem, min_chunk_size, dpi, quiet):
    """Three-panel figure: test error, training error, R^2 and residual correlation vs chunk size.

    Prints the critical chunk size w_c*, the decay exponent above it and the
    number of clones W / w_c*. The summary `redrep analyze` stored in
    results.json stays; one at other thresholds is kept beside it, under
    "summaries".
    """
    formats = check_formats(formats, name="--format")
    check_float(min_chunk_size, "--min-chunk-size", min_value=0.0)
    check_stem(stem, name="--name")
    results, curves, summary = load_and_summarize(path, results_dir, train_error_max, r2_min)
    fig = three_panel_figure(curves, summary, min_chunk_size=min_chunk_size)
    results.add_summary(summary.to_dict())  # first: a folder being rewritten stops the command before it writes
    paths = save_figure(fig, out, stem=stem, formats=formats, dpi=dpi)
    if not quiet:
        echo_summary(summary)
        for p in paths:
            click.echo(f"wrote {p}")
