"""The thread-friendly BLAS/LAPACK calls give exactly what SciPy's wrappers give (their speed: benchmarks/).

Also the Gram matrix's reused block buffer.
"""

import numpy as np
import pytest
import scipy.linalg.lapack
from scipy.linalg.blas import dgemm, dsyrk, dtrsm

from redrep.core import _lapack
from redrep.core.validation import RedrepError


def _spd(rng, w):
    x = rng.standard_normal((w + 5, w))
    return x.T @ x + np.eye(w)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("w, k", [(1, 3), (7, 1), (33, 20), (64, 130)])
def test_same_bits_as_scipy(seed, w, k):
    rng = np.random.default_rng(seed)
    A = _spd(rng, w)
    L_ref, info_ref = scipy.linalg.lapack.dpotrf(A.copy(), lower=1, clean=0)
    L, info = _lapack.potrf(A.copy())  # C-ordered, read as its (equal) transpose
    assert info == info_ref == 0
    assert np.array_equal(np.tril(L), np.tril(L_ref))
    B = np.asfortranarray(rng.standard_normal((w, k)))
    B0 = B.copy()
    for trans in (False, True):
        ref = dtrsm(1.0, L_ref, B, lower=1, trans_a=int(trans))
        assert np.array_equal(_lapack.trsm(L, B, trans=trans), ref)
    assert np.array_equal(B, B0)  # the input is left untouched
    assert np.array_equal(_lapack.syrk(B), dsyrk(1.0, B))
    assert np.array_equal(np.tril(_lapack.syrk(B), -1), np.zeros((w, w)))
    inv, info = _lapack.trtri(L)
    inv_ref, info_ref = scipy.linalg.lapack.dtrtri(L_ref, lower=1)
    assert info == info_ref == 0
    assert np.array_equal(np.tril(inv), np.tril(inv_ref))
    assert np.array_equal(_lapack.trtri(L, zero_upper=True)[0], np.tril(inv_ref))
    np.testing.assert_allclose(np.tril(inv) @ np.tril(L), np.eye(w), atol=1e-10)
    Lt = np.asfortranarray(rng.standard_normal((k, w)))
    Rt = np.asfortranarray(rng.standard_normal((k, 2 * w)))
    C = np.asfortranarray(rng.standard_normal((3 * w, 4 * w)))[:w, 1 : 2 * w + 1]  # a strided slice, as in use
    C0 = C.copy()
    out = _lapack.gemm_update(C, Lt, Rt)
    assert np.array_equal(out, dgemm(-1.0, Lt, Rt, beta=1.0, c=C, trans_a=1))
    assert np.array_equal(C, C0)


def test_not_positive_definite_reports_info():
    A = -np.eye(4)
    assert _lapack.potrf(A)[1] > 0
    assert scipy.linalg.lapack.dpotrf(-np.eye(4), lower=1)[1] == _lapack.potrf(-np.eye(4))[1]


def test_rejects_c_ordered_or_other_dtype():
    L = np.asfortranarray(np.eye(3))
    with pytest.raises(ValueError, match="Fortran-ordered float64"):
        _lapack.trsm(L, np.ones((3, 2)))  # C-ordered right-hand side
    with pytest.raises(ValueError, match="Fortran-ordered float64"):
        _lapack.syrk(np.ones((3, 2), dtype=np.float32, order="F"))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("n, block_rows", [(10, 3), (7, 7), (5, 16)])
def test_iter_blocks_reused_buffer_yields_the_same_blocks(seed, n, block_rows, tmp_path):
    """The Gram matrix's reused float64 buffer: the same blocks as fresh copies, from memory and from a memory map."""
    from redrep.core.blocks import iter_blocks
    from redrep.core.regression import gram_matrix

    x = np.random.default_rng(seed).standard_normal((n, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    for arr in (x, np.load(tmp_path / "x.npy", mmap_mode="r")):
        fresh = [(s, b.copy()) for s, b in iter_blocks(arr, block_rows, np.float64)]
        reused = [(s, b.copy()) for s, b in iter_blocks(arr, block_rows, np.float64, reuse=True)]
        assert [s for s, _ in fresh] == [s for s, _ in reused] == list(range(0, n, block_rows))
        for (_, a), (_, b) in zip(fresh, reused):
            assert np.array_equal(a, b)
        xc = x.astype(np.float64) - x.astype(np.float64).mean(axis=0)
        np.testing.assert_allclose(gram_matrix(arr, block_rows=block_rows)[0], xc.T @ xc, rtol=1e-12, atol=1e-12)
    bad = x.copy()
    bad[n - 1, 2] = np.nan
    with pytest.raises(RedrepError, match=rf"features: expected finite values, found nan at index \({n - 1}, 2\)"):
        list(iter_blocks(bad, block_rows, np.float64, reuse=True))
