"""The model zoo's torch side: load an entry as a module, add a trained run as an entry (or store
its validation curve in an older card), and write the entries' packed files. The index (names,
cards, paths) is :mod:`binsr.pretrained`."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

from torch import nn

from binsr import pretrained
from binsr.errors import BinsrError, UsageError
from binsr.pretrained import PREFIX, zoo_card, zoo_names

__all__ = ["PREFIX", "zoo_card", "zoo_names", "load_zoo", "add_to_zoo", "refresh_zoo_curve", "repack_zoo"]


def load_zoo(name: str, scale: int | None = None) -> nn.Module:
    """Zoo model ``name`` in eval mode; ``scale``, when given, must be the model's own."""
    from binsr.models._checked import build_from_file

    card = zoo_card(name)
    if scale is not None and int(scale) != card["scale"]:
        raise UsageError(f"zoo:{card['name']} is an x{card['scale']} model, not x{scale}")
    return build_from_file(pretrained.ZOO_DIR / f"{card['name']}.safetensors", card["scale"], card["recipe"],
                           kwargs=card["kwargs"])


def _results(run_dir: Path) -> dict[str, Any]:
    from binsr.files import read_json

    return read_json(run_dir / "results.json", "run results") if (run_dir / "results.json").exists() else {}


def _config(run_dir: Path, results: dict[str, Any]) -> dict[str, Any] | None:
    """The run's training config: ``config.yaml``, else the copy in ``results.json``."""
    from binsr.schema import read_yaml

    config_file = run_dir / "config.yaml"
    return read_yaml(config_file) if config_file.is_file() else results.get("config")


def _curve(run_dir: Path, config: dict[str, Any] | None) -> dict[str, Any]:
    """The card's validation keys: ``val_dataset`` (the config's ``val.dataset``) and ``val_curve``,
    [step, PSNR] pairs from the run's ``log.csv`` (:func:`binsr.train.runlog.read_val_curve`)."""
    from binsr.train.runlog import read_val_curve

    return {"val_dataset": ((config or {}).get("val") or {}).get("dataset"),
            "val_curve": [[step, psnr] for step, psnr in read_val_curve(run_dir / "log.csv")]}


def _write_card(card: dict[str, Any]) -> None:
    from binsr.files import write_output

    write_output(pretrained.ZOO_DIR / f"{card['name']}.json", json.dumps(card, indent=2) + "\n")


#: a zoo entry name: the stem of its files in the zoo folder
_NAME = re.compile(r"[a-z0-9][a-z0-9_]{0,99}")


def add_to_zoo(run_dir: str | Path, name: str, weights: str = "best", data_root: str | None = None,
               datasets: tuple[str, ...] = ("Set5", "Set14", "B100"), overwrite: bool = False,
               note: str | None = None) -> dict[str, Any]:
    """Copy a run's weights into the zoo and write its card with freshly measured metrics and the
    run's validation curve (``val_dataset``, ``val_curve``: [step, PSNR] pairs of its ``log.csv``).

    Args:
        run_dir: a ``binsr train`` run folder (``<weights>.safetensors``, ``config.yaml``, ``results.json``).
        name: zoo entry name, e.g. ``srresnet_lite_e2fif_x4``.
        weights: ``best`` or ``last`` (file stem in the run folder).
        data_root: benchmark data root (flag / env / default as everywhere).
        datasets: benchmark sets to measure (MATLAB-bicubic LR, Y channel, border = scale).
        overwrite: replace an existing entry of that name (else :class:`UsageError`).
        note: the card's ``note``, how the model was trained where the run folder does not tell
            (a warm start from a snapshot, earlier pieces, the steps and hours before this run).
    """
    from binsr.evaluation import evaluate
    from binsr.files import atomic_write
    from binsr.models import profile
    from binsr.models._checked import build_from_file
    from binsr.train.checkpoint import read_weights, signature_of

    if not _NAME.fullmatch(name):  # it becomes a path in the zoo folder: "../x" would land outside it
        raise UsageError(f"zoo name {name!r} must be lowercase letters, digits and underscores, at most 100 characters "
                         f"(e.g. srresnet_lite16_e2fif_x4, without {PREFIX!r})")
    run_dir = Path(run_dir)
    src = run_dir / f"{weights}.safetensors"
    if name in zoo_names() and not overwrite:
        raise UsageError(f"zoo model {name!r} exists (pass --overwrite to replace it)")
    model = build_from_file(src)  # checked against its tensors; the zoo is untouched until all is measured
    sig = signature_of(model)
    _, meta = read_weights(src)  # for the step it was saved at
    results = _results(run_dir)
    prof = profile(model, (180, 320))
    config = _config(run_dir, results)
    card: dict[str, Any] = {
        "name": name, "model": sig["model"], "recipe": sig["recipe"], "scale": sig["scale"], "kwargs": sig["kwargs"],
        "source_run": run_dir.name,
        "weights": f"{weights}.safetensors",
        "config": config,
        "train_data": (config or {}).get("data", {}).get("train_sets"),
        "steps": results.get("steps", int(meta["step"]) if "step" in meta else None),  # a run still training: its step
        "weights_step": int(meta["step"]) if "step" in meta else None,
        "train_seconds": results.get("train_seconds"),
        "params_k": round(prof.params / 1e3, 2),
        "ops_g_320x180": round(prof.ops / 1e9, 3),
        "metrics": {},
        "measured": time.strftime("%Y-%m-%d"),
        **_curve(run_dir, config),
        **({"note": note} if note else {}),
    }
    for ds in datasets:
        r = evaluate(model, ds, card["scale"], data_root=data_root)
        card["metrics"][ds] = {"psnr": round(r["psnr"], 3), "ssim": round(r["ssim"], 4)}
    pretrained.ZOO_DIR.mkdir(exist_ok=True)
    atomic_write(pretrained.ZOO_DIR / f"{name}.safetensors", lambda tmp: shutil.copyfile(src, tmp), overwrite=overwrite)
    _write_card(card)
    repack_zoo([name])
    return card


def refresh_zoo_curve(name: str, run_dir: str | Path) -> dict[str, Any]:
    """Store ``run_dir``'s validation curve in zoo entry ``name``'s card (a card written before
    cards kept one; ``binsr zoo --curve RUN_DIR --name NAME``); nothing else changes. The run must
    be the card's: folder name = ``source_run``, the same steps, and its weights file the entry's,
    byte for byte (else :class:`UsageError`). Returns the updated card."""
    run_dir = Path(run_dir)
    card = zoo_card(name)
    results = _results(run_dir)
    src, entry = run_dir / card["weights"], pretrained.ZOO_DIR / f"{card['name']}.safetensors"
    same = (run_dir.name == card["source_run"] and results.get("steps", card["steps"]) == card["steps"]
            and src.is_file() and src.read_bytes() == entry.read_bytes())
    if not same:
        raise UsageError(f"{run_dir} is not the run of zoo:{card['name']} (source_run {card['source_run']}, "
                         f"{card['steps']} steps, {card['weights']} equal to the entry's weights)")
    card.update(_curve(run_dir, _config(run_dir, results)))
    _write_card(card)
    return card


def repack_zoo(names: list[str] | None = None) -> list[Path]:
    """Write ``<name>.bsr`` (:func:`binsr.deploy.export_packed` of the entry's weights) for the
    given entries (default: all) that the packed engine runs; returns the files written. Run it
    after a change of the packed format (``binsr zoo --repack``; a test compares the shipped files
    with fresh exports)."""
    from binsr.deploy import export_packed

    written = []
    for name in zoo_names() if names is None else names:
        path = pretrained.ZOO_DIR / f"{name}.bsr"
        try:
            export_packed(load_zoo(name), path)
        except BinsrError:  # an architecture the engine does not run: no packed file
            path.unlink(missing_ok=True)
            continue
        written.append(path)
    return written
