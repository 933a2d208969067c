"""SR architectures in a registry (timm style); a binarization method is a recipe passed to them.

``binsr.models.create("srresnet", scale=4, recipe="e2fif")`` builds a model; ``names()`` lists
the registered architectures. Importing this package registers every family below.
"""

from binsr.errors import UsageError
from binsr.models import edsr, espcn, fsrcnn, srresnet, vdsr  # noqa: F401  (registration)
from binsr.models import srbnas  # noqa: F401  (registration; SRBNAS, binsr.nas)
from binsr.models import swinir  # noqa: F401  (registration; SwinIR, binary Transformer recipes)
from binsr.models._checked import build_from_file
from binsr.models._registry import create, names, register_model
from binsr.models._pretrained import PREFIX, add_to_zoo, load_zoo, refresh_zoo_curve, repack_zoo, zoo_card, zoo_names
from binsr.models.complexity import LayerCost, Profile, profile

__all__ = ["create", "names", "register_model", "profile", "Profile", "LayerCost", "build_for_eval", "from_weights",
           "load_zoo", "zoo_card", "zoo_names", "add_to_zoo", "refresh_zoo_curve", "repack_zoo"]


def from_weights(path):
    """The model a binsr weights file was saved from (the model, scale, recipe and kwargs of its
    signature), with the weights loaded, in eval mode; metadata that does not fit the file's
    tensors is refused before anything is built (:func:`binsr.models._checked.build_from_file`)."""
    return build_from_file(path)


def build_for_eval(name: str | None, scale: int | None, recipe: str | None = None, weights: str | None = None,
                   default_recipe: str = "fp"):
    """Model ``name`` (a registry name, or ``zoo:<name>``) in eval mode with ``weights`` loaded.

    ``recipe`` None means: the zoo model's own, the weights file's, else ``default_recipe``;
    ``name`` and ``scale`` None (with ``weights``): the file's.
    With ``weights``, the model is built with the kwargs saved in the file (``width``, ``res_scale``
    ...); a file of another architecture, recipe or scale is refused with a line naming what differs.
    """
    if name is not None and name.startswith(PREFIX):
        if weights is not None or recipe is not None:
            raise UsageError("a zoo model brings its own recipe and weights: drop --recipe/--weights")
        return load_zoo(name, scale)
    if weights is None:
        if name is None or scale is None:
            raise UsageError("a model name and scale are needed without a weights file")
        return create(name, scale=scale, recipe=recipe or default_recipe).eval()
    return build_from_file(weights, scale=None if scale is None else int(scale), recipe=recipe, model=name)
