import json
import math

import numpy as np
import pytest
import scipy.stats

from redrep.core.summary import (
    ChunkCurves,
    Criterion,
    Curve,
    critical_chunk_size,
    fit_power_law,
    number_of_clones,
    reading,
    summarize,
)
from redrep.core.validation import RedrepError
from redrep.storage.results import load_results
from results_factory import paper_like, write_results_dir

SIZES = np.array([1, 2, 4, 8, 16, 32, 64, 128, 256, 512], dtype=float)


# --------------------------------------------------------------------------- critical chunk size
@pytest.mark.parametrize(
    "train_err, r2, kw, expected",
    [
        # both thresholds met from 64 on
        ([0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0, 0, 0, 0], [0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 0.96, 0.98, 0.99, 1], {}, 64),
        # training error 0 early, R^2 late: R^2 decides
        ([0.5, 0.1, 0, 0, 0, 0, 0, 0, 0, 0], [0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 0.94, 0.96, 0.99, 1], {}, 128),
        # R^2 early, training error late: training error decides
        ([0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.01, 0.001, 0, 0], [0.96] * 10, {}, 256),
        # never fits the training set
        ([0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.04, 0.03, 0.03, 0.03], [0.99] * 10, {}, None),
        # ... unless the threshold allows it
        ([0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.04, 0.03, 0.03, 0.03], [0.99] * 10, {"train_error_max": 0.04}, 64),
        # a lower R^2 threshold
        ([0] * 10, [0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 0.94, 0.96, 0.99, 1], {"r2_min": 0.5}, 8),
        # NaN never qualifies
        ([np.nan] * 9 + [0.0], [1.0] * 10, {}, 512),
    ],
)
def test_critical_chunk_size_known_answers(train_err, r2, kw, expected):
    assert critical_chunk_size(SIZES, train_err, r2, **kw) == expected


def test_critical_chunk_size_thresholds_are_inclusive_and_tolerate_csv_roundtrip():
    # 1 - mean accuracy of all-correct chunks is exactly 0; a value written as text and read back compares the same
    tr = np.array([0.2, float(repr(1 - 1.0))])
    r2 = np.array([0.95, float(repr(0.95))])
    assert critical_chunk_size([8, 16], tr, r2) == 16
    assert critical_chunk_size([8, 16], [0.01, 0.02], [0.95, 0.95], train_error_max=0.01) == 8


def test_critical_chunk_size_rejects_mismatched_arrays():
    with pytest.raises(RedrepError, match="expected 1-D arrays of equal length"):
        critical_chunk_size([1, 2, 4], [0, 0], [1, 1, 1])


# --------------------------------------------------------------------------- power-law fit
@pytest.mark.parametrize("exponent, prefactor", [(-0.5, 0.12), (-1.0, 3.0), (-0.25, 0.01), (0.3, 2.0)])
def test_fit_power_law_exact_power_law(exponent, prefactor):
    y = prefactor * SIZES**exponent
    fit = fit_power_law(SIZES, y)
    assert fit.exponent == pytest.approx(exponent, abs=1e-12)
    assert fit.prefactor == pytest.approx(prefactor, rel=1e-10)
    # linregress takes the standard error from 1 - r^2: on an exact power law, zero to about sqrt(eps)
    assert fit.exponent_se == pytest.approx(0.0, abs=1e-7)
    assert fit.chunk_sizes == tuple(int(w) for w in SIZES)
    np.testing.assert_allclose(fit(SIZES), y, rtol=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_fit_power_law_matches_linregress_on_noisy_data(seed):
    rng = np.random.default_rng(seed)
    y = 0.12 * SIZES**-0.5 * np.exp(rng.normal(scale=0.1, size=SIZES.size))
    fit = fit_power_law(SIZES, y, min_size=16)
    use = SIZES >= 16
    ref = scipy.stats.linregress(np.log(SIZES[use]), np.log(y[use]))
    assert fit.exponent == pytest.approx(ref.slope, rel=1e-10)
    assert fit.exponent_se == pytest.approx(ref.stderr, rel=1e-10)
    assert math.log(fit.prefactor) == pytest.approx(ref.intercept, rel=1e-10, abs=1e-12)
    assert fit.chunk_sizes == (16, 32, 64, 128, 256, 512)
    # the known exponent lies within a few standard errors
    assert abs(fit.exponent + 0.5) < 5 * fit.exponent_se


def test_fit_power_law_uses_only_positive_points_above_min_size():
    y = 0.12 * SIZES**-0.5
    y[SIZES == 128] = -0.001  # below error_inf: cannot enter a log fit
    y[SIZES == 8] = 100.0  # below min_size: ignored
    fit = fit_power_law(SIZES, y, min_size=16)
    assert fit.chunk_sizes == (16, 32, 64, 256, 512)
    assert fit.exponent == pytest.approx(-0.5, abs=1e-12)


def test_fit_power_law_degenerate_cases():
    assert fit_power_law([64, 128], [0.01, -0.01]) is None  # one usable point
    assert fit_power_law([64], [0.01]) is None
    two = fit_power_law([64, 256], [0.02, 0.01])
    assert two.exponent == pytest.approx(-0.5)
    assert math.isnan(two.exponent_se)  # no residual degrees of freedom


def test_number_of_clones():
    assert number_of_clones(512, 64) == 8.0
    assert number_of_clones(500, 64) == pytest.approx(7.8125)
    assert number_of_clones(512, None) is None


# --------------------------------------------------------------------------- summarize
def _curves(c, error_inf=0.04, width=512):
    return ChunkCurves(
        train_error=Curve.from_arrays(c["sizes"], c["train_err"], np.full(c["sizes"].size, 0.001)),
        test_error=Curve.from_arrays(c["sizes"], c["test_err"], np.full(c["sizes"].size, 0.001)),
        r2=Curve.from_arrays(c["sizes"], c["r2"]),
        mean_corr=Curve.from_arrays(c["sizes"], c["mean_corr"]),
        mean_corr_outside=Curve.from_arrays(c["sizes"], c["mean_corr_outside"]),
        error_inf=error_inf,
        width=width,
    )


MARKOV_NOTE = "these results keep no value per chunk (chunks.npz): the fraction of chunks that fit is bounded"


@pytest.mark.parametrize("width, w_star, exponent", [(512, 64, -0.5), (256, 32, -0.5), (1024, 128, -0.7)])
def test_summarize_known_answer(width, w_star, exponent):
    c = paper_like(width=width, w_star=w_star, error_inf=0.04, exponent=exponent)
    s = summarize(_curves(c, width=width), Criterion(r2_kind="in-sample"), replicates=0)
    assert s.w_c_star == w_star
    assert s.exponent == pytest.approx(exponent, abs=1e-10)
    assert s.exponent_se == pytest.approx(0.0, abs=1e-7)
    assert s.prefactor == pytest.approx(0.12, rel=1e-8)
    assert s.fit_chunk_sizes == tuple(int(w) for w in c["sizes"] if w >= w_star)
    assert s.n_clones == width / w_star
    # means only (no value per chunk): the fraction of chunks that fit is only bounded, and there is no interval
    assert len(s.notes) == 1 and s.notes[0].startswith(MARKOV_NOTE)
    assert s.w_c_star_interval is None and s.bootstrap is None
    d = s.to_dict()
    json.dumps(d)
    assert d["w_c_star"] == w_star
    assert d["criterion"] == {
        "mode": "fraction",
        "train_tolerance": 1,
        "fit_fraction": 0.9,
        "r2_min": 0.95,
        "r2_kind": "in-sample",
        "train_error_max": None,
        "r2_kind_used": "in-sample",
    }


def test_summarize_thresholds_move_w_star():
    c = paper_like(width=512, w_star=64)
    # R^2 = 1 - 0.5 / w: >= 0.99 from w = 50 on, so 64 still; >= 0.999 only from 500 on
    assert summarize(_curves(c), r2_min=0.99).w_c_star == 64
    assert summarize(_curves(c), r2_min=0.999).w_c_star == 512
    # training error 0.6 * (1 - log2(w)/6) + 0.01 at w = 32 is 0.11: allowed with 0.2
    assert summarize(_curves(c), train_error_max=0.2).w_c_star == 32


def test_summarize_without_error_inf_or_w_star_says_why():
    c = paper_like()
    s = summarize(_curves(c, error_inf=None))
    assert s.w_c_star == 64 and s.exponent is None and s.n_clones == 8.0
    assert any("error_inf is absent" in n for n in s.notes)
    c["train_err"] = c["train_err"] + 0.02  # never fits the training set
    s = summarize(_curves(c))
    assert s.w_c_star is None and s.exponent is None and s.n_clones is None
    assert any("no chunk size meets the criterion (at least 90 % of random chunks" in n for n in s.notes)
    assert s.to_dict()["n_clones"] is None


def test_summarize_test_error_below_error_inf_leaves_too_few_points():
    c = paper_like(width=128, w_star=64)
    s = summarize(_curves(c, error_inf=0.9, width=128))  # every chunk beats this "ensemble"
    assert s.w_c_star == 64 and s.exponent is None
    assert any("need two to fit" in n for n in s.notes)


def test_summarize_rejects_bad_thresholds():
    with pytest.raises(RedrepError, match="train_error_max: expected a number >= 0.0"):
        summarize(_curves(paper_like()), train_error_max=-0.1)
    with pytest.raises(RedrepError, match="r2_min: expected a number <= 1.0"):
        summarize(_curves(paper_like()), r2_min=1.5)


def test_reading_states_the_result_plainly():
    c = paper_like(width=512, w_star=64)
    curves = _curves(c)
    text = " ".join(reading(summarize(curves), curves))
    assert "w_c* = 64 of the 512 neurons" in text
    assert "about 8 disjoint chunks" in text
    assert "consistent with the w_c^-0.5" in text
    c["train_err"] = c["train_err"] + 0.03
    curves = _curves(c)
    text = " ".join(reading(summarize(curves), curves))
    assert "No chunk size meets the criterion" in text
    assert "does not fit its training set" in text
    # no held-out R² in these curves: the in-sample one, said so
    assert "in-sample R² reaches 0.95 from w_c = 16 on" in text


# --------------------------------------------------------------------------- from a results folder
def test_chunk_curves_from_results(tmp_path):
    c = paper_like(width=256, w_star=32, error_inf=0.05)
    write_results_dir(tmp_path, c, error_inf=0.05, meta={"dataset": "toy"})
    curves = ChunkCurves.from_results(load_results(tmp_path))
    np.testing.assert_allclose(curves.train_error.mean, c["train_err"], atol=1e-15)
    np.testing.assert_allclose(curves.test_error.mean, c["test_err"], atol=1e-15)
    np.testing.assert_allclose(curves.r2.mean, c["r2"])
    assert curves.width == 256 and curves.error_inf == 0.05 and curves.label == "toy"
    np.testing.assert_allclose(curves.test_error.sem, 0.002)
    s = summarize(curves)
    assert s.w_c_star == 32 and s.exponent == pytest.approx(-0.5, abs=1e-9)


def test_chunk_curves_from_results_fallbacks_and_errors(tmp_path):
    c = paper_like(width=64, w_star=16)
    write_results_dir(tmp_path, c, drop=("mean_corr_outside",))
    res = load_results(tmp_path)
    del res.doc["input"]["width"]
    curves = ChunkCurves.from_results(res)
    assert curves.mean_corr_outside is None and curves.width == 64
    res.doc["error_inf"] = "high"
    with pytest.raises(RedrepError, match="expected error_inf to be a number in"):
        ChunkCurves.from_results(res)
    write_results_dir(tmp_path, c, drop=("r2",))
    with pytest.raises(RedrepError, match="expected rows for metric 'r2'"):
        ChunkCurves.from_results(load_results(tmp_path))


def test_curve_from_arrays_checks_input():
    cv = Curve.from_arrays([4, 1, 2], [0.3, 0.1, 0.2])
    np.testing.assert_array_equal(cv.chunk_size, [1, 2, 4])
    np.testing.assert_array_equal(cv.mean, [0.1, 0.2, 0.3])
    assert np.isnan(cv.sem).all()
    with pytest.raises(RedrepError, match="equal length"):
        Curve.from_arrays([1, 2], [0.1])
    with pytest.raises(RedrepError, match="distinct chunk sizes"):
        Curve.from_arrays([1, 1], [0.1, 0.2])
    with pytest.raises(RedrepError, match="chunk sizes >= 1"):
        Curve.from_arrays([0, 1], [0.1, 0.2])


# --------------------------------------------------------------------------- the criterion on hand-made chunks
def _chunk_curves(counts, r2, *, sizes, n_train=100, r2_in_sample=None, seed=0, width=None):
    """Curves from the value of every chunk: ``counts[i]`` misclassified training samples of each chunk of
    ``sizes[i]``, ``r2[i]`` the held-out R^2 of each regression chunk (``r2_in_sample`` the in-sample one)."""
    acc = 1.0 - np.asarray(counts, dtype=float) / n_train
    values = {
        ("accuracy", "train"): acc,
        ("accuracy", "test"): acc,
        ("r2", "test"): np.asarray(r2 if r2_in_sample is None else r2_in_sample, dtype=float),
        ("r2_heldout", "test"): np.asarray(r2, dtype=float),
    }
    return ChunkCurves.from_values(sizes, values, n_train=n_train, width=width or max(sizes), seed=seed)


def _direct_w_star(counts, r2, sizes, *, t, q, r2_min):
    """The fraction criterion written out: the first size with >= q of its chunks within t and mean R^2 >= r2_min."""
    for w, c, r in zip(sizes, counts, r2):
        if sum(1 for x in c if x <= t) / len(c) >= q - 1e-12 and sum(r) / len(r) >= r2_min - 1e-12:
            return w
    return None


HAND_SIZES = [8, 16, 32, 64]
HAND_COUNTS = [[5] * 10, [0] * 8 + [2] * 2, [0] * 9 + [3], [0] * 10]
HAND_R2 = [[0.9] * 4, [0.99] * 4, [0.99] * 4, [1.0] * 4]


@pytest.mark.parametrize(
    "crit, expected",
    [
        (Criterion(), 32),  # 16: 8 of 10 chunks within 1 sample; 32: 9 of 10
        (Criterion(train_tolerance=2), 16),
        (Criterion(fit_fraction=0.8), 16),
        (Criterion(train_tolerance=0, fit_fraction=1.0), 64),  # every chunk exact: the paper's mean of 0
        (Criterion(r2_min=0.995), 64),
        (Criterion(fit_fraction=0.8, r2_min=0.999), 64),
    ],
)
def test_fraction_criterion_on_hand_made_chunks(crit, expected):
    s = summarize(_chunk_curves(HAND_COUNTS, HAND_R2, sizes=HAND_SIZES), crit, replicates=0)
    direct = _direct_w_star(HAND_COUNTS, HAND_R2, HAND_SIZES, t=crit.train_tolerance, q=crit.fit_fraction,
                            r2_min=crit.r2_min)  # fmt: skip
    assert s.w_c_star == expected == direct
    for c, counts in zip(s.checks, HAND_COUNTS):
        assert c.fit_fraction == sum(x <= crit.train_tolerance for x in counts) / len(counts)
        assert c.misclassified == pytest.approx(np.mean(counts)) and not c.fit_fraction_is_bound
    assert s.n_clones == 64 / expected


def test_mean_criterion_is_the_previous_one():
    crit = Criterion(train_error_max=0.0, r2_kind="in-sample")
    curves = _chunk_curves(HAND_COUNTS, [[0.5] * 4] * 4, r2_in_sample=HAND_R2, sizes=HAND_SIZES)
    s = summarize(curves, crit, replicates=0)
    means = [np.mean(c) / 100 for c in HAND_COUNTS]
    assert s.w_c_star == critical_chunk_size(HAND_SIZES, means, [np.mean(r) for r in HAND_R2]) == 64
    assert s.r2_kind == "in-sample" and s.criterion.mode == "mean"
    assert summarize(curves, crit.replace(train_error_max=0.02), replicates=0).w_c_star == 16
    # the held-out R^2 of these curves (0.5) never reaches 0.95: the same data under the default kind
    assert summarize(curves, crit.replace(r2_kind="heldout"), replicates=0).w_c_star is None


def test_heldout_r2_decides_by_default_and_its_absence_is_said():
    r2_in = [[0.99] * 4] * 4
    r2_ho = [[0.9] * 4, [0.94] * 4, [0.96] * 4, [1.0] * 4]
    counts = [[0] * 10] * 4
    curves = _chunk_curves(counts, r2_ho, r2_in_sample=r2_in, sizes=HAND_SIZES)
    assert summarize(curves, replicates=0).w_c_star == 32
    assert summarize(curves, Criterion(r2_kind="in-sample"), replicates=0).w_c_star == 8
    no_heldout = ChunkCurves(curves={k: v for k, v in curves.curves.items() if k != "r2_heldout"}, n_train=100)
    s = summarize(no_heldout, replicates=0)
    assert s.r2_kind == "in-sample" and s.w_c_star == 8
    assert any("held-out R² is absent" in n for n in s.notes)


def test_without_chunk_values_the_fraction_is_bounded_by_markov():
    # means only: mean counts 0.05 and 0.3 of n_train = 1000; with t = 1 the bound is 1 - count / 2
    sizes = np.array([16.0, 32.0, 64.0])
    curves = ChunkCurves(
        train_error=Curve.from_arrays(sizes, [0.0003, 0.00005, 0.0]),
        test_error=Curve.from_arrays(sizes, [0.1, 0.1, 0.1]),
        r2=Curve.from_arrays(sizes, [0.99, 0.99, 0.99]),
        n_train=1000,
    )
    s = summarize(curves)
    assert [c.fit_fraction for c in s.checks] == pytest.approx([1 - 0.3 / 2, 1 - 0.05 / 2, 1.0])
    assert all(c.fit_fraction_is_bound for c in s.checks)
    assert s.w_c_star == 32
    assert any(n.startswith(MARKOV_NOTE) for n in s.notes)
    assert any("no bootstrap interval" in n for n in s.notes)


# --------------------------------------------------------------------------- bootstrap over chunks
def _noisy_chunks(seed, sizes=(16, 24, 32, 48, 64), reps=30, r2_reps=12):
    """Chunks whose fraction within the tolerance and R^2 cross the thresholds around 32."""
    rng = np.random.default_rng(seed)
    p_fit = {16: 0.5, 24: 0.8, 32: 0.9, 48: 0.95, 64: 1.0}
    counts = [np.where(rng.random(reps) < p_fit[w], 0, rng.integers(2, 9, reps)) for w in sizes]
    r2 = [0.95 + (w - 24) / 2000 + rng.normal(scale=0.01, size=r2_reps) for w in sizes]
    return list(sizes), counts, r2


def _slow_bootstrap(sizes, counts, r2, *, seed, replicates, t=1, q=0.9, r2_min=0.95):
    """The bootstrap written out replicate by replicate, chunk by chunk."""
    from redrep.core.summary import resample_indices

    idx_a = {w: resample_indices(seed, w, 0, len(c), replicates) for w, c in zip(sizes, counts)}
    idx_r = {w: resample_indices(seed, w, 1, len(r), replicates) for w, r in zip(sizes, r2)}
    out = []
    for b in range(replicates):
        w_b = math.inf
        for w, c, r in zip(sizes, counts, r2):
            fits = sum(1 for j in idx_a[w][b] if c[j] <= t) / len(c)
            mean_r2 = sum(r[j] for j in idx_r[w][b]) / len(r)
            if fits >= q - 1e-12 and mean_r2 >= r2_min - 1e-12:
                w_b = w
                break
        out.append(w_b)
    return sorted(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bootstrap_interval_matches_a_slow_loop(seed):
    sizes, counts, r2 = _noisy_chunks(seed)
    curves = _chunk_curves(counts, r2, sizes=sizes, width=64, seed=seed)
    B, level = 300, 0.9
    s = summarize(curves, replicates=B, level=level)
    slow = _slow_bootstrap(sizes, counts, r2, seed=seed, replicates=B)
    # the percentile interval without interpolation: order statistics ceil(a B) and ceil((1 - a) B)
    a = (1 - level) / 2
    lo, hi = slow[math.ceil(a * B) - 1], slow[math.ceil((1 - a) * B) - 1]
    expected = (None if lo == math.inf else lo, None if hi == math.inf else hi)
    if expected[0] is None:
        assert s.w_c_star_interval is None
    else:
        assert s.w_c_star_interval == expected
        assert s.n_clones_interval == (None if hi == math.inf else 64 / hi, 64 / lo)
    assert s.bootstrap["without_w_c_star"] == pytest.approx(sum(x == math.inf for x in slow) / B)
    assert s.bootstrap == {**s.bootstrap, "replicates": B, "level": level, "seed": seed}
    # seeded and deterministic
    assert summarize(curves, replicates=B, level=level).to_dict() == s.to_dict()


def test_bootstrap_of_chunks_without_spread_is_the_point_estimate():
    counts = [[3] * 10, [0] * 10, [0] * 10]
    r2 = [[0.99] * 5] * 3
    s = summarize(_chunk_curves(counts, r2, sizes=[8, 16, 32]), replicates=200)
    assert s.w_c_star == 16 and s.w_c_star_interval == (16, 16) and s.n_clones_interval == (2.0, 2.0)
    assert s.bootstrap["without_w_c_star"] == 0.0


def test_bootstrap_resamples_each_size_on_its_own():
    # a size added below the others that never qualifies (a refinement, say) leaves every replicate as it was
    sizes, counts, r2 = _noisy_chunks(4)
    base = summarize(_chunk_curves(counts, r2, sizes=sizes, width=64), replicates=300)
    more = summarize(_chunk_curves([[50] * 30] + counts, [r2[0]] + r2, sizes=[12] + sizes, width=64), replicates=300)
    assert more.w_c_star_interval == base.w_c_star_interval
    assert more.bootstrap == base.bootstrap


# --------------------------------------------------------------------------- near misses and sensitivity
@pytest.mark.parametrize(
    "counts16, r2_16, says",
    [
        ([0] * 8 + [2] * 2, 0.99, "80 % of them misclassify at most 1 training sample (90 % needed), and 100 % would"),
        ([0] * 89 + [5] * 11, 0.99, "89 % of them misclassify at most 1 training sample: one chunk short"),
        ([0] * 10, 0.945, "their mean held-out R² 0.9450 is within 0.01 of 0.95"),
        ([0] * 8 + [2] * 2, 0.945, "100 % would with one more misclassified sample allowed; their mean held-out R²"),
    ],
)
def test_near_miss_of_the_size_below(counts16, r2_16, says):
    counts = [[9] * len(counts16), counts16, [0] * len(counts16)]
    s = summarize(_chunk_curves(counts, [[0.5] * 4, [r2_16] * 4, [0.99] * 4], sizes=[8, 16, 32]), replicates=0)
    assert s.w_c_star == 32
    assert [m.chunk_size for m in s.near_misses] == [16]
    assert s.near_misses[0].text.startswith("Chunks of 16 neurons narrowly miss the criterion: ")
    assert says in s.near_misses[0].text
    assert s.near_misses[0].text in reading(s, ChunkCurves(curves={}, **_three()))  # the reading says it too
    assert s.to_dict()["near_misses"] == [{"chunk_size": 16, "text": s.near_misses[0].text}]


def _three():
    sizes = np.array([8.0, 16.0, 32.0])
    c = Curve.from_arrays(sizes, [0.1, 0.1, 0.1])
    return {"train_error": c, "test_error": c, "r2": c}


@pytest.mark.parametrize(
    "counts16, r2_16",
    [([0] * 14 + [3] * 6, 0.99), ([0] * 16 + [3] * 4, 0.99), ([0] * 20, 0.93), ([0] * 16 + [2] * 4, 0.93)],
)
def test_no_near_miss_when_the_size_below_misses_by_more(counts16, r2_16):
    # 20 chunks a size: 16 within the tolerance is 80 %, two chunks short of 90 %
    counts = [[9] * 20, counts16, [0] * 20]
    s = summarize(_chunk_curves(counts, [[0.5] * 4, [r2_16] * 4, [0.99] * 4], sizes=[8, 16, 32]), replicates=0)
    assert s.w_c_star == 32 and s.near_misses == ()


def test_near_miss_under_the_mean_criterion_and_without_w_star():
    # the case: 0.8 misclassified samples per chunk on average, against a mean of exactly 0
    counts = [[9] * 10, [1] * 8 + [0] * 2, [0] * 10]
    curves = _chunk_curves(counts, [[0.99] * 4] * 3, sizes=[8, 16, 32], n_train=5000)
    s = summarize(curves, Criterion(train_error_max=0.0), replicates=0)
    assert s.w_c_star == 32
    assert "their mean training error 0.00016 (0.8 misclassified training samples per chunk) misses ≤ 0 by less " \
           "than one sample" in s.near_misses[0].text  # fmt: skip
    no_star = _chunk_curves([[9] * 10, [1] * 8 + [0] * 2], [[0.99] * 4] * 2, sizes=[8, 16], n_train=5000)
    s = summarize(no_star, Criterion(train_error_max=0.0), replicates=0)
    assert s.w_c_star is None and [m.chunk_size for m in s.near_misses] == [16]


def test_sensitivity_grid_is_the_criterion_recomputed():
    sizes, counts, r2 = _noisy_chunks(5)
    curves = _chunk_curves(counts, r2, sizes=sizes, width=64)
    crit = Criterion(train_tolerance=3, r2_min=0.96)
    sens = summarize(curves, crit, replicates=0).sensitivity
    assert sens["train_parameter"] == "train_tolerance"
    assert sens["train_values"] == [0, 1, 2, 3, 5, 10] and sens["r2_min"] == [0.9, 0.95, 0.96, 0.98, 0.99]
    for t, row in zip(sens["train_values"], sens["w_c_star"]):
        for r, w in zip(sens["r2_min"], row):
            assert w == _direct_w_star(counts, r2, sizes, t=t, q=0.9, r2_min=r)
    mean = summarize(curves, Criterion(train_error_max=0.01), replicates=0).sensitivity
    assert mean["train_parameter"] == "train_error_max" and mean["train_values"] == [0.0, 1e-4, 1e-3, 1e-2]


# --------------------------------------------------------------------------- refinement, criterion, statistics
@pytest.mark.parametrize(
    "sizes, w_star, n, expected",
    [
        ([1, 2, 4, 8, 16, 32, 64, 128, 256], 64, 3, [40, 48, 56]),
        ([1, 2, 4, 8, 16, 32, 64, 128, 256], 128, 1, [96]),
        ([1, 2, 4, 8, 16, 32, 64, 128, 256], 4, 3, [3]),  # only one integer in between
        ([1, 2, 4, 8, 16, 32, 64, 128, 256], 1, 3, []),  # nothing below
        ([1, 2, 4, 8, 16, 32, 64, 128, 256], None, 3, []),
        ([8, 16, 20, 32], 32, 3, [23, 26, 29]),  # from the largest size below, 20
        ([1, 2, 4, 8, 16, 32, 64], 64, 0, []),
    ],
)
def test_refine_sizes(sizes, w_star, n, expected):
    from redrep.core.summary import refine_sizes

    assert refine_sizes(sizes, w_star, n) == expected


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(train_tolerance=-1), "train_tolerance: expected an integer >= 0, found -1"),
        (dict(train_tolerance=1.5), "train_tolerance: expected an integer, found 1.5"),
        (dict(fit_fraction=0.0), r"fit_fraction: expected a fraction in \(0, 1\], found 0.0"),
        (dict(fit_fraction=1.2), "fit_fraction: expected a number <= 1.0, found 1.2"),
        (dict(r2_kind="test"), "r2_kind: expected one of heldout, in-sample, found 'test'"),
        (dict(r2_min=2), "r2_min: expected a number <= 1.0, found 2.0"),
        (dict(train_error_max=-0.1), r"train_error_max: expected a number >= 0.0, found -0.1"),
    ],
)
def test_criterion_errors(kw, message):
    with pytest.raises(RedrepError, match=message):
        Criterion(**kw).validated()
    with pytest.raises(RedrepError, match=message):
        summarize(_curves(paper_like()), Criterion(**kw))


def test_criterion_round_trip_and_words():
    c = Criterion(train_tolerance=2, fit_fraction=0.8, r2_min=0.9, r2_kind="in-sample")
    assert Criterion.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert c.describe() == (
        "at least 80 % of random chunks misclassify at most 2 training samples, and mean in-sample R² ≥ 0.9"
    )
    assert Criterion(train_error_max=0.001).describe() == "mean training error ≤ 0.001, and mean held-out R² ≥ 0.95"


def test_mean_sem_is_describe_values():
    from redrep.core.summary import describe_values, mean_sem

    v = [1.0, 2.0, 4.0]
    d = describe_values(v)
    assert mean_sem(v) == (d["mean"], d["sem"], 3)
    assert d["sem"] == pytest.approx(np.std(v, ddof=1) / math.sqrt(3))
    assert mean_sem([4.0])[0] == 4.0 and math.isnan(mean_sem([4.0])[1])
    assert mean_sem([], missing=None) == (None, None, 0)
