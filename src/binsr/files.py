"""Reading small files safely (bounded, one-line errors) and writing outputs without losing
anything: atomic replacement, and no silent overwrite."""

from __future__ import annotations

import errno
import glob
import json
import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from binsr.errors import BinsrError, UsageError

__all__ = ["atomic_write", "claim_output", "make_folder", "read_json", "read_text", "remove_stale_temps",
           "write_output", "STDOUT"]

#: the output path that means standard output (``--json -``)
STDOUT = "-"

_UMASK = os.umask(0o022)  # read once (setting it is the only way), then put back
os.umask(_UMASK)


def read_text(path: str | os.PathLike, what: str, max_bytes: int) -> str:
    """The UTF-8 text of the ``what`` file ``path`` (e.g. ``config``), checked before it is read:
    missing, not a regular file (a folder, a device, a pipe), over ``max_bytes``, unreadable or not
    UTF-8 is a one-line :class:`UsageError`."""
    path = Path(path)
    try:
        if not path.exists():
            raise UsageError(f"{what} file not found: {path}")
        if not path.is_file():
            raise UsageError(f"{what} file {path} is not a regular file")
        size = path.stat().st_size
        if size > max_bytes:
            raise UsageError(f"{what} file {path} holds {size} bytes; at most {max_bytes} are read")
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{what} file {path} is not UTF-8 text") from None
    except OSError as exc:
        raise UsageError(f"{what} file {path} cannot be read: {exc.strerror or exc}") from None


def read_json(path: str | os.PathLike, what: str, max_bytes: int = 64 << 20) -> dict[str, Any]:
    """The JSON object (a mapping) in the ``what`` file ``path`` (run results, a model card, a
    genotype): :func:`read_text`'s checks, then invalid JSON or another top-level value is a
    one-line :class:`UsageError`."""
    text = read_text(path, what, max_bytes)
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise UsageError(f"{what} file {path} is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{what} file {path} must hold a JSON object, not {type(value).__name__}")
    return value


def _temp_name(path: Path) -> Path:
    """``.<name>.<pid>.<random>.tmp`` beside ``path``: the pid tells a later run whether the writer
    is gone (:func:`remove_stale_temps`)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that killed writers of ``path`` left beside it (their pid is no
    longer running; files of live writers are kept); returns the removed paths."""
    path = Path(path)
    removed = []
    try:
        candidates = list(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))
    except OSError:
        return removed
    for tmp in candidates:
        pid = tmp.name[len(path.name) + 2 : -4].split(".")[0]
        if pid.isdigit() and not _alive(int(pid)):
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:
                pass  # someone else removed it, or the folder is read-only: nothing to clean
    return removed


def _publish(tmp: Path, path: Path, overwrite: bool) -> None:
    """Move the finished ``tmp`` to ``path``: ``os.replace`` when ``overwrite``, else ``os.link``,
    which fails if ``path`` exists, so two writers racing for one name never both succeed."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise UsageError(f"output {path} exists (pass --overwrite to replace it)") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        # no hard links here (FAT, some network file systems): claim the name, then replace it
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            raise UsageError(f"output {path} exists (pass --overwrite to replace it)") from None
        os.replace(tmp, path)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], overwrite: bool = True) -> None:
    """Call ``write(tmp)`` and atomically move ``tmp`` to ``path`` (fsync of file and folder), so
    that a reader never sees a partial file; an OS error becomes one :class:`BinsrError` line,
    ``cannot write PATH: <reason>``. With ``overwrite=False`` an existing ``path`` is never
    replaced, even one created while ``write`` ran (:class:`UsageError`). The file gets the
    permissions of an ordinary new file (``0666 & ~umask``), whatever ``write`` made (safetensors
    writes 0600). Temporary files of killed earlier writers of ``path`` are removed first."""
    path = Path(path)
    remove_stale_temps(path)
    tmp = _temp_name(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        _publish(tmp, path, overwrite)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise BinsrError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # e.g. a read-only folder, where tmp was never made: the error above says why


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
    make_folder(path.parent, f"cannot write {path}: its")
    return path


def make_folder(path: str | os.PathLike, what: str) -> Path:
    """Create folder ``path`` and its parents (an existing one is kept); an OS error (a file in
    the way, no permission) is one line: :class:`UsageError` "``what`` folder PATH cannot be
    created: <reason>"."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{what} folder {path} is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{what} folder {path} cannot be created: {exc.strerror or exc}") from None
    return path


def write_output(path: str | os.PathLike, text: str) -> None:
    """``text`` to standard output for :data:`STDOUT`, else into ``path`` by :func:`atomic_write`."""
    if os.fspath(path) == STDOUT:
        sys.stdout.write(text)
    else:
        atomic_write(path, lambda tmp: tmp.write_text(text))
