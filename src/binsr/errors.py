"""User-facing errors: the CLI prints them as one line and exits with their code."""

from __future__ import annotations

import numpy as np


#: control characters (C0, DEL, C1) and Unicode's line and paragraph separators as escapes: a name
#: read from a hostile file may hold a newline or a terminal escape sequence, and an error is one
#: printable line wherever it is shown
_ESCAPES = ({c: f"\\x{c:02x}" for c in (*range(32), *range(127, 160))} | {10: "\\n", 13: "\\r", 9: "\\t"}
            | {0x2028: "\\u2028", 0x2029: "\\u2029"})


class BinsrError(Exception):
    """An error caused by the user's input (files, options, data); printed without a traceback,
    as one line (its text's control characters escaped)."""

    exit_code = 1

    def __init__(self, *args: object) -> None:
        super().__init__(*(a.translate(_ESCAPES) if isinstance(a, str) else a for a in args))


class UsageError(BinsrError):
    """Wrong options or missing data folders: exit code 2."""

    exit_code = 2


def finite_output(y: np.ndarray, model: str) -> np.ndarray:
    """``y``, a network's output, if every value is finite; else BinsrError. A file can hold finite
    weights whose products overflow float32 (a damaged or hostile file): its NaN would become black
    pixels without a word (``np.clip`` keeps NaN, the uint8 cast turns it into 0)."""
    if not np.isfinite(y).all():
        raise BinsrError(f"{model}: the network's output holds NaN or infinite values (its weights or "
                         "constants overflow float32: a damaged or untrained model file)")
    return y
