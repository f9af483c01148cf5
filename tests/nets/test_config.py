"""The training config and its recipes: one place for every default, no torch needed to read them."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

import procs
from redrep.core.validation import RedrepError
from redrep.experiments.sweep import SweepConfig
from redrep.nets.config import (
    AUTHORS_STOP_LOSS,
    PAPER_CHECKPOINT_EPOCHS,
    RECIPES,
    TrainConfig,
    authors_lr,
    recipe_default,
    recipe_defaults_text,
)


def test_config_module_imports_neither_torch_nor_sklearn():
    code = (
        "import sys, redrep.nets.config, redrep.experiments.sweep, redrep.cli.training_options; "
        "print(','.join(m for m in ('torch', 'sklearn', 'matplotlib') if m in sys.modules))"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=procs.env(), check=True)
    assert p.stdout.strip() == ""


def test_the_recipes_hold_the_defaults_of_train_and_sweep():
    # paper-wrn is TrainConfig's own defaults, which `redrep train` has always had
    assert TrainConfig.from_recipe("paper-wrn") == TrainConfig()
    c = TrainConfig()
    assert (c.dataset, c.arch, c.epochs, c.batch_size, c.lr, c.weight_decay) == (
        "cifar10",
        "wide_resnet28",
        200,
        128,
        0.1,
        5e-4,
    )
    assert (c.loss, c.optimizer, c.init, c.stop_loss, c.eval_every) == ("cross-entropy", "sgd", "default", None, 1)
    assert c.checkpoint_epochs == PAPER_CHECKPOINT_EPOCHS
    # demo-mlp is the template a sweep (and the demo) has always used: parity-digits, 3 x W MLPs, lr 0.05
    demo = TrainConfig.from_recipe("demo-mlp")
    assert SweepConfig().train == demo
    expected = TrainConfig(
        dataset="parity-digits", arch="mlp", depth=3, lr=0.05, checkpoint_epochs=(), recipe="demo-mlp"
    )
    assert demo == expected


def test_authors_fc_is_the_published_recipe():
    c = TrainConfig.from_recipe("authors-fc")
    assert (c.dataset, c.arch, c.width, c.depth) == ("parity-mnist", "mlp", 512, 4)  # nlayers 6 = depth 4
    assert (c.loss, c.optimizer, c.lr, c.weight_decay, c.batch_size) == ("squared-hinge", "adam", None, 0.03, 256)
    assert (c.init, c.epochs) == ("orthogonal", 20_000)
    assert c.stop_loss == AUTHORS_STOP_LOSS == 10 * float(np.finfo(np.float32).eps)


@pytest.mark.parametrize(
    "width, depth, n_in",
    [(512, 4, 10), (64, 4, 10), (16, 4, 10), (1024, 2, 10), (2048, 4, 10)],
)
def test_authors_lr_rule(width, depth, n_in):
    # parameters of the one-output mlp: first layer, depth - 1 square layers, the readout
    n = (n_in * width + width) + (depth - 1) * (width * width + width) + (width + 1)
    lr = authors_lr(n, depth)
    assert lr == min(1e-4, (n / depth) ** -0.75 / 10)
    if width == 512 and depth == 4:
        assert lr == pytest.approx(1.0627e-5, rel=1e-3)  # the authors' W = 512 network
    if width == 16:
        assert lr == 1e-4  # small networks are capped
    assert 0 < lr <= 1e-4


def test_flags_override_the_recipe():
    c = TrainConfig.from_recipe("authors-fc", width=64, epochs=50, weight_decay=0.0)
    assert (c.width, c.epochs, c.weight_decay, c.depth, c.loss) == (64, 50, 0.0, 4, "squared-hinge")
    assert TrainConfig.from_recipe("authors-fc", lr=1e-3).lr == 1e-3
    # another arch drops the recipe's mlp options; a given optimizer adam leaves lr to the rule
    wrn = TrainConfig.from_recipe("demo-mlp", arch="wide_resnet16", dataset="cifar10").validated()
    assert (wrn.depth, wrn.width, wrn.widening_factor) == (None, None, 8.0)
    assert TrainConfig.from_recipe("demo-mlp", optimizer="adam").lr is None
    assert TrainConfig.from_recipe("demo-mlp", optimizer="adam", lr=0.01).lr == 0.01
    with pytest.raises(RedrepError, match=r"recipe: expected one of paper-wrn, demo-mlp, authors-fc, found 'fc'"):
        TrainConfig.from_recipe("fc")


def test_lr_is_resolved_from_the_parameter_count():
    c = TrainConfig.from_recipe("authors-fc", width=32).validated()
    r = c.with_lr(10_000)
    assert (r.lr, r.lr_rule) == (authors_lr(10_000, 4), "authors")
    assert r.with_lr(5) is r  # once set, kept
    assert TrainConfig(lr=0.3).with_lr(10).lr == 0.3


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"optimizer": "sgd", "lr": None}, r"lr: expected a number with optimizer sgd, found none"),
        (
            {"arch": "wide_resnet16", "width": None, "depth": None, "optimizer": "adam", "lr": None},
            r"lr: expected a number for arch wide_resnet16",
        ),
        ({"loss": "squared-hinge", "dataset": "digits"}, r"loss: squared-hinge trains one output for two classes, "),
        ({"loss": "squared-hinge", "dataset": "parity-digits", "label_smoothing": 0.1}, r"label_smoothing: expected 0"),
        ({"loss": "hinge"}, r"loss: expected one of cross-entropy, squared-hinge, found 'hinge'"),
        ({"optimizer": "lbfgs"}, r"optimizer: expected one of sgd, adam, found 'lbfgs'"),
        ({"init": "xavier"}, r"init: expected one of default, orthogonal, found 'xavier'"),
        ({"stop_loss": 0.0}, r"stop_loss: expected a training loss > 0 to stop below, found 0.0"),
        ({"stop_loss": 1e-3, "eval_train": False}, r"stop_loss: expected eval_train on"),
        ({"eval_every": 0}, r"eval_every: expected an integer >= 1, found 0"),
        ({"lr_rule": "mine"}, r"lr_rule: expected one of authors or none, found 'mine'"),
        ({"recipe": "nope"}, r"recipe: expected one of paper-wrn"),
    ],
)
def test_bad_recipe_fields_are_one_line_errors(kw, match):
    base = dict(dataset="parity-digits", arch="mlp", width=8, depth=2)
    with pytest.raises(RedrepError, match=match) as e:
        TrainConfig(**{**base, **kw}).validated()
    assert "\n" not in str(e.value)


def test_a_config_of_an_older_redrep_reads_with_the_defaults():
    old = TrainConfig().to_dict()
    for key in ("recipe", "loss", "optimizer", "lr_rule", "init", "stop_loss", "eval_every"):
        del old[key]
    c = TrainConfig.from_dict(old)
    assert c == TrainConfig() and TrainConfig.from_dict(c.to_dict()) == c


def test_help_defaults_are_read_from_the_recipes():
    assert recipe_defaults_text("lr_min") == "[default: 1e-05]"
    assert recipe_defaults_text("lr", "the rule") == (
        "[default: the recipe's: paper-wrn 0.1; demo-mlp 0.05; authors-fc the rule]"
    )
    for name, recipe in RECIPES.items():
        for field, value in recipe.values.items():
            assert recipe_default(name, field) == value
    assert math.isclose(recipe_default("authors-fc", "stop_loss"), 1.1920929e-06, rel_tol=1e-7)
