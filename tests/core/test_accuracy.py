"""Chunk accuracies against a direct exact implementation of the definition, on random and adversarial inputs."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import redrep.core.accuracy as acc_mod
from redrep.core.accuracy import _round32, chunk_accuracy
from redrep.core.validation import RedrepError
from repsets import random_set


def _kernel_params():
    """The fast passes this machine runs: each level of the compiled one, and the numpy one."""
    lib = acc_mod.fastpass_library()
    if lib is None:
        return ["numpy"]
    best = lib.redrep_fastpass_level()
    return [f"fused-v{level}" if level else "fused-base" for level in (4, 3, 0) if level <= best] + ["numpy"]


@pytest.fixture(params=_kernel_params(), autouse=True)
def kernel(request, monkeypatch):
    """Every test of this module runs with each fast pass (forked workers inherit the choice)."""
    if request.param == "numpy":
        monkeypatch.setattr(acc_mod, "fastpass_library", lambda: None)
    else:
        level = {"fused-v4": 4, "fused-v3": 3, "fused-base": 0}[request.param]
        monkeypatch.setattr(acc_mod, "FASTPASS_LEVEL", level)
    return request.param


def round32(q: Fraction) -> np.float32:
    """``q`` rounded to the nearest float32, ties to even: the float32 neighbours compared exactly."""
    f = np.float32(float(q))
    cands = [np.nextafter(f, np.float32(-np.inf)), f, np.nextafter(f, np.float32(np.inf))]
    cands = [c for c in cands if np.isfinite(c)]
    dist = [abs(Fraction(float(c)) - q) for c in cands]
    best = min(dist)
    ties = [c for c, d in zip(cands, dist) if d == best]
    return min(ties, key=lambda c: int(np.array(c).view(np.uint32)) & 1)


def direct_counts(X, y, weight, bias, chunks):
    """The definition, slowly: exact rational logits, rounded to float32, the first maximum predicted."""
    X, weight, bias = (np.asarray(a, dtype=np.float32) for a in (X, weight, bias))
    counts = []
    for chunk in chunks:
        n = 0
        for x, label in zip(X, y):
            logits = [
                round32(sum((Fraction(float(x[i])) * Fraction(float(w[i])) for i in chunk), Fraction(float(b))))
                for w, b in zip(weight, bias)
            ]
            n += int(np.argmax(logits) == label)
        counts.append(n)
    return np.array(counts)


def float32_counts(X, y, weight, bias, chunks):
    """The plain float32 path: one float32 product per chunk, argmax (first maximum)."""
    X, weight, bias = (np.asarray(a, dtype=np.float32) for a in (X, weight, bias))
    return np.array([np.sum((X[:, c] @ weight[:, c].T + bias).argmax(1) == y) for c in chunks])


def counts_of(X, y, weight, bias, chunks, **kw):
    return np.round(chunk_accuracy(X, y, weight, bias, chunks, **kw) * len(y)).astype(np.int64)


def some_chunks(rng, width, sizes, reps=3):
    return [np.sort(rng.choice(width, w, replace=False)) for w in sizes for _ in range(reps)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_sets_match_the_exact_definition(seed):
    rs = random_set(seed, n_train=60, width=16, n_classes=4)
    rng = np.random.default_rng(seed)
    chunks = some_chunks(rng, 16, (1, 2, 3, 5, 9, 16))  # gathered (<= W/4) and masked products
    X, y = rs.features_train, rs.labels_train
    expected = direct_counts(X, y, rs.weight, rs.bias, chunks)
    np.testing.assert_array_equal(counts_of(X, y, rs.weight, rs.bias, chunks, block_rows=13), expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_sets_match_the_float32_path(seed):
    rs = random_set(seed, n_train=3000, width=64, n_classes=7)
    rng = np.random.default_rng(seed)
    chunks = some_chunks(rng, 64, (1, 2, 4, 8, 16, 32, 64), reps=5)
    X, y = rs.features_train, rs.labels_train
    X[X < 1.0] = 0.0  # ReLU-like zeros: exact ties wherever a chunk sees only zeros and two biases agree
    bias = rs.bias.copy()
    bias[1] = bias[3]
    np.testing.assert_array_equal(
        counts_of(X, y, rs.weight, bias, chunks), float32_counts(X, y, rs.weight, bias, chunks)
    )


@pytest.mark.parametrize("processes", [True, False])
def test_counts_do_not_depend_on_blocks_or_workers(monkeypatch, processes):
    import redrep.core.parallel as parallel

    rs = random_set(3, n_train=500, width=32, n_classes=5)
    rng = np.random.default_rng(3)
    chunks = some_chunks(rng, 32, (1, 4, 8, 20, 32))
    X, y = rs.features_train, rs.labels_train
    first = counts_of(X, y, rs.weight, rs.bias, chunks, block_rows=500)
    assert first.sum() > 0
    monkeypatch.setattr(parallel, "can_fork", lambda: processes)
    monkeypatch.setattr(parallel, "MIN_WORK", 0)
    for workers in (1, 3):
        monkeypatch.setattr(parallel, "n_workers", lambda w=workers: w)
        for rows in (1, 7, 64):
            np.testing.assert_array_equal(counts_of(X, y, rs.weight, rs.bias, chunks, block_rows=rows), first)


# dyadic values with few significant bits: every float32 product and sum below is exact, so the plain float32
# path is exact too and must agree with the fast one, ties included
_DYADIC = st.sampled_from([0.0, 0.0, 0.0, 1.0, -1.0, 2.0, 0.5, 3.0, -0.25, 4.0, 1.5])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    x=st.lists(st.lists(_DYADIC, min_size=8, max_size=8), min_size=1, max_size=12),
    w=st.lists(st.lists(_DYADIC, min_size=8, max_size=8), min_size=3, max_size=3),
    b=st.lists(_DYADIC, min_size=3, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_exact_ties_go_to_the_first_class(x, w, b, seed):
    X, weight, bias = (np.array(a, dtype=np.float32) for a in (x, w, b))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, len(X))
    chunks = some_chunks(rng, 8, (1, 2, 3, 8), reps=2)
    got = counts_of(X, y, weight, bias, chunks, block_rows=5)
    np.testing.assert_array_equal(got, float32_counts(X, y, weight, bias, chunks))
    np.testing.assert_array_equal(got, direct_counts(X, y, weight, bias, chunks))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ulps=st.lists(st.integers(-4, 4), min_size=6, max_size=6),
    scale=st.sampled_from([1.0, 2.0**-60, 2.0**-126, 2.0**50, 1e30]),
    seed=st.integers(0, 2**16),
)
def test_near_ties_within_a_few_ulps(ulps, scale, seed):
    """Logits a few float32 units apart, at tiny, subnormal-producing and huge magnitudes."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.5, 1.0, 6).astype(np.float32)
    # three classes whose weights differ from class 0 by a few ulps, neuron by neuron
    w0 = base * np.float32(scale)
    w1 = np.array([np.float32(v) for v in w0])
    w2 = w0.copy()
    for i, k in enumerate(ulps):
        target = w1 if i % 2 else w2
        for _ in range(abs(k)):
            target[i] = np.nextafter(target[i], np.float32(np.inf if k > 0 else -np.inf))
    weight = np.stack([w0, w1, w2]).astype(np.float32)
    X = rng.choice(np.array([0.0, 1.0, 0.75, 1.25, 3.0], dtype=np.float32), size=(10, 6))
    X[0] = 0.0  # logits equal the (tied) bias
    bias = np.zeros(3, dtype=np.float32)
    y = rng.integers(0, 3, 10)
    chunks = some_chunks(rng, 6, (1, 2, 6), reps=2)
    got = counts_of(X, y, weight, bias, chunks, block_rows=4)
    np.testing.assert_array_equal(got, direct_counts(X, y, weight, bias, chunks))


@pytest.mark.parametrize("seed", [0, 1])
def test_huge_magnitudes_take_the_exact_pass(seed):
    """Rows whose absolute sums exceed 2^100 could overflow in float32: they are decided exactly."""
    rng = np.random.default_rng(seed)
    X = (rng.random((20, 8)) * 1e36).astype(np.float32)
    X[:5] *= np.float32(1e-40)  # and tiny ones, with subnormal products
    weight = (rng.standard_normal((4, 8)) * 1e-6).astype(np.float32)
    bias = (rng.standard_normal(4) * 1e-3).astype(np.float32)
    y = rng.integers(0, 4, 20)
    chunks = some_chunks(rng, 8, (1, 3, 8))
    seen = []
    original = acc_mod._exact_correct
    monkey = pytest.MonkeyPatch()
    monkey.setattr(acc_mod, "_exact_correct", lambda *a: seen.append(len(a[2])) or original(*a))
    try:
        got = counts_of(X, y, weight, bias, chunks)
    finally:
        monkey.undo()
    assert sum(seen) >= 15 * len({c.tobytes() for c in chunks})  # every huge row, each distinct chunk
    np.testing.assert_array_equal(got, direct_counts(X, y, weight, bias, chunks))


def test_constant_and_zero_rows():
    rng = np.random.default_rng(4)
    X = np.zeros((6, 10), dtype=np.float32)
    X[3:] = 2.0
    weight = rng.choice(np.array([-1.0, 0.5, 1.0], dtype=np.float32), size=(3, 10))
    bias = np.array([0.25, 0.25, -1.0], dtype=np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    chunks = some_chunks(rng, 10, (1, 2, 5, 10))
    got = counts_of(X, y, weight, bias, chunks)
    np.testing.assert_array_equal(got, direct_counts(X, y, weight, bias, chunks))
    np.testing.assert_array_equal(got, float32_counts(X, y, weight, bias, chunks))
    assert np.all(got >= 1)  # the zero row of class 0: biases tie at 0.25, the first class wins


@settings(max_examples=60, deadline=None)
@given(
    mant=st.integers(2**23, 2**24 - 1),
    exp=st.integers(-140, 100),
    rest=st.sampled_from([0.0, 1.0, -1.0]),
    spread=st.integers(1, 60),
)
def test_round32_of_midpoints(mant, exp, rest, spread):
    """Sums that land on a float32 midpoint, give or take a far smaller remainder, round as the exact sum does."""
    mid = Fraction(2 * mant + 1, 2) * Fraction(2) ** exp  # halfway between two float32 numbers
    big = float(mid)
    tiny = rest * 2.0 ** (exp - 30 - spread)
    terms = [big / 2, big / 2, tiny, -tiny / 2, -tiny / 2, tiny]
    exact = sum((Fraction(t) for t in terms), Fraction(0))
    assert _round32(terms) == round32(exact)


def test_non_finite_features_are_named():
    rs = random_set(0, n_train=50, width=8)
    X = rs.features_train.copy()
    X[33, 2] = np.nan
    with pytest.raises(RedrepError, match=r"features_train.*33"):
        chunk_accuracy(X, rs.labels_train, rs.weight, rs.bias, [np.arange(4)], block_rows=10, name="features_train")


def numpy_counts(X, y, weight, bias, chunks, monkeypatch, **kw):
    """The counts of the numpy fast pass, whatever the test's own pass."""
    with monkeypatch.context() as m:
        m.setattr(acc_mod, "fastpass_library", lambda: None)
        return counts_of(X, y, weight, bias, chunks, **kw)


@pytest.mark.parametrize("n_classes", [1, 2, 10, 12, 13, 25, 40])
def test_every_class_count_matches_the_numpy_pass(n_classes, monkeypatch, kernel):
    """Up to 12 classes the compiled pass keeps all logits in registers; above, it sums them in tiles."""
    rs = random_set(7, n_train=700, width=48, n_classes=n_classes)
    rng = np.random.default_rng(n_classes)
    chunks = some_chunks(rng, 48, (1, 2, 7, 12, 24, 48), reps=4)
    X = rs.features_train.copy()
    X[X < 2.0] = 0.0  # zero rows and exact ties between biases
    X[::9] = 0.0
    bias = rs.bias.copy()
    bias[n_classes // 2] = bias[0]
    y = rs.labels_train
    got = counts_of(X, y, rs.weight, bias, chunks, block_rows=45)  # blocks that end inside a tile
    np.testing.assert_array_equal(got, numpy_counts(X, y, rs.weight, bias, chunks, monkeypatch))
    if n_classes == 1:
        assert np.all(got == len(y))


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    x=st.lists(st.lists(_DYADIC, min_size=6, max_size=6), min_size=1, max_size=40),
    n_classes=st.integers(1, 15),
    seed=st.integers(0, 2**16),
)
def test_dyadic_sets_with_any_number_of_classes(x, n_classes, seed):
    """Exact float32 arithmetic: ties everywhere, decided as argmax decides them, for 1 to 15 classes."""
    rng = np.random.default_rng(seed)
    X = np.array(x, dtype=np.float32)
    weight = rng.choice(np.array([0.0, 1.0, -1.0, 0.5, 2.0], dtype=np.float32), size=(n_classes, 6))
    bias = rng.choice(np.array([0.0, 0.25, -0.5], dtype=np.float32), size=n_classes)
    y = rng.integers(0, n_classes, len(X))
    chunks = some_chunks(rng, 6, (1, 2, 4, 6), reps=2)
    got = counts_of(X, y, weight, bias, chunks, block_rows=int(rng.integers(1, 40)))
    np.testing.assert_array_equal(got, float32_counts(X, y, weight, bias, chunks))


def test_more_undecided_pairs_than_room(kernel):
    """A block whose undecided pairs overflow the room for them is counted again with more room."""
    rng = np.random.default_rng(8)
    X = np.zeros((300, 8), dtype=np.float32)  # every logit is the bias: all pairs tie exactly
    X[::3] = 1.0
    weight = rng.choice(np.array([0.0, 1.0], dtype=np.float32), size=(3, 8))
    bias = np.zeros(3, dtype=np.float32)
    y = rng.integers(0, 3, 300)
    chunks = some_chunks(rng, 8, (1, 2, 8), reps=3)
    uniq, _ = acc_mod._unique_chunks(chunks)
    plan = acc_mod._Plan(weight, bias, uniq)
    assert plan.fused == (kernel != "numpy")
    scratch = acc_mod._Scratch(plan)
    if plan.fused:
        scratch.pairs = np.empty((5, 2), dtype=np.int32)
    got = acc_mod._block_counts(plan, X, y, scratch)
    if plan.fused:
        assert scratch.pairs.shape[0] >= 200 * len(uniq)  # the zero rows of every chunk were undecided
    expected = np.array([np.sum((X[:, c] @ weight[:, c].T + bias).argmax(1) == y) for c in uniq])
    np.testing.assert_array_equal(got, expected)
