"""``redrep sweep``: train a width family, analyse it, plot and report."""

from __future__ import annotations

from pathlib import Path

import click

from ..sweep import SweepConfig, run_sweep
from . import int_list_callback

_D = SweepConfig()  # the defaults live in the config, once


@click.command("sweep")
@click.option(
    "--dataset",
    default=_D.dataset,
    show_default=True,
    help="cifar10, cifar100, digits, parity-digits, mnist1d or synthetic.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data"),
    show_default=True,
    help="Where datasets live (CIFAR archives, mnist1d cache).",
)
@click.option(
    "--arch",
    default=_D.arch,
    show_default=True,
    help="mlp (all hidden layers at width W) or wide_resnet16/22/28/40 (k = W/64).",
)
@click.option(
    "--widths",
    default=",".join(map(str, _D.widths)),
    show_default=True,
    callback=int_list_callback,
    help="Comma-separated widths W of the last hidden layer.",
)
@click.option("--seeds", type=int, default=_D.seeds, show_default=True, help="Seeds per width (0 .. N-1).")
@click.option("--depth", type=int, default=None, help=f"Hidden layers of the mlp [default: {_D.depth}].")
@click.option("--epochs", type=int, default=_D.epochs, show_default=True)
@click.option("--batch-size", type=int, default=_D.batch_size, show_default=True)
@click.option("--lr", type=float, default=_D.lr, show_default=True)
@click.option("--weight-decay", type=float, default=_D.weight_decay, show_default=True)
@click.option("--label-smoothing", type=float, default=_D.label_smoothing, show_default=True)
@click.option("--train-subset", type=int, default=None, help="Train on a fixed subset of this many samples.")
@click.option("--device", default=_D.device, show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--amp/--no-amp", default=None, help="Mixed precision [default: on for CUDA, off for CPU].")
@click.option("--acc-rep", "--acc_rep", "acc_rep", type=int, default=_D.acc_rep, show_default=True)
@click.option("--r2-rep", "--r2_rep", "r2_rep", type=int, default=_D.r2_rep, show_default=True)
@click.option("--analysis-seed", type=int, default=_D.analysis_seed, show_default=True, help="Seed of the chunk draws.")
@click.option("--jobs", type=int, default=_D.jobs, show_default=True, help="Runs trained in parallel processes.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Sweep folder.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def command(
    dataset,
    data_dir,
    arch,
    widths,
    seeds,
    depth,
    epochs,
    batch_size,
    lr,
    weight_decay,
    label_smoothing,
    train_subset,
    device,
    amp,
    acc_rep,
    r2_rep,
    analysis_seed,
    jobs,
    out,
    quiet,
):
    """Train networks that differ only in width (several seeds), then compare full networks
    with chunks of the widest one; resumes an interrupted sweep."""
    if depth is None and arch == "mlp":
        depth = _D.depth
    config = SweepConfig(
        dataset=dataset,
        data_dir=str(data_dir),
        arch=arch,
        widths=tuple(widths),
        seeds=seeds,
        depth=depth,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        label_smoothing=label_smoothing,
        train_subset=train_subset,
        device=device,
        amp=amp,
        acc_rep=acc_rep,
        r2_rep=r2_rep,
        analysis_seed=analysis_seed,
        jobs=jobs,
        progress=not quiet,
    )
    result = run_sweep(config, out, log=click.echo)
    echo_result(result)


def echo_result(result):
    click.echo(
        f"{'W':>6}  {'full test err':>14}  {'chunk test err':>14}  {'full train err':>14}  {'chunk train err':>15}"
    )
    for r in result.table:
        click.echo(
            f"{r['width']:>6}  {r['full_test_mean']:>14.4f}  {r['chunk_test_mean']:>14.4f}  "
            f"{r['full_train_mean']:>14.4f}  {r['chunk_train_mean']:>15.4f}"
        )
    click.echo(f"report:  {result.report}")
    for f in result.figures:
        click.echo(f"figure:  {f}")
