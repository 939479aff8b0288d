"""The one compiled module: the router's scan of its commonest HTTP heads and messages (see
waka/router/_heads.c). Optional: without a C compiler waka installs and runs the same,
with the router parsing every head in Python."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "waka.router._heads",
            ["waka/router/_heads.c"],
            extra_compile_args=["-O2", "-Wall"],
            optional=True,
        )
    ]
)
