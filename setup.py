"""The one compiled part of redrep: the fused fast pass of the chunk accuracies (src/redrep/core/_fastpass.c).

Everything else is in pyproject.toml. The extension is optional: where it cannot be compiled (no C
compiler, say), the install goes on and redrep.core.accuracy uses its numpy fast pass, with the same counts.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "redrep.core._fastpass",
            sources=["src/redrep/core/_fastpass.c"],
            depends=["src/redrep/core/_fastpass_body.h"],
            # no -ffast-math: the error bound assumes IEEE float32 arithmetic (contracted multiply-adds are fine)
            extra_compile_args=["-O3"],
            optional=True,
        )
    ]
)
