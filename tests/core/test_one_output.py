"""A one-output readout (a sign classifier) in the chunk analysis, against a direct exact definition (CPU)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

import redrep.core.accuracy as acc_mod
from redrep.core.accuracy import class_readout, readout_predictions
from redrep.core.analysis import ChunkAnalysis
from redrep.core.validation import RedrepError
from redrep.storage.repset import RepresentationSet


def _passes():
    lib = acc_mod.fastpass_library()
    return ["numpy"] + ([] if lib is None else ["compiled"])


@pytest.fixture(params=_passes(), autouse=True)
def fast_pass(request, monkeypatch):
    """Each test runs with the numpy fast pass and, where it was built, the compiled one."""
    if request.param == "numpy":
        monkeypatch.setattr(acc_mod, "fastpass_library", lambda: None)
    return request.param


def round32(q: Fraction) -> Fraction:
    """``q`` rounded to the nearest float32 (ties to even), as an exact fraction."""
    f = np.float32(float(q))
    cands = [np.nextafter(f, np.float32(-np.inf)), f, np.nextafter(f, np.float32(np.inf))]
    dist = [abs(Fraction(float(c)) - q) for c in cands]
    best = [c for c, d in zip(cands, dist) if d == min(dist)]
    return Fraction(float(min(best, key=lambda c: int(np.array(c).view(np.uint32)) & 1)))


def sign_accuracy(X, y, w, b, chunk) -> float:
    """The definition: the output summed exactly over the chunk, rounded to float32; class 1 iff it is > 0."""
    correct = 0
    for x, label in zip(X, y):
        out = round32(sum((Fraction(float(x[i])) * Fraction(float(w[i])) for i in chunk), Fraction(float(b))))
        correct += int((1 if out > 0 else 0) == label)
    return correct / len(y)


def one_output_set(X, Xt, y, yt, w, b):
    return RepresentationSet.from_arrays(X, Xt, y, yt, np.asarray(w, np.float32)[None], np.float32([b]))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_chunk_accuracies_of_a_sign_readout_are_the_exact_definition(seed):
    """Dyadic data: the float32 outputs are exact, and many are exactly 0 (class 0 by the tie rule)."""
    rng = np.random.default_rng(seed)
    width = 12
    vals = np.array([0.0, 0.0, 0.5, -0.5, 1.0, -1.0, 2.0, 0.25], dtype=np.float32)
    X, Xt = rng.choice(vals, (90, width)), rng.choice(vals, (40, width))
    y, yt = rng.integers(0, 2, 90), rng.integers(0, 2, 40)
    w = rng.choice(np.array([0.0, 1.0, -1.0, 0.5, 2.0], dtype=np.float32), width)
    b = float(rng.choice([0.0, 0.25, -0.5]))
    rs = one_output_set(X, Xt, y, yt, w, b)
    assert rs.n_classes == 1 and rs.weight.shape == (1, width) and rs.bias.shape == (1,)
    a = ChunkAnalysis(chunk_sizes=[1, 2, 5, width], acc_rep=6, r2_rep=2, random_state=seed, device="cpu").fit(rs)
    for split, (F, lab) in {"train": (X, y), "test": (Xt, yt)}.items():
        got = a.values_[("accuracy", split)]
        for i, size in enumerate(a.chunk_sizes_):
            direct = [sign_accuracy(F, lab, w, b, c) for c in a.acc_chunks_[size]]
            np.testing.assert_array_equal(got[i], direct)
    zeros = sum(float(x[c] @ w[c]) + b == 0 for x in X for c in a.acc_chunks_[1])
    assert zeros > 0  # the tie rule was exercised
    # the whole layer predicts as the network does: the sign of its output
    full = (X.astype(np.float64) @ w + b > 0).astype(int)
    assert a.values_[("accuracy", "train")][-1][0] == np.mean(full == y)


def test_outputs_of_exactly_zero_or_rounding_to_zero_predict_class_0():
    t = 2.0**-80  # t * t = 2^-160 is below half the smallest float32 subnormal: it rounds to 0
    s = 2.0**-70  # s * s = 2^-140 is a float32 subnormal: it stays > 0
    X = np.array([[1.0, 1.0], [t, 0.0], [-t, 0.0], [s, 0.0], [0.0, -1.0]], dtype=np.float32)
    w = np.array([1.0, -1.0], dtype=np.float32)
    w_small = np.array([t, 0.0], dtype=np.float32)
    y = np.array([1, 1, 0, 1, 1])
    # outputs with w: 0, t, -t, s, 1 -> classes 0, 1, 0, 1, 1
    rs = one_output_set(X, X, y, y, w, 0.0)
    a = ChunkAnalysis(chunk_sizes=[2], acc_rep=1, r2_rep=1, device="cpu").fit(rs)
    assert a.values_[("accuracy", "train")][0][0] == 4 / 5  # only the exact 0 (label 1) is wrong
    # with a tiny weight the outputs are 2^-80 (class 1), 2^-160 (rounds to 0), -2^-160 (to -0), 2^-150 (rounds
    # to 0 too: halfway between 0 and the smallest subnormal 2^-149, to even) and 0: classes 1, 0, 0, 0, 0
    rs = one_output_set(X, X, y, y, w_small, 0.0)
    a = ChunkAnalysis(chunk_sizes=[2], acc_rep=1, r2_rep=1, device="cpu").fit(rs)
    assert a.values_[("accuracy", "train")][0][0] == sign_accuracy(X, y, w_small, 0.0, [0, 1]) == 2 / 5


def test_labels_outside_0_and_1_are_refused_for_one_output():
    X = np.ones((4, 3), np.float32)
    with pytest.raises(RedrepError, match=r"^labels_train: expected labels 0 or 1 for a one-output readout") as e:
        one_output_set(X, X, np.array([0, 1, 2, 1]), np.array([0, 1, 1, 0]), np.ones(3), 0.0)
    assert "found values in [0, 2], e.g. 2" in str(e.value) and "\n" not in str(e.value)


def test_class_readout_and_predictions():
    w, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.float32([1, 2])
    assert class_readout(w, b)[0] is not None and np.array_equal(class_readout(w, b)[0], w)
    w2, b2 = class_readout(w[:1], b[:1])
    assert w2.shape == (2, 3) and w2.dtype == np.float32 and not w2[0].any() and np.array_equal(w2[1], w[0])
    assert b2.tolist() == [0.0, 1.0]
    assert readout_predictions(np.float32([[0.5], [0.0], [-0.0], [-2.0]])).tolist() == [1, 0, 0, 0]
    assert readout_predictions(np.float32([[1, 1], [0, 3]])).tolist() == [0, 1]
