"""``redrep analyze``: chunk statistics of a representation set."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ..core import summary as _summary
from ..core.analysis import ChunkAnalysis
from ..core.device import check_device_name, resolve_device
from ..core.validation import RedrepError
from ..storage.io import folder_lock
from ..storage.repset import AUTHORS_SUBDIR, RepresentationSet
from ..storage.results import write_results
from . import data_path_option, int_list_callback


def criterion_options(f=None, *, bootstrap: bool = True):
    """The options of the w_c* criterion (docs/method.md#critical-chunk-size), shared by analyze, plot, report and
    dynamics, and (``bootstrap``) the number of bootstrap replicates. Each defaults to None: the criterion's
    default, or (plot, report) the one stored with the results. ``@criterion_options`` or
    ``@criterion_options(bootstrap=False)``."""
    if f is None:
        return lambda g: criterion_options(g, bootstrap=bootstrap)
    C = _summary
    options = [
        click.option(
            "--train-tolerance",
            type=int,
            default=None,
            help=f"w_c*: a chunk fits the training set when it misclassifies at most this many training samples "
            f"[default: {C.TRAIN_TOLERANCE}].",
        ),
        click.option(
            "--fit-fraction",
            type=float,
            default=None,
            help=f"w_c*: the fraction of random chunks of a size that must fit [default: {C.FIT_FRACTION}].",
        ),
        click.option(
            "--r2-kind",
            type=click.Choice(C.R2_KINDS),
            default=None,
            help=f"w_c*: held-out R^2 (fitted on the training set, scored on the test set) or the in-sample R^2 "
            f"of the paper [default: {C.R2_KIND}].",
        ),
        click.option(
            "--r2-min",
            type=float,
            default=None,
            help=f"w_c*: the smallest mean R^2 of a size's chunks [default: {C.R2_MIN}].",
        ),
        click.option(
            "--train-error-max",
            type=float,
            default=None,
            help="w_c*: use the mean criterion instead of --train-tolerance and --fit-fraction: mean chunk training "
            "error at most this (0 with --r2-kind in-sample: the paper's criterion).",
        ),
        click.option(
            "--bootstrap",
            "replicates",
            type=click.IntRange(min=0),
            default=None,
            help=f"Bootstrap replicates over chunks for the {100 * C.BOOTSTRAP_LEVEL:g} % interval of w_c* (0: none) "
            f"[default: {C.BOOTSTRAP_REPLICATES}].",
        ),
    ]
    if not bootstrap:
        options.pop()
    for option in reversed(options):
        f = option(f)
    return f


def criterion_from_options(base=None, **given):
    """The :class:`~redrep.core.summary.Criterion` of ``base`` (default ``Criterion()``) with the options given.

    ``given`` holds the values of :func:`criterion_options` (None: not given). A tolerance or fraction
    given without ``train_error_max`` returns to the fraction criterion.
    """
    crit = base if base is not None else _summary.Criterion()
    changes = {k: v for k, v in given.items() if v is not None}
    try:
        for name, value in changes.items():  # each option checked alone, so that its error names its flag
            _summary.Criterion().replace(**{name: value}).validated()
    except RedrepError as exc:
        raise RedrepError(f"--{name.replace('_', '-')}{str(exc)[len(name) :]}") from None
    if ("train_tolerance" in changes or "fit_fraction" in changes) and "train_error_max" not in changes:
        changes["train_error_max"] = None
    return crit.replace(**changes).validated()


@click.command("analyze")
@data_path_option("Data folder: reads PATH/download_repr (the authors' set), writes PATH/results.")
@click.option(
    "--repr",
    "repr_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="A native representation set folder instead; results go to REPR/results unless --out.",
)
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Results folder (overrides the default).",
)
@click.option(
    "--r2-rep",
    "--r2_rep",
    "r2_rep",
    type=int,
    default=40,
    show_default=True,
    help="Random chunks per size for R^2 and the residual correlation (limits as for --acc-rep).",
)
@click.option(
    "--acc-rep",
    "--acc_rep",
    "acc_rep",
    type=int,
    default=100,
    show_default=True,
    help="Random chunks per size for the chunk accuracies. At most 1,000,000, and with --r2-rep no more than "
    "the chunk draws fit in half the memory: each repetition holds about 24 bytes per neuron drawn plus 2W + 400 "
    "bytes per chunk size (39 kB at W = 512).",
)
@click.option(
    "--chunk-sizes",
    "chunk_sizes",
    default=None,
    callback=int_list_callback,
    help="Comma-separated chunk sizes [default: W, W/2, W/4, ..., 1].",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the chunk draws.")
@click.option("--alpha", type=float, default=1e-8, show_default=True, help="Ridge penalty of the reconstruction.")
@click.option("--block-rows", type=int, default=8192, show_default=True, help="Rows read at a time (bounds memory).")
@click.option(
    "--device",
    default="auto",
    show_default=True,
    help="Run the analysis on: auto (the GPU where the cost model says it is faster), cpu, cuda[:N].",
)
@click.option(
    "--refine",
    type=click.IntRange(min=0),
    default=None,
    help=f"Sizes analysed between the size below w_c* and w_c* after the first pass (0: none) "
    f"[default: {_summary.REFINE} with the default chunk sizes, 0 with --chunk-sizes].",
)
@criterion_options
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or summary.")
def command(path, repr_dir, out, r2_rep, acc_rep, chunk_sizes, seed, alpha, block_rows, device, refine, quiet, **crit):
    """Chunk accuracy, R^2 and residual correlation of a representation set, and w_c* with its uncertainty.

    Writes one .npy array per metric (and the authors' file names for their set),
    a tidy results.csv, the value of every chunk (chunks.npz) and results.json
    with the summary (w_c*, its bootstrap interval, clones, decay exponent).
    """
    t0 = time.perf_counter()
    replicates = crit.pop("replicates")
    replicates = _summary.BOOTSTRAP_REPLICATES if replicates is None else replicates
    criterion = criterion_from_options(**crit)
    # checked before any work; auto is left to the analysis, whose cost model picks the faster device
    device = check_device_name(device) if device == "auto" else resolve_device(device)
    if repr_dir is not None:
        repset = RepresentationSet.load(repr_dir)
        out_dir = out if out is not None else repr_dir / "results"
    else:
        src = path / AUTHORS_SUBDIR
        if not src.is_dir():
            raise RedrepError(
                f"{src}: no such folder (expected the authors' representations: run `redrep download "
                f"--path {path}`, or give a native set with --repr DIR)"
            )
        repset = RepresentationSet.load_authors(src)
        out_dir = out if out is not None else path / "results"
    analysis = ChunkAnalysis(
        chunk_sizes=chunk_sizes,
        acc_rep=acc_rep,
        r2_rep=r2_rep,
        alpha=alpha,
        block_rows=block_rows,
        random_state=seed,
        progress=not quiet,
        device=device,
        criterion=criterion,
        refine=refine,
    )
    # locked from the start: a second writer fails at once rather than after its own analysis
    with folder_lock(out_dir, what="analyze"):
        analysis.fit(repset)
        summary = analysis.summary(replicates=replicates)
        analysis.timings_["total"] = time.perf_counter() - t0
        write_results(analysis, repset, out_dir, extra={"summary": summary.to_dict()})
    if not quiet:
        _print_table(analysis, out_dir)
        for line in summary.lines():
            click.echo(line)
        if analysis.accuracy_pass_ == "numpy":
            click.echo(
                "note: the compiled fast pass is not built here, so the numpy pass counted the accuracies (the same "
                "counts, about half as fast); a C compiler and `pip install -e .` build it",
                err=True,
            )


def _print_table(analysis, out_dir):
    """One line per chunk size, one column per declared metric computed (accuracies shown as errors)."""
    from ..core import metrics

    shown = [m for m in metrics.METRICS if m.key in analysis.values_]
    means = [m.shown(analysis.mean(*m.key)) for m in shown]
    widths = [max(9, len(m.label)) for m in shown]
    refined = set((analysis.refinement_ or {}).get("sizes", ()))
    click.echo("chunk size  " + "  ".join(f"{m.label:>{w}}" for m, w in zip(shown, widths)))
    for i, size in enumerate(analysis.chunk_sizes_):
        mark = "*" if size in refined else " "
        click.echo(f"{size:>9d}{mark}  " + "  ".join(f"{v[i]:>{w}.4f}" for v, w in zip(means, widths)))
    if refined:
        click.echo("* refined size, analysed after the first pass")
    click.echo(f"results written to {out_dir} in {analysis.timings_['total']:.1f} s")
