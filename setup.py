"""The compiled part of lowdim: the CPU Walsh-Hadamard transform (src/lowdim/_fwht.c).

Everything else is in pyproject.toml. The extension is optional: where no C compiler is found,
lowdim installs without it and transforms with torch's matrix products instead.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "lowdim._fwht",
            ["src/lowdim/_fwht.c"],
            extra_compile_args=["-O3", "-pthread"],
            extra_link_args=["-pthread"],
            optional=True,
        )
    ]
)
