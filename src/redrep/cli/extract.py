"""``redrep extract``: the representation set of a trained run."""

from __future__ import annotations

from pathlib import Path

import click

from ..core.device import resolve_device
from ..nets.extract import extract_run


@click.command("extract")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--epoch", type=int, default=None, help="A kept checkpoint's epoch  [default: the last finished]")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Set folder  [default: RUN_DIR/representations; RUN_DIR/representations_epoch_NNNN for an earlier epoch]",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N")
@click.option("--data-dir", default=None, help="Where the dataset is now  [default: the run's --data-dir]")
@click.option("--batch-size", type=int, default=256, show_default=True, help="Samples per forward pass.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def command(run_dir, epoch, out, device, data_dir, batch_size, quiet):
    """Write the last hidden layer of RUN_DIR's network on its train and test sets, with its readout.

    The model runs in eval mode, without augmentation; the set (native layout)
    is what `redrep analyze --repr` reads.
    """
    path, rs = extract_run(
        run_dir,
        epoch=epoch,
        out=out,
        device=resolve_device(device),
        data_dir=data_dir,
        batch_size=batch_size,
        progress=not quiet,
    )
    m = rs.meta
    click.echo(
        f"wrote {path}: {m['arch']} epoch {m['epoch']}, W = {rs.width}, {rs.n_train} train / {rs.n_test} test, "
        f"train acc {m['train_accuracy']:.4f}, test acc {m['test_accuracy']:.4f}"
    )
