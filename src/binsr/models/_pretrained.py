"""The model zoo: trained binary models shipped inside the package, loadable by name.

Each entry is ``binsr/zoo/<name>.safetensors`` (weights with the binsr signature in the metadata,
see :mod:`binsr.train.checkpoint`) plus ``<name>.json``, its model card: model, recipe, scale,
kwargs, training config, data, steps, training time, params/OPs (``binsr.models.profile``) and the
metrics measured by :func:`binsr.evaluation.evaluate` when the entry was added
(:func:`add_to_zoo`); nothing in a card is typed by hand. Address an entry as ``zoo:<name>``.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from torch import nn

from binsr.errors import UsageError

ZOO_DIR = Path(__file__).resolve().parent.parent / "zoo"
PREFIX = "zoo:"


def zoo_names() -> list[str]:
    """Names of the shipped zoo models."""
    return sorted(p.stem for p in ZOO_DIR.glob("*.json") if (ZOO_DIR / f"{p.stem}.safetensors").is_file())


def zoo_card(name: str) -> dict[str, Any]:
    """The model card of zoo entry ``name`` (``zoo:`` prefix optional)."""
    name = name.removeprefix(PREFIX)
    if name not in zoo_names():
        raise UsageError(f"unknown zoo model {name!r}; available: {', '.join(zoo_names()) or 'none'} (binsr zoo)")
    return json.loads((ZOO_DIR / f"{name}.json").read_text())


def load_zoo(name: str, scale: int | None = None) -> nn.Module:
    """Zoo model ``name`` in eval mode; ``scale``, when given, must be the model's own."""
    from binsr.models._registry import create
    from binsr.train.checkpoint import load_weights

    card = zoo_card(name)
    if scale is not None and int(scale) != card["scale"]:
        raise UsageError(f"zoo:{card['name']} is an x{card['scale']} model, not x{scale}")
    model = create(card["model"], scale=card["scale"], recipe=card["recipe"], **card["kwargs"])
    load_weights(model, ZOO_DIR / f"{card['name']}.safetensors")
    return model.eval()


def add_to_zoo(run_dir: str | Path, name: str, weights: str = "best", data_root: str | None = None,
               datasets: tuple[str, ...] = ("Set5", "Set14", "B100"), overwrite: bool = False) -> dict[str, Any]:
    """Copy a run's weights into the zoo and write its card with freshly measured metrics.

    Args:
        run_dir: a ``binsr train`` run folder (``<weights>.safetensors``, ``config.yaml``, ``results.json``).
        name: zoo entry name, e.g. ``srresnet_lite_e2fif_x4``.
        weights: ``best`` or ``last`` (file stem in the run folder).
        data_root: benchmark data root (flag / env / default as everywhere).
        datasets: benchmark sets to measure (MATLAB-bicubic LR, Y channel, border = scale).
        overwrite: replace an existing entry of that name (else :class:`UsageError`).
    """
    import yaml

    from binsr.evaluation import evaluate
    from binsr.models import profile
    from binsr.train.checkpoint import read_weights

    run_dir = Path(run_dir)
    src = run_dir / f"{weights}.safetensors"
    _, meta = read_weights(src)
    results = json.loads((run_dir / "results.json").read_text()) if (run_dir / "results.json").is_file() else {}
    if name in zoo_names() and not overwrite:
        raise UsageError(f"zoo model {name!r} exists (pass --overwrite to replace it)")
    ZOO_DIR.mkdir(exist_ok=True)
    shutil.copyfile(src, ZOO_DIR / f"{name}.safetensors")
    card: dict[str, Any] = {"name": name, "model": meta["model"], "recipe": meta["recipe"], "scale": int(meta["scale"]),
                            "kwargs": json.loads(meta["kwargs"])}
    (ZOO_DIR / f"{name}.json").write_text(json.dumps(card))
    model = load_zoo(name)
    prof = profile(model, (180, 320))
    config_file = run_dir / "config.yaml"
    config = yaml.safe_load(config_file.read_text()) if config_file.is_file() else results.get("config")
    card.update({
        "source_run": run_dir.name,
        "weights": f"{weights}.safetensors",
        "config": config,
        "train_data": (config or {}).get("data", {}).get("train_sets"),
        "steps": results.get("steps", meta.get("step")),
        "weights_step": int(meta["step"]) if "step" in meta else None,
        "train_seconds": results.get("train_seconds"),
        "params_k": round(prof.params / 1e3, 2),
        "ops_g_320x180": round(prof.ops / 1e9, 3),
        "metrics": {},
        "measured": time.strftime("%Y-%m-%d"),
    })
    for ds in datasets:
        r = evaluate(model, ds, card["scale"], data_root=data_root)
        card["metrics"][ds] = {"psnr": round(r["psnr"], 3), "ssim": round(r["ssim"], 4)}
    (ZOO_DIR / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
    return card
