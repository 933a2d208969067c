"""Build hook for the compiled deployment engine (binsr.deploy._engine); metadata lives in pyproject.toml.

The extension is optional: without a working C++ compiler the package still installs and
binsr.deploy falls back to its NumPy path.
"""
from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

engine = Pybind11Extension(
    "binsr.deploy._engine",
    ["src/binsr/deploy/csrc/engine.cpp"],
    include_dirs=["src/binsr/deploy/csrc"],
    depends=["src/binsr/deploy/csrc/engine.h", "src/binsr/deploy/csrc/rows.inc"],
    cxx_std=17,
    extra_compile_args=["-O3", "-fno-math-errno", "-fno-trapping-math"],  # lets the FP helper loops vectorise
    extra_link_args=["-pthread"],
    optional=True,
)

setup(ext_modules=[engine], cmdclass={"build_ext": build_ext})
