"""``redrep train``: train a network with the authors' recipe (resumable)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from tqdm.auto import tqdm

from ..core.device import resolve_device
from ..nets.data import DATASETS
from ..nets.models import MODELS
from ..nets.train import CONFIG_FILE, TrainConfig, read_run_config, train
from . import int_list_callback

_D = TrainConfig()


def _int_list(ctx, param, value):
    value = int_list_callback(ctx, param, value)
    return None if value is None else tuple(value)


@click.command("train")
@click.option(
    "--out", "run_dir", type=click.Path(path_type=Path), required=True, help="Run directory (created or resumed)."
)
@click.option("--dataset", default=None, help=f"One of {', '.join(DATASETS)}  [default: {_D.dataset}]")
@click.option(
    "--data-dir", default=None, help=f"Folder holding the CIFAR archives / MNIST-1D cache  [default: {_D.data_dir}]"
)
@click.option("--arch", default=None, help=f"One of {', '.join(MODELS)}  [default: {_D.arch}]")
@click.option(
    "--widening-factor",
    type=float,
    default=None,
    help="k of a Wide-ResNet (W = round(64k); 0.25 gives 16) or DenseNet  [default: 8, densenet40: 1]",
)
@click.option("--width", type=int, default=None, help="Hidden width of an mlp  [default: 512]")
@click.option("--depth", type=int, default=None, help="Hidden layers of an mlp  [default: 5]")
@click.option("--epochs", type=int, default=None, help=f"[default: {_D.epochs}]")
@click.option("--batch-size", type=int, default=None, help=f"[default: {_D.batch_size}]")
@click.option("--lr", type=float, default=None, help=f"Initial learning rate  [default: {_D.lr}]")
@click.option("--lr-min", type=float, default=None, help=f"End of the cosine schedule  [default: {_D.lr_min}]")
@click.option("--momentum", type=float, default=None, help=f"[default: {_D.momentum}]")
@click.option("--weight-decay", type=float, default=None, help=f"[default: {_D.weight_decay}]")
@click.option("--label-smoothing", type=float, default=None, help=f"[default: {_D.label_smoothing}]")
@click.option("--seed", type=int, default=None, help=f"[default: {_D.seed}]")
@click.option("--device", default=None, help="auto (CUDA when present), cpu, cuda or cuda:N  [default: auto]")
@click.option("--amp/--no-amp", default=None, help="Mixed precision  [default: on for CUDA, off for CPU]")
@click.option("--train-subset", type=int, default=None, help="Train on a fixed random subset of N samples.")
@click.option(
    "--checkpoint-epochs",
    default=None,
    callback=_int_list,
    help="Comma-separated epochs whose checkpoints are kept (the last always is)  [default: the authors' "
    "1,2,5,10,20,40,60,80,100,130,140,150,160,180]",
)
@click.option(
    "--eval-train/--no-eval-train",
    default=None,
    help="Evaluate the clean training set each epoch (detects zero training error)  [default: on]",
)
@click.option("--eval-batch-size", type=int, default=None, help=f"[default: {_D.eval_batch_size}]")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing: no progress bars, messages or final summary.")
def command(run_dir, quiet, **options):
    """Train a network and keep its checkpoints and metrics in a run directory.

    Running the command again on the same --out resumes the run from its last
    finished epoch; options left out are then taken from the saved config, and
    options given must match it (except --device, --amp, --data-dir,
    --eval-batch-size).
    """
    given = {k: v for k, v in options.items() if v is not None}
    if (run_dir / CONFIG_FILE).is_file():
        config = read_run_config(run_dir)
        for k, v in given.items():
            setattr(config, k, v)
    else:
        config = TrainConfig(**given)

    def log(msg):
        if not quiet:
            tqdm.write(msg, file=sys.stderr)

    device = resolve_device(config.device)  # once, here; the run's config keeps what was asked for
    result = train(config, run_dir, device=device, progress=not quiet, log=log)
    if quiet:  # -q: nothing on the terminal; the run folder's summary.json holds the same
        return
    cfg = result.config
    final = result.final
    if result.resumed_from >= cfg.epochs:
        click.echo(f"{run_dir}: already complete ({cfg.epochs} epochs); nothing to do")
    train_acc = final.get("train_eval_acc")
    if train_acc is None:
        train_acc = final.get("train_acc")
    click.echo(
        f"{run_dir}: {result.epochs_done}/{cfg.epochs} epochs of {cfg.arch} on {cfg.dataset}; "
        f"final train acc {train_acc:.4f}, test acc {final.get('test_acc', float('nan')):.4f}; "
        + (
            f"training error 0 from epoch {result.zero_train_error_epoch}"
            if result.zero_train_error_epoch
            else "training error never reached 0"
        )
    )
