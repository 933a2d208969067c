"""Data root resolution: flag, then BINSR_DATA, then ../shared/data; clear one-line errors."""

from pathlib import Path

import pytest

from binsr.data import data_root
from binsr.errors import UsageError


def test_flag_wins_over_environment(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.setenv("BINSR_DATA", str(tmp_path / "b"))
    assert data_root(str(tmp_path / "a")) == tmp_path / "a"
    assert data_root() == tmp_path / "b"


@pytest.mark.parametrize("via", ["flag", "env"])
def test_missing_root_is_a_one_line_usage_error(tmp_path, monkeypatch, via):
    missing = tmp_path / "nope"
    monkeypatch.setenv("BINSR_DATA", str(missing))
    with pytest.raises(UsageError) as err:
        data_root(str(missing) if via == "flag" else None)
    message = str(err.value)
    assert str(missing) in message and "--data-root" in message and "BINSR_DATA" in message
    assert "\n" not in message


def test_a_file_as_root_says_so(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(UsageError, match="a.png is not a folder; set it with --data-root"):
        data_root(str(tmp_path / "a.png"))


def test_default_is_shared_data_next_to_the_project(monkeypatch):
    monkeypatch.delenv("BINSR_DATA", raising=False)
    project = Path(__file__).resolve().parents[2]
    expected = project.parent / "shared" / "data"
    if not expected.is_dir():
        with pytest.raises(UsageError, match="shared"):
            data_root()
    else:
        assert data_root() == expected.resolve()
