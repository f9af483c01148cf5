"""``redrep analyze``: chunk statistics of a representation set."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ..core.analysis import ChunkAnalysis
from ..core.device import check_device_name, resolve_device
from ..core.validation import RedrepError
from ..storage.io import folder_lock
from ..storage.repset import AUTHORS_SUBDIR, RepresentationSet
from ..storage.results import write_results
from . import data_path_option, int_list_callback


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
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or summary.")
def command(path, repr_dir, out, r2_rep, acc_rep, chunk_sizes, seed, alpha, block_rows, device, quiet):
    """Chunk accuracy, R^2 and residual correlation of a representation set.

    Writes one .npy array per metric (and the authors' file names for their set),
    a tidy results.csv and results.json.
    """
    t0 = time.perf_counter()
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
    )
    # locked from the start: a second writer fails at once rather than after its own analysis
    with folder_lock(out_dir, what="analyze"):
        analysis.fit(repset)
        analysis.timings_["total"] = time.perf_counter() - t0
        write_results(analysis, repset, out_dir)
    if not quiet:
        _print_summary(analysis, out_dir)
        if analysis.accuracy_pass_ == "numpy":
            click.echo(
                "note: the compiled fast pass is not built here, so the numpy pass counted the accuracies (the same "
                "counts, about half as fast); a C compiler and `pip install -e .` build it",
                err=True,
            )


def _print_summary(analysis, out_dir):
    """One line per chunk size, one column per declared metric computed (accuracies shown as errors)."""
    from ..core import metrics

    shown = [m for m in metrics.METRICS if m.key in analysis.values_]
    means = [m.shown(analysis.mean(*m.key)) for m in shown]
    widths = [max(9, len(m.label)) for m in shown]
    click.echo("chunk size  " + "  ".join(f"{m.label:>{w}}" for m, w in zip(shown, widths)))
    for i, size in enumerate(analysis.chunk_sizes_):
        click.echo(f"{size:>10d}  " + "  ".join(f"{v[i]:>{w}.4f}" for v, w in zip(means, widths)))
    click.echo(f"results written to {out_dir} in {analysis.timings_['total']:.1f} s")
