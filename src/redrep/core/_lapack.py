"""The few BLAS and LAPACK routines of the chunk regression, callable from several threads at once.

SciPy's ``scipy.linalg.blas`` and ``scipy.linalg.lapack`` wrappers hold the
global interpreter lock for most of the call (a pure-Python thread beside a
long ``dtrsm``, ``dgemm`` or ``dsyrk`` ran at a sixth to a quarter of its
speed), so chunks solved in a thread pool mostly run one routine at a time.
The same routines of SciPy's own BLAS and LAPACK (the function pointers SciPy
publishes in ``scipy.linalg.cython_blas`` and ``scipy.linalg.cython_lapack``)
are called here through :mod:`ctypes`, which releases the lock during the
call. The library, the routine and its arguments are those of the SciPy
wrappers, so the results are bit for bit theirs.

The analysis runs its chunks in worker processes (:mod:`redrep.core.parallel`);
where it runs them in threads instead, these wrappers let their solves
overlap. The two extension modules that publish the pointers are loaded from
their files, which spares the 0.15 s of importing ``scipy.linalg``.

Every function takes and returns Fortran-ordered float64 arrays and, like
the SciPy wrapper it replaces, leaves its inputs untouched unless told.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.machinery
import importlib.util
import sys
from functools import cache
from pathlib import Path

import numpy as np

_P = ctypes.c_void_p


@cache
def _capi(module: str) -> dict:
    """The ``__pyx_capi__`` of ``scipy.linalg.cython_<module>`` (``blas`` or ``lapack``).

    Importing ``scipy.linalg`` takes about 0.15 s (it pulls in much of
    SciPy's array-API layer); these two extension modules, loaded from their
    files, take 0.03 s. The module is registered under its own name, so a
    later ``import scipy.linalg`` shares it; should the direct load fail, the
    ordinary import is used.
    """
    name = f"scipy.linalg.cython_{module}"
    if name not in sys.modules and "scipy.linalg" not in sys.modules:
        try:
            scipy_dir = Path(importlib.util.find_spec("scipy").origin).parent
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                path = scipy_dir / "linalg" / f"cython_{module}{suffix}"
                if path.is_file():
                    loader = importlib.machinery.ExtensionFileLoader(name, str(path))
                    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
                    mod = importlib.util.module_from_spec(spec)
                    loader.exec_module(mod)
                    sys.modules.setdefault(name, mod)
                    return sys.modules[name].__pyx_capi__
        except (ImportError, OSError, AttributeError):
            pass
    return importlib.import_module(name).__pyx_capi__


@cache
def _routine(module: str, name: str, n_args: int):
    capsule = _capi(module)[name]
    # own prototypes: setting restype on ctypes.pythonapi's shared attributes would change them for everyone
    get_name = ctypes.PYFUNCTYPE(ctypes.c_char_p, ctypes.py_object)(("PyCapsule_GetName", ctypes.pythonapi))
    get_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
        ("PyCapsule_GetPointer", ctypes.pythonapi)
    )
    address = get_pointer(capsule, get_name(capsule))
    # a CFUNCTYPE prototype releases the interpreter lock while the routine runs
    return ctypes.CFUNCTYPE(None, *([_P] * n_args))(address)


def preload() -> None:
    """Load the BLAS and LAPACK behind these routines now (before worker processes are forked from this one)."""
    _capi("blas")
    _capi("lapack")


def _c(flag: bytes):
    return ctypes.c_char_p(flag)


def _i(value: int):
    return ctypes.byref(ctypes.c_int(int(value)))


def _d(value: float):
    return ctypes.byref(ctypes.c_double(float(value)))


def _fortran(a: np.ndarray) -> np.ndarray:
    if a.dtype != np.float64 or not a.flags.f_contiguous:
        raise ValueError("expected a Fortran-ordered float64 array")
    return a


def _ptr(a: np.ndarray):
    return ctypes.c_void_p(a.ctypes.data)


def _ld(a: np.ndarray) -> int:
    return max(1, a.shape[0])


def trsm(L: np.ndarray, B: np.ndarray, *, trans: bool = False) -> np.ndarray:
    """``L^-1 B`` (``L^-T B`` with ``trans``) for lower-triangular ``L`` (w, w) and ``B`` (w, k); a new array."""
    L = _fortran(L)
    X = np.array(_fortran(B), order="F", copy=True)
    m, k = X.shape
    if m and k:
        _routine("blas", "dtrsm", 11)(
            _c(b"L"), _c(b"L"), _c(b"T" if trans else b"N"), _c(b"N"), _i(m), _i(k), _d(1.0), _ptr(L), _i(_ld(L)),
            _ptr(X), _i(_ld(X)),
        )  # fmt: skip
    return X


def gemm_update(C: np.ndarray, A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``C - A^T B`` for ``A`` (k, m), ``B`` (k, n), ``C`` (m, n); a new array."""
    A, B = _fortran(A), _fortran(B)
    out = np.array(C, dtype=np.float64, order="F", copy=True)
    m, n = out.shape
    k = A.shape[0]
    if m and n:
        _routine("blas", "dgemm", 13)(
            _c(b"T"), _c(b"N"), _i(m), _i(n), _i(k), _d(-1.0), _ptr(A), _i(_ld(A)), _ptr(B), _i(_ld(B)), _d(1.0),
            _ptr(out), _i(_ld(out)),
        )  # fmt: skip
    return out


def syrk(B: np.ndarray) -> np.ndarray:
    """The upper triangle of ``B B^T`` for ``B`` (w, k), its strict lower triangle zero; a new (w, w) array."""
    B = _fortran(B)
    w, k = B.shape
    out = np.zeros((w, w), order="F")
    if w:
        _routine("blas", "dsyrk", 10)(
            _c(b"U"), _c(b"N"), _i(w), _i(k), _d(1.0), _ptr(B), _i(_ld(B)), _d(0.0), _ptr(out), _i(w)
        )
    return out


def syrk_update(C: np.ndarray, A: np.ndarray) -> np.ndarray:
    """``C += A A^T`` on the upper triangle of ``C`` (w, w), in place, for ``A`` (w, k); returns ``C``."""
    C, A = _fortran(C), _fortran(A)
    w, k = A.shape
    if w and k:
        _routine("blas", "dsyrk", 10)(
            _c(b"U"), _c(b"N"), _i(w), _i(k), _d(1.0), _ptr(A), _i(_ld(A)), _d(1.0), _ptr(C), _i(_ld(C))
        )
    return C


def potrf(A: np.ndarray) -> tuple[np.ndarray, int]:
    """Cholesky factor of a symmetric positive definite ``A`` (w, w), in place: ``(L, info)``.

    ``L`` shares ``A``'s memory; its lower triangle holds the factor, its
    upper one is left as ``A``'s. A C-ordered ``A`` is read as its transpose,
    which a symmetric matrix equals.
    """
    if A.flags.c_contiguous and not A.flags.f_contiguous:
        A = A.T
    A = _fortran(A)
    w = A.shape[0]
    info = ctypes.c_int(0)
    if w:
        _routine("lapack", "dpotrf", 5)(_c(b"L"), _i(w), _ptr(A), _i(w), ctypes.byref(info))
    return A, int(info.value)


def trtri(L: np.ndarray, *, zero_upper: bool = False) -> tuple[np.ndarray, int]:
    """Inverse of a lower-triangular ``L`` (w, w): ``(Linv, info)``, the upper triangle left as ``L``'s (or zeros)."""
    L = _fortran(L)
    # np.triu of the C-ordered transpose keeps L's lower triangle in one pass and stays Fortran-ordered
    out = np.triu(L.T).T if zero_upper else np.array(L, order="F", copy=True)
    w = out.shape[0]
    info = ctypes.c_int(0)
    if w:
        _routine("lapack", "dtrtri", 6)(_c(b"L"), _c(b"N"), _i(w), _ptr(out), _i(w), ctypes.byref(info))
    return out, int(info.value)
