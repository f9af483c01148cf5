"""``redrep plot``: the three-panel figure of a results folder; a summary at other thresholds kept in results.json."""

from __future__ import annotations

from pathlib import Path

import click

from ..core.summary import BOOTSTRAP_REPLICATES, ChunkCurves, Criterion, summarize
from ..core.validation import RedrepError, check_float
from ..report.figures import (
    DEFAULT_STEM,
    MIN_CHUNK_SIZE_A,
    check_formats,
    check_stem,
    figure_stem,
    is_authors_results,
    save_figure,
    three_panel_figure,
)
from ..storage.results import load_results
from . import data_path_option
from .analyze import criterion_from_options, criterion_options


def results_options(f):
    """--path, --results and the criterion of w_c*, shared by plot and report."""
    f = criterion_options(f)
    f = click.option(
        "--results",
        "results_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Results folder of `redrep analyze` (overrides --path).",
    )(f)
    f = data_path_option("Data folder: reads PATH/results.")(f)
    return f


def load_and_summarize(path, results_dir, replicates=None, **given):
    """Read the results and compute the summary with the code of `redrep analyze` (the callers keep it with
    :meth:`Results.add_summary`).

    The criterion and the bootstrap are those stored with the results by `redrep analyze`, with the
    options given (``given``: the values of :func:`redrep.cli.analyze.criterion_options`) replacing theirs.
    """
    results = load_results(results_dir if results_dir is not None else path / "results")
    stored = results.doc.get("summary") if isinstance(results.doc.get("summary"), dict) else {}
    base = None
    if isinstance(stored.get("criterion"), dict):
        try:
            base = Criterion.from_dict(stored["criterion"])
        except (RedrepError, TypeError):  # a summary of another version: the defaults
            base = None
    criterion = criterion_from_options(base, **given)
    if replicates is None:
        boot = stored.get("bootstrap")
        replicates = boot.get("replicates") if isinstance(boot, dict) else None
        replicates = replicates if isinstance(replicates, int) and replicates >= 0 else BOOTSTRAP_REPLICATES
    curves = ChunkCurves.from_results(results)
    summary = summarize(curves, criterion, replicates=replicates)
    return results, curves, summary


def echo_summary(summary):
    for line in summary.lines():
        click.echo(line)


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
@click.option(
    "--name",
    "stem",
    default=None,
    help=f"File name without extension  [default: {DEFAULT_STEM} for the authors' set, else the set's "
    "DATASET_ARCH_wW_plots]",
)
@click.option(
    "--min-chunk-size",
    type=float,
    default=MIN_CHUNK_SIZE_A,
    show_default=True,
    help="Panel (a) shows chunk sizes from this one on.",
)
@click.option("--dpi", type=click.IntRange(20, 1200), default=150, show_default=True, help="Resolution of PNG files.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing.")
def command(path, results_dir, out, formats, stem, min_chunk_size, dpi, quiet, **crit):
    """Three-panel figure: test error, training error, R^2 and residual correlation vs chunk size.

    The critical chunk size w_c* (shaded), its criterion and the decay exponent above it are those of
    `redrep analyze` (the criterion stored with the results, or the options given), and are printed. The
    summary `redrep analyze` stored in results.json stays; one for another criterion is kept beside it,
    under "summaries".
    """
    formats = check_formats(formats, name="--format")
    check_float(min_chunk_size, "--min-chunk-size", min_value=0.0)
    if stem is not None:
        check_stem(stem, name="--name")
    results, curves, summary = load_and_summarize(path, results_dir, **crit)
    fig = three_panel_figure(curves, summary, min_chunk_size=min_chunk_size, authors_set=is_authors_results(results))
    results.add_summary(summary.to_dict())  # first: a folder being rewritten stops the command before it writes
    if stem is None:
        stem = figure_stem(results)
    paths = save_figure(fig, out, stem=stem, formats=formats, dpi=dpi)
    if not quiet:
        echo_summary(summary)
        for p in paths:
            click.echo(f"wrote {p}")
