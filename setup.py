"""The one compiled part of redrep: the fused fast pass of the chunk accuracies (src/redrep/core/_fastpass.c),
and docs/method.md copied into the package (the pages link to it, rendered beside them).

Everything else is in pyproject.toml. The extension is optional: where it cannot be compiled (no C
compiler, say), the install goes on and redrep.core.accuracy uses its numpy fast pass, with the same counts.

It uses no Python API, so it is built once for the stable ABI of Python 3.10 (abi3): one build serves
every later Python of the platform. Its x86-64-v3 (AVX2) and v4 (AVX-512) copies need GCC 11 or newer;
with an older GCC or another compiler it holds only the plain x86-64 copy, and both this build and
redrep at run time (where the CPU could run a faster copy) say so.
"""

import re
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

#: The method document, shipped as package data of redrep.report (an editable install reads the checkout's).
METHOD_DOC = Path("docs") / "method.md"

#: The oldest GCC that compiles the arch=x86-64-v3/v4 copies.
GCC_FOR_LEVELS = 11


def gcc_major(compiler_cmd) -> int | None:
    """The major version of a GCC compiler command, or None for another compiler (or one that does not answer)."""
    try:
        out = subprocess.run([*compiler_cmd, "--version"], capture_output=True, text=True, timeout=30).stdout
        ver = subprocess.run([*compiler_cmd, "-dumpversion"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    if "clang" in out.lower() or not re.match(r"\d+", ver.strip()):
        return None
    return int(re.match(r"\d+", ver.strip()).group())


class BuildFastPass(build_ext):
    """build_ext that warns, instead of staying silent, where the compiler cannot build the faster copies."""

    def build_extensions(self):
        cmd = list(getattr(self.compiler, "compiler_so", None) or getattr(self.compiler, "compiler", None) or ["cc"])
        major = gcc_major(cmd[:1])
        if major is None or major < GCC_FOR_LEVELS:
            found = "not GCC" if major is None else f"GCC {major}"
            print(
                f"redrep: the compiler {cmd[0]} is {found}: the compiled fast pass gets its plain x86-64 copy only; "
                f"its AVX2 and AVX-512 copies need GCC >= {GCC_FOR_LEVELS} (the accuracies are the same, slower)",
                file=sys.stderr,
            )
        super().build_extensions()


class BuildPyWithMethod(build_py):
    """build_py that also copies docs/method.md to redrep/report/method.md, so that an installed wheel has it."""

    def run(self):
        super().run()
        if not METHOD_DOC.is_file():
            print(f"redrep: no {METHOD_DOC}: the pages' method.html will say it is missing", file=sys.stderr)
            return
        target = Path(self.build_lib) / "redrep" / "report" / "method.md"
        self.mkpath(str(target.parent))
        self.copy_file(str(METHOD_DOC), str(target))

    def get_outputs(self, include_bytecode=True):
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib) / "redrep" / "report" / "method.md")]


setup(
    cmdclass={"build_ext": BuildFastPass, "build_py": BuildPyWithMethod},
    ext_modules=[
        Extension(
            "redrep.core._fastpass",
            sources=["src/redrep/core/_fastpass.c"],
            depends=["src/redrep/core/_fastpass_body.h"],
            # no -ffast-math: the error bound assumes IEEE float32 arithmetic (contracted multiply-adds are fine)
            extra_compile_args=["-O3"],
            py_limited_api=True,  # Py_LIMITED_API is set in the source
            optional=True,
        )
    ],
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
