"""Writing outputs without losing anything: atomic replacement, and no silent overwrite."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

from binsr.errors import BinsrError, UsageError

__all__ = ["atomic_write", "claim_output", "write_output", "STDOUT"]

#: the output path that means standard output (``--json -``)
STDOUT = "-"

_UMASK = os.umask(0o022)  # read once (setting it is the only way), then put back
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` and atomically move ``tmp`` to ``path`` (fsync of file and folder), so
    that a reader never sees a partial file; an OS error becomes one :class:`BinsrError` line. The
    file gets the permissions of an ordinary new file (``0666 & ~umask``), whatever ``write`` made
    (safetensors writes 0600)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise BinsrError(f"cannot write {path}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def claim_output(path: str | os.PathLike, overwrite: bool = False) -> Path | None:
    """An output file a command is about to write: refused (:class:`UsageError`) when it exists
    and ``overwrite`` is not set, or when it is a folder; its parent folders are created. Call it
    before the work, so that a long run does not end in a refusal. :data:`STDOUT`: None."""
    if os.fspath(path) == STDOUT:
        return None
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"output {path} is a folder, not a file")
    if path.exists() and not overwrite:
        raise UsageError(f"output {path} exists (pass --overwrite to replace it)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the folder of output {path}: {exc}") from None
    return path


def write_output(path: str | os.PathLike, text: str) -> None:
    """``text`` to standard output for :data:`STDOUT`, else into ``path`` by :func:`atomic_write`."""
    if os.fspath(path) == STDOUT:
        sys.stdout.write(text)
    else:
        atomic_write(path, lambda tmp: tmp.write_text(text))
