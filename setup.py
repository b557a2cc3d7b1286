"""The compiled part of lowdim: its CPU kernels (src/lowdim/_native.c: the Walsh-Hadamard
transform, Fastfood's scaled permutation and RBD's signed scatter).

Everything else is in pyproject.toml. The extension is optional: where no C compiler is found,
lowdim installs without it and runs the same products with torch's operations instead.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "lowdim._native",
            ["src/lowdim/_native.c"],
            extra_compile_args=["-O3", "-pthread"],
            extra_link_args=["-pthread"],
            optional=True,
        )
    ]
)
