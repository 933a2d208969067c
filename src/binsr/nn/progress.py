"""Training-progress hook for scheduled estimators (EDE)."""

from __future__ import annotations

import math

from torch import nn

__all__ = ["set_progress"]


def set_progress(model: nn.Module, p: float) -> int:
    """Call ``set_progress(p)`` on every submodule of ``model`` (``model`` included) that has it.

    The trainer calls this with ``p`` = fraction of training done (e.g. ``epoch / epochs``) so that
    every EDE estimator, standalone or inside ``rsign``/``libra_pb``/units, follows its schedule.

    Args:
        model: any module.
        p: progress in [0, 1].

    Returns:
        The number of modules updated.

    Raises:
        ValueError: ``p`` outside [0, 1].
    """
    if not (isinstance(p, (int, float)) and math.isfinite(p) and 0.0 <= p <= 1.0):
        raise ValueError(f"progress must be in [0, 1], got {p!r}")
    count = 0
    for module in model.modules():
        hook = getattr(module, "set_progress", None)
        if callable(hook):
            hook(float(p))
            count += 1
    return count
