"""Bit-aware cost of a model, counted the way binary-SR papers do (Larq ``models.summary`` idea).

Counting rules (SCALES Sec. V-A, following Bi-Real Net / ReActNet):

* A conv/linear layer is *binary* when both its input quantizer and its weight quantizer have
  ``precision == 1``; its MACs are BOPs. Its weights are binary parameters whenever its weight
  quantizer has ``precision == 1``: a layer with binary weights and FP inputs (``weight_only``,
  Ma et al. 2019) stores 1 bit per weight, but its MACs are FLOPs (FP activations times
  ``+-alpha``: sums of FP values, not XNOR-popcounts). Every other parameter (biases, BN,
  scales, thresholds, FP layers) is full precision, every other MAC a FLOP.
* ``params = binary_params / 32 + fp_params``; ``OPs = BOPs / 64 + FLOPs``.
* MACs are counted for Conv1d/Conv2d/ConvTranspose2d/Linear only (one MAC = one FLOP, as the
  papers' tables); element-wise work (activations, additions, BN at inference) is not counted.
  ``binsr.nn.BinaryLinear`` is an ``nn.Linear`` with ``act_quant``/``weight_quant``, so it is
  counted like ``BinaryConv2d``; products of two activations (attention ``q k^T``, ``attn v``) are
  not module calls and are not counted.
* A model may define ``profile_note(profile) -> str`` (or a string ``profile_note``): a line on
  which layers stay FP and how its count compares with the papers'; it is ``Profile.note``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from binsr.nn.attention import ChannelGate, SpatialGate

_COUNTED = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


def has_binary_weights(module: nn.Module) -> bool:
    """True when ``module``'s weights are 1-bit (its weight quantizer has ``precision == 1``)."""
    return getattr(getattr(module, "weight_quant", None), "precision", 32) == 1


def is_binary(module: nn.Module) -> bool:
    """True when ``module`` convolves 1-bit inputs with 1-bit weights."""
    return getattr(getattr(module, "act_quant", None), "precision", 32) == 1 and has_binary_weights(module)


@dataclass
class LayerCost:
    """One row of the profile table; ``binary``: 1-bit inputs and weights (:func:`is_binary`),
    ``binary_params``: 1-bit weights, with FP inputs too (:func:`has_binary_weights`)."""

    name: str
    kind: str
    binary: bool
    binary_params: int
    fp_params: int
    bops: int
    flops: int


@dataclass
class Profile:
    """Per-layer costs and totals at ``lr_size`` (H, W of the LR input)."""

    model: str
    recipe: str
    scale: int
    lr_size: tuple[int, int]
    layers: list[LayerCost] = field(default_factory=list)
    note: str = ""

    @property
    def binary_params(self) -> int:
        return sum(r.binary_params for r in self.layers)

    @property
    def fp_params(self) -> int:
        return sum(r.fp_params for r in self.layers)

    @property
    def bops(self) -> int:
        return sum(r.bops for r in self.layers)

    @property
    def flops(self) -> int:
        return sum(r.flops for r in self.layers)

    @property
    def params(self) -> float:
        """binary/32 + FP, the papers' parameter count."""
        return self.binary_params / 32 + self.fp_params

    @property
    def ops(self) -> float:
        """BOPs/64 + FLOPs, the papers' operation count."""
        return self.bops / 64 + self.flops

    def totals(self, prefix: str = "") -> dict:
        """Totals over the rows whose layer name starts with ``prefix`` (all rows by default).

        ``totals("body.")`` is the binarized body alone, which is what the binary-SR tables
        (E2FIF, SCALES: 34-37K params) appear to count.
        """
        rows = [r for r in self.layers if r.name.startswith(prefix)]
        b, f = sum(r.binary_params for r in rows), sum(r.fp_params for r in rows)
        bops, flops = sum(r.bops for r in rows), sum(r.flops for r in rows)
        return {"binary_params": b, "fp_params": f, "params": b / 32 + f,
                "bops": bops, "flops": flops, "ops": bops / 64 + flops}

    def to_dict(self) -> dict:
        return {"model": self.model, "recipe": self.recipe, "scale": self.scale, "lr_size": list(self.lr_size),
                "totals": self.totals(), "body_totals": self.totals("body."), "note": self.note,
                "layers": [asdict(r) for r in self.layers]}


def _macs(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    if isinstance(module, nn.Linear):
        return out.numel() // out.shape[-1] * module.in_features * module.out_features
    k = 1
    for s in module.kernel_size:
        k *= s
    if isinstance(module, nn.ConvTranspose2d):
        return inp.numel() * (module.out_channels // module.groups) * k
    return out.numel() * (module.in_channels // module.groups) * k


def profile(model: nn.Module, lr_size: tuple[int, int] = (320, 180), in_ch: int = 3) -> Profile:
    """Run one forward pass on a zero LR image of ``lr_size`` (H, W) and count every layer.

    Parameters of modules that are not conv/linear (BN, PReLU, thresholds, scales) are attributed
    to the nearest counted layer's row only when they live in it; the rest form their own rows.
    """
    sig = getattr(model, "signature", {})
    prof = Profile(sig.get("model", type(model).__name__), sig.get("recipe", "?"), sig.get("scale", 0), tuple(lr_size))
    rows: dict[str, LayerCost] = {}
    hooks = []

    def hook(name):
        def fn(module, inputs, output):
            binary = is_binary(module)
            macs = _macs(module, inputs[0], output)
            row = rows[name]
            row.bops += macs if binary else 0
            row.flops += 0 if binary else macs
        return fn

    def gate_hook(name):
        """A gate runs its conv functionally (in float64 at inference, :mod:`binsr.nn.exact`), so the
        conv's own hook never fires: its MACs from the conv's output, the gate map itself (spatial)
        or a Conv1d over the C_in pooled values (channel)."""
        def fn(module, inputs, output):
            x = inputs[0]
            conv_out = output if isinstance(module, SpatialGate) else x.new_empty(x.shape[0], 1, x.shape[1])
            rows[name].flops += _macs(module.conv, x, conv_out)
        return fn

    counted_params: set[int] = set()
    for name, m in model.named_modules():
        if isinstance(m, _COUNTED):
            w = m.weight.numel() if has_binary_weights(m) else 0
            other = sum(p.numel() for p in m.parameters()) - w
            rows[name] = LayerCost(name, type(m).__name__, is_binary(m), w, other, 0, 0)
            counted_params.update(id(p) for p in m.parameters())
            hooks.append(m.register_forward_hook(hook(name)))
    for name, m in model.named_modules():
        if isinstance(m, (SpatialGate, ChannelGate)):
            hooks.append(m.register_forward_hook(gate_hook(f"{name}.conv")))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_ch, *lr_size))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    for name, m in model.named_modules():
        own = [p for p in m.parameters(recurse=False) if id(p) not in counted_params]
        if own:
            rows[name] = LayerCost(name or "(model)", type(m).__name__, False, 0, sum(p.numel() for p in own), 0, 0)
            counted_params.update(id(p) for p in own)
    prof.layers = list(rows.values())
    note = getattr(model, "profile_note", "")
    prof.note = note(prof) if callable(note) else str(note or "")
    return prof
