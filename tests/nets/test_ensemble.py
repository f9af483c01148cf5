import json

import numpy as np
import pytest
from scipy.special import softmax

from redrep.core.validation import RedrepError
from redrep.nets.ensemble import ensemble_error, store_error_inf
from redrep.nets.extract import extract_run
from redrep.nets.train import TrainConfig, train
from redrep.storage.repset import RepresentationSet


def _set(path, seed, labels_test, n_train=20, width=6, n_classes=3, **meta):
    rng = np.random.default_rng(seed)
    rs = RepresentationSet.from_arrays(
        rng.normal(size=(n_train, width)).astype(np.float32),
        rng.normal(size=(labels_test.size, width)).astype(np.float32),
        rng.integers(0, n_classes, n_train),
        labels_test,
        rng.normal(size=(n_classes, width)).astype(np.float32),
        rng.normal(size=n_classes).astype(np.float32),
        meta={"dataset": "toy", "arch": "mlp", "width": width, "seed": seed, **meta},
    )
    rs.save(path)
    return rs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ensemble_of_sets_matches_a_direct_average_of_softmaxes(tmp_path, seed):
    labels = np.random.default_rng(100 + seed).integers(0, 3, 200)
    sets = [_set(tmp_path / f"s{i}", 10 * seed + i, labels) for i in range(4)]
    res = ensemble_error([tmp_path / f"s{i}" for i in range(4)], device="cpu")
    probs = []
    for rs in sets:
        logits = rs.features_test.astype(np.float64) @ rs.weight.T.astype(np.float64) + rs.bias
        probs.append(softmax(logits, axis=1))
    want = np.mean(np.mean(probs, axis=0).argmax(1) != labels)
    assert res.error_inf == pytest.approx(want) and res.accuracy == pytest.approx(1 - want)
    assert res.member_errors == pytest.approx([np.mean(p.argmax(1) != labels) for p in probs])
    assert res.n_members == 4 and res.n_test == 200


def test_averaging_probabilities_is_not_majority_vote(tmp_path):
    # one confident member outvotes two hesitant ones: a known answer of the softmax average
    labels = np.array([0])
    for i, w in enumerate([[1.0, 0.0], [0.0, 0.1], [0.0, 0.1]]):
        RepresentationSet.from_arrays(
            np.ones((1, 1), np.float32), np.ones((1, 1), np.float32), np.array([0]), labels,
            np.array([[w[0] * 10], [w[1]]], np.float32), np.zeros(2, np.float32), meta={"seed": i},
        ).save(tmp_path / f"m{i}")  # fmt: skip
    res = ensemble_error([tmp_path / f"m{i}" for i in range(3)], device="cpu")
    assert res.member_errors == [0.0, 1.0, 1.0] and res.error_inf == 0.0


def test_ensemble_errors(tmp_path):
    labels = np.arange(10) % 3
    _set(tmp_path / "a", 0, labels)
    _set(tmp_path / "b", 1, labels)
    _set(tmp_path / "same_seed", 0, labels)
    _set(tmp_path / "other_labels", 2, labels[::-1].copy())
    _set(tmp_path / "other_arch", 3, labels, arch="wide_resnet16")
    (tmp_path / "empty").mkdir()
    cases = [
        ([tmp_path / "a"], r"expected at least 2 runs or sets"),
        ([tmp_path / "a", tmp_path / "a"], r"expected distinct runs or sets"),
        ([tmp_path / "a", tmp_path / "same_seed"], r"expected independently trained members, found seed 0"),
        ([tmp_path / "a", tmp_path / "other_labels"], r"expected the same test set .*in another order"),
        ([tmp_path / "a", tmp_path / "other_arch"], r"expected a network of the same kind .*arch: 'mlp' vs"),
        ([tmp_path / "a", tmp_path / "empty"], r"empty: expected a run directory .* or a native representation set"),
    ]
    for members, match in cases:
        with pytest.raises(RedrepError, match=match):
            ensemble_error(members, device="cpu")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ens")
    out = []
    for seed in (0, 1, 2):
        cfg = TrainConfig(
            dataset="synthetic", arch="mlp", width=8, depth=1, epochs=2, batch_size=64, lr=0.05, seed=seed, device="cpu"
        )
        train(cfg, root / f"r{seed}", progress=False)
        out.append(root / f"r{seed}")
    return root, out


def test_runs_and_their_extracted_sets_give_the_same_ensemble(runs):
    root, members = runs
    from_runs = ensemble_error(members, device="cpu")
    sets = [extract_run(r, device="cpu", progress=False)[0] for r in members]
    from_sets = ensemble_error(sets, device="cpu")
    assert from_runs.error_inf == pytest.approx(from_sets.error_inf)
    assert from_runs.member_errors == pytest.approx(from_sets.member_errors)
    assert from_runs.kind["arch"] == "mlp" and from_runs.epoch == 2
    store_error_inf(sets[0], from_runs)
    back = RepresentationSet.load(sets[0])
    assert back.error_inf == pytest.approx(from_runs.error_inf)
    assert back.meta["ensemble"]["n_members"] == 3
    # re-extracting the same run and epoch keeps the stored ensemble result
    extract_run(members[0], device="cpu", progress=False)
    assert RepresentationSet.load(sets[0]).error_inf == pytest.approx(from_runs.error_inf)


def test_runs_of_another_kind_and_sets_of_another_test_set_are_refused(runs, tmp_path):
    root, members = runs
    cfg = TrainConfig(
        dataset="synthetic", arch="mlp", width=8, depth=1, epochs=2, batch_size=64, lr=0.1, seed=5, device="cpu"
    )
    train(cfg, tmp_path / "lr", progress=False)
    with pytest.raises(RedrepError, match=r"expected a network of the same kind .*lr: 0.05 vs 0.1"):
        ensemble_error([members[0], tmp_path / "lr"], device="cpu")
    res = ensemble_error(members[:2], device="cpu")
    _set(tmp_path / "toy", 0, np.zeros(5, dtype=int))
    with pytest.raises(RedrepError, match=r"expected a set on the ensemble's test set \(256 samples"):
        store_error_inf(tmp_path / "toy", res)
    before = json.loads((tmp_path / "toy" / "meta.json").read_text())
    assert before["error_inf"] is None


@pytest.mark.parametrize("seed", [0, 1])
def test_one_output_members_average_their_outputs_and_take_the_sign(tmp_path, seed):
    labels = np.random.default_rng(200 + seed).integers(0, 2, 150)
    sets = [_set(tmp_path / f"s{i}", 10 * seed + i, labels, n_classes=1) for i in range(3)]
    res = ensemble_error([tmp_path / f"s{i}" for i in range(3)], device="cpu")
    outs = [rs.features_test.astype(np.float64) @ rs.weight[0].astype(np.float64) + rs.bias[0] for rs in sets]
    mean = np.mean(outs, axis=0)
    assert res.error_inf == pytest.approx(np.mean((mean > 0).astype(int) != labels))
    assert res.member_errors == pytest.approx([np.mean((o > 0).astype(int) != labels) for o in outs])
    # the average of outputs, not of votes: one confident member outvotes two hesitant ones
    for i, w in enumerate([-10.0, 0.1, 0.1]):
        RepresentationSet.from_arrays(
            np.ones((1, 1), np.float32), np.ones((1, 1), np.float32), np.array([0]), np.array([0]),
            np.array([[w]], np.float32), np.zeros(1, np.float32), meta={"seed": i},
        ).save(tmp_path / f"v{i}")  # fmt: skip
    assert ensemble_error([tmp_path / f"v{i}" for i in range(3)], device="cpu").error_inf == 0.0
    _set(tmp_path / "two", 99, labels, n_classes=2)
    with pytest.raises(RedrepError, match=r"two: expected 1 output as .*s0 has, found 2 \(one-output and multi"):
        ensemble_error([tmp_path / "s0", tmp_path / "two"], device="cpu")
