"""The CUDA engine's code, run here on torch's CPU device, against the CPU path.

Every test assumes torch's "cpu" device for the engine (redrep.core.cuda) and
device="cpu" for the reference: the counts must be identical, the regression
values equal to within rtol 1e-9 (plus 1e-10 absolute for correlations that are
themselves rounding noise). The same comparison on a real GPU is in
tests/gpu/test_gpu_analysis.py.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import redrep.core.cuda as cuda
from redrep.core.accuracy import _unique_chunks, chunk_accuracy
from redrep.core.analysis import ChunkAnalysis, ChunkDraws
from redrep.core.regression import HeldOut, RegressionJob, chunk_r2_heldout, chunk_regression, gram_matrix
from redrep.core.validation import RedrepError
from redrep.storage.repset import RepresentationSet
from repsets import random_set

torch = pytest.importorskip("torch")

#: The tolerance the engine's regression values meet against the CPU's (docs/method.md#the-analysis-on-a-gpu).
RTOL, ATOL = 1e-9, 1e-10
#: With exact copies of neurons and a tiny ridge, the correlations carry rounding noise of a few 1e-9, as much as
#: the CPU's own when the neurons are relabelled (test_copies_make_correlations_as_noisy_on_the_cpu).
ATOL_COPIES = 1e-8


def cpu_counts(X, y, weight, bias, chunks):
    """The CPU path's counts per distinct chunk (the reference)."""
    uniq, index = _unique_chunks(chunks)
    acc = chunk_accuracy(X, y, weight, bias, uniq)
    return np.round(acc * len(y)).astype(np.int64)


def engine_counts(X, y, weight, bias, chunks, **kw):
    uniq, _ = _unique_chunks(chunks)
    return cuda.count_correct(X, y, weight, bias, uniq, device="cpu", **kw)


def float32_counts(X, y, weight, bias, chunks):
    """A plain float32 product per chunk, argmax: exact where every product and sum is (dyadic data)."""
    uniq, _ = _unique_chunks(chunks)
    return np.array([np.sum((X[:, c] @ weight[:, c].T + bias).argmax(1) == y) for c in uniq])


def some_chunks(rng, width, sizes, reps=3):
    return [np.sort(rng.choice(width, w, replace=False)) for w in sizes for _ in range(reps)]


# --------------------------------------------------------------------------- accuracies


@pytest.mark.parametrize("n_classes", [2, 10, 13])
@pytest.mark.parametrize(
    "seed, products", [(0, "by cost"), (1, "by cost"), (2, "by cost"), (3, "all gathered"), (4, "all masked")]
)
def test_counts_equal_the_cpu_pass_for_every_chunk_size(monkeypatch, seed, products, n_classes):
    """Random ReLU-like data, all-zero rows, tied biases; chunk sizes 1..W; gathered and masked products."""
    width = 24
    monkeypatch.setattr(cuda, "FMA_PER_FLOAT", {"by cost": 28, "all gathered": 0, "all masked": 10**9}[products])
    rs = random_set(seed, n_train=900, width=width, n_classes=n_classes)
    rng = np.random.default_rng(seed)
    chunks = some_chunks(rng, width, range(1, width + 1), reps=2)
    X = rs.features_train.copy()
    X[X < 2.5] = 0.0
    X[::7] = 0.0  # logits equal the bias: exact ties where two biases agree
    bias = rs.bias.copy()
    bias[-1] = bias[0]
    y = rs.labels_train
    got = engine_counts(X, y, rs.weight, bias, chunks)
    np.testing.assert_array_equal(got, cpu_counts(X, y, rs.weight, bias, chunks))


def test_the_memory_budget_changes_no_count():
    """Tiny budgets: one chunk per group and panel, one undecided pair per float64 batch."""
    rs = random_set(4, n_train=700, width=20, n_classes=5)
    rng = np.random.default_rng(4)
    chunks = some_chunks(rng, 20, (1, 3, 8, 15, 20), reps=4)
    X = np.round(rs.features_train * 2) / 2  # many near and exact ties: undecided pairs in every block
    X[X < 3] = 0.0
    y = rs.labels_train
    expected = cpu_counts(X, y, rs.weight, rs.bias, chunks)
    for memory in (1, 10**5, 10**9):
        got = engine_counts(X, y, rs.weight, rs.bias, chunks, memory_bytes=memory)
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("rows", [1024, 4096])
def test_blocks_change_no_count(monkeypatch, rows):
    rs = random_set(5, n_train=5000, width=8, n_classes=3)
    rng = np.random.default_rng(5)
    chunks = some_chunks(rng, 8, (1, 2, 5, 8))
    expected = cpu_counts(rs.features_train, rs.labels_train, rs.weight, rs.bias, chunks)
    monkeypatch.setattr(cuda, "block_rows_for", lambda width: rows)
    got = engine_counts(rs.features_train, rs.labels_train, rs.weight, rs.bias, chunks)
    np.testing.assert_array_equal(got, expected)


_DYADIC = st.sampled_from([0.0, 0.0, 0.0, 1.0, -1.0, 2.0, 0.5, 3.0, -0.25, 4.0, 1.5])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    x=st.lists(st.lists(_DYADIC, min_size=6, max_size=6), min_size=1, max_size=30),
    n_classes=st.integers(2, 15),
    seed=st.integers(0, 2**16),
)
def test_dyadic_sets_tie_as_argmax(x, n_classes, seed):
    """Exact float32 arithmetic: ties everywhere, decided as argmax decides them (the first class)."""
    rng = np.random.default_rng(seed)
    X = np.array(x, dtype=np.float32)
    weight = rng.choice(np.array([0.0, 1.0, -1.0, 0.5, 2.0], dtype=np.float32), size=(n_classes, 6))
    bias = rng.choice(np.array([0.0, 0.25, -0.5], dtype=np.float32), size=n_classes)
    y = rng.integers(0, n_classes, len(X))
    chunks = some_chunks(rng, 6, (1, 2, 4, 6), reps=2)
    got = engine_counts(X, y, weight, bias, chunks)
    np.testing.assert_array_equal(got, float32_counts(X, y, weight, bias, chunks))
    np.testing.assert_array_equal(got, cpu_counts(X, y, weight, bias, chunks))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ulps=st.lists(st.integers(-4, 4), min_size=6, max_size=6),
    scale=st.sampled_from([1.0, 2.0**-60, 2.0**-126, 2.0**50, 1e30]),
    seed=st.integers(0, 2**16),
)
def test_near_ties_a_few_ulps_apart(ulps, scale, seed):
    """Logits a few float32 units apart, at tiny, subnormal-producing and huge magnitudes."""
    rng = np.random.default_rng(seed)
    w0 = (rng.uniform(0.5, 1.0, 6) * scale).astype(np.float32)
    w1, w2 = w0.copy(), w0.copy()
    for i, k in enumerate(ulps):
        target = w1 if i % 2 else w2
        for _ in range(abs(k)):
            target[i] = np.nextafter(target[i], np.float32(np.inf if k > 0 else -np.inf))
    weight = np.stack([w0, w1, w2])
    X = rng.choice(np.array([0.0, 1.0, 0.75, 1.25, 3.0], dtype=np.float32), size=(10, 6))
    X[0] = 0.0
    bias = np.zeros(3, dtype=np.float32)
    y = rng.integers(0, 3, 10)
    chunks = some_chunks(rng, 6, (1, 2, 6), reps=2)
    got = engine_counts(X, y, weight, bias, chunks)
    np.testing.assert_array_equal(got, cpu_counts(X, y, weight, bias, chunks))


@pytest.mark.parametrize("seed", [0, 1])
def test_huge_tiny_and_subnormal_magnitudes(seed):
    """Rows that may overflow in float32 are decided exactly; subnormal features and weights keep the bound valid."""
    rng = np.random.default_rng(seed)
    X = (rng.random((40, 8)) * 1e36).astype(np.float32)
    X[:10] *= np.float32(1e-40)  # subnormal features
    weight = (rng.standard_normal((4, 8)) * 1e-6).astype(np.float32)
    weight[1, :3] = np.float32(1e-41)  # subnormal weights
    bias = (rng.standard_normal(4) * 1e-3).astype(np.float32)
    y = rng.integers(0, 4, 40)
    chunks = some_chunks(rng, 8, (1, 3, 8))
    got = engine_counts(X, y, weight, bias, chunks)
    np.testing.assert_array_equal(got, cpu_counts(X, y, weight, bias, chunks))


def test_the_bound_takes_every_weight_as_at_least_the_floor(monkeypatch):
    """Weights that a GPU may flush to zero (subnormal, or 0) enter the bound as 2^-100, in both products."""
    monkeypatch.setattr(cuda, "FMA_PER_FLOAT", 0)  # every chunk below W gathers
    weight = np.array([[0.0, 1e-41, 1.0, -2.0], [0.0, 0.0, 0.5, 1e-39]], dtype=np.float32)
    bias = np.array([1e-42, 0.0], dtype=np.float32)
    uniq = [np.array([0]), np.array([0, 1]), np.array([0, 1, 2, 3])]
    plan = cuda.AccuracyPlan(torch, torch.device("cpu"), weight, bias, uniq, rows=64)
    assert len(plan.gathered) == 2 and len(plan.masked) == 1
    floor = np.float32(2.0**-100)
    assert float(plan.omega.min()) == floor
    for _, _, _, om, _ in plan.gathered:
        assert float(om.min()) >= floor
    np.testing.assert_array_equal(plan.omega.numpy()[2:4], [1.0, 2.0])  # the others as they are


def _exact_pairs_seen(monkeypatch, X, y, weight, bias, chunks):
    """The engine's counts, and how many pairs it left to the CPU's exact pass."""
    import redrep.core.accuracy as acc_mod

    seen = []
    original = acc_mod._exact_correct
    monkeypatch.setattr(acc_mod, "_exact_correct", lambda *a: seen.append(len(a[2])) or original(*a))
    got = engine_counts(X, y, weight, bias, chunks)
    monkeypatch.undo()
    np.testing.assert_array_equal(got, cpu_counts(X, y, weight, bias, chunks))
    return sum(seen)


def test_pairs_straddling_a_rounding_boundary_go_to_the_cpu(monkeypatch):
    """Logits on a float32 midpoint that decide the answer: the device's float64 interval cannot settle them."""
    # class 0's logit is 1 + 2^-24, exactly halfway between the float32 numbers 1 and 1 + 2^-23, and class 1's is
    # 1 + 2^-23: whether class 1 wins depends on which way class 0's logit rounds (to even: 1, so class 1 wins)
    X = np.array([[1.0, 2.0**-12]] * 10, dtype=np.float32)
    weight = np.array([[1.0, 2.0**-12], [1.0, 2.0**-11]], dtype=np.float32)
    bias = np.zeros(2, dtype=np.float32)
    y = np.array([0, 1] * 5)
    assert _exact_pairs_seen(monkeypatch, X, y, weight, bias, [np.array([0, 1])]) == 10


def test_a_straddling_logit_that_cannot_change_the_answer_stays_on_the_device(monkeypatch):
    """Class 0 on a midpoint, class 1 at 1: whichever way class 0 rounds, the answer is the same (ties to class 0)."""
    X = np.array([[1.0, 2.0**-12], [1.0, 2.0**-12]] * 5, dtype=np.float32)
    weight = np.array([[1.0, 2.0**-12], [1.0, 0.0]], dtype=np.float32)
    bias = np.zeros(2, dtype=np.float32)
    y = np.array([0, 1] * 5)
    # only the chunk of both neurons puts class 0 on the midpoint; many classes far below do not matter either
    many = np.vstack([weight, np.full((30, 2), -4.0, dtype=np.float32)])
    many[2:, 1] = 2.0**-12  # their logits -4 + 2^-24 * ..., on no midpoint but far below
    for w, b in ((weight, bias), (many, np.zeros(len(many), dtype=np.float32))):
        assert _exact_pairs_seen(monkeypatch, X, y, w, b, [np.array([0]), np.array([0, 1])]) == 0


def test_the_float32_settings_are_restored():
    before = (torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32)
    torch.set_float32_matmul_precision("high")
    try:
        with cuda.ieee_float32(torch):
            assert torch.get_float32_matmul_precision() == "highest"
            assert not torch.backends.cuda.matmul.allow_tf32
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cuda.matmul.allow_tf32 = before[1]


def test_gathers_where_gathering_is_cheaper():
    """Ten classes: only chunks far below W gather; a thousand: every chunk below W does."""
    assert cuda.gathers(16, 512, 10) and not cuda.gathers(128, 512, 10)
    assert cuda.gathers(1024, 2048, 1000) and not cuda.gathers(2048, 2048, 1000)


# --------------------------------------------------------------------------- regressions


def host_rows(F_test, F_train, chunks, alpha):
    gte, gtr = gram_matrix(F_test), gram_matrix(F_train)
    ho = HeldOut(gtr[0], gtr[1], gte[0], gte[1], gte[2])
    rows = []
    for c in chunks:
        s = chunk_regression(gte[0], gte[2], c, alpha)
        rows.append((s.r2, s.mean_corr, s.mean_corr_outside, chunk_r2_heldout(ho, c, alpha)))
    return np.array(rows), gte, gtr


def edge_set(seed, n=200):
    """Correlated neurons, exact copies (scaled), constant and all-zero columns, independent noise."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 10)) @ rng.normal(size=(10, 10))
    F = np.hstack([base, 2 * base[:, :5], np.zeros((n, 2)), np.full((n, 1), 3.0), rng.normal(size=(n, 6))])
    perm = rng.permutation(F.shape[1])
    return F[:, perm], (F + 0.1 * rng.normal(size=F.shape))[:, perm], rng


@pytest.mark.parametrize("alpha", [1e-8, 0.0, 1.0, 1e3])
@pytest.mark.parametrize("seed", [0, 1])
def test_regressions_match_the_cpu_on_edge_cases(monkeypatch, seed, alpha):
    """Copies inside and outside the chunk, constant columns, alpha = 0 (unresolved factors: the CPU's eigen path),
    chunk sizes 1..W with W - 1 and W; several chunks per batch and one per batch."""
    F, F_train, rng = edge_set(seed)
    W = F.shape[1]
    chunks = some_chunks(rng, W, (1, 2, 3, 5, 8, 13, 20, W - 1, W), reps=2)
    expected, gte, gtr = host_rows(F, F_train, chunks, alpha)
    paths = {"exact": 0, "reconstructed": 0, "cpu": 0}
    exact_rows, run = cuda._exact_rows, RegressionJob.run

    def counted_rows(*a):
        out = exact_rows(*a)
        paths["exact"] += 1
        paths["reconstructed"] += int(out[3].sum())
        return out

    monkeypatch.setattr(cuda, "_exact_rows", counted_rows)
    monkeypatch.setattr(RegressionJob, "run", lambda self, b: paths.__setitem__("cpu", len(b)) or run(self, b))
    for memory in (10**9, 1) if seed == 0 else (10**9,):
        got = cuda.chunk_regressions(gte, chunks, alpha, gtr, device="cpu", memory_bytes=memory)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
        np.testing.assert_allclose(got[:, [0, 3]], expected[:, [0, 3]], rtol=RTOL, atol=ATOL)  # R^2, held out
        np.testing.assert_allclose(got[:, 1:3], expected[:, 1:3], rtol=RTOL, atol=ATOL_COPIES)
    assert paths["exact"] > 0 and paths["reconstructed"] > 0  # copies and constant columns outside the chunk
    if alpha == 0.0:
        assert paths["cpu"] > 0  # copies inside the chunk: the factor is unresolved


@pytest.mark.parametrize("seed", [0, 1])
def test_copies_make_correlations_as_noisy_on_the_cpu(seed):
    """The CPU's own correlations move by about 1e-9 when the neurons of a set with copies are relabelled: the
    noise that ATOL_COPIES allows the engine (its values stay within it, above)."""
    F, _, rng = edge_set(seed)
    W = F.shape[1]
    perm = rng.permutation(W)
    inv = np.argsort(perm)
    G, Gp = gram_matrix(F), gram_matrix(F[:, perm])
    spread = 0.0
    for c in some_chunks(rng, W, (1, 2, 3, 5, 8, 13, 20, W - 1, W), reps=3):
        a, b = chunk_regression(G[0], G[2], c), chunk_regression(Gp[0], Gp[2], np.sort(inv[c]))
        spread = max(spread, abs(a.mean_corr - b.mean_corr))
    assert 1e-10 < spread < ATOL_COPIES


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_regressions_match_the_cpu_on_ordinary_sets(seed):
    rng = np.random.default_rng(seed)
    F = rng.normal(size=(300, 30)) @ rng.normal(size=(30, 30)) + 5.0
    F_train = F + 0.3 * rng.normal(size=F.shape)
    chunks = some_chunks(rng, 30, (1, 4, 7, 15, 29, 30), reps=4)
    expected, gte, gtr = host_rows(F, F_train, chunks, 1e-8)
    got = cuda.chunk_regressions(gte, chunks, 1e-8, gtr, device="cpu")
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


def test_a_test_set_of_constant_columns_is_refused():
    F = np.ones((20, 4))
    with pytest.raises(RedrepError, match=r"^features_test: expected neurons with nonzero variance"):
        cuda.chunk_regressions(gram_matrix(F), [np.array([0])], device="cpu")


# --------------------------------------------------------------------------- the whole analysis


def engine_fit(analysis, repset, **kw):
    """The engine's values for the chunks that ``analysis`` draws (the same seed, sizes and repetitions)."""
    draws = ChunkDraws.draw(
        repset.width, analysis.chunk_sizes_, analysis.acc_rep, analysis.r2_rep, analysis.random_state
    )
    for w in draws.sizes:
        np.testing.assert_array_equal(draws.acc_chunks[w], analysis.acc_chunks_[w])
    return cuda.analyze(
        repset,
        draws,
        device="cpu",
        alpha=analysis.alpha,
        block_rows=analysis.block_rows,
        heldout=analysis.heldout,
        **kw,
    )


@pytest.mark.parametrize("heldout", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_the_whole_analysis_matches_the_cpu(seed, heldout):
    rs = random_set(seed, n_train=600, n_test=250, width=32, n_classes=6)
    cpu = ChunkAnalysis(acc_rep=6, r2_rep=5, random_state=seed, device="cpu", heldout=heldout).fit(rs)
    values, timings = engine_fit(cpu, rs)
    assert set(values) == set(cpu.values_)
    for key, v in cpu.values_.items():
        if key[0] == "accuracy":
            np.testing.assert_array_equal(values[key], v)
        else:
            np.testing.assert_allclose(values[key], v, rtol=RTOL, atol=ATOL, equal_nan=True)
    parts = {"startup", "gram_test", "accuracy_test", "accuracy_train", "regression_test", "upload"}
    assert parts <= set(timings) and ("gram_train" in timings) == heldout


def test_memmapped_float64_features_match_the_cpu(tmp_path):
    """A file-backed set, features stored as float64: the Gram matrices read them as they are, the counts as float32."""
    rs = random_set(3, n_train=500, n_test=200, width=16, n_classes=3)
    wide = RepresentationSet.from_arrays(
        rs.features_train.astype(np.float64) + 1e-9,
        rs.features_test.astype(np.float64),
        rs.labels_train,
        rs.labels_test,
        rs.weight,
        rs.bias,
    )
    wide.save(tmp_path / "set")
    mm = RepresentationSet.load(tmp_path / "set")
    assert isinstance(mm.features_train, np.memmap) and mm.features_train.dtype == np.float64
    cpu = ChunkAnalysis(acc_rep=4, r2_rep=3, random_state=1, device="cpu").fit(mm)
    values, _ = engine_fit(cpu, mm)
    for key, v in cpu.values_.items():
        np.testing.assert_allclose(values[key], v, rtol=RTOL if key[0] != "accuracy" else 0, atol=ATOL)


def test_nan_is_reported_with_the_cpus_line(tmp_path):
    """The same file, row and column as the CPU path's error."""
    rs = random_set(0, n_train=300, n_test=100, width=12)
    rs.save(tmp_path / "set")
    arr = np.load(tmp_path / "set" / "features_train.npy", mmap_mode="r+")
    arr[123, 4] = np.nan
    arr[200, 1] = np.inf
    arr.flush()
    del arr
    mm = RepresentationSet.load(tmp_path / "set")
    with pytest.raises(RedrepError) as cpu_error:
        ChunkAnalysis(acc_rep=2, r2_rep=2, device="cpu").fit(mm)
    cpu = ChunkAnalysis(acc_rep=2, r2_rep=2, device="cpu")
    cpu.fit(random_set(0, n_train=300, n_test=100, width=12))  # the draws only
    with pytest.raises(RedrepError) as engine_error:
        engine_fit(cpu, mm)
    line = str(engine_error.value)
    assert line.startswith(str(cpu_error.value).split(" (")[0])
    assert "\n" not in line
    assert line.endswith(
        "features_train.npy: expected finite values, found nan at index (123, 4) (2 non-finite values in this block)"
    )


def test_a_file_truncated_while_mapped_is_named(tmp_path):
    """A features file cut short after the set was opened: the CPU's one line, not SIGBUS (in a child process)."""
    import procs

    random_set(0, n_train=4000, n_test=3000, width=24).save(tmp_path / "set")
    code = (
        "import os, sys\nfrom redrep.storage.repset import RepresentationSet\n"
        "from redrep.core import cuda\nfrom redrep.core.analysis import ChunkDraws\n"
        "from redrep.core.validation import RedrepError\n"
        "rs = RepresentationSet.load(sys.argv[1])\n"
        "os.truncate(os.path.join(sys.argv[1], 'features_test.npy'), 4096)\n"
        "draws = ChunkDraws.draw(24, [1, 24], 2, 2, 0)\n"
        "try:\n    cuda.analyze(rs, draws, device='cpu')\nexcept RedrepError as exc:\n    print(exc)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "set")], env=procs.env(), capture_output=True, text=True
    )
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    f = tmp_path / "set" / "features_test.npy"
    assert r.stdout.startswith(f"{f}: the file was truncated while it was read (rows up to 3000 need 288,128 bytes")
    assert r.stdout.count("\n") == 1


# --------------------------------------------------------------------------- auto


def test_auto_on_a_small_set_stays_on_the_cpu_without_torch(tmp_path):
    """The CPU's estimate is below any GPU start-up: decided without importing torch, and recorded."""
    random_set(0).save(tmp_path / "set")
    code = (
        "import json, sys\n"
        "from redrep.cli import main\n"
        f"sys.argv = ['redrep', 'analyze', '--repr', {str(tmp_path / 'set')!r}, '--acc-rep', '3', '-q']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        f"doc = json.load(open({str(tmp_path / 'set' / 'results' / 'results.json')!r}))\n"
        "print(doc['params']['device'], doc['device_choice']['reason'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("cpu the CPU's estimate (")
    assert "below the GPU's start-up" in out
