"""SR architectures in a registry (timm style); a binarization method is a recipe passed to them.

``binsr.models.create("srresnet", scale=4, recipe="e2fif")`` builds a model; ``names()`` lists
the registered architectures. Importing this package registers every family below.
"""

from binsr.models import edsr, espcn, fsrcnn, srresnet, vdsr  # noqa: F401  (registration)
from binsr.models._registry import create, names, register_model
from binsr.models.complexity import LayerCost, Profile, profile

__all__ = ["create", "names", "register_model", "profile", "Profile", "LayerCost", "build_for_eval"]


def build_for_eval(name: str, scale: int, recipe: str | None = None, weights: str | None = None):
    """Model ``name`` in eval mode with ``weights`` loaded (refused if they were saved for a
    different architecture, recipe or scale)."""
    model = create(name, scale=scale, recipe=recipe or "fp")
    if weights is not None:
        from binsr.train.checkpoint import load_weights

        load_weights(model, weights)
    return model.eval()
