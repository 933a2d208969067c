"""Where the data lives: ``--data-root``, else ``$BINSR_DATA``, else ``../shared/data``."""

from __future__ import annotations

import os
from pathlib import Path

from binsr.errors import UsageError

__all__ = ["data_root", "ENV_VAR"]

ENV_VAR = "BINSR_DATA"
_DEFAULT = Path("..") / "shared" / "data"


def _repo_root() -> Path | None:
    """The project root: the nearest folder above this file that holds ``pyproject.toml``."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    return None


def data_root(arg: str | os.PathLike | None = None) -> Path:
    """Resolve the data root folder.

    Order: ``arg`` (the ``--data-root`` flag), the ``BINSR_DATA`` environment variable, then
    ``<project root>/../shared/data`` (project root found from this package's location), then
    ``../shared/data`` relative to the current directory. An explicit flag or variable that
    points nowhere is an error rather than a fallback.

    Raises:
        UsageError: the folder does not exist (one line naming it and how to set it).
    """
    hint = f"set it with --data-root DIR or the {ENV_VAR} environment variable"
    explicit = arg if arg is not None else os.environ.get(ENV_VAR) or None
    if explicit is not None:
        root = Path(explicit).expanduser()
        if not root.is_dir():
            what = "is not a folder" if root.exists() else "does not exist"
            raise UsageError(f"data root {root} {what}; {hint}")
        return root
    repo = _repo_root()
    candidates = ([repo / _DEFAULT] if repo is not None else []) + [Path.cwd() / _DEFAULT]
    for root in candidates:
        if root.is_dir():
            return root.resolve()
    raise UsageError(f"data root not found (looked for {candidates[0]}); {hint}")
