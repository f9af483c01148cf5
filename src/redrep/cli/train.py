"""``redrep train``: train a network with one of the authors' recipes (resumable)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..nets.config import PAPER_CHECKPOINT_EPOCHS, recipe_defaults_text
from . import int_list_callback
from .training_options import config_from_options, training_options

#: The recipe of `redrep train` unless --recipe says otherwise.
DEFAULT_RECIPE = "paper-wrn"


def _int_list(ctx, param, value):
    value = int_list_callback(ctx, param, value)
    return None if value is None else tuple(value)


@click.command("train")
@click.option(
    "--out", "run_dir", type=click.Path(path_type=Path), required=True, help="Run directory (created or resumed)."
)
@training_options(DEFAULT_RECIPE)
@click.option(
    "--widening-factor",
    type=float,
    default=None,
    help="k of a Wide-ResNet (W = round(64k); 0.25 gives 16) or DenseNet  [default: the arch's: 8, densenet40 1]",
)
@click.option(
    "--width",
    type=int,
    default=None,
    help=f"Hidden width W of an mlp  {recipe_defaults_text('width', '512 (the mlp default)')}",
)
@click.option(
    "--seed",
    type=int,
    default=None,
    help=f"Seed of the initialization, the batches and the augmentation  {recipe_defaults_text('seed')}",
)
@click.option(
    "--checkpoint-epochs",
    default=None,
    callback=_int_list,
    help="Comma-separated epochs whose checkpoints are kept (epoch 0 and the last always are)  "
    + recipe_defaults_text("checkpoint_epochs").replace(
        ",".join(map(str, PAPER_CHECKPOINT_EPOCHS)), "the authors' " + ",".join(map(str, PAPER_CHECKPOINT_EPOCHS))
    ),
)
@click.option("--compile/--no-compile", default=None, help="Run the network through torch.compile  [default: off]")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing: no progress bars, messages or final summary.")
def command(run_dir, quiet, **options):
    """Train a network and keep its checkpoints and metrics in a run directory.

    The defaults are the recipe's (--recipe, paper-wrn unless given); every
    option given overrides it. Running the command again on the same --out
    resumes the run from its last finished epoch; options left out are then
    taken from the saved config, and options given must match it (except
    --device, --amp, --data-dir, --eval-batch-size, --checkpoint-epochs, --compile).
    """
    from tqdm.auto import tqdm

    from ..core.device import resolve_device
    from ..nets.train import CONFIG_FILE, read_run_config, train

    saved = read_run_config(run_dir) if (run_dir / CONFIG_FILE).is_file() else None
    config = config_from_options(DEFAULT_RECIPE, options, saved)

    def log(msg):
        if not quiet:
            tqdm.write(msg, file=sys.stderr)

    device = resolve_device(config.device)  # once, here; the run's config keeps what was asked for
    result = train(config, run_dir, device=device, progress=not quiet, log=log)
    if quiet:  # -q: nothing on the terminal; the run folder's summary.json holds the same
        return
    cfg = result.config
    final = result.final
    if result.resumed_from >= result.epochs_done:
        click.echo(f"{run_dir}: already complete ({result.epochs_done} epochs); nothing to do")
    train_acc = final.get("train_eval_acc")
    if train_acc is None:
        train_acc = final.get("train_acc")
    stopped = ""
    if result.stop is not None and result.stop["reason"] == "stop_loss":
        stopped = f" (stopped: training loss {result.stop['train_loss']:.3g} < {cfg.stop_loss:.3g})"
    click.echo(
        f"{run_dir}: {result.epochs_done}/{cfg.epochs} epochs of {cfg.arch} on {cfg.dataset}{stopped}; "
        f"final train acc {train_acc:.4f}, test acc {final.get('test_acc', float('nan')):.4f}; "
        + (
            f"training error 0 from epoch {result.zero_train_error_epoch}"
            if result.zero_train_error_epoch
            else "training error never reached 0"
        )
    )
