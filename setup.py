"""Build hook of meshlens: the optional C wire scanner of OTLP span ingest.

Everything else about the package is in pyproject.toml. ``ingest/_otlpscan.c`` is compiled
when a C compiler is available (``optional=True``: a failed build leaves the pure numpy
scanner of ``ingest/otlp_columnar.py``, which gives the same results, only slower).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ingest._otlpscan",
            sources=["ingest/_otlpscan.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        ),
    ],
)
