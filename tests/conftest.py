"""Shared fixtures. ``data_root``: the benchmark/training data, or skip when it is absent."""

from pathlib import Path

import pytest

from binsr.data.paths import data_root as find_data_root
from binsr.errors import UsageError


@pytest.fixture(scope="session")
def data_root() -> Path:
    try:
        return find_data_root()
    except UsageError as exc:
        pytest.skip(f"no data: {exc}")
