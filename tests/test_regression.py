"""Residual correlations on near-duplicate neurons: bounded, scale-free, and equal to explicit float64 residuals."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from redrep.analysis import chunk_regression, gram_matrix
from redrep.cli import main
from redrep.repset import RepresentationSet

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
        r = CliRunner().invoke(
            main, ["analyze", "--repr", str(tmp_path / f"s{scale:g}"), "--acc-rep", "2", "--r2-rep", "10", "-q"]
        )
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
