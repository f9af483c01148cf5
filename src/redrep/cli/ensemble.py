"""``redrep ensemble``: error_inf, the test error of the averaged softmax of several runs."""

from __future__ import annotations

from pathlib import Path

import click

from ..core.device import resolve_device
from ..nets.ensemble import ensemble_error, store_error_inf


@click.command("ensemble")
@click.argument("members", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--into",
    "into",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Store error_inf in this native set's meta.json (read by analyze and plot).",
)
@click.option("--epoch", type=int, default=None, help="Checkpoint epoch of the runs  [default: their last]")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N")
@click.option("--data-dir", default=None, help="Where the dataset is now  [default: each run's --data-dir]")
@click.option("--batch-size", type=int, default=256, show_default=True, help="Samples per forward pass.")
def command(members, into, epoch, device, data_dir, batch_size):
    """Test error of the averaged softmax of MEMBERS: run directories or representation sets of one kind.

    Members must be different networks (different seeds) of the same
    architecture, dataset and recipe, on the same test set.
    """
    res = ensemble_error(members, epoch=epoch, device=resolve_device(device), data_dir=data_dir, batch_size=batch_size)
    for path, err in zip(res.members, res.member_errors):
        click.echo(f"{err:.4f}  {path}")
    mean = sum(res.member_errors) / len(res.member_errors)
    click.echo(f"mean member test error {mean:.4f}; ensemble of {res.n_members}: error_inf = {res.error_inf:.4f}")
    if into is not None:
        store_error_inf(into, res)
        click.echo(f"stored error_inf in {into}")
