"""What defines a training run, without torch: the config, the recipes, and the names of data sets and networks.

Every training default lives here, once. :class:`TrainConfig`'s own field
defaults are the recipe ``paper-wrn``; :data:`RECIPES` lists the other
recipes as the fields they change. ``redrep train`` starts from
``paper-wrn``, ``redrep sweep`` from ``demo-mlp`` (its ``--recipe`` says so);
flags given on the command line override the recipe's values, and the
resolved config is what a run's ``config.json`` holds.

This module imports neither torch nor scikit-learn (an import-linter contract
in pyproject.toml checks it), so that the help of ``redrep train``, ``sweep``,
``sweep-status`` and ``demo`` and the reading of a sweep's state stay light.
The builders of the networks are in :mod:`redrep.nets.models`, the loaders
of the data sets in :mod:`redrep.nets.data`, the training in
:mod:`redrep.nets.train`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from ..core.device import check_device_name
from ..core.validation import RedrepError, check_float, check_int

# ------------------------------------------------------------------ names
#: Data sets by name, with their number of classes (what the readout has without the one-output loss).
DATASET_CLASSES = {
    "cifar10": 10,
    "cifar100": 100,
    "digits": 10,
    "parity-digits": 2,
    "mnist": 10,
    "parity-mnist": 2,
    "mnist1d": 10,
    "synthetic": 4,
}
DATASETS = tuple(DATASET_CLASSES)


@dataclass(frozen=True)
class ArchInfo:
    """The options of one registered architecture (its builder is in :data:`redrep.nets.models.MODELS`)."""

    options: tuple[str, ...]
    defaults: dict
    needs_image: bool
    summary: str


#: Registered architectures by name: which options each takes, and their defaults.
ARCHS: dict[str, ArchInfo] = {
    **{
        f"wide_resnet{d}": ArchInfo(
            ("widening_factor",), {"widening_factor": 8.0}, True, f"Wide-ResNet-{d}-k, W = round(64k)"
        )
        for d in (16, 22, 28, 40)
    },
    "densenet40": ArchInfo(("widening_factor",), {"widening_factor": 1.0}, True, "DenseNet-BC-40, growth round(8k)"),
    "mlp": ArchInfo(("width", "depth"), {"width": 512, "depth": 5}, False, "ReLU MLP, W = width"),
}

#: Every per-architecture option create_model knows.
MODEL_OPTIONS = ("widening_factor", "width", "depth")


def check_arch(name: str) -> ArchInfo:
    """The registry entry of ``name``; an unknown name lists the valid ones."""
    if name not in ARCHS:
        raise RedrepError(f"arch: expected one of {', '.join(ARCHS)}, found {name!r}")
    return ARCHS[name]


def resolve_model_options(name: str, **options) -> dict:
    """The options of architecture ``name`` with its defaults filled in.

    Options that are None are unset. Setting an option that ``name`` does not
    take is an error, so that ``--width`` given to a Wide-ResNet is not silently
    ignored.
    """
    spec = check_arch(name)
    out = dict(spec.defaults)
    for key, value in options.items():
        if key not in MODEL_OPTIONS:
            raise RedrepError(f"{key}: expected one of the model options {', '.join(MODEL_OPTIONS)}")
        if value is None:
            continue
        if key not in spec.options:
            takes = ", ".join(spec.options)
            raise RedrepError(f"{key}: not an option of arch {name} (it takes {takes}), found {key}={value}")
        out[key] = value
    if "width" in out:
        out["width"] = check_int(out["width"], "width", min_value=1)
    if "depth" in out:
        out["depth"] = check_int(out["depth"], "depth", min_value=1)
    if "widening_factor" in out:
        k = check_float(out["widening_factor"], "widening_factor")
        if k <= 0:
            raise RedrepError(f"widening_factor: expected a number > 0, found {k}")
        out["widening_factor"] = k
    return out


# ------------------------------------------------------------ the pieces
#: Losses: cross-entropy on C outputs, or the squared hinge max(0, 1 - t f)^2 on one output f, t = +1/-1 for 1/0.
LOSSES = ("cross-entropy", "squared-hinge")
#: Optimizers: SGD with momentum and a cosine schedule, or Adam at a constant learning rate.
OPTIMIZERS = ("sgd", "adam")
#: Initializations: each architecture's own, or every linear layer orthogonal with zero biases.
INITS = ("default", "orthogonal")
#: The gain of the orthogonal initialization: 1, an orthogonal matrix proper (docs/method.md#the-authors-fc-recipe).
ORTHOGONAL_GAIN = 1.0
#: float32's machine epsilon, 2^-23.
FLOAT32_EPS = 2.0**-23
#: The authors' stopping threshold on the training loss: 10 float32 epsilons.
AUTHORS_STOP_LOSS = 10 * FLOAT32_EPS
#: What ``lr_rule`` names: the authors' rule for Adam, lr = min(1e-4, (n_params / depth)^-0.75 / 10).
LR_RULES = ("authors",)

#: Epochs at which the authors kept checkpoints (the last epoch is always kept too).
PAPER_CHECKPOINT_EPOCHS = (1, 2, 5, 10, 20, 40, 60, 80, 100, 130, 140, 150, 160, 180)
#: Kept epochs of the fully connected recipe: a 1-2-5 series up to its 2 * 10^4 epochs.
FC_CHECKPOINT_EPOCHS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


def authors_lr(n_params: int, depth: int) -> float:
    """The authors' Adam learning rate for a fully connected network: min(1e-4, (n_params / depth)^-0.75 / 10).

    Their formula divides the parameter count by ``nlayers - 2``, the number of
    hidden layers, which is redrep's ``depth`` (an ``nlayers`` 6 network has
    depth 4).
    """
    n_params = check_int(n_params, "n_params", min_value=1)
    depth = check_int(depth, "depth", min_value=1)
    return min(1e-4, (n_params / depth) ** -0.75 / 10)


def output_units(loss: str, num_classes: int) -> int:
    """Outputs of the readout: one for the squared hinge (a sign classifier), one per class otherwise."""
    return 1 if loss == "squared-hinge" else int(num_classes)


#: Config fields that may differ when a run is resumed: where and how it runs, not what it computes.
RESUME_FREE_FIELDS = ("device", "amp", "data_dir", "eval_batch_size", "checkpoint_epochs", "recipe", "compile")


# ---------------------------------------------------------------- config
@dataclass
class TrainConfig:
    """Everything that defines a training run; the field defaults are the recipe ``paper-wrn``.

    ``paper-wrn`` is the authors' WRN-28-8 / CIFAR-10 recipe (docs/method.md#published-values):
    SGD with momentum 0.9, lr 0.1 annealed (cosine, once per epoch) to 1e-5 over
    200 epochs, weight decay 5e-4, batch 128, cross-entropy. :data:`RECIPES`
    has the others.

    ``widening_factor`` (Wide-ResNets, DenseNet), ``width`` and ``depth`` (mlp)
    left as None take the architecture's default (WRN k = 8, DenseNet k = 1,
    mlp 5 x 512) when the config is validated; ``depth`` counts the mlp's
    hidden layers (the authors' ``nlayers`` 6 is depth 4). ``amp`` None means
    on for CUDA, off for CPU. ``train_subset`` trains on a fixed random subset
    of that many training samples (the same subset for every seed).
    ``eval_train`` evaluates the un-augmented training set in eval mode, which
    is how zero training error is detected (otherwise the running accuracy of
    the augmented batches is used); ``eval_every`` evaluates every that many
    epochs (and at the last). ``loss`` "squared-hinge" trains one output unit
    (two-class data sets only); ``optimizer`` "adam" keeps lr constant (the
    cosine schedule is SGD's), and ``lr`` None there means the authors' rule
    (:func:`authors_lr`), resolved when the network is built and written back
    as ``lr`` with ``lr_rule`` "authors". ``stop_loss`` ends training at the
    first evaluated epoch whose full-batch training loss is below it.
    ``recipe`` records the recipe the config was built from.
    """

    recipe: str = "paper-wrn"
    dataset: str = "cifar10"
    data_dir: str | None = "data"
    arch: str = "wide_resnet28"
    widening_factor: float | None = None
    width: int | None = None
    depth: int | None = None
    epochs: int = 200
    batch_size: int = 128
    loss: str = "cross-entropy"
    optimizer: str = "sgd"
    lr: float | None = 0.1
    lr_rule: str | None = None
    lr_min: float = 1e-5
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    init: str = "default"
    stop_loss: float | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool | None = None
    train_subset: int | None = None
    checkpoint_epochs: tuple[int, ...] = PAPER_CHECKPOINT_EPOCHS
    eval_train: bool = True
    eval_every: int = 1
    eval_batch_size: int = 256
    compile: bool = False  # the network through torch.compile (how it runs: checkpoints hold the plain network)

    @property
    def model_options(self) -> dict:
        return {"widening_factor": self.widening_factor, "width": self.width, "depth": self.depth}

    @property
    def num_classes(self) -> int:
        """Classes of the data set."""
        return DATASET_CLASSES[self.dataset]

    @classmethod
    def from_recipe(cls, recipe: str = "paper-wrn", **given) -> TrainConfig:
        """The config of ``recipe`` with the fields in ``given`` set to their values.

        A given ``arch`` other than the recipe's drops the recipe's network
        options (its width and depth are an mlp's); a given ``optimizer``
        "adam" without ``lr`` leaves lr to the authors' rule.
        """
        values = dict(_recipe_values(recipe))
        unknown = sorted(set(given) - {f.name for f in fields(cls)})
        if unknown:
            raise RedrepError(f"{', '.join(unknown)}: expected TrainConfig fields, found unknown")
        if given.get("arch", values.get("arch", cls.arch)) != values.get("arch", cls.arch):
            for key in MODEL_OPTIONS:
                values.pop(key, None)
        if given.get("optimizer") == "adam" and "lr" not in given:
            values["lr"] = None
        values.update(given)
        values["recipe"] = recipe
        return cls(**values)

    def validated(self) -> TrainConfig:
        """A checked copy with the architecture's defaults filled in; raises RedrepError on a bad value."""
        if self.recipe not in RECIPES:
            raise RedrepError(f"recipe: expected one of {', '.join(RECIPES)}, found {self.recipe!r}")
        if self.dataset not in DATASETS:
            raise RedrepError(f"dataset: expected one of {', '.join(DATASETS)}, found {self.dataset!r}")
        check_arch(self.arch)
        opts = resolve_model_options(self.arch, **self.model_options)
        for name, value, allowed in (
            ("loss", self.loss, LOSSES),
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("init", self.init, INITS),
        ):
            if value not in allowed:
                raise RedrepError(f"{name}: expected one of {', '.join(allowed)}, found {value!r}")
        check_int(self.epochs, "epochs", min_value=1)
        check_int(self.batch_size, "batch_size", min_value=1)
        check_int(self.eval_batch_size, "eval_batch_size", min_value=1)
        check_int(self.eval_every, "eval_every", min_value=1)
        check_int(self.seed, "seed", min_value=0)
        lr = self._checked_lr()
        check_float(self.lr_min, "lr_min", min_value=0.0, max_value=lr)
        check_float(self.momentum, "momentum", min_value=0.0, max_value=0.999)
        check_float(self.weight_decay, "weight_decay", min_value=0.0)
        check_float(self.label_smoothing, "label_smoothing", min_value=0.0, max_value=0.999)
        self._check_loss()
        stop = check_float(self.stop_loss, "stop_loss", allow_none=True)
        if stop is not None and not stop > 0:
            raise RedrepError(f"stop_loss: expected a training loss > 0 to stop below, found {stop}")
        if stop is not None and not self.eval_train:
            raise RedrepError("stop_loss: expected eval_train on (the rule reads the full-batch training loss)")
        if self.train_subset is not None:
            check_int(self.train_subset, "train_subset", min_value=1)
        check_device_name(self.device)
        if self.amp not in (None, True, False):
            raise RedrepError(f"amp: expected true, false or none (auto), found {self.amp!r}")
        if self.compile not in (True, False):
            raise RedrepError(f"compile: expected true or false, found {self.compile!r}")
        try:
            ckpts = tuple(sorted({check_int(e, "checkpoint_epochs", min_value=0) for e in self.checkpoint_epochs}))
        except TypeError:
            raise RedrepError(
                f"checkpoint_epochs: expected a list of epochs, found {self.checkpoint_epochs!r}"
            ) from None
        # absolute, so that `redrep extract` finds the data from any working directory
        data_dir = None if self.data_dir is None else str(Path(self.data_dir).expanduser().resolve())
        return replace(
            self,
            widening_factor=opts.get("widening_factor"),
            width=opts.get("width"),
            depth=opts.get("depth"),
            checkpoint_epochs=ckpts,
            data_dir=data_dir,
            lr=None if self.lr is None else float(self.lr),
            lr_min=float(self.lr_min),
            momentum=float(self.momentum),
            weight_decay=float(self.weight_decay),
            label_smoothing=float(self.label_smoothing),
            stop_loss=stop,
        )

    def _checked_lr(self) -> float:
        """The learning rate as a float (inf for the authors' rule, still to resolve); errors on a bad one."""
        if self.lr_rule is not None and self.lr_rule not in LR_RULES:
            raise RedrepError(f"lr_rule: expected one of {', '.join(LR_RULES)} or none, found {self.lr_rule!r}")
        if self.lr is None:
            if self.optimizer != "adam":
                raise RedrepError(
                    f"lr: expected a number with optimizer {self.optimizer}, found none "
                    "(left unset, lr follows the authors' rule, which is for adam)"
                )
            if self.arch != "mlp":
                raise RedrepError(
                    f"lr: expected a number for arch {self.arch}, found none (the authors' rule is an mlp's)"
                )
            return math.inf
        lr = check_float(self.lr, "lr")
        if lr <= 0:
            raise RedrepError(f"lr: expected a number > 0, found {lr}")
        return lr

    def _check_loss(self) -> None:
        if self.loss != "squared-hinge":
            return
        if self.num_classes != 2:
            raise RedrepError(
                f"loss: squared-hinge trains one output for two classes, found dataset {self.dataset} "
                f"with {self.num_classes} classes (use cross-entropy, or a two-class set: parity-digits, parity-mnist)"
            )
        if self.label_smoothing:
            raise RedrepError(f"label_smoothing: expected 0 with the squared-hinge loss, found {self.label_smoothing}")

    def with_lr(self, n_params: int) -> TrainConfig:
        """This config with lr resolved: unchanged if set, else the authors' rule for ``n_params`` parameters."""
        if self.lr is not None:
            return self
        return replace(self, lr=authors_lr(n_params, self.depth), lr_rule="authors")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["checkpoint_epochs"] = list(self.checkpoint_epochs)
        return d

    @classmethod
    def from_dict(cls, d: dict, *, where: str = "config") -> TrainConfig:
        """A config from its JSON form; fields it lacks (a run of an older redrep) take their defaults."""
        if not isinstance(d, dict):
            raise RedrepError(f"{where}: expected a JSON object with the training config, found {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise RedrepError(f"{where}: expected only TrainConfig fields, found unknown {', '.join(unknown)}")
        d = dict(d)
        if "checkpoint_epochs" in d and isinstance(d["checkpoint_epochs"], list):
            d["checkpoint_epochs"] = tuple(d["checkpoint_epochs"])
        return cls(**d)


def config_differences(old: TrainConfig, new: TrainConfig, ignore=RESUME_FREE_FIELDS) -> list[str]:
    """'field: old -> new' for every field that differs, ``ignore`` left out."""
    a, b = old.to_dict(), new.to_dict()
    return [f"{k}: {a[k]!r} -> {b[k]!r}" for k in a if k not in ignore and a[k] != b.get(k)]


# --------------------------------------------------------------- recipes
@dataclass(frozen=True)
class Recipe:
    """A named set of training defaults: the :class:`TrainConfig` fields it changes from ``paper-wrn``."""

    summary: str
    values: dict


#: The recipes, as changes to TrainConfig's field defaults (which are ``paper-wrn``).
RECIPES: dict[str, Recipe] = {
    "paper-wrn": Recipe(
        "the authors' WRN recipe: WRN-28-8 on CIFAR-10, SGD 0.1 cosine, wd 5e-4, batch 128, 200 epochs", {}
    ),
    "demo-mlp": Recipe(
        "the demo's: parity-digits, mlp with 3 hidden layers, SGD 0.05 cosine, wd 5e-4, last epoch kept only",
        {"dataset": "parity-digits", "arch": "mlp", "depth": 3, "lr": 0.05, "checkpoint_epochs": ()},
    ),
    "authors-fc": Recipe(
        "the authors' parity-MNIST recipe: mlp depth 4 (their nlayers 6) x 512, squared hinge on one output, "
        "Adam (their lr rule, wd 0.03, batch 256), orthogonal init, until the training loss < 10 eps or 20000 epochs",
        {
            "dataset": "parity-mnist",
            "arch": "mlp",
            "width": 512,
            "depth": 4,
            "epochs": 20_000,
            "batch_size": 256,
            "loss": "squared-hinge",
            "optimizer": "adam",
            "lr": None,
            "weight_decay": 0.03,
            "init": "orthogonal",
            "stop_loss": AUTHORS_STOP_LOSS,
            "eval_every": 10,
            "checkpoint_epochs": FC_CHECKPOINT_EPOCHS,
        },
    ),
}


def _recipe_values(recipe: str) -> dict:
    if recipe not in RECIPES:
        raise RedrepError(f"recipe: expected one of {', '.join(RECIPES)}, found {recipe!r}")
    return RECIPES[recipe].values


def recipe_default(recipe: str, field: str):
    """The value of ``field`` in ``recipe`` (the TrainConfig default where the recipe leaves it)."""
    return _recipe_values(recipe).get(field, getattr(TrainConfig, field))


def recipe_defaults_text(field: str, none_means: str = "none") -> str:
    """``[default: ...]`` for a help text: one value when every recipe agrees, else each recipe's."""

    def say(v):
        if isinstance(v, tuple):
            return ",".join(map(str, v)) or "none"
        if v is None:
            return none_means
        return f"{v:g}" if isinstance(v, float) else str(v)

    per = {name: say(recipe_default(name, field)) for name in RECIPES}
    if len(set(per.values())) == 1:
        return f"[default: {next(iter(per.values()))}]"
    return "[default: the recipe's: " + "; ".join(f"{name} {v}" for name, v in per.items()) + "]"
