"""The chunk-analysis engine against direct implementations of the definitions (docs/method.md)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom, chi2
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score

from redrep.core.analysis import (
    ChunkAnalysis,
    chunk_accuracy,
    chunk_regression,
    default_chunk_sizes,
    describe_values,
    draw_chunks,
    gram_matrix,
)
from redrep.core.validation import RedrepError
from redrep.storage.repset import RepresentationSet
from redrep.storage.synthetic import make_clone_set
from repsets import random_set


def direct_regression(F, chunk, alpha=1e-8):
    """The reference: one scikit-learn ridge fit per chunk, residual correlations as defined."""
    F = np.asarray(F, dtype=np.float64)
    X = F[:, chunk]
    pred = Ridge(alpha=alpha).fit(X, F).predict(X)
    r2 = r2_score(F, pred, multioutput="variance_weighted")
    cov = np.cov(F - pred, rowvar=False)
    sd = np.sqrt(np.diag(cov))
    corr = np.abs(cov / (np.outer(sd, sd) + 1e-8))
    W = F.shape[1]
    mean_corr = corr[np.tril_indices(W, -1)].mean()
    out = np.setdiff1d(np.arange(W), chunk)
    sub = corr[np.ix_(out, out)]
    mean_out = sub[np.tril_indices(len(out), -1)].mean() if len(out) >= 2 else np.nan
    return r2, mean_corr, mean_out


def direct_accuracy(X, y, weight, bias, chunk):
    logits = X[:, chunk].astype(np.float64) @ weight[:, chunk].T.astype(np.float64) + bias
    return logits


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_regression_matches_per_chunk_ridge(seed):
    rs = random_set(seed, n_test=400, width=32)
    F = rs.features_test
    G, _, n = gram_matrix(F, block_rows=57)
    rng = np.random.default_rng(seed)
    for w in (1, 3, 8, 16, 31, 32):
        chunk = np.sort(rng.choice(32, w, replace=False))
        s = chunk_regression(G, n, chunk)
        r2, mc, mo = direct_regression(F, chunk)
        assert s.r2 == pytest.approx(r2, abs=1e-6)
        assert s.mean_corr == pytest.approx(mc, abs=1e-3)
        if np.isnan(mo):
            assert np.isnan(s.mean_corr_outside)
        else:
            assert s.mean_corr_outside == pytest.approx(mo, abs=1e-6)


def test_regression_with_exact_clones_is_finite():
    """Exactly duplicated neurons make G_SS singular; the ridge keeps it solvable and R^2 = 1."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(200, 4))
    F = np.repeat(base, 3, axis=1)  # every neuron has two exact clones
    G, _, n = gram_matrix(F)
    s = chunk_regression(G, n, np.arange(12))
    assert s.r2 == pytest.approx(1.0, abs=1e-9)
    chunk = np.array([0, 3, 6, 9, 1])  # one copy of each, plus a clone
    s = chunk_regression(G, n, chunk)
    r2, _, _ = direct_regression(F, chunk)
    assert s.r2 == pytest.approx(r2, abs=1e-6)
    assert np.isfinite(s.mean_corr) and np.isfinite(s.mean_corr_outside)


def test_gram_matrix_is_centred_scatter_even_with_large_means():
    rng = np.random.default_rng(3)
    F = rng.normal(size=(1000, 7)) + 1e4
    G, mean, n = gram_matrix(F.astype(np.float32), block_rows=100)
    F64 = F.astype(np.float32).astype(np.float64)
    expected = np.cov(F64, rowvar=False) * (n - 1)
    np.testing.assert_allclose(G, expected, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(mean, F64.mean(0), rtol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_chunk_accuracy_matches_direct_gather(seed):
    rs = random_set(seed, n_train=500, width=256, n_classes=5)
    rng = np.random.default_rng(seed)
    # sizes on both sides of the gather / matrix-product switch (W/128 = 2)
    chunks = [np.sort(rng.choice(256, w, replace=False)) for w in (1, 1, 2, 3, 5, 16, 40, 256) for _ in range(3)]
    got = chunk_accuracy(rs.features_train, rs.labels_train, rs.weight, rs.bias, chunks, block_rows=77)
    for g, c in zip(got, chunks):
        logits = direct_accuracy(rs.features_train, rs.labels_train, rs.weight, rs.bias, c)
        srt = np.sort(logits, axis=1)
        clear = (srt[:, -1] - srt[:, -2]) > 1e-4 * (1 + np.abs(srt[:, -1]))  # no tie within float32 rounding
        pred = logits.argmax(1)
        expected_clear = np.sum((pred == rs.labels_train) & clear)
        # chunks agree on all rows without ties; tied rows may go either way
        count = round(g * rs.n_train)
        assert expected_clear <= count <= expected_clear + np.sum(~clear)
        if clear.all():
            assert g == pytest.approx(np.mean(pred == rs.labels_train), abs=1e-12)


def test_chunk_accuracy_breaks_exact_ties_like_argmax():
    """ReLU features are often 0: all logits equal the bias, and argmax takes the first maximum."""
    X = np.array([[0.0, 1.0], [0.0, 0.0], [2.0, 0.0]], dtype=np.float32)
    weight = np.array([[1.0, 1.0], [1.0, 2.0]], dtype=np.float32)
    bias = np.zeros(2, dtype=np.float32)
    y = np.array([1, 0, 1])
    acc = chunk_accuracy(X, y, weight, bias, [np.array([0]), np.array([1]), np.array([0, 1])])
    # chunk {0}: logits rows (0,0),(0,0),(2,2) -> class 0 everywhere -> only row 1 correct
    # chunk {1}: (1,2),(0,0),(0,0) -> 1,0,0 -> rows 0,1 correct
    # both: (1,2),(0,0),(2,2) -> 1,0,0 -> rows 0,1 correct
    np.testing.assert_allclose(acc, [1 / 3, 2 / 3, 2 / 3])


def test_full_chunk_accuracy_is_the_readouts():
    rs = random_set(5)
    acc = chunk_accuracy(rs.features_test, rs.labels_test, rs.weight, rs.bias, [np.arange(rs.width)])
    full = np.mean((rs.features_test @ rs.weight.T + rs.bias).argmax(1) == rs.labels_test)
    assert acc[0] == pytest.approx(full)


def test_known_clone_structure():
    """16 directions x 8 noisy clones: chunks holding every direction fit and reconstruct."""
    rs = make_clone_set(
        n_train=1500, n_test=800, n_latent=8, n_copies=16, n_classes=4, noise=0.05, separation=12.0, random_state=0
    )
    an = ChunkAnalysis(device="cpu", chunk_sizes=[1, 2, 64, 128], acc_rep=20, r2_rep=10, random_state=0).fit(rs)
    train_err = 1 - an.mean("accuracy", "train")
    r2 = an.mean("r2")
    # a single neuron sees one direction of eight: poor fit, poor reconstruction
    assert train_err[0] > 0.2 and r2[0] < 0.6
    # 64 random neurons miss a direction with probability < 8 * (1 - 1/8)^64 ~ 1e-3
    assert train_err[2] == 0.0 and train_err[3] == 0.0
    assert r2[2] > 0.99 and r2[3] > 0.99
    assert an.mean("mean_corr_outside")[2] < 0.2
    assert np.all(np.diff(r2) > 0)


def test_fit_is_reproducible_and_seed_dependent(small_set):
    a = ChunkAnalysis(device="cpu", acc_rep=5, r2_rep=3, random_state=7).fit(small_set)
    b = ChunkAnalysis(device="cpu", acc_rep=5, r2_rep=3, random_state=7).fit(small_set)
    c = ChunkAnalysis(device="cpu", acc_rep=5, r2_rep=3, random_state=8).fit(small_set)
    for key in a.values_:
        np.testing.assert_array_equal(a.values_[key], b.values_[key])
    assert any(not np.array_equal(a.r2_chunks_[w], c.r2_chunks_[w]) for w in a.chunk_sizes_ if w < small_set.width)
    # the regression chunks do not depend on acc_rep
    d = ChunkAnalysis(device="cpu", acc_rep=9, r2_rep=3, random_state=7).fit(small_set)
    for w in a.chunk_sizes_:
        np.testing.assert_array_equal(a.r2_chunks_[w], d.r2_chunks_[w])


def test_fit_values_match_direct_per_chunk(small_set):
    an = ChunkAnalysis(device="cpu", chunk_sizes=[2, 5, 24], acc_rep=4, r2_rep=3, random_state=1).fit(small_set)
    for i, w in enumerate(an.chunk_sizes_):
        for r, c in enumerate(an.r2_chunks_[w]):
            r2, mc, mo = direct_regression(small_set.features_test, c)
            assert an.values_[("r2", "test")][i, r] == pytest.approx(r2, abs=1e-6)
            assert an.values_[("mean_corr", "test")][i, r] == pytest.approx(mc, abs=1e-3)
        for r, c in enumerate(an.acc_chunks_[w]):
            logits = direct_accuracy(small_set.features_train, None, small_set.weight, small_set.bias, c)
            expected = np.mean(logits.argmax(1) == small_set.labels_train)
            assert an.values_[("accuracy", "train")][i, r] == pytest.approx(expected, abs=2 / small_set.n_train)
    # no pair of neurons lies outside a chunk of all W neurons
    assert np.all(np.isnan(an.values_[("mean_corr_outside", "test")][2]))


def test_memmap_and_block_size_give_the_same_numbers(tmp_path, small_set):
    small_set.save(tmp_path / "set")
    mm = RepresentationSet.load(tmp_path / "set")
    assert isinstance(mm.features_train, np.memmap)
    a = ChunkAnalysis(device="cpu", acc_rep=6, r2_rep=4, random_state=3, block_rows=8192).fit(small_set)
    b = ChunkAnalysis(device="cpu", acc_rep=6, r2_rep=4, random_state=3, block_rows=13).fit(mm)
    for key in a.values_:
        np.testing.assert_allclose(a.values_[key], b.values_[key], rtol=1e-9, atol=1e-12)


def test_nan_in_memmapped_features_is_reported_with_file_and_row(tmp_path, small_set):
    small_set.save(tmp_path / "set")
    f = tmp_path / "set" / "features_train.npy"
    arr = np.load(f, mmap_mode="r+")
    arr[123, 4] = np.nan
    arr.flush()
    del arr
    mm = RepresentationSet.load(tmp_path / "set")  # opening does not read the whole file
    with pytest.raises(
        RedrepError, match=r"features_train\.npy: expected finite values, found nan at index \(123, 4\)"
    ):
        ChunkAnalysis(device="cpu", acc_rep=2, r2_rep=2, block_rows=50).fit(mm)


def test_default_chunk_sizes():
    assert default_chunk_sizes(512) == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    assert default_chunk_sizes(1) == [1]
    assert default_chunk_sizes(500) == [1, 3, 7, 15, 31, 62, 125, 250, 500]


def test_draw_chunks_are_distinct_sorted_and_in_range():
    rng = np.random.default_rng(0)
    ch = draw_chunks(50, 20, 30, rng)
    assert ch.shape == (30, 20)
    assert all(len(set(c)) == 20 and c.min() >= 0 and c.max() < 50 and np.all(np.diff(c) > 0) for c in ch)
    # uniform: each neuron is in a chunk with probability 20 / 50, so its count is Binomial(30, 0.4), mean 12
    counts = np.bincount(ch.ravel(), minlength=50)
    assert counts.sum() == 30 * 20
    lo, hi = binom.ppf(1e-4, 30, 0.4), binom.isf(1e-4, 30, 0.4)
    assert lo <= counts.min() and counts.max() <= hi, (lo, hi, counts)
    # and the counts spread as a binomial's do: dispersion statistic against its chi-square law
    disp = float(((counts - 12.0) ** 2).sum() / (30 * 0.4 * 0.6))
    assert 1e-4 < chi2.sf(disp, 49) < 1 - 1e-4, disp
    # a sampler favouring low indices would fail: the mean index drawn is near 24.5
    assert abs(ch.mean() - 24.5) < 4 * np.sqrt((50**2 - 1) / 12 / ch.size)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"chunk_sizes": [0]}, r"chunk_sizes: expected chunk sizes in \[1, 24\] \(the layer width\), found 0"),
        ({"chunk_sizes": [25]}, r"chunk_sizes: expected chunk sizes in \[1, 24\].*found 25"),
        ({"chunk_sizes": []}, r"chunk_sizes: expected at least one chunk size"),
        ({"acc_rep": 0}, r"acc_rep: expected an integer >= 1, found 0"),
        ({"r2_rep": -3}, r"r2_rep: expected an integer >= 1, found -3"),
        ({"r2_rep": 2.5}, r"r2_rep: expected an integer, found 2.5"),
        ({"alpha": -1.0}, r"alpha: expected a ridge penalty in \[0, 1e\+100\], found -1.0"),
        ({"alpha": "x"}, r"alpha: expected a number, found 'x'"),
        ({"random_state": -1}, r"random_state: expected an integer >= 0, found -1"),
    ],
)
def test_bad_parameters(small_set, kwargs, message):
    with pytest.raises(RedrepError, match=message):
        ChunkAnalysis(device="cpu", **kwargs).fit(small_set)


def test_describe_values():
    s = describe_values([1.0, 2.0, 3.0, np.nan])
    assert s == {"mean": 2.0, "std": 1.0, "sem": pytest.approx(1 / np.sqrt(3)), "n": 3}
    assert describe_values([4.0])["std"] == 0.0
    assert describe_values([np.nan])["n"] == 0


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), w=st.integers(1, 12))
def test_regression_is_invariant_to_neuron_order(seed, w):
    """Relabelling the neurons (and the chunk with them) changes no statistic."""
    rng = np.random.default_rng(seed)
    F = rng.normal(size=(60, 12)) @ rng.normal(size=(12, 12)) + rng.normal(size=(60, 12))
    perm = rng.permutation(12)
    chunk = np.sort(rng.choice(12, w, replace=False))
    G, _, n = gram_matrix(F)
    Gp, _, _ = gram_matrix(F[:, perm])
    inv = np.argsort(perm)
    a = chunk_regression(G, n, chunk)
    b = chunk_regression(Gp, n, np.sort(inv[chunk]))
    assert a.r2 == pytest.approx(b.r2, abs=1e-9)
    assert a.mean_corr == pytest.approx(b.mean_corr, abs=1e-6)
    if not np.isnan(a.mean_corr_outside):
        assert a.mean_corr_outside == pytest.approx(b.mean_corr_outside, abs=1e-9)
    assert 0.0 <= a.mean_corr <= 1.0 + 1e-9


def test_resolve_device_delegates_to_redrep_device(monkeypatch):
    """The one device decision lives in redrep.core.device (tested in test_device.py); analysis defers to it."""
    import redrep.core.analysis as an

    assert an.resolve_device("cpu") == "cpu"
    with pytest.raises(RedrepError, match=r"^device: expected one of auto, cpu, cuda or cuda:N, found 'gpu'$"):
        an.resolve_device("gpu")


def test_repetitions_whose_draws_exceed_the_memory_are_refused(small_set, monkeypatch):
    """The limit follows from what the draws hold: W = 24 at sizes 1, 3, 6, 12, 24 (46 neurons drawn per repetition)."""
    import redrep.core.analysis as an

    per_rep = an.DRAW_BYTES_PER_NEURON * 46 + 5 * (2 * 24 + an.DRAW_BYTES_PER_CHUNK)
    assert an.draw_bytes(24, default_chunk_sizes(24), 10, 5) == 15 * per_rep
    monkeypatch.setattr(an, "_memory_budget", lambda: 100 * per_rep)
    ChunkAnalysis(acc_rep=60, r2_rep=40, device="cpu").fit(small_set)  # exactly at the budget
    with pytest.raises(
        RedrepError,
        match=r"^acc_rep: 61 and 40 random chunks per size .* of a layer of W = 24 at 5 "
        r"sizes hold about 0.0 GB of chunk draws; expected at most 0.0 GB \(half this machine's memory\)",
    ):
        ChunkAnalysis(acc_rep=61, r2_rep=40, device="cpu").fit(small_set)
    with pytest.raises(RedrepError, match=r"^r2_rep: 1 and 100 random chunks"):
        ChunkAnalysis(acc_rep=1, r2_rep=100, device="cpu").fit(small_set)


def test_many_draws_show_a_progress_bar(small_set, monkeypatch, capsys):
    import redrep.core.analysis as an

    monkeypatch.setattr(an, "_DRAW_BAR_MIN", 50)
    ChunkAnalysis(acc_rep=5, r2_rep=5, progress=True, device="cpu").fit(small_set)  # 5 sizes x 10: 50 draws
    assert "chunk draws" in capsys.readouterr().err
    ChunkAnalysis(acc_rep=4, r2_rep=5, progress=True, device="cpu").fit(small_set)  # 45: too few to need one
    assert "chunk draws" not in capsys.readouterr().err


def test_draw_chunks_reports_every_chunk_drawn():
    counts = []
    out = draw_chunks(10, 3, 2500, np.random.default_rng(0), counts.append)
    assert sum(counts) == 2500 and counts == [1024, 1024, 452]
    assert (out == draw_chunks(10, 3, 2500, np.random.default_rng(0))).all()  # the same draws with or without


def _child(code, *args):
    import subprocess
    import sys

    import procs

    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], env=procs.env(), capture_output=True, text=True
    )


def test_features_truncated_while_mapped_are_named(tmp_path):
    """A features file cut short after the set was opened: reading its missing pages killed the analysis (SIGBUS,
    or a dead worker blamed on memory). Now one line naming the file. In a child process, so that a SIGBUS cannot
    end the tests (device="cpu")."""
    random_set(0, n_train=4000, n_test=3000, width=24).save(tmp_path / "set")
    r = _child(
        "import os, sys\nfrom redrep.storage.repset import RepresentationSet\n"
        "from redrep.core.analysis import ChunkAnalysis\nfrom redrep.core.validation import RedrepError\n"
        "rs = RepresentationSet.load(sys.argv[1])\n"
        "os.truncate(os.path.join(sys.argv[1], 'features_test.npy'), 4096)\n"
        "try:\n    ChunkAnalysis(acc_rep=2, r2_rep=2, block_rows=64, device='cpu').fit(rs)\n"
        "except RedrepError as exc:\n    print(exc)\n",
        tmp_path / "set",
    )
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    f = tmp_path / "set" / "features_test.npy"
    assert r.stdout.startswith(f"{f}: the file was truncated while it was read (rows up to 3000 need 288,128 bytes")
    assert "the file now has 4,096" in r.stdout and r.stdout.count("\n") == 1


def test_a_file_truncated_between_blocks_is_named(tmp_path):
    """The check before every block: a file cut short after its first block was read."""
    np.save(tmp_path / "f.npy", np.ones((1000, 16), np.float32))
    r = _child(
        "import os, sys\nimport numpy as np\nfrom redrep.core.blocks import iter_blocks\n"
        "from redrep.core.validation import RedrepError\n"
        "arr = np.load(sys.argv[1], mmap_mode='r')\nblocks = iter_blocks(arr, 100, name='f.npy')\n"
        "print(next(blocks)[1].sum())\nos.truncate(sys.argv[1], 128 + 150 * 64)\n"
        "try:\n    list(blocks)\nexcept RedrepError as exc:\n    print(exc)\n",
        tmp_path / "f.npy",
    )
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert r.stdout.splitlines() == [
        "1600.0",
        "f.npy: the file was truncated while it was read (rows up to 200 need 12,928 bytes, the file now has "
        "9,728); expected it unchanged during the analysis: restore or rewrite it, then run again",
    ]


# --------------------------------------------------------------------------- refinement, errors, summary
def _axes_set(seed=0):
    return make_clone_set(
        n_train=600, n_test=300, n_latent=8, n_copies=8, n_classes=16, noise=1.0, separation=40.0,
        random_state=seed, class_means="axes",
    )  # fmt: skip


def test_refinement_leaves_the_first_pass_unchanged():
    from redrep.core.summary import refine_sizes

    rs = _axes_set()
    first = ChunkAnalysis(acc_rep=40, r2_rep=6, random_state=3, device="cpu", refine=0).fit(rs)
    refined = ChunkAnalysis(acc_rep=40, r2_rep=6, random_state=3, device="cpu").fit(rs)  # refine: 3 by default
    w_star = first.summary(replicates=0).w_c_star
    added = refine_sizes(first.chunk_sizes_, w_star, 3)
    assert added and refined.refinement_["sizes"] == added
    assert refined.chunk_sizes_ == sorted(first.chunk_sizes_ + added)
    for i, w in enumerate(first.chunk_sizes_):
        j = refined.chunk_sizes_.index(w)
        np.testing.assert_array_equal(refined.acc_chunks_[w], first.acc_chunks_[w])
        np.testing.assert_array_equal(refined.r2_chunks_[w], first.r2_chunks_[w])
        for key in first.values_:
            np.testing.assert_array_equal(refined.values_[key][j], first.values_[key][i])
    # the refined chunks come from streams of their own, keyed by the size, and give the readout's accuracy
    for w in added:
        rng = np.random.default_rng(np.random.SeedSequence(3, spawn_key=(2, w)))
        np.testing.assert_array_equal(refined.acc_chunks_[w], draw_chunks(rs.width, w, 40, rng))
        j = refined.chunk_sizes_.index(w)
        acc = chunk_accuracy(rs.features_train, rs.labels_train, rs.weight, rs.bias, list(refined.acc_chunks_[w]))
        np.testing.assert_array_equal(refined.values_[("accuracy", "train")][j], acc)


def test_refinement_only_on_the_default_sizes_unless_asked():
    rs = _axes_set(1)
    given = ChunkAnalysis(chunk_sizes=[4, 8, 16, 32, 64], acc_rep=20, r2_rep=4, device="cpu").fit(rs)
    assert given.chunk_sizes_ == [4, 8, 16, 32, 64] and given.refinement_ is None
    asked = ChunkAnalysis(chunk_sizes=[4, 8, 16, 32, 64], acc_rep=20, r2_rep=4, device="cpu", refine=1).fit(rs)
    lo, hi = asked.refinement_["between"]
    assert asked.refinement_["sizes"] == [(lo + hi) // 2] and asked.refinement_["step"] == (hi - lo) / 2
    with pytest.raises(RedrepError, match="refine: expected an integer >= 0, found -1"):
        ChunkAnalysis(refine=-1).fit(rs)
    with pytest.raises(RedrepError, match="criterion: expected a redrep.core.summary.Criterion, found dict"):
        ChunkAnalysis(criterion={"r2_min": 0.9}).fit(rs)


def test_mean_of_errors_and_accuracies(small_set):
    an = ChunkAnalysis(chunk_sizes=[2, 5], acc_rep=4, r2_rep=3, random_state=1, device="cpu").fit(small_set)
    for split in ("train", "test"):
        acc = an.values_[("accuracy", split)]
        np.testing.assert_allclose(an.mean("error", split=split), 1 - acc.mean(axis=1), rtol=0, atol=1e-15)
        np.testing.assert_array_equal(an.mean("accuracy", split), acc.mean(axis=1))
    with pytest.raises(RedrepError, match="mean: expected a metric of this analysis .* found 'errors' on 'test'"):
        an.mean("errors")


def test_summary_in_memory_names_its_criterion(small_set):
    from redrep.core.summary import Criterion

    an = ChunkAnalysis(acc_rep=6, r2_rep=3, random_state=2, device="cpu", refine=0).fit(small_set)
    s = an.summary(Criterion(r2_kind="in-sample"), replicates=50, level=0.8, seed=9)
    d = s.to_dict()
    assert d["criterion"]["r2_kind_used"] == "in-sample" and d["bootstrap"]["seed"] == 9
    assert d["bootstrap"]["level"] == 0.8 and len(d["by_size"]) == len(an.chunk_sizes_)
    assert an.summary().criterion == Criterion()  # the analysis' own criterion by default
