"""binsr.errors: every BinsrError is one printable line, whatever text a hostile file gave it."""

import unicodedata

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from binsr.errors import BinsrError, UsageError, finite_output


@given(st.text())
def test_an_error_is_one_line_without_control_characters(text):
    for cls in (BinsrError, UsageError):
        shown = str(cls(f"{text}: bad"))
        assert len(shown.splitlines()) == 1
        assert not any(unicodedata.category(c) == "Cc" for c in shown)


def test_escapes_are_readable_and_printable_text_is_kept():
    assert str(BinsrError("a\nb\tc\x1b[31m\u2028 é 漢")) == "a\\nb\\tc\\x1b[31m\\u2028 é 漢"
    assert UsageError("x").exit_code == 2 and BinsrError("x").exit_code == 1


def test_finite_output_passes_finite_and_refuses_nan_or_inf():
    y = np.ones((2, 3), np.float32)
    assert finite_output(y, "m") is y
    for bad in (np.nan, np.inf, -np.inf):
        y[1, 2] = bad
        with pytest.raises(BinsrError, match="m: the network's output holds NaN or infinite values"):
            finite_output(y, "m")
