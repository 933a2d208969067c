"""Quantizer lookup by name, config dict or instance (Larq ``quantizers.get`` idea)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable, TypeVar

if TYPE_CHECKING:
    from binsr.quant.modules import Quantizer

__all__ = ["get", "names", "register"]

_REGISTRY: dict[str, type] = {}
_T = TypeVar("_T", bound=type)


def register(name: str) -> Callable[[_T], _T]:
    """Class decorator: make quantizer class ``cls`` available as ``get(name)``; sets ``cls.name``."""

    def deco(cls: _T) -> _T:
        if name in _REGISTRY:
            raise ValueError(f"quantizer name {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def names() -> list[str]:
    """Sorted names accepted by :func:`get`."""
    return sorted(_REGISTRY)


def get(identifier: Any = None, *, channels: int | None = None, **kwargs: Any) -> Quantizer:
    """Build a quantizer module.

    Args:
        identifier: ``None`` (full precision: the ``identity`` quantizer, ``precision == 32``),
            a registered name (``names()``), a dict ``{"type": name, **constructor_args}`` (what
            ``Quantizer.get_config()`` returns), or a ``Quantizer`` instance (returned as is).
        channels: number of channels of the tensor to binarize (the output channels of a
            weight); passed only to quantizers with per-channel parameters (``per_channel = True``:
            ``rsign``, ``scales_act``, ``scaled_sign``), which require it, and ignored by the others
            and by instances.
        **kwargs: constructor arguments; keys given in a dict ``identifier`` take precedence.

    Raises:
        ValueError: unknown name (the message lists the valid ones), a dict without ``type``,
            bad constructor arguments, kwargs given with an instance, or any other identifier.
    """
    from binsr.quant.modules import Quantizer

    if identifier is None:
        identifier = "identity"
    if isinstance(identifier, Quantizer):
        if kwargs:
            raise ValueError(f"cannot apply arguments {sorted(kwargs)} to an existing quantizer {identifier!r}")
        return identifier
    if isinstance(identifier, str):
        name, params = identifier, dict(kwargs)
    elif isinstance(identifier, Mapping):
        params = dict(identifier)
        name = params.pop("type", None)
        if not isinstance(name, str):
            raise ValueError(f"a quantizer config needs a string 'type' key, got {dict(identifier)!r}")
        params = {**kwargs, **params}
    else:
        raise ValueError(
            f"cannot build a quantizer from {identifier!r}: expected None, a name, a config dict "
            "or a binsr.quant Quantizer"
        )
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ValueError(f"unknown quantizer {name!r}; valid names: {', '.join(names())}")
    if getattr(cls, "per_channel", False):
        params.setdefault("channels", channels)
        if params["channels"] is None:
            raise ValueError(f"quantizer {name!r} has per-channel parameters: pass channels=")
    try:
        return cls(**params)
    except TypeError as err:
        raise ValueError(f"bad arguments for quantizer {name!r}: {err}") from None
