"""The synthetic clone sets and their known critical chunk size (docs/method.md#the-example-and-its-known-answer)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import binom
from threadpoolctl import threadpool_limits

from redrep.core.analysis import ChunkAnalysis
from redrep.core.validation import RedrepError
from redrep.storage.synthetic import known_critical_size, make_clone_set, miss_probability


def _brute_miss(k: int, m: int, w: int) -> float:
    """Every chunk of w of the k * m neurons enumerated: the fraction that lacks some direction."""
    latent = [i // m for i in range(k * m)]
    chunks = list(itertools.combinations(range(k * m), w))
    return sum(len({latent[i] for i in c}) < k for c in chunks) / len(chunks)


@pytest.mark.parametrize("k, m", [(1, 5), (2, 3), (3, 2), (3, 3), (4, 3), (2, 6)])
def test_miss_probability_against_enumeration(k, m):
    for w in range(0, k * m + 1):
        assert miss_probability(k, m, w) == pytest.approx(_brute_miss(k, m, w), abs=1e-15)


@pytest.mark.parametrize("k, m, w", [(16, 16, 64), (8, 32, 31), (16, 16, 80)])
def test_miss_probability_against_simulation(k, m, w):
    rng = np.random.default_rng(k * 1000 + w)
    latent = np.repeat(np.arange(k), m)
    n = 20000
    misses = sum(np.unique(latent[rng.choice(k * m, w, replace=False)]).size < k for _ in range(n))
    p = miss_probability(k, m, w)
    # within the central 99.99 % of the binomial count
    lo, hi = binom.ppf([5e-5, 1 - 5e-5], n, p)
    assert lo <= misses <= hi


@pytest.mark.parametrize("k, m, f", [(16, 16, 0.9), (8, 32, 0.9), (16, 16, 0.5), (4, 4, 0.99), (3, 2, 1.0)])
def test_known_critical_size_is_the_smallest_size_that_holds_every_direction(k, m, f):
    w = known_critical_size(k, m, f)
    assert 1 - miss_probability(k, m, w) >= f
    assert 1 - miss_probability(k, m, w - 1) < f
    assert known_critical_size(16, 16) == 68 and known_critical_size(8, 32) == 31


def test_bad_shapes_and_layouts():
    with pytest.raises(RedrepError, match="size: expected an integer <= 12, found 13"):
        miss_probability(4, 3, 13)
    with pytest.raises(RedrepError, match=r"fit_fraction: expected a fraction in \(0, 1\], found 0.0"):
        known_critical_size(4, 3, 0.0)
    with pytest.raises(RedrepError, match="class_means: expected one of random, axes, found 'grid'"):
        make_clone_set(n_latent=2, n_copies=2, class_means="grid")
    with pytest.raises(RedrepError, match="n_classes: expected at most 2 \\* n_latent = 4 classes along the axes"):
        make_clone_set(n_latent=2, n_copies=2, n_classes=5, class_means="axes")


def _example(k, m, seed):
    """`redrep example`'s set (axes, separation 40, noise 1), with fewer samples."""
    return make_clone_set(
        n_train=1000, n_test=500, n_latent=k, n_copies=m, n_classes=2 * k, noise=1.0, separation=40.0,
        random_state=seed, class_means="axes",
    )  # fmt: skip


def test_a_chunk_fits_exactly_when_it_holds_every_direction():
    """What makes the known answer the answer: the fit of a chunk is its coverage of the directions."""
    rs = _example(8, 8, 0)
    latent = np.array(rs.meta["latent_of_neuron"])
    an = ChunkAnalysis(chunk_sizes=[8, 12, 16, 24], acc_rep=50, r2_rep=2, random_state=0, device="cpu").fit(rs)
    errors = 1 - an.values_[("accuracy", "train")]
    for i, w in enumerate(an.chunk_sizes_):
        complete = np.array([np.unique(latent[c]).size == 8 for c in an.acc_chunks_[w]])
        misclassified = np.rint(errors[i] * rs.n_train)
        assert np.all(misclassified[complete] == 0)
        # a missing direction costs its two classes: about n_train / 8 samples
        assert np.all(misclassified[~complete] > 50)


@pytest.mark.parametrize("k, m", [(16, 16), (8, 32)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_example_gives_its_known_answer(k, m, seed):
    """w_c* with the default options against the coupon-collector size, within the refinement's resolution."""
    rs = _example(k, m, seed)
    # one BLAS thread: the same numbers, and no spinning threads when the refinement's small analysis runs in this
    # process on a busy machine (12 times slower at a load of 14 on 2 cores)
    with threadpool_limits(limits=1, user_api="blas"):
        an = ChunkAnalysis(random_state=seed, device="cpu").fit(rs)
    s = an.summary()
    oracle = known_critical_size(k, m)
    grid = an.chunk_sizes_
    i = next(j for j, w in enumerate(grid) if w >= oracle)  # the first analysed size that can hold the answer
    # the answer or an analysed size next to it: a neighbour wins when its fraction of fitting chunks falls on
    # the other side of 0.9 by chance (100 chunks: a standard error of 0.03)
    assert s.w_c_star in grid[max(0, i - 1) : i + 2]
    assert s.refinement is not None and abs(s.w_c_star - oracle) <= 2 * s.refinement["step"]
    assert s.n_clones == pytest.approx(k * m / s.w_c_star) and 2.5 < s.n_clones < 9
    assert s.w_c_star_interval is not None and s.bootstrap["replicates"] == 2000
    assert math.isfinite(s.to_dict()["bootstrap"]["without_w_c_star"])
