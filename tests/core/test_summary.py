import json
import math

import numpy as np
import pytest
import scipy.stats

from redrep.core.summary import (
    ChunkCurves,
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
    assert fit.exponent_se == pytest.approx(0.0, abs=1e-10)
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


@pytest.mark.parametrize("width, w_star, exponent", [(512, 64, -0.5), (256, 32, -0.5), (1024, 128, -0.7)])
def test_summarize_known_answer(width, w_star, exponent):
    c = paper_like(width=width, w_star=w_star, error_inf=0.04, exponent=exponent)
    s = summarize(_curves(c, width=width))
    assert s.w_c_star == w_star
    assert s.exponent == pytest.approx(exponent, abs=1e-10)
    assert s.exponent_se == pytest.approx(0.0, abs=1e-8)
    assert s.prefactor == pytest.approx(0.12, rel=1e-8)
    assert s.fit_chunk_sizes == tuple(int(w) for w in c["sizes"] if w >= w_star)
    assert s.n_clones == width / w_star
    assert s.notes == ()
    d = s.to_dict()
    json.dumps(d)
    assert d["w_c_star"] == w_star and d["thresholds"] == {"train_error_max": 0.0, "r2_min": 0.95}


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
    assert any("no chunk size has training error <= 0" in n for n in s.notes)
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
    assert "R^2 reaches 0.95 from w_c = 16 on" in text


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
