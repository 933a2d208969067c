"""The model zoo's index, torch-free: where the shipped entries are and what their cards say.

Each entry is ``binsr/zoo/<name>.safetensors`` (weights with the binsr signature in the metadata,
see :mod:`binsr.train.checkpoint`), ``<name>.json``, its model card (model, recipe, scale,
kwargs, training config, data, steps, training time, params/OPs and the metrics measured when the
entry was added; nothing in a card is typed by hand), and, for the models the packed engine runs,
``<name>.bsr``: the same weights exported by :func:`binsr.deploy.export_packed`, so that
``binsr upscale`` starts without torch. Address an entry as ``zoo:<name>``. Loading the torch
model and adding entries: :mod:`binsr.models._pretrained`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from binsr.errors import UsageError
from binsr.files import read_json

__all__ = ["ZOO_DIR", "PREFIX", "DEFAULT", "zoo_names", "zoo_card", "packed_file", "default_model"]

ZOO_DIR = Path(__file__).resolve().parent / "zoo"
PREFIX = "zoo:"
#: the entry ``binsr upscale`` and ``binsr demo`` use for a scale when no model is named: the
#: 8-block SRResNet-lite, the fastest of the good ones (a deeper entry is picked only by name)
DEFAULT = {2: "srresnet_lite_e2fif_x2", 3: "srresnet_lite_e2fif_x3", 4: "srresnet_lite_e2fif_x4"}


def zoo_names(folder: str | Path | None = None) -> list[str]:
    """Names of the zoo models in ``folder`` (a card beside its weights; default: the shipped zoo)."""
    folder = ZOO_DIR if folder is None else Path(folder)
    return sorted(p.stem for p in folder.glob("*.json") if (folder / f"{p.stem}.safetensors").is_file())


def zoo_card(name: str) -> dict[str, Any]:
    """The model card of zoo entry ``name`` (``zoo:`` prefix optional)."""
    name = name.removeprefix(PREFIX)
    if name not in zoo_names():
        raise UsageError(f"unknown zoo model {name!r}; available: {', '.join(zoo_names()) or 'none'} (binsr zoo)")
    return read_json(ZOO_DIR / f"{name}.json", "model card")


def default_model(scale: int) -> str | None:
    """``zoo:<name>`` of the default entry for ``scale``: :data:`DEFAULT`'s when shipped, else the
    first entry named ``..._x<scale>``, else the first of that scale; None when the zoo has none."""
    names = [n for n in zoo_names() if int(zoo_card(n)["scale"]) == scale]
    named = [n for n in names if n.endswith(f"_x{scale}")]
    pick = DEFAULT.get(scale) if DEFAULT.get(scale) in names else (named or names or [None])[0]
    return None if pick is None else PREFIX + pick


def packed_file(name: str) -> Path | None:
    """The shipped packed file of zoo entry ``name``, or None when it has none."""
    path = ZOO_DIR / f"{zoo_card(name)['name']}.bsr"
    return path if path.is_file() else None
