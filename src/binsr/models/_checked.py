"""Building a model from metadata that may lie: a weights file's signature, a config's kwargs.

A model is built from keyword arguments that come from a file or a config (``num_block``,
``num_feat`` ...). Passed straight to the constructor, ``num_block=100000`` takes tens of GB
before anything fails and ``num_feat=-3`` a traceback. So, before the real build:

1. the kwargs' names are checked against the constructor's parameters;
2. for a weights file, every integer in them must be at most the file's tensor count or its
   largest tensor dimension (a size counts layers or channels, and each has tensors in the file);
   and for a config at most :data:`MAX_CONFIG_INT`;
3. the model is built on the ``meta`` device (shapes only, no memory) and, for a file, its
   state dict is compared with the file's tensors, name by name and shape by shape; for a config,
   its parameters must fit in this machine's memory (and a training step's activations too:
   :mod:`binsr.memory`).

Each refusal is one line: :class:`~binsr.errors.BinsrError` (exit 1) for a file,
:class:`~binsr.errors.UsageError` (exit 2) for a config.
"""

from __future__ import annotations

import inspect
import json
import math
import typing
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from binsr.errors import BinsrError, UsageError
from binsr.memory import check_fits, model_bytes
from binsr.models import _registry

__all__ = ["kwarg_names", "check_kwargs", "build_from_file"]

_FIXED = ("scale", "recipe")  # passed by create() itself
#: the largest integer a config's kwargs may hold: the published SR networks have at most 256
#: channels and 64 blocks, and a bigger number (``num_block=10**8``) would take the meta build itself
#: hours and all memory before the weights could be counted
MAX_CONFIG_INT = 1024


def kwarg_names(name: str) -> set[str] | None:
    """The keyword arguments model ``name`` takes (its entry point's, and through ``**kwargs`` its
    model class's, from the entry point's return annotation); None when they cannot be known."""
    fn = _registry._MODELS[name]
    names: set[str] = set()
    target: Any = fn
    while target is not None:
        params = inspect.signature(target).parameters.values()
        names |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL, p.POSITIONAL_ONLY)}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names - {"self", *_FIXED}
        if target is not fn:  # the class takes **kwargs too
            return None
        returned = typing.get_type_hints(fn).get("return")
        target = returned.__init__ if isinstance(returned, type) else None
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _check_names(name: str, recipe: str, kwargs: Any, error: type[BinsrError], where: str) -> None:
    from binsr.nn.recipes import recipe_names

    if name not in _registry.names():
        raise error(f"{where}: unknown model {name!r}; valid models: {', '.join(_registry.names())}")
    if recipe not in recipe_names():
        raise error(f"{where}: unknown recipe {recipe!r}; valid recipes: {', '.join(recipe_names())}")
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise error(f"{where}: model kwargs must be a mapping of names, got {kwargs!r}")
    allowed = kwarg_names(name)
    unknown = sorted(set(kwargs) - allowed) if allowed is not None else []
    if unknown:
        raise error(f"{where}: {name} takes no kwarg {', '.join(unknown)}; it takes {', '.join(sorted(allowed))}")


def _meta_build(name: str, scale: int, recipe: str, kwargs: dict[str, Any], error: type[BinsrError],
                where: str) -> nn.Module:
    """The model on the meta device: its shapes, no memory. Any constructor error (a negative
    size, a width that its heads do not divide ...) becomes one line: the kwargs come from outside."""
    try:
        with torch.device("meta"):
            return _registry.create(name, scale=scale, recipe=recipe, **kwargs)
    except BinsrError as exc:
        raise error(f"{where}: {exc}") from None
    except Exception as exc:  # untrusted values reach arbitrary constructors: TypeError, RuntimeError ...
        raise error(f"{where}: {name} cannot be built with kwargs {json.dumps(kwargs)}: {_first_line(exc)}") from None


def check_kwargs(name: str, scale: int, recipe: str, kwargs: dict[str, Any], where: str = "model.kwargs") -> None:
    """Refuse (one-line :class:`UsageError`) config kwargs that ``name`` does not take, that hold an
    integer over :data:`MAX_CONFIG_INT`, that its constructor rejects (``num_feat=-3``), or whose
    parameters would not fit in this machine's memory."""
    _check_names(name, recipe, kwargs, UsageError, where)
    too_big = [i for i in _integers(kwargs) if abs(i) > MAX_CONFIG_INT]
    if too_big:
        raise UsageError(f"{where}: kwargs {json.dumps(kwargs)} hold {too_big[0]}; a config's model sizes are at "
                         f"most {MAX_CONFIG_INT}")
    model = _meta_build(name, scale, recipe, kwargs, UsageError, where)
    check_fits(model_bytes(model), torch.device("cpu"), f"{where}: {name} with kwargs {json.dumps(kwargs)}",
               "that is its weights alone: lower its sizes")


def _integers(value: Any) -> typing.Iterator[int]:
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _integers(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _integers(v)


def _floats(value: Any) -> typing.Iterator[float]:
    if isinstance(value, float):
        yield value
    elif isinstance(value, (list, tuple, dict)):
        for v in value.values() if isinstance(value, dict) else value:
            yield from _floats(v)


def _file_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from the header of a safetensors file already read once."""
    with safe_open(str(path), framework="pt") as fh:
        return {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}


def build_from_file(path: str | Path, scale: int | None = None, recipe: str | None = None,
                    model: str | None = None, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """The model a binsr weights file was saved from, its weights loaded, in eval mode; ``scale``,
    ``recipe``, ``model`` (a registry name) and ``kwargs``, when given, must be the file's (given
    kwargs are built in their own order, which the model's signature keeps: a zoo card's). The
    file's metadata is checked against its tensors before anything of its size is built (see the
    module doc)."""
    from binsr.train.checkpoint import layer_mismatch, load_weights, read_signature

    path = Path(path)
    sig = read_signature(path)
    name = sig["model"]
    if kwargs is not None and json.loads(json.dumps(kwargs)) != sig["kwargs"]:
        raise BinsrError(f"{path} does not match the model: kwargs {json.dumps(sig['kwargs'])} (file) vs "
                         f"{json.dumps(kwargs)} (model)")
    kwargs = sig["kwargs"] if kwargs is None else kwargs
    where = f"{path} metadata"
    _check_names(name, sig["recipe"], kwargs, BinsrError, where)
    if model is not None and model != name:
        raise UsageError(f"{path} holds a {name!r} model, not {model!r}")
    for key, wanted in (("scale", scale), ("recipe", recipe)):
        if wanted is not None and wanted != sig[key]:
            raise BinsrError(f"{path} does not match the model: {key} {sig[key]!r} (file) vs {wanted!r} (model)")
    shapes = _file_shapes(path)
    limit = max([len(shapes), *(d for s in shapes.values() for d in s)])
    too_big = [i for i in _integers(kwargs) if abs(i) > limit]
    if too_big:
        raise BinsrError(f"{where}: kwargs {json.dumps(kwargs)} hold {too_big[0]}, more than the file's "
                         f"{len(shapes)} tensors and largest dimension allow ({limit})")
    if not all(math.isfinite(f) for f in _floats(kwargs)):
        raise BinsrError(f"{where}: kwargs {json.dumps(kwargs)} hold a NaN or infinite number")
    meta = _meta_build(name, sig["scale"], sig["recipe"], kwargs, BinsrError, where)
    diff = layer_mismatch({k: tuple(v.shape) for k, v in meta.state_dict().items()}, shapes)
    if diff:
        raise BinsrError(f"{path}: its tensors do not fit the {name} its metadata describes ({diff}; file vs model)")
    net = _registry.create(name, scale=sig["scale"], recipe=sig["recipe"], **kwargs)
    load_weights(net, path)
    return net.eval()
