"""Checkpoints: weights as safetensors with the model's signature, training state with ``torch.save``.

A weights file holds the ``state_dict`` tensors and, in its metadata, ``format=binsr`` plus the
signature the model was built with (``model``, ``recipe``, ``scale``, ``kwargs`` as JSON) and
free-form extras (``step``, ``ema``, ``psnr`` ...). :func:`load_weights` refuses a file of
another architecture or scale with one line naming what differs. Every file is written atomically:
a temporary file in the same folder, flushed and fsynced, then renamed over the target.

A training checkpoint (:func:`save_checkpoint`) is one file, ``last.pt``: the training state with
the model's weights inside, so that a kill between two renames cannot leave a weights file and a
state of different steps. ``last.safetensors`` and ``last_ema.safetensors`` are written before it,
for use outside training; resuming never reads them (:func:`load_checkpoint`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from binsr.errors import BinsrError
from binsr.files import atomic_write

__all__ = [
    "signature_of",
    "save_weights",
    "read_weights",
    "read_signature",
    "load_weights",
    "init_weights",
    "save_state",
    "load_state",
    "save_checkpoint",
    "load_checkpoint",
    "layer_mismatch",
]

#: the checkpoint files of a run folder, in the order :func:`save_checkpoint` writes them
CHECKPOINT_FILES = ("last.safetensors", "last_ema.safetensors", "last.pt")

SIGNATURE_KEYS = ("model", "recipe", "scale", "kwargs")


def _normalise(signature: Mapping[str, Any]) -> dict[str, Any]:
    """The signature keys as JSON would give them back (tuples become lists, scale an int)."""
    missing = [k for k in SIGNATURE_KEYS if k not in signature]
    if missing:
        raise ValueError(f"model signature lacks {', '.join(missing)}: {dict(signature)}")
    sig = {k: signature[k] for k in SIGNATURE_KEYS}
    sig["scale"] = int(sig["scale"])
    return json.loads(json.dumps(sig, sort_keys=True))


def signature_of(model: nn.Module) -> dict[str, Any]:
    """The signature ``binsr.models.create`` attached to ``model`` (``model.signature``)."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    signature = getattr(model, "signature", None)
    if signature is None:
        raise ValueError(f"{type(model).__name__} has no .signature; build it with binsr.models.create")
    return _normalise(signature)


def _encode(signature: Mapping[str, Any], extra: Mapping[str, Any] | None) -> dict[str, str]:
    sig = _normalise(signature)
    meta = {"format": "binsr", "model": sig["model"], "recipe": sig["recipe"], "scale": str(sig["scale"]),
            "kwargs": json.dumps(sig["kwargs"], sort_keys=True)}
    for key, value in (extra or {}).items():
        meta[key] = value if isinstance(value, str) else json.dumps(value)
    return meta


def save_weights(path: str | Path, model_or_state: nn.Module | Mapping[str, torch.Tensor],
                 signature: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None) -> None:
    """Write a weights file atomically.

    Args:
        path: target ``.safetensors`` file.
        model_or_state: a model (its ``state_dict`` and ``signature``) or a state dict.
        signature: required with a state dict; overrides the model's otherwise.
        extra: more metadata (values that are not strings are stored as JSON).
    """
    if isinstance(model_or_state, nn.Module):
        signature = signature or signature_of(model_or_state)
        state = getattr(model_or_state, "module", model_or_state).state_dict()
    else:
        state = model_or_state
    if signature is None:
        raise ValueError("save_weights needs the model signature to go with a bare state dict")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    meta = _encode(signature, extra)
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of a binsr weights file; BinsrError if missing, truncated, foreign
    or holding NaN/infinite values."""
    path = Path(path)
    if not path.exists():
        raise BinsrError(f"weights file not found: {path}")
    if not path.is_file():  # a folder, a device, a pipe
        raise BinsrError(f"weights file {path} is not a regular file")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BinsrError(f"{path} is not a readable safetensors file (truncated or foreign?): {reason}") from None
    if meta.get("format") != "binsr" or any(k not in meta for k in SIGNATURE_KEYS):
        raise BinsrError(f"{path} is a safetensors file without binsr metadata (model, recipe, scale, kwargs)")
    bad = sorted(k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all()))
    if bad:  # a diverged run's weights would give black images, not an error
        more = " ..." if len(bad) > 3 else ""
        raise BinsrError(f"{path} holds NaN or infinite weights ({', '.join(bad[:3])}{more})")
    return state, meta


def _decode_signature(meta: Mapping[str, str], path: Path) -> dict[str, Any]:
    try:
        return _normalise({"model": meta["model"], "recipe": meta["recipe"], "scale": int(meta["scale"]),
                           "kwargs": json.loads(meta["kwargs"])})
    except (ValueError, json.JSONDecodeError):
        raise BinsrError(f"{path} has corrupt binsr metadata: {dict(meta)}") from None


def read_signature(path: str | Path) -> dict[str, Any]:
    """The ``{"model", "recipe", "scale", "kwargs"}`` a weights file was saved with, e.g. to build
    its model: ``binsr.models.create(sig["model"], sig["scale"], sig["recipe"], **sig["kwargs"])``."""
    return _decode_signature(read_weights(path)[1], Path(path))


def _differences(found: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    diffs = [f"{k} {found[k]!r} (file) vs {expected[k]!r} (model)"
             for k in ("model", "recipe", "scale") if found[k] != expected[k]]
    fk, ek = found["kwargs"], expected["kwargs"]
    diffs += [f"kwargs.{k} {fk.get(k, '<default>')!r} (file) vs {ek.get(k, '<default>')!r} (model)"
              for k in sorted(set(fk) | set(ek)) if fk.get(k) != ek.get(k)]
    return diffs


def load_weights(model_or_signature: nn.Module | Mapping[str, Any], path: str | Path) -> dict[str, torch.Tensor]:
    """Check a weights file against a model (or a signature dict) and return its state dict.

    Given a model, the weights are also loaded into it (strictly: every key, every shape). A file
    of another model, recipe, scale or kwargs, a truncated file and a file that binsr did not
    write are refused with a one-line :class:`~binsr.errors.BinsrError`.
    """
    path = Path(path)
    state, meta = read_weights(path)
    is_model = isinstance(model_or_signature, nn.Module)
    expected = signature_of(model_or_signature) if is_model else _normalise(model_or_signature)
    diffs = _differences(_decode_signature(meta, path), expected)
    if diffs:
        raise BinsrError(f"{path} does not match the model: {'; '.join(diffs)}")
    if is_model:
        _load_strict(getattr(model_or_signature, "module", model_or_signature), state, path)
    return state


def layer_mismatch(own: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]]) -> str:
    """The names and shapes in which a model's state dict (``own``) and a file's tensors
    (``found``) differ, as one line ('' when they agree)."""
    missing, unexpected = sorted(set(own) - set(found)), sorted(set(found) - set(own))
    shapes = [f"{k} {tuple(found[k])} vs {tuple(own[k])}" for k in sorted(set(own) & set(found))
              if tuple(found[k]) != tuple(own[k])]
    return "; ".join(f"{name}: {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}"
                     for name, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)) if items)


def _load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """``module.load_state_dict(state)``, refused with one line naming the keys or shapes that differ."""
    diff = layer_mismatch({k: v.shape for k, v in module.state_dict().items()}, {k: v.shape for k, v in state.items()})
    if diff:
        raise BinsrError(f"{path} does not fit the model's layers ({diff})")
    module.load_state_dict(state)


def init_weights(model: nn.Module, path: str | Path) -> tuple[list[str], list[str]]:
    """Copy the tensors of a binsr weights file that fit ``model`` (same name and shape) into it.

    For warm starts across scales or widths, not for resuming (:func:`load_weights` is strict).
    The file must come from the same architecture and recipe. Returns ``(loaded, skipped)``
    parameter names; a file that fits nothing is refused.
    """
    path = Path(path)
    state, meta = read_weights(path)
    found, expected = _decode_signature(meta, path), signature_of(model)
    diffs = [f"{k} {found[k]!r} (file) vs {expected[k]!r} (model)" for k in ("model", "recipe") if found[k] != expected[k]]
    if diffs:
        raise BinsrError(f"{path} cannot initialise the model: {'; '.join(diffs)}")
    module = getattr(model, "module", model)
    own = module.state_dict()
    fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not fits:
        raise BinsrError(f"{path} has no tensor of the model's names and shapes")
    module.load_state_dict(fits, strict=False)
    return sorted(fits), sorted(set(own) - set(fits))


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """``torch.save`` a training-state dict (tensors, numbers, strings, lists, dicts) atomically."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """``torch.load(weights_only=True)`` a training state; BinsrError if missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise BinsrError(f"training state not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError ... for bad files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BinsrError(f"{path} is not a readable training state (truncated or foreign?): {reason}") from None


def _remove_stale_temps(run_dir: Path) -> None:
    """Temporary files a killed :func:`save_checkpoint` left (``atomic_write`` names them
    ``.<name>.<uuid>.tmp``; a kill skips its clean-up)."""
    for name in CHECKPOINT_FILES:
        for tmp in run_dir.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def save_checkpoint(run_dir: str | Path, state: dict[str, Any], model: nn.Module,
                    ema_model: nn.Module | None = None, ema_decay: float = 0.0) -> None:
    """Write a training checkpoint: the weights files ``last.safetensors`` (and
    ``last_ema.safetensors``) with ``state["step"]`` in their metadata, then ``last.pt`` (``state``
    plus the model's weights and signature) in one atomic rename: the checkpoint. A kill at any
    point leaves ``last.pt`` the previous checkpoint or this one, whole; weights files ahead of it
    are rewritten when the resumed run comes back to this step."""
    run_dir = Path(run_dir)
    _remove_stale_temps(run_dir)
    module = getattr(model, "module", model)
    weights = {k: v.detach().to("cpu").clone() for k, v in module.state_dict().items()}
    extra = {"step": state["step"]}
    save_weights(run_dir / "last.safetensors", weights, signature_of(module), extra=extra)
    if ema_model is not None:
        save_weights(run_dir / "last_ema.safetensors", ema_model, extra={**extra, "ema": ema_decay})
    save_state(run_dir / "last.pt", {**state, "weights": weights, "signature": signature_of(module)})


def load_checkpoint(run_dir: str | Path, model: nn.Module, state: dict[str, Any]) -> None:
    """Load the weights of a checkpoint's ``state`` (:func:`load_state` of ``last.pt``) into
    ``model``, refused with one line when its signature or layers differ. A ``last.pt`` written
    before checkpoints held the weights takes them from ``last.safetensors`` of the same step."""
    run_dir = Path(run_dir)
    if "weights" not in state:  # a run from before single-file checkpoints
        path = run_dir / "last.safetensors"
        _, meta = read_weights(path)
        if int(meta.get("step", -1)) != state["step"]:
            raise BinsrError(f"{run_dir}: last.safetensors (step {meta.get('step')}) and last.pt "
                             f"(step {state['step']}) do not belong together")
        load_weights(model, path)
        return
    where = run_dir / "last.pt"
    diffs = _differences(_normalise(state["signature"]), signature_of(model))
    if diffs:
        raise BinsrError(f"{where} does not match the model: {'; '.join(diffs)}")
    _load_strict(getattr(model, "module", model), state["weights"], where)
