"""Typed YAML configs shared by ``binsr train`` (:mod:`binsr.train.config`) and ``binsr search``
(:mod:`binsr.nas.config`): a nested dict is checked against dataclass sections (unknown keys are
refused with the list of valid ones, every type error is a one-line :class:`UsageError` naming the
key), and ``--set section.key=value`` overrides are applied before the check. A file may start
from another with ``base: other.yaml`` (:func:`read_yaml`)."""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from binsr.errors import UsageError
from binsr.files import read_text

__all__ = ["from_dict", "apply_overrides", "parse_value", "read_yaml", "merge", "check_name", "check_seed"]


def _convert(value: Any, hint: Any, key: str) -> Any:
    """``value`` checked against the type ``hint``; raise UsageError naming ``key`` otherwise."""
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, key)
    if hint is Any:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(value, inner, key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"config key {key!r}: expected a list, got {value!r}")
        return [_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UsageError(f"config key {key!r}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise UsageError(f"config key {key!r}: expected true or false, got {value!r}")
    if hint in (int, float):
        number = value
        if isinstance(value, str):  # PyYAML reads "1e-4" (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                number = None
        if isinstance(number, (int, float)) and not isinstance(number, bool) and math.isfinite(number):
            if hint is float:
                return float(number)
            if float(number).is_integer():
                return int(number)
        kind = "an integer" if hint is int else "a number"
        raise UsageError(f"config key {key!r}: expected {kind}, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise UsageError(f"config key {key!r}: expected a string, got {value!r}")
    raise TypeError(f"unsupported schema type {hint!r} for {key!r}")


def from_dict(cls: type, raw: Any, prefix: str = "") -> Any:
    """An instance of the dataclass ``cls`` from ``raw``, every key checked (``prefix``: its section)."""
    where = f"section {prefix!r}" if prefix else "the top level"
    if not isinstance(raw, dict):
        raise UsageError(f"config {where}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            full = f"{prefix}.{key}" if prefix else str(key)
            raise UsageError(f"unknown config key {full!r}; valid keys in {where}: {', '.join(fields)}")
    values = {}
    for name, f in fields.items():
        full = f"{prefix}.{name}" if prefix else name
        if name in raw:
            values[name] = _convert(raw[name], hints[name], full)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise UsageError(f"config key {full!r} is required")
    return cls(**values)


def parse_value(text: str) -> Any:
    """A ``--set`` value as YAML (``1e-4`` becomes a float, ``[1, 2]`` a list)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"--set value {text!r} is not valid YAML: {exc.problem}") from None
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` strings to a nested dict (in place; returned for chaining)."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects key=value (e.g. train.lr=1e-4), got {item!r}")
        parts = key.strip().split(".")
        node = raw
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UsageError(f"--set {key}: {'.'.join(parts[: i + 1])!r} is not a section")
            node = child
        node[parts[-1]] = parse_value(text)
    return raw


#: a config's ``seed`` lies in [0, SEED_MAX]: torch.manual_seed refuses a negative one and overflows
#: past 64 bits (a traceback before this check), and 32 bits are numpy's legacy range
SEED_MAX = 2**32 - 1


#: a config's ``name``, the run folder ``<log.root>/<name>``: one plain folder name (``..`` or
#: ``a/b`` would put the run elsewhere)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")


def check_name(name: str) -> None:
    """A one-line :class:`UsageError` for a config ``name`` that is not one plain folder name."""
    if not _NAME.fullmatch(name):
        raise UsageError(f"config key 'name' must be a folder name of letters, digits and . _ + - that starts "
                         f"with a letter or digit, at most 200 characters; got {name!r}")


def check_seed(seed: int) -> None:
    """A one-line :class:`UsageError` for a config ``seed`` outside [0, :data:`SEED_MAX`]."""
    if not 0 <= seed <= SEED_MAX:
        raise UsageError(f"config key 'seed' must be in [0, {SEED_MAX}], got {seed}")


#: a config file larger than this is refused before it is read (the shipped ones are under 4 KiB)
MAX_CONFIG_BYTES = 1 << 20
#: how many ``base:`` files one config may chain through
MAX_BASE_DEPTH = 8


def _read_mapping(path: Path) -> dict[str, Any]:
    """One YAML file's mapping of sections; every way it can be unreadable is a one-line UsageError."""
    text = read_text(path, "config", MAX_CONFIG_BYTES)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"config file {path} is not valid YAML: {exc}".splitlines()[0]) from None
    except RecursionError:
        raise UsageError(f"config file {path} nests deeper than a config can") from None
    if not isinstance(raw, dict):
        raise UsageError(f"config file {path} must hold a mapping of sections")
    return raw


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` laid on it: mappings merge key by key at every depth, any other value
    (a list, a number, ``null``) replaces the base's. Neither argument is changed."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping of sections in a YAML config file, one-line UsageError when missing or invalid.

    A file may start from another: ``base: other.yaml`` (a path relative to this file's folder)
    reads that file first and lays this one on it with :func:`merge`, so a second training cycle
    states only what changes (mmcv's ``_base_``, one parent per file). A chain is at most
    :data:`MAX_BASE_DEPTH` files; a file reached twice is a cycle and refused. ``model.kwargs``
    merges too, so a file for another model (whose constructor takes other kwargs) is written in
    full rather than on a base (``configs/compare/srbnas.yaml``)."""
    path = Path(path)
    layers: list[dict[str, Any]] = []
    seen: list[Path] = []
    while True:
        raw = _read_mapping(path)
        seen.append(path.resolve())
        layers.append(raw)
        if "base" not in raw:
            break
        ref = raw.pop("base")
        if not isinstance(ref, str) or not ref.strip():
            raise UsageError(f"config file {path}: 'base' must name a YAML file, got {ref!r}")
        path = path.parent / ref
        if path.resolve() in seen:
            chain = " -> ".join(p.name for p in [*seen, path])
            raise UsageError(f"config file {seen[0]}: 'base' files form a cycle ({chain})")
        if len(seen) >= MAX_BASE_DEPTH:
            raise UsageError(f"config file {seen[0]}: more than {MAX_BASE_DEPTH} 'base' files in a chain")
    out: dict[str, Any] = {}
    for raw in reversed(layers):
        out = merge(out, raw)
    return out
