"""Model registry in the timm style: ``@register_model`` entry points, looked up by name.

An entry point is a function ``fn(scale: int, recipe: str, **kwargs) -> nn.Module``. ``create``
drops keyword arguments whose value is ``None`` so that CLI defaults never override a model's
own defaults (timm ``_factory.create_model``).
"""

from __future__ import annotations

import fnmatch
from typing import Any, Callable

from torch import nn

from binsr.errors import UsageError

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn`` under its ``__name__``; duplicate names are a programming error."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = fn
    return fn


def names(pattern: str = "*") -> list[str]:
    """Registered model names matching an fnmatch ``pattern``, sorted."""
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def create(name: str, scale: int = 4, recipe: str = "fp", **kwargs: Any) -> nn.Module:
    """Build model ``name`` at ``scale`` with the binarization ``recipe``.

    The returned module carries ``model.signature``: the name, scale, recipe and keyword
    arguments it was built with (and the model's ``block`` form, even at its default: a weights
    file from before ``block`` existed was trained with the other form, and is refused); checkpoints
    store it so a mismatched load is refused.
    """
    from binsr.nn.recipes import recipe_names

    if name not in _MODELS:
        raise UsageError(f"unknown model {name!r}; valid models: {', '.join(names())}")
    if recipe not in recipe_names():
        raise UsageError(f"unknown recipe {recipe!r}; valid recipes: {', '.join(recipe_names())}")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    model = _MODELS[name](scale=int(scale), recipe=recipe, **kwargs)
    if hasattr(model, "block"):  # recorded even at its default: files from before it existed are refused
        kwargs.setdefault("block", model.block)
    model.signature = {"model": name, "scale": int(scale), "recipe": recipe, "kwargs": kwargs}
    return model
