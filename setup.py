"""Build hook for the compiled deployment engine (binsr.deploy); metadata lives in pyproject.toml."""
from setuptools import setup

setup()
