"""The training options that ``redrep train`` and ``redrep sweep`` share, and how they become a TrainConfig.

Every default is read from :mod:`redrep.nets.config` (the recipes), never
written here: an option left out takes its value from the recipe, and its
help says what that is for each recipe. This module imports no torch.
"""

from __future__ import annotations

from dataclasses import replace

import click

from ..core.validation import RedrepError
from ..nets.config import (
    ARCHS,
    DATASETS,
    INITS,
    LOSSES,
    OPTIMIZERS,
    RECIPES,
    TrainConfig,
    recipe_defaults_text,
)

#: What ``--stop-loss`` takes to switch the stopping rule off.
OFF = "off"


class _FloatOrOff(click.ParamType):
    """A number, or ``off`` (given as None)."""

    name = "FLOAT|off"

    def convert(self, value, param, ctx):
        if isinstance(value, float) or value == OFF:
            return value
        try:
            return float(value)
        except (TypeError, ValueError):
            self.fail(f"expected a number or {OFF}, found {value!r}", param, ctx)


def _d(field: str, none_means: str = "none") -> str:
    return recipe_defaults_text(field, none_means)


def recipe_help(default: str) -> str:
    """The help of ``--recipe``: every recipe with what it is, and the command's default."""
    names = "; ".join(f"{name}: {r.summary}" for name, r in RECIPES.items())
    return (
        f"Training defaults to start from ({names}). Options given override the recipe's values; "
        f"config.json holds the result  [default: {default}]"
    )


def training_options(default_recipe: str):
    """The shared options as one decorator; their values reach the command as keyword arguments (None: not given)."""
    arch_names = ", ".join(ARCHS)
    opts = [
        click.option("--recipe", type=click.Choice(list(RECIPES)), default=None, help=recipe_help(default_recipe)),
        click.option("--dataset", default=None, help=f"One of {', '.join(DATASETS)}  {_d('dataset')}"),
        click.option(
            "--data-dir",
            default=None,
            help=f"Folder of the data sets (CIFAR archives, MNIST files, MNIST-1D cache)  {_d('data_dir')}",
        ),
        click.option("--arch", default=None, help=f"One of {arch_names}  {_d('arch')}"),
        click.option(
            "--depth",
            type=int,
            default=None,
            help="Hidden layers of an mlp, each of width W; the authors' fully connected 'depth 6' (nlayers 6: "
            f"input, 4 hidden, output layer) is --depth 4  {_d('depth', 'the arch default, 5')}",
        ),
        click.option("--epochs", type=int, default=None, help=f"Training epochs at most  {_d('epochs')}"),
        click.option("--batch-size", type=int, default=None, help=f"Samples per step  {_d('batch_size')}"),
        click.option(
            "--loss",
            type=click.Choice(LOSSES),
            default=None,
            help="cross-entropy on one output per class, or squared-hinge on ONE output (two-class data: "
            f"targets +1 for label 1, -1 for label 0; the prediction is the output's sign)  {_d('loss')}",
        ),
        click.option(
            "--optimizer",
            type=click.Choice(OPTIMIZERS),
            default=None,
            help="sgd (momentum, cosine schedule to --lr-min) or adam (constant lr, weight decay as Adam's L2 "
            f"term; without --lr, the authors' rule min(1e-4, (n_params / depth)^-0.75 / 10))  {_d('optimizer')}",
        ),
        click.option(
            "--lr",
            type=float,
            default=None,
            help=f"Learning rate (sgd: the start of the cosine schedule)  {_d('lr', 'the authors rule')}",
        ),
        click.option("--lr-min", type=float, default=None, help=f"End of sgd's cosine schedule  {_d('lr_min')}"),
        click.option("--momentum", type=float, default=None, help=f"sgd's momentum  {_d('momentum')}"),
        click.option(
            "--weight-decay", type=float, default=None, help=f"L2 weight decay (both optimizers)  {_d('weight_decay')}"
        ),
        click.option(
            "--label-smoothing",
            type=float,
            default=None,
            help=f"Label smoothing of the cross-entropy  {_d('label_smoothing')}",
        ),
        click.option(
            "--init",
            type=click.Choice(INITS),
            default=None,
            help=f"default (the architecture's) or orthogonal (every linear layer, gain 1, biases 0)  {_d('init')}",
        ),
        click.option(
            "--stop-loss",
            type=_FloatOrOff(),
            default=None,
            help="Stop at the first evaluated epoch whose full-batch training loss is below this, or at --epochs; "
            f"'{OFF}' trains all epochs (authors-fc: 10 float32 eps)  {_d('stop_loss', OFF)}",
        ),
        click.option(
            "--eval-every",
            type=int,
            default=None,
            help=f"Evaluate the training and test sets every N epochs (and at the last)  {_d('eval_every')}",
        ),
        click.option(
            "--train-subset", type=int, default=None, help="Train on a fixed random subset of N samples  [default: all]"
        ),
        click.option("--device", default=None, help=f"auto (CUDA when present), cpu, cuda or cuda:N  {_d('device')}"),
        click.option("--amp/--no-amp", default=None, help="Mixed precision  [default: on for CUDA, off for CPU]"),
        click.option(
            "--eval-train/--no-eval-train",
            default=None,
            help="Evaluate the clean training set (detects zero training error; --stop-loss reads it)  [default: on]",
        ),
        click.option(
            "--eval-batch-size", type=int, default=None, help=f"Samples per evaluation batch  {_d('eval_batch_size')}"
        ),
    ]

    def decorate(f):
        for opt in reversed(opts):
            f = opt(f)
        return f

    return decorate


#: The keyword arguments :func:`training_options` adds.
TRAINING_FIELDS = (
    "recipe",
    "dataset",
    "data_dir",
    "arch",
    "depth",
    "epochs",
    "batch_size",
    "loss",
    "optimizer",
    "lr",
    "lr_min",
    "momentum",
    "weight_decay",
    "label_smoothing",
    "init",
    "stop_loss",
    "eval_every",
    "train_subset",
    "device",
    "amp",
    "eval_train",
    "eval_batch_size",
)


def given_fields(options: dict) -> dict:
    """The TrainConfig fields the user gave: values left None dropped, ``--stop-loss off`` as None."""
    given = {k: v for k, v in options.items() if v is not None}
    if given.get("stop_loss") == OFF:
        given["stop_loss"] = None
    return given


def config_from_options(default_recipe: str, options: dict, saved: TrainConfig | None = None) -> TrainConfig:
    """The TrainConfig of the options given: ``saved`` (a run being resumed) or their recipe, with them set.

    ``options`` holds TrainConfig fields (None: not given). A run being
    resumed keeps its saved config and its recipe; ``--recipe`` may only repeat it.
    """
    given = given_fields(options)
    recipe = given.pop("recipe", None)
    if saved is None:
        return TrainConfig.from_recipe(recipe or default_recipe, **given)
    if recipe is not None and recipe != saved.recipe:
        raise RedrepError(
            f"recipe: the run was made with recipe {saved.recipe}, found {recipe} (resuming keeps the run's own; "
            f"choose another out folder for a new run)"
        )
    if "lr" in given:
        given["lr_rule"] = None
    return replace(saved, **given)
