"""Residual correlations on near-duplicate neurons: bounded, scale-free, and equal to explicit float64 residuals."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import Ridge

from redrep.cli import main
from redrep.core.analysis import MAX_ALPHA, ChunkAnalysis, HeldOut, chunk_r2_heldout, chunk_regression, gram_matrix
from redrep.core.validation import RedrepError
from redrep.storage.repset import RepresentationSet
from repsets import random_set

STATS = ("r2", "mean_corr", "mean_corr_outside")


def explicit_regression(F, chunk, alpha=1e-8):
    """The definition from the data: ridge residuals in float64, their covariance, the correlations.

    The ridge is solved as the least-squares problem ``[Xc; sqrt(alpha) I] b = [Fc; 0]``
    (no normal equations), so near-duplicate chunks lose no precision.
    """
    F = np.asarray(F, dtype=np.float64)
    Fc = F - F.mean(axis=0)
    X = Fc[:, chunk]
    w, W = X.shape[1], F.shape[1]
    lhs = np.vstack([X, np.sqrt(alpha) * np.eye(w)])
    coef = np.linalg.lstsq(lhs, np.vstack([Fc, np.zeros((w, W))]), rcond=None)[0]
    E = Fc - X @ coef
    r2 = 1.0 - float((E**2).sum()) / float((Fc**2).sum())
    cov = np.cov(E, rowvar=False)
    sd = np.sqrt(np.diag(cov))
    corr = np.abs(cov / (np.outer(sd, sd) + 1e-8))
    out = np.setdiff1d(np.arange(W), chunk)
    sub = corr[np.ix_(out, out)]
    mean_out = sub[np.triu_indices(len(out), 1)].mean() if len(out) >= 2 else np.nan
    return r2, corr[np.triu_indices(W, 1)].mean(), mean_out


def near_duplicates(kind, seed, n=300, n_base=12, spread=1.0):
    """Correlated base neurons, one copy of each (exact, scaled by 3.7, or with 1e-4 noise) and 4 independent ones."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, n_base)) @ rng.normal(size=(n_base, n_base)) * spread
    copy = {
        "exact": 2.0 * base,
        "scaled": 3.7 * base,
        "noisy": 2.0 * base + 1e-4 * spread * rng.normal(size=base.shape),
    }
    F = np.hstack([base, copy[kind], spread * rng.normal(size=(n, 4))])
    return F[:, rng.permutation(F.shape[1])], rng


def stats(F, chunk):
    G, _, n = gram_matrix(F)
    s = chunk_regression(G, n, chunk)
    return np.array([getattr(s, k) for k in STATS])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("kind, scales", [("exact", (1e-3, 1.0)), ("scaled", (1e-3, 1.0)), ("noisy", (1e-3, 0.1, 1.0))])
def test_near_duplicates_match_explicit_residuals(kind, scales, seed):
    """Exact, scaled and noisy copies, chunks holding none, one or both of a pair, against explicit residuals.

    The scales are those at which explicit float64 residuals resolve the copies'
    tiny (ridge-sized) residuals; above them the explicit computation, not the
    Gram algebra, loses the digits.
    """
    F0, rng = near_duplicates(kind, seed)
    W = F0.shape[1]
    chunks = [np.sort(rng.choice(W, w, replace=False)) for w in (1, 3, 8, 14, 20, 27, W)]
    for scale in scales:
        F = F0 * scale
        for chunk in chunks:
            got = stats(F, chunk)
            want = np.array(explicit_regression(F, chunk))
            np.testing.assert_allclose(got[0], want[0], atol=1e-8)
            np.testing.assert_allclose(got[1:], want[1:], atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rescaling_changes_no_statistic(seed):
    """From 1e-3 to 1e6 times the features: the same numbers to rounding.

    The features have a spread of 1e5 so that at every scale the residual
    standard deviations multiply to far more than the absolute 1e-8 of the
    definition; exact copies (residuals of the ridge's size only) and copies
    with 1e-2 noise are among them.
    """
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(300, 10)) * 1e5
    F0 = np.hstack(
        [base, 2.0 * base[:, :5], base[:, 5:] + 1e3 * rng.normal(size=(300, 5)), 1e5 * rng.normal(size=(300, 3))]
    )
    W = F0.shape[1]
    chunks = [np.sort(rng.choice(W, w, replace=False)) for w in (1, 4, 9, 15, 22, W - 1, W)]
    chunks.append(np.array([0, 1, 10, 11]))  # two exact pairs inside the chunk
    ref = np.array([stats(F0, c) for c in chunks])
    for scale in (1e-3, 1e3, 1e6):
        got = np.array([stats(F0 * scale, c) for c in chunks])
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    log_scale=st.floats(-3, 6),
    w=st.integers(1, 32),
    noise=st.sampled_from([0, 1e-9, 1e-6]),
)
def test_statistics_lie_in_unit_interval(seed, log_scale, w, noise):
    """Duplicated neurons at any scale, exact or with noise near the float64 resolution of the Gram matrix."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(120, 16)).astype(np.float32)
    F = np.hstack([base, 2 * base]).astype(np.float64)
    F[:, 16:] += noise * rng.normal(size=(120, 16))
    chunk = np.sort(rng.choice(32, w, replace=False))
    r2, mean_corr, mean_out = stats(F * 10.0**log_scale, chunk)
    assert 0.0 <= r2 <= 1.0
    assert 0.0 <= mean_corr <= 1.0
    assert np.isnan(mean_out) if w > 30 else 0.0 <= mean_out <= 1.0


def _duplicated_set(path, scale):
    """The issue's case: 16 neurons, each next to twice itself (W = 32), 500 training and 300 test samples."""
    rng = np.random.default_rng(0)

    def feats(n):
        f = rng.normal(size=(n, 16)).astype(np.float32)
        return np.stack([f, 2 * f], axis=2).reshape(n, 32) * np.float32(scale)

    x_tr, x_te = feats(500), feats(300)
    weight = rng.normal(size=(3, 32)).astype(np.float32)
    RepresentationSet.from_arrays(
        x_tr, x_te, rng.integers(0, 3, 500), rng.integers(0, 3, 300), weight, np.zeros(3, np.float32)
    ).save(path)


def test_cli_duplicated_neurons_at_large_scales(tmp_path):
    """`redrep analyze` on duplicated neurons: correlations in [0, 1], the same at scales 1, 1e4 and 1e6."""
    means = {}
    for scale in (1, 1e4, 1e6):
        _duplicated_set(tmp_path / f"s{scale:g}", scale)
        args = ["analyze", "--repr", str(tmp_path / f"s{scale:g}"), "--acc-rep", "2", "--r2-rep", "10", "-q"]
        r = CliRunner().invoke(main, args + ["--device", "cpu"])
        assert r.exit_code == 0, r.output
        with open(tmp_path / f"s{scale:g}" / "results" / "results.csv") as f:
            rows = [row for row in csv.DictReader(f) if row["metric"] in STATS]
        means[scale] = {(row["metric"], int(row["chunk_size"])): float(row["mean"]) for row in rows}
    for key, value in means[1].items():
        if key[0] != "r2" and not np.isnan(value):
            assert 0.0 <= value <= 1.0, key
        # float32 features: scaling rounds them, which moves the statistics by about 1e-9
        for scale in (1e4, 1e6):
            assert means[scale][key] == pytest.approx(value, abs=1e-6, nan_ok=True), (key, scale)
    assert means[1e6][("mean_corr_outside", 16)] < 0.1


def sklearn_r2_heldout(F_train, F_test, chunk, alpha=1e-8):
    """Ridge fitted on the training set by scikit-learn, R^2 on the test set by hand (variance-weighted)."""
    F_train, F_test = np.asarray(F_train, np.float64), np.asarray(F_test, np.float64)
    pred = (
        Ridge(alpha=alpha, fit_intercept=True)
        .fit(F_train[:, chunk], F_train)
        .predict(F_test[:, chunk])
        .reshape(F_test.shape)
    )
    return 1.0 - ((F_test - pred) ** 2).sum() / ((F_test - F_test.mean(axis=0)) ** 2).sum()


def heldout_of(F_train, F_test):
    G1, m1, _ = gram_matrix(F_train, block_rows=37)
    G2, m2, n2 = gram_matrix(F_test, block_rows=23)
    return HeldOut(G1, m1, G2, m2, n2)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("n_train, n_test, width", [(200, 150, 24), (80, 3, 10), (60, 40, 1), (300, 100, 40)])
def test_r2_heldout_matches_sklearn_ridge(seed, n_train, n_test, width):
    rs = random_set(seed, n_train=n_train, n_test=n_test, width=width, latent=min(6, width))
    rng = np.random.default_rng(seed)
    ho = heldout_of(rs.features_train, rs.features_test)
    for w in sorted({1, max(1, width // 3), width - 1, width} - {0}):
        chunk = np.sort(rng.choice(width, w, replace=False))
        want = sklearn_r2_heldout(rs.features_train, rs.features_test, chunk)
        assert chunk_r2_heldout(ho, chunk) == pytest.approx(want, abs=1e-9)
    # a large ridge shrinks the fit towards the training mean: R^2 of predicting every test row by it
    chunk = np.arange(width)
    big = sklearn_r2_heldout(rs.features_train, rs.features_test, chunk, alpha=1e3)
    assert chunk_r2_heldout(ho, chunk, alpha=1e3) == pytest.approx(big, abs=1e-9)


def test_r2_heldout_with_duplicates_and_distribution_shift():
    """Exact copies in the chunk (Cholesky pivots at the ridge's size) and a test set with other means."""
    rng = np.random.default_rng(5)
    base_tr, base_te = rng.normal(size=(150, 6)), rng.normal(size=(90, 6)) * 1.5 + 2.0
    F_tr, F_te = np.hstack([base_tr, 2 * base_tr]), np.hstack([base_te, 2 * base_te])
    ho = heldout_of(F_tr, F_te)
    for chunk in (np.array([0, 6]), np.array([0, 1, 2, 6, 7]), np.arange(12), np.array([3])):
        assert chunk_r2_heldout(ho, chunk) == pytest.approx(sklearn_r2_heldout(F_tr, F_te, chunk), abs=1e-9)


def test_fit_reports_r2_heldout_without_changing_the_rest(small_set):
    an = ChunkAnalysis(device="cpu", chunk_sizes=[1, 5, 24], acc_rep=3, r2_rep=4, random_state=2).fit(small_set)
    vals = an.values_[("r2_heldout", "test")]
    assert vals.shape == (3, 4)
    for i, w in enumerate(an.chunk_sizes_):
        for r, c in enumerate(an.r2_chunks_[w]):
            want = sklearn_r2_heldout(small_set.features_train, small_set.features_test, c)
            assert vals[i, r] == pytest.approx(want, abs=1e-9)
    # held-out R^2 is at most the in-sample one (the test-set fit minimises the same residuals)
    assert np.all(vals <= an.values_[("r2", "test")] + 1e-12)
    rows = [r for r in an.to_rows() if r["metric"] == "r2_heldout"]
    assert [r["split"] for r in rows] == ["test"] * 3 and [r["n"] for r in rows] == [4, 4, 4]


@pytest.mark.parametrize("alpha", [1e200, -1.0, float("inf"), float("nan")])
def test_alpha_out_of_range_is_refused(small_set, alpha):
    with pytest.raises(RedrepError, match=r"^alpha: expected a ridge penalty in \[0, 1e\+100\], found "):
        ChunkAnalysis(device="cpu", alpha=alpha, acc_rep=2, r2_rep=2).fit(small_set)


def test_largest_alpha_keeps_statistics_finite(small_set):
    an = ChunkAnalysis(chunk_sizes=[1, 12, 24], alpha=MAX_ALPHA, acc_rep=2, r2_rep=3, random_state=0, device="cpu")
    an.fit(small_set)
    for metric in ("r2", "mean_corr", "r2_heldout"):
        assert np.all(np.isfinite(an.values_[(metric, "test")])), metric
    # an overwhelming ridge predicts the mean: no variance explained in sample
    np.testing.assert_allclose(an.values_[("r2", "test")], 0.0, atol=1e-12)


def test_cli_alpha_overflow_exits_2_with_one_line(tmp_path):
    random_set(0, width=8).save(tmp_path / "set")
    r = CliRunner().invoke(main, ["analyze", "--device", "cpu", "--repr", str(tmp_path / "set"), "--alpha", "1e200"])
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines() == ["Error: alpha: expected a ridge penalty in [0, 1e+100], found 1e+200"]
    assert not (tmp_path / "set" / "results").exists()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ordinary_sets_match_explicit_residuals_closely(seed):
    """Noisy low-rank features, all chunk sizes, against explicit float64 residuals.

    R^2 and the outside mean agree to 1e-12. The mean over all pairs includes
    the chunk's own residuals, of the ridge's size (about 1e-11 here), which the
    explicit computation resolves to only a few digits: 1e-8.
    """
    rs = random_set(seed, n_test=250, width=40)
    F = rs.features_test.astype(np.float64)
    rng = np.random.default_rng(seed)
    for w in (1, 2, 5, 10, 20, 39, 40):
        chunk = np.sort(rng.choice(40, w, replace=False))
        got, want = stats(F, chunk), np.array(explicit_regression(F, chunk))
        np.testing.assert_allclose(got[[0, 2]], want[[0, 2]], rtol=0, atol=1e-12)
        np.testing.assert_allclose(got[1], want[1], rtol=0, atol=1e-8)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("n", [5, 300])
def test_pairs_inside_the_chunk_are_left_out_only_when_negligible(monkeypatch, seed, n):
    """The bound that lets the in-chunk pairs be skipped: forcing them in changes the mean by less than 1e-13.

    With 5 samples the chunks are rank-deficient, their ridge-sized residuals
    large, and the pairs are computed; with 300 well-conditioned samples the
    bound holds and they are skipped.
    """
    import redrep.core.regression as regression

    rng = np.random.default_rng(seed)
    F = rng.normal(size=(n, 24)) @ (np.eye(24) + 0.3 * rng.normal(size=(24, 24)))
    G, _, nn = gram_matrix(F)
    chunks = [np.sort(rng.choice(24, w, replace=False)) for w in (1, 2, 3, 6, 12, 23)]
    fast = [chunk_regression(G, nn, c) for c in chunks]
    monkeypatch.setattr(regression, "_NEGLIGIBLE", -1.0)
    full = [chunk_regression(G, nn, c) for c in chunks]
    skipped = 0
    for a, b in zip(fast, full):
        assert a.r2 == pytest.approx(b.r2, abs=1e-15)
        np.testing.assert_equal(a.mean_corr_outside, b.mean_corr_outside)
        assert 0.0 <= b.mean_corr - a.mean_corr <= 1e-13
        skipped += b.mean_corr > a.mean_corr
    if n == 5:
        assert skipped == 0
    else:
        assert skipped >= 3  # at least the small chunks; the bound grows with the chunk


def test_r2_heldout_of_dependent_chunks_is_scale_free():
    """Exact copies inside the chunk at a scale where the ridge is below the Gram's rounding (the eigen path)."""
    rng = np.random.default_rng(8)
    base_tr, base_te = rng.normal(size=(150, 6)), rng.normal(size=(90, 6)) + 0.5
    F_tr, F_te = np.hstack([base_tr, 2 * base_tr]), np.hstack([base_te, 2 * base_te])
    for chunk in (np.array([0, 6]), np.array([0, 1, 2, 6, 7]), np.arange(12)):
        ref = chunk_r2_heldout(heldout_of(F_tr, F_te), chunk)
        assert ref == pytest.approx(sklearn_r2_heldout(F_tr, F_te, chunk), abs=1e-9)
        for scale in (1e4, 1e6):
            got = chunk_r2_heldout(heldout_of(F_tr * scale, F_te * scale), chunk)
            assert got == pytest.approx(ref, abs=1e-8), (chunk, scale)


@pytest.mark.parametrize("processes", [True, False])
def test_numbers_do_not_depend_on_the_workers(monkeypatch, small_set, processes):
    import redrep.core.parallel as parallel

    def fit():
        an = ChunkAnalysis(chunk_sizes=[1, 3, 12, 24], acc_rep=2, r2_rep=5, random_state=4, device="cpu")
        return an.fit(small_set)

    monkeypatch.setattr(parallel, "can_fork", lambda: processes)
    monkeypatch.setattr(parallel, "MIN_WORK", 0)
    monkeypatch.setattr(parallel, "n_workers", lambda: 1)
    one = fit()
    monkeypatch.setattr(parallel, "n_workers", lambda: 3)
    three = fit()
    for key in ("r2", "mean_corr", "mean_corr_outside", "r2_heldout"):
        np.testing.assert_array_equal(one.values_[(key, "test")], three.values_[(key, "test")])
    for split in ("train", "test"):
        np.testing.assert_array_equal(one.values_[("accuracy", split)], three.values_[("accuracy", split)])


def test_heldout_can_be_left_out(small_set):
    kw = dict(chunk_sizes=[2, 24], acc_rep=2, r2_rep=3, random_state=1, device="cpu")
    with_ho = ChunkAnalysis(**kw).fit(small_set)
    without = ChunkAnalysis(heldout=False, **kw).fit(small_set)
    assert np.all(np.isnan(without.values_[("r2_heldout", "test")]))
    assert "gram_train" not in without.timings_
    for key in ("r2", "mean_corr", "mean_corr_outside"):
        np.testing.assert_array_equal(with_ho.values_[(key, "test")], without.values_[(key, "test")])
