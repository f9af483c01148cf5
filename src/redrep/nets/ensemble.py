"""The ensemble error error_inf: test error of the averaged softmax of several networks.

Networks with one output (a sign classifier, the squared-hinge recipe) are
averaged by their outputs instead: the ensemble predicts class 1 where the
mean output is > 0 and class 0 where it is <= 0, the rule of a single
one-output network (docs/method.md#one-output-readout). Members must agree on
the number of outputs.

The paper compares chunk test errors with the error of a large ensemble of
independently trained networks of the same kind (their published number
averages 20 WRN-28-8). Members can be ``redrep train`` runs (their
checkpoints are evaluated on the test set) or native representation sets
(their logits are recomputed exactly as features @ weight.T + bias).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.special import softmax

from ..core.accuracy import readout_predictions
from ..core.device import resolve_device
from ..core.validation import RedrepError
from ..storage import io
from ..storage.repset import NATIVE_FILES, NATIVE_META, RepresentationSet, update_meta
from .data import load_dataset
from .train import CONFIG_FILE

#: Config fields that must agree between members: what makes runs "of the same kind".
SAME_KIND_FIELDS = (
    "dataset",
    "arch",
    "widening_factor",
    "width",
    "depth",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "label_smoothing",
    "train_subset",
    "loss",
    "optimizer",
    "init",
)


@dataclass
class EnsembleResult:
    """The averaged-softmax ensemble of several networks.

    Attributes
    ----------
    error_inf : test error of the ensemble (argmax of the mean softmax; one-output members: sign of the mean output)
    accuracy : 1 - error_inf
    member_errors : test error of each member, in input order
    members : the member paths
    n_test : number of test samples
    epoch : the members' epoch, when they share one
    kind : the members' shared description (dataset, arch, ...)
    labels_test : int ndarray of shape (n_test,), the shared test labels
    """

    error_inf: float
    accuracy: float
    member_errors: list[float]
    members: list[str]
    n_test: int
    epoch: int | None = None
    kind: dict = field(default_factory=dict)
    labels_test: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_members(self) -> int:
        return len(self.members)

    def to_dict(self) -> dict:
        return {
            "error_inf": self.error_inf,
            "accuracy": self.accuracy,
            "n_members": self.n_members,
            "member_test_errors": self.member_errors,
            "mean_member_error": float(np.mean(self.member_errors)),
            "members": self.members,
            "n_test": self.n_test,
            "epoch": self.epoch,
            "kind": self.kind,
        }


def _member_from_set(path: Path):
    rs = RepresentationSet.load_native(path)
    logits = np.asarray(rs.features_test, dtype=np.float64) @ rs.weight.T.astype(np.float64) + rs.bias
    kind = {k: rs.meta.get(k) for k in ("dataset", "arch", "width", "epoch")}
    return logits, np.asarray(rs.labels_test), kind, rs.meta.get("seed"), rs.meta.get("epoch")


def _member_from_run(path: Path, epoch, device, data_dir, batch_size, cache: dict):
    from .extract import extract_features, load_run_model

    config, ckpt, model = load_run_model(path, epoch)
    key = (config.dataset, data_dir if data_dir is not None else config.data_dir)
    if key not in cache:
        cache[key] = load_dataset(*key)
    ds = cache[key]
    _, labels, logits = extract_features(
        model, (ds.x_test, ds.y_test), device=device, transform=ds.prepare, batch_size=batch_size
    )
    kind = {k: getattr(config, k) for k in SAME_KIND_FIELDS}
    # a set records W, the layer's width, whatever the arch calls it; so does a run here
    kind["width"] = int(ckpt.get("model_info", {}).get("num_features", model.num_features))
    kind["epoch"] = int(ckpt["epoch"])
    return logits, labels, kind, config.seed, int(ckpt["epoch"])


def ensemble_error(
    members,
    *,
    epoch: int | None = None,
    device: str = "auto",
    data_dir=None,
    batch_size: int = 256,
) -> EnsembleResult:
    """Test error of the averaged softmax of ``members`` (run directories or native representation sets);
    of the sign of their averaged output where they have one output (class 1 where the mean is > 0).

    Members must share the test set (identical labels) and, for runs, every
    field of :data:`SAME_KIND_FIELDS`; two members with the same seed are
    refused (an ensemble of copies says nothing).

    Parameters
    ----------
    members : paths, at least two
    epoch : checkpoint epoch of the runs (None: their last)
    device, data_dir, batch_size : how runs are evaluated
    """
    paths = [Path(p) for p in members]
    if len(paths) < 2:
        raise RedrepError(f"members: expected at least 2 runs or sets to average, found {len(paths)}")
    dup = {str(p.resolve()) for p in paths}
    if len(dup) != len(paths):
        raise RedrepError("members: expected distinct runs or sets, found one given twice")
    dev = resolve_device(device)
    cache: dict = {}
    probs_sum = None
    labels0 = None
    kind0 = None
    seeds: dict = {}
    errors: list[float] = []
    epochs = set()
    for p in paths:
        if (p / CONFIG_FILE).is_file():
            logits, labels, kind, seed, ep = _member_from_run(p, epoch, dev, data_dir, batch_size, cache)
        elif (p / NATIVE_META).is_file() or any((p / f).exists() for f in NATIVE_FILES.values()):
            logits, labels, kind, seed, ep = _member_from_set(p)
        else:
            raise RedrepError(
                f"{p}: expected a run directory (with {CONFIG_FILE}) or a native representation set "
                f"(with {NATIVE_META}), found neither"
            )
        if labels0 is None:
            labels0, kind0 = labels, kind
        else:
            if labels.shape != labels0.shape or not np.array_equal(labels, labels0):
                raise RedrepError(
                    f"{p}: expected the same test set as {paths[0]} ({labels0.shape[0]} labels), "
                    f"found {labels.shape[0]} labels{' in another order' if labels.shape == labels0.shape else ''}"
                )
            diffs = [f"{k}: {kind0[k]!r} vs {kind[k]!r}" for k in kind0 if k in kind and kind[k] != kind0[k]]
            if diffs:
                raise RedrepError(f"{p}: expected a network of the same kind as {paths[0]}, found {'; '.join(diffs)}")
        if seed is not None:
            if seed in seeds:
                raise RedrepError(
                    f"{p}: expected independently trained members, found seed {seed} also in {seeds[seed]}"
                )
            seeds[seed] = p
        if probs_sum is not None and logits.shape[1] != probs_sum.shape[1]:
            raise RedrepError(
                f"{p}: expected {probs_sum.shape[1]} output{'s' if probs_sum.shape[1] > 1 else ''} as {paths[0]} "
                f"has, found {logits.shape[1]} (one-output and multi-output networks do not average)"
            )
        errors.append(float(np.mean(readout_predictions(logits) != labels)))
        # one output: the outputs themselves are averaged (and their sign taken), else the softmax
        prob = logits.astype(np.float64)
        if logits.shape[1] > 1:
            prob = softmax(prob, axis=1)
        probs_sum = prob if probs_sum is None else probs_sum + prob
        epochs.add(ep)
    acc = float(np.mean(readout_predictions(probs_sum) == labels0))
    return EnsembleResult(
        error_inf=1.0 - acc,
        accuracy=acc,
        member_errors=errors,
        members=[str(p) for p in paths],
        n_test=int(labels0.shape[0]),
        epoch=epochs.pop() if len(epochs) == 1 else None,
        kind={k: v for k, v in (kind0 or {}).items() if v is not None},
        labels_test=labels0,
    )


def store_error_inf(set_dir, result: EnsembleResult) -> None:
    """Write ``result.error_inf`` (and a record of the ensemble) into a native set's meta.json.

    The set must have the ensemble's test labels, or the number would be
    compared with chunk errors of another test set.
    """
    set_dir = Path(set_dir)
    if not (set_dir / NATIVE_META).is_file():
        raise RedrepError(f"{set_dir}: expected a native representation set (with {NATIVE_META}), found none")
    labels_file = set_dir / NATIVE_FILES["labels_test"]
    try:
        labels = np.load(labels_file, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise RedrepError(f"{labels_file}: expected a readable .npy array, could not read it ({exc})") from None
    same = labels.shape == (result.n_test,)
    if same and result.labels_test is not None:
        same = np.array_equal(labels, result.labels_test)
    if not same:
        raise RedrepError(
            f"{set_dir}: expected a set on the ensemble's test set ({result.n_test} samples, same labels), "
            f"found {labels.shape[0]} test samples{' with other labels' if labels.shape[0] == result.n_test else ''}"
        )
    doc = io.read_json_object(set_dir / NATIVE_META)
    meta = doc.get("meta") if isinstance(doc.get("meta"), dict) else {}
    set_epoch = meta.get("epoch")
    if result.epoch is not None and set_epoch is not None and int(set_epoch) != int(result.epoch):
        raise RedrepError(
            f"{set_dir}: expected a set extracted at the ensemble's epoch {result.epoch}, found epoch {set_epoch}"
        )
    ds = meta.get("dataset")
    if ds is not None and result.kind.get("dataset") not in (None, ds):
        raise RedrepError(f"{set_dir}: expected a set of dataset {result.kind['dataset']}, found {ds}")
    update_meta(set_dir, error_inf=result.error_inf, ensemble=result.to_dict())
