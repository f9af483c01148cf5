"""``redrep dynamics``: the chunk analysis of a run at every kept checkpoint, initialization included."""

from __future__ import annotations

from pathlib import Path

import click

from . import int_list_callback
from .analyze import criterion_from_options, criterion_options


@click.command("dynamics")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder  [default: RUN_DIR/dynamics]",
)
@click.option("--acc-rep", "--acc_rep", "acc_rep", type=int, default=100, show_default=True,
              help="Random chunks per size for the chunk accuracies.")  # fmt: skip
@click.option("--r2-rep", "--r2_rep", "r2_rep", type=int, default=40, show_default=True,
              help="Random chunks per size for R^2 and the residual correlation.")  # fmt: skip
@click.option("--chunk-sizes", default=None, callback=int_list_callback,
              help="Comma-separated chunk sizes [default: W, W/2, W/4, ..., 1].")  # fmt: skip
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the chunk draws, the same at every epoch.")  # fmt: skip
@click.option("--refine", type=click.IntRange(min=0), default=0, show_default=True,
              help="Sizes analysed between the size below w_c* and w_c* at each epoch (0: the same sizes at "
              "every epoch).")  # fmt: skip
@criterion_options(bootstrap=False)
@click.option("--device", default="auto", show_default=True, help="auto (a GPU when present), cpu or cuda[:N].")
@click.option("--data-dir", default=None, help="Where the dataset is now  [default: the run's --data-dir]")
@click.option("--force", is_flag=True,
              help="Replace a dynamics folder made from another run or with other --acc-rep, --r2-rep, "
                   "--chunk-sizes, --seed or --refine (the same options resume it or read it back).")  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
def command(run_dir, out, acc_rep, r2_rep, chunk_sizes, seed, refine, device, data_dir, force, quiet, **crit):
    """Redundancy during training: RUN_DIR analysed at every kept checkpoint, epoch 0 included.

    Writes RUN_DIR/dynamics/dynamics.csv (epoch, metric, split, chunk_size, mean, sem, n), dynamics.json
    (w_c* per epoch), figures and dynamics.html. Epoch 0, the network at initialization, is the null baseline.
    """
    from ..core.device import resolve_device
    from ..experiments.dynamics import DYNAMICS_CSV, DynamicsConfig, run_dynamics

    config = DynamicsConfig(
        acc_rep=acc_rep,
        r2_rep=r2_rep,
        chunk_sizes=None if chunk_sizes is None else tuple(chunk_sizes),
        seed=seed,
        device=resolve_device(device),  # a bad --device fails before the run is read (run_dynamics resolves it again)
        data_dir=data_dir,
        criterion=criterion_from_options(**crit),
        refine=refine,
    )
    res = run_dynamics(run_dir, config=config, out=out, progress=not quiet, force=force)
    if not quiet:
        click.echo("epoch   w_c*   clones   train err   test err")
        for e in res.epochs:
            wcs = "none" if e["w_c_star"] is None else str(e["w_c_star"])
            cl = "n/a" if e["n_clones"] is None else f"{e['n_clones']:.3g}"
            click.echo(f"{e['epoch']:>5d}  {wcs:>5}  {cl:>7}  {e['train_error']:10.4f}  {e['test_error']:9.4f}")
        for sentence in res.doc["reading"]:
            click.echo(f"- {sentence}")
    click.echo(f"wrote {res.out / DYNAMICS_CSV} and {res.page}")
