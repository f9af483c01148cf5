"""The compiled fast pass of the chunk accuracies (redrep/core/_fastpass.c) is built and loads."""

from __future__ import annotations

import shutil
import sysconfig

import numpy as np
import pytest

import redrep.core.accuracy as acc_mod
from repsets import random_set


def test_the_compiled_pass_is_built_where_a_compiler_is():
    """setup.py builds it as an optional extension; where a C compiler exists, a missing build is a fault."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if not shutil.which(cc):
        pytest.skip(f"no C compiler ({cc}) here: the numpy fast pass serves")
    lib = acc_mod.fastpass_library()
    assert lib is not None, "redrep.core._fastpass was not built: reinstall with `pip install -e .`"
    assert lib.redrep_fastpass_level() in (0, 3, 4)
    rs = random_set(1, n_train=50, width=8)
    plan = acc_mod._Plan(rs.weight, rs.bias, [np.arange(4)])
    assert plan.fused


def test_a_level_this_cpu_lacks_is_refused(monkeypatch):
    lib = acc_mod.fastpass_library()
    if lib is None:
        pytest.skip("the compiled fast pass is not built here")
    rs = random_set(2, n_train=40, width=8)
    plan = acc_mod._Plan(rs.weight, rs.bias, [np.arange(4)])
    monkeypatch.setattr(acc_mod, "FASTPASS_LEVEL", 5)  # no such level
    with pytest.raises(ValueError, match="level 5"):
        acc_mod._block_counts(plan, rs.features_train, rs.labels_train)


def test_a_build_of_another_calling_convention_is_not_used():
    """An extension left from an older source is refused, with the reason, rather than called wrongly."""
    lib, problem = acc_mod._load_fastpass()
    if lib is None:
        pytest.skip("the compiled fast pass is not built here")
    assert problem is None
    lib, problem = acc_mod._load_fastpass(abi=acc_mod._FASTPASS_ABI + 1)
    assert lib is None
    abi = acc_mod._FASTPASS_ABI
    assert f"expected the compiled fast pass of calling convention {abi + 1}, found {abi}" in problem
    assert "pip install -e ." in problem


def test_the_compiled_pass_is_one_build_for_every_python():
    """It uses no Python API, so it is built for the stable ABI (abi3): the same file serves Python 3.10 and later."""
    lib = acc_mod.fastpass_library()
    if lib is None:
        pytest.skip("the compiled fast pass is not built here")
    assert lib._name.endswith(".abi3.so"), lib._name  # the file in use (a stale per-version one is passed over)


def test_a_build_without_the_faster_copies_says_so(tmp_path):
    """A compiler older than GCC 11 builds the plain copy only: redrep warns where this CPU would run a faster one."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if not shutil.which(cc):
        pytest.skip(f"no C compiler ({cc}) here")
    import subprocess
    from pathlib import Path

    src = Path(acc_mod.__file__).with_name("_fastpass.c")
    out = tmp_path / "base_only.so"
    include = sysconfig.get_paths()["include"]
    cmd = [cc, "-O1", "-shared", "-fPIC", "-DREDREP_FASTPASS_BASE_ONLY", f"-I{include}", str(src), "-o", str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    lib, problem = acc_mod._load_fastpass(path=str(out))
    assert problem is None and lib is not None
    assert lib.redrep_fastpass_has_levels() == 0
    assert lib.redrep_fastpass_level() == 0  # the plain copy runs, whatever the CPU
    why = acc_mod._slower_copy_only(lib)
    if lib.redrep_cpu_level() >= 3:
        assert "without its x86-64-v3/v4 copies (they need GCC 11 or newer)" in why
    else:
        assert why is None  # a CPU without AVX2 loses nothing
    # the installed build holds the faster copies where GCC >= 11 built it, and then says nothing
    installed = acc_mod.fastpass_library()
    if installed is not None and installed.redrep_fastpass_has_levels():
        assert acc_mod._slower_copy_only(installed) is None


def test_a_stale_build_beside_the_current_one_is_passed_over(tmp_path, monkeypatch):
    """An install upgraded in place keeps an older per-version build that Python finds first: the current serves."""
    lib = acc_mod.fastpass_library()
    if lib is None:
        pytest.skip("the compiled fast pass is not built here")
    import importlib.util
    from pathlib import Path

    good = Path(importlib.util.find_spec("redrep.core._fastpass").origin)
    stale = tmp_path / "stale.so"
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if not shutil.which(cc):
        pytest.skip(f"no C compiler ({cc}) here")
    import subprocess

    stale_src = tmp_path / "stale.c"
    stale_src.write_text("int redrep_fastpass_abi(void) { return 1; }\n")
    subprocess.run([cc, "-shared", "-fPIC", str(stale_src), "-o", str(stale)], check=True, capture_output=True)
    monkeypatch.setattr(acc_mod, "_fastpass_files", lambda: [str(stale), str(good)])
    acc_mod.fastpass_library.cache_clear()
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no warning: a usable build was found
            found = acc_mod.fastpass_library()
        assert found is not None and found._name == str(good)
        monkeypatch.setattr(acc_mod, "_fastpass_files", lambda: [str(stale)])
        acc_mod.fastpass_library.cache_clear()
        with pytest.warns(RuntimeWarning, match="calling convention 2, found 1"):
            assert acc_mod.fastpass_library() is None
    finally:
        acc_mod.fastpass_library.cache_clear()


def _compile(tmp_path, source):
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if not shutil.which(cc):
        pytest.skip(f"no C compiler ({cc}) here")
    import subprocess

    src, lib = tmp_path / "lib.c", tmp_path / "lib.so"
    src.write_text(source)
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    return lib


@pytest.mark.parametrize("kind", ["garbage", "empty", "missing symbol"])
def test_every_unusable_library_warns_the_same_way(tmp_path, monkeypatch, kind):
    """A garbage or empty library fell back silently; one of the right convention lacking a function raised
    AttributeError. Each is now a warning naming the file, and the numpy pass serves (device="cpu")."""
    if kind == "missing symbol":  # the convention's number, without redrep_block_counts_at
        lib = _compile(tmp_path, f"int redrep_fastpass_abi(void) {{ return {acc_mod._FASTPASS_ABI}; }}\n")
        expected = r"with all its functions, found it without one \(.*redrep_block_counts_at"
    else:
        lib = tmp_path / "_fastpass.so"
        lib.write_bytes(b"" if kind == "empty" else b"\x7fELF not really a library" * 10)
        expected = "could not load it"
    monkeypatch.setattr(acc_mod, "_fastpass_files", lambda: [str(lib)])  # found where the extension would be
    acc_mod.fastpass_library.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match=rf"^{lib}: expected the compiled fast pass.* {expected}.*numpy pass"):
            assert acc_mod.fastpass_library() is None
        assert acc_mod.fastpass_name("cpu") == "numpy"
        rs = random_set(3, n_train=40, width=8)
        got = acc_mod.chunk_accuracy(rs.features_test, rs.labels_test, rs.weight, rs.bias, [np.arange(8)])
        assert got[0] == np.mean((rs.features_test @ rs.weight.T + rs.bias).argmax(1) == rs.labels_test)
    finally:
        acc_mod.fastpass_library.cache_clear()
