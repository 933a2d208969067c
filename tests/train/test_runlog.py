"""binsr.train.runlog.read_val_curve: the validated rows of a log.csv; a hostile log is one line."""

import pytest

from binsr.errors import UsageError
from binsr.train.runlog import CSV_FIELDS, read_val_curve

HEADER = ",".join(CSV_FIELDS) + "\n"


def test_val_curve_keeps_validated_rows_only(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text(HEADER + "50,0.1,0.001,1.0,,\n1000,0.1,0.001,1.0,31.25,0.88\n1050,0.1,0.001,1.0,,\n"
                            "2000,0.1,0.001,1.0,31.5,0.89\n")
    assert read_val_curve(log) == [(1000, 31.25), (2000, 31.5)]
    assert read_val_curve(tmp_path / "missing.csv") == []
    (tmp_path / "empty.csv").write_text("")
    assert read_val_curve(tmp_path / "empty.csv") == []


@pytest.mark.parametrize("body, fragment", [
    (HEADER + "x,0.1,0.001,1.0,31.2,0.8\n", "malformed row (ValueError"),
    (HEADER + "1000,0.1,0.001,1.0,high,0.8\n", "malformed row (ValueError"),
    ("a,b\n1,2\n", "is not a binsr log.csv"),
    (b"\xd2\x80\xff", "is not UTF-8 text"),
])
def test_hostile_logs_are_one_line_errors(tmp_path, body, fragment):
    log = tmp_path / "log.csv"
    log.write_bytes(body) if isinstance(body, bytes) else log.write_text(body)
    with pytest.raises(UsageError) as info:
        read_val_curve(log)
    assert fragment in str(info.value) and "\n" not in str(info.value)
