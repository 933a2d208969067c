"""Export a trained binary SR model to one packed safetensors file for :class:`Runtime`.

The file holds binary weights packed 1 bit each (uint64 words, :mod:`bitpack`), float32
per-channel scales (or int32 shifts for power-of-two weight scales), BN folded into per-channel
affines, the FP head/tail/upsampler and re-scaling gates, and the graph as JSON in the
safetensors metadata (key ``binsr``): a list of ops the runtime interprets; nothing is executed
at load. Supported: SRResNet (``srresnet*``) with the ``bnn``, ``e2fif``, ``irnet``, ``bbcu`` and
``scales*`` recipes; SwinIR (``swinir*``) with the ``bnn``, ``bibert`` and ``scales*`` recipes (binary
linears as packed 1x1 convs on the token map); SRBNAS (``srbnas``, ``srbnas_large``) with the
paper's binary ops (recipes ``irnet`` and ``srbnas``; see :func:`_srbnas`). Not ``weight_only``:
its convs read FP activations.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import save_file
from torch import nn

from binsr.deploy.bitpack import pack_weights
from binsr.deploy.runtime import DEFAULTS, FORMAT, VERSION
from binsr.errors import BinsrError
from binsr.files import atomic_write
from binsr.nn.exact import ExactConv2d, ExactGELU, ExactLayerNorm

__all__ = ["export_packed", "round_fp16_"]


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().float().numpy().copy()


def round_fp16_(model: nn.Module) -> nn.Module:
    """Round the weights of the model's FP convs (plain ``nn.Conv2d`` and ``ExactConv2d``: head, tail, upsampler,
    spatial gates; not the binary convs' latent weights, not biases) to float16 values, in place.

    The packed file of the rounded model stores those weights in 2 bytes each without loss
    (``export_packed(..., fp16=True)``), and the runtime computes in float32 as before, so its
    output matches the torch forward of the rounded model as exactly as an FP32 file matches the
    original. The rounding itself changes the model slightly: evaluate the rounded model.
    """
    with torch.no_grad():
        for m in model.modules():
            if type(m) in (nn.Conv2d, ExactConv2d):
                m.weight.copy_(m.weight.half().float())
    return model


class _Writer:
    """Collects tensors and ops while walking the model; ``fp16``: FP conv weights stored as
    float16, which must hold them exactly (see :func:`round_fp16_`)."""

    def __init__(self, fp16: bool = False) -> None:
        self.fp16 = fp16
        self.tensors: dict[str, np.ndarray] = {}
        self.ops: list[dict[str, Any]] = []
        self._n = 0

    def tensor(self, name: str, value: np.ndarray | None) -> str | None:
        if value is None:
            return None
        self.tensors[name] = np.ascontiguousarray(value)
        return name

    def fresh(self, stem: str) -> str:
        self._n += 1
        return f"{stem}{self._n}"

    def fp_conv(self, name: str, conv: nn.Conv2d, src: str, dst: str, leaky: float | None = None,
                shuffle: int = 1, gate: bool = False) -> None:
        """An FP conv op; ``gate``: SCALES' spatial gate op instead (the 1-channel conv and its sigmoid,
        computed in float64 as :class:`binsr.nn.SpatialGate` does)."""
        if conv.stride != (1, 1) or conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise BinsrError(f"{name}: only stride-1, ungrouped, zero-padded FP convs are exported")
        if conv.padding[0] != conv.padding[1] or conv.dilation[0] != conv.dilation[1]:
            raise BinsrError(f"{name}: only square padding/dilation are exported")
        w = _np(conv.weight).transpose(2, 3, 1, 0).reshape(-1, conv.out_channels)  # (ky, kx, c) x O
        if self.fp16:
            w16 = w.astype(np.float16)
            if not np.array_equal(w16.astype(np.float32), w):
                raise BinsrError(f"{name}: weights are not float16 values; round the model with "
                                 "binsr.deploy.round_fp16_(model) first (binsr export --fp16-weights does)")
            w = w16
        op = {"op": "conv", "src": src, "dst": dst, "w": self.tensor(f"{name}.w", w),
              "b": self.tensor(f"{name}.b", None if conv.bias is None else _np(conv.bias)),
              "pad": conv.padding[0], "dil": conv.dilation[0], "leaky": leaky, "shuffle": shuffle,
              "fp64": isinstance(conv, ExactConv2d)}
        if gate:
            op.update(op="spatial_gate")
            del op["leaky"], op["shuffle"], op["fp64"]
        self.ops.append(op)


def _leaky_slope(act: nn.Module) -> float | None:
    """Slope of a kept activation (None for identity)."""
    if isinstance(act, nn.Identity):
        return None
    if isinstance(act, nn.LeakyReLU):
        return float(act.negative_slope)
    if isinstance(act, nn.ReLU):
        return 0.0
    raise BinsrError(f"activation {type(act).__name__} is not supported by the packed engine")


def _act_bits(quantizer: nn.Module) -> tuple[np.ndarray | None, float | None]:
    """(per-channel threshold, layer-wise scale) of an activation binarizer."""
    a = quantizer.export()
    return (None if a.threshold is None else _np(a.threshold),
            None if a.scale is None else float(a.scale))


def _unit(unit: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
    """The BinaryConv2d inside a recipe unit and what surrounds it."""
    from binsr.nn.binary_conv import BinaryConv2d
    from binsr.nn.blocks import BBCUConv, E2FIFConv, IRNetConv, ScalesConv

    conv = unit if isinstance(unit, BinaryConv2d) else getattr(unit, "conv", None)
    if isinstance(conv, BinaryConv2d) and conv.act_quant.precision != 1:
        raise BinsrError(f"{type(unit).__name__} convolves full-precision activations (recipe weight_only binarizes "
                         "weights only); the packed engine runs 1-bit activations only")
    if type(unit) is BinaryConv2d:
        return unit, {"skip": False}
    if type(unit) not in (E2FIFConv, IRNetConv, BBCUConv, ScalesConv):
        raise BinsrError(f"unit {type(unit).__name__} is not supported by the packed engine")
    if unit.skip is not None and unit.skip.in_ch != unit.skip.out_ch:
        raise BinsrError("channel-changing skips are not supported by the packed engine")
    return conv, {"skip": unit.skip is not None, "bn": getattr(unit, "bn", None), "rprelu": getattr(unit, "act", None),
                  "alignment": float(getattr(unit, "alignment", 1.0)),
                  "spatial": getattr(unit, "spatial", None), "channel": getattr(unit, "channel", None)}


def _binary_unit(wr: _Writer, name: str, unit: nn.Module, src: str, extra_res: list[str], post_act: float | None,
                 dst: str, next_thr: str | None, want_bits: bool, res_scale: float = 1.0) -> None:
    """Emit the ops of one recipe unit reading float ``src`` (and its bits ``src.bits``).

    ``res_scale`` multiplies the unit's output before ``extra_res`` is added (EDSR's residual
    scaling of a block's second conv, ``x + unit(t) * r``): the epilogue's ``post_scale``, applied
    after the unit's own skip and before ``extra_res`` in PyTorch's order (folding it into the
    conv's scale and bias rounds differently and flipped signs downstream: 99.71% of uint8 values
    equal on Set5 image 1 with the x4 zoo model)."""
    conv, parts = _unit(unit)
    ex = conv.export()
    left, right, top, bottom = ex.padding
    if ex.stride != (1, 1) or len({left, right, top, bottom}) != 1 or ex.dilation[0] != ex.dilation[1]:
        raise BinsrError(f"{name}: only stride 1 and symmetric padding/dilation are exported")
    cout = conv.out_channels
    _, a_scale = _act_bits(conv.act_quant)
    scale = np.full(cout, 1.0 if a_scale is None else a_scale, np.float32)
    shift = None
    if ex.weight.shift is not None and a_scale is None and parts.get("bn") is None:
        shift = ex.weight.shift.numpy().astype(np.int32)  # scale = 2**shift exactly
    elif ex.weight.scale is not None:
        scale = scale * _np(ex.weight.scale)
    bias = None if ex.bias is None else _np(ex.bias)
    act = None
    act_first = False
    bn = parts.get("bn")
    if bn is not None:
        # PyTorch's CPU inference BN, in float32: alpha = w * (1 / sqrt(var + eps)), beta = b - mean * alpha
        # with one rounding (an FMA: the float64 product of two float32 is exact), y = fma(x, alpha, beta);
        # rounding m * alpha first differs from torch in about 1% of the values (and flips signs downstream)
        s = np.float32(1) / np.sqrt(_np(bn.running_var) + np.float32(bn.eps)) * _np(bn.weight)
        scale = s if a_scale is None and ex.weight.scale is None else scale * s
        beta = (_np(bn.bias).astype(np.float64) - _np(bn.running_mean).astype(np.float64) * s).astype(np.float32)
        bias = beta + (0 if bias is None else bias * s)
    rp = parts.get("rprelu")
    div = 1.0
    if rp is not None:  # RPReLU(v) / k as torch computes it: the division stays a division
        div = float(parts["alignment"])
        act = (-_np(rp.shift_in.bias).ravel(), _np(rp.prelu.weight).ravel(), _np(rp.shift_out.bias).ravel())
        act_first = True
    if res_scale != 1.0 and post_act is not None:
        raise BinsrError(f"{name}: residual scale {res_scale} cannot be fused here")
    if post_act is not None and act is not None:
        raise BinsrError(f"{name}: RPReLU and a block activation cannot both be fused")
    pix = chan = None
    if parts.get("spatial") is not None:
        pix = wr.fresh("gate")
        wr.fp_conv(f"{name}.spatial", parts["spatial"].conv, src, pix, gate=True)
    if parts.get("channel") is not None:
        chan = wr.fresh("gate")
        ch = parts["channel"]
        wr.ops.append({"op": "channel_gate", "src": src, "dst": chan,
                       "w": wr.tensor(f"{name}.channel.w", _np(ch.conv.weight).ravel()),
                       "out_channels": cout})
    wr.ops.append({
        "op": "bconv", "src": f"{src}.bits", "dst": dst, "dst_bits": f"{dst}.bits" if want_bits else None,
        "cin": conv.in_channels, "k": conv.kernel_size[0], "dil": ex.dilation[0], "pad": left, "groups": ex.groups,
        "w": wr.tensor(f"{name}.w", pack_weights(ex.weight.signs.numpy())),
        "scale": wr.tensor(f"{name}.scale", scale if (scale != 1).any() else None),
        "shift": wr.tensor(f"{name}.shift", shift), "bias": wr.tensor(f"{name}.bias", bias),
        "pix": pix, "chan": chan,
        "act": None if act is None else [wr.tensor(f"{name}.act.{p}", v)
                                         for p, v in zip(("shift", "slope", "bias"), act)],
        "act_first": act_first, "leaky": post_act, "res": ([src] if parts["skip"] else []) + extra_res, "thr": next_thr,
        "div": div, "post_scale": float(res_scale), "post_after": 1 if parts["skip"] else 0,
    })


def _thr_name(wr: _Writer, name: str, quantizer: nn.Module) -> str | None:
    """The stored threshold tensor of an activation binarizer (None when it has none)."""
    return wr.tensor(f"{name}.thr", _act_bits(quantizer)[0])


def _act_quant(unit: nn.Module) -> nn.Module:
    """The activation binarizer of a recipe unit's binary conv."""
    return _unit(unit)[0].act_quant


def _srresnet(wr: _Writer, model: nn.Module) -> None:
    from binsr.models._common import ResidualBlock

    blocks = list(model.body)
    if not blocks or not all(isinstance(b, ResidualBlock) for b in blocks):
        raise BinsrError("SRResNet body must be ResidualBlocks")
    wr.fp_conv("head", model.conv_first, "x", "feat", leaky=_leaky_slope(model.lrelu))
    _pack(wr, "body.0.conv1", _act_quant(blocks[0].conv1), "feat")
    h = "feat"
    for i, b in enumerate(blocks):
        t, h_new = f"t{i}", f"h{i}"
        last = i == len(blocks) - 1
        _binary_unit(wr, f"body.{i}.conv1", b.conv1, h, [], _leaky_slope(b.act), t,
                     _thr_name(wr, f"body.{i}.conv2", _act_quant(b.conv2)), True)
        nxt = None if last else _thr_name(wr, f"body.{i + 1}.conv1", _act_quant(blocks[i + 1].conv1))
        outer = [h] if b.outer_skip else []
        _binary_unit(wr, f"body.{i}.conv2", b.conv2, t, outer + (["feat"] if last else []), None, h_new, nxt, not last,
                     res_scale=float(b.res_scale))
        h = h_new
    cur = _fp_tail(wr, model.tail, h)
    wr.ops.append({"op": "bilinear_add", "src": "x", "add": cur, "dst": "y", "scale": model.scale})


def _pack(wr: _Writer, name: str, quantizer: nn.Module, src: str) -> None:
    """Emit the sign bits ``src.bits`` of ``src`` under the threshold of an activation binarizer."""
    wr.ops.append({"op": "pack", "src": src, "dst": f"{src}.bits", "thr": _thr_name(wr, name, quantizer)})


def _binary_linear(wr: _Writer, name: str, unit: nn.Module, src: str, dst: str, res: list[str]) -> None:
    """A Transformer linear (``BinaryLinear`` or ``ScalesLinear``) as a packed 1x1 conv on the
    token map, its bits packed first; ``res`` are added after it. SCALES' token gate multiplies the
    whole output, bias included: the bias goes in as ``gate_bias`` (``bias * gate`` per token)."""
    from binsr.nn.binary_linear import BinaryLinear, ScalesLinear

    lin, gate = (unit.linear, unit.spatial) if isinstance(unit, ScalesLinear) else (unit, None)
    if type(lin) is not BinaryLinear or lin.act_quant.precision != 1 or lin.weight_quant.precision != 1:
        raise BinsrError(f"{name}: {type(unit).__name__} is not a binary linear the packed engine runs")
    _pack(wr, f"{name}.act", lin.act_quant, src)
    w = lin.weight_quant.export(lin.weight)
    _, a_scale = _act_bits(lin.act_quant)
    scale = np.ones(lin.out_features, np.float32) if w.scale is None else _np(w.scale)
    if a_scale is not None:
        scale = scale * np.float32(a_scale)
    bias = None if lin.bias is None else _np(lin.bias)
    pix = None
    if gate is not None:
        pix = wr.fresh("gate")
        wr.ops.append({"op": "linear", "src": src, "dst": pix, "w": wr.tensor(f"{name}.gate.w", _np(gate.fc.weight).T),
                       "b": wr.tensor(f"{name}.gate.b", _np(gate.fc.bias)), "fp64": True})
        wr.ops.append({"op": "sigmoid", "src": pix, "dst": pix, "fp64": True})
    signs = w.signs.numpy().reshape(lin.out_features, lin.in_features, 1, 1)
    wr.ops.append({
        "op": "bconv", "src": f"{src}.bits", "dst": dst, "dst_bits": None, "cin": lin.in_features, "k": 1, "dil": 1,
        "pad": 0, "groups": 1, "w": wr.tensor(f"{name}.w", pack_weights(signs)),
        "scale": wr.tensor(f"{name}.scale", scale if (scale != 1).any() else None), "shift": None,
        "bias": wr.tensor(f"{name}.bias", bias if pix is None else None),
        "gate_bias": wr.tensor(f"{name}.gate_bias", bias if pix is not None else None),
        "pix": pix, "chan": None, "act": None, "act_first": False, "res": res, "thr": None,
    })


def _layer_norm(wr: _Writer, name: str, norm: nn.Module, src: str) -> str:
    """Emit a LayerNorm of ``src`` (nothing for ``nn.Identity``); returns the output's name."""
    if isinstance(norm, nn.Identity):
        return src
    dst = wr.fresh("n")
    wr.ops.append({"op": "layernorm", "src": src, "dst": dst, "w": wr.tensor(f"{name}.w", _np(norm.weight)),
                   "b": wr.tensor(f"{name}.b", _np(norm.bias)), "eps": float(norm.eps),
                   "fp64": isinstance(norm, ExactLayerNorm)})
    return dst


def _body_conv(wr: _Writer, name: str, unit: nn.Module, src: str, res: list[str], dst: str) -> None:
    _pack(wr, name, _act_quant(unit), src)
    _binary_unit(wr, name, unit, src, res, None, dst, None, False)


def _swinir(wr: _Writer, model: nn.Module) -> None:
    """SwinIR (``binsr.models.swinir``): window padding, mean shift, FP head, the body (LayerNorms,
    packed linears, FP window attention, GELU, packed RSTB convs), FP tail, mean back, crop."""
    ws = model.window_size
    ones = np.ones(3, np.float32)
    mean = _np(model.mean).ravel()
    wr.ops.append({"op": "pad_window", "src": "x", "dst": "xp", "multiple": ws})
    wr.ops.append({"op": "affine", "src": "xp", "dst": "xn", "mul": wr.tensor("in.mul", ones * model.img_range),
                   "add": wr.tensor("in.add", -mean * model.img_range)})
    wr.fp_conv("head", model.conv_first, "xn", "feat")
    body = model.body
    t = _layer_norm(wr, "body.norm_in", body.norm_in, "feat")
    for bi, block in enumerate(body.blocks):
        y = t
        for li, layer in enumerate(block.layers):
            name = f"body.{bi}.{li}"
            qkv, att, y1 = (wr.fresh(s) for s in ("qkv", "att", "y"))
            n1 = _layer_norm(wr, f"{name}.norm1", layer.norm1, y)
            _binary_linear(wr, f"{name}.qkv", layer.attn.qkv, n1, qkv, [])
            table = _np(layer.attn.relative_position_bias_table)
            wr.ops.append({"op": "window_attention", "src": qkv, "dst": att, "heads": layer.attn.num_heads,
                           "window": ws, "shift": layer.shift, "scale": float(layer.attn.scale),
                           "table": wr.tensor(f"{name}.bias_table", table), "fp64": True})
            _binary_linear(wr, f"{name}.proj", layer.attn.proj, att, y1, [y])
            hid, act, y2 = (wr.fresh(s) for s in ("fc", "gelu", "y"))
            n2 = _layer_norm(wr, f"{name}.norm2", layer.norm2, y1)
            _binary_linear(wr, f"{name}.fc1", layer.mlp.fc1, n2, hid, [])
            wr.ops.append({"op": "gelu", "src": hid, "dst": act, "fp64": isinstance(layer.mlp.act, ExactGELU)})
            _binary_linear(wr, f"{name}.fc2", layer.mlp.fc2, act, y2, [y1])
            y = y2
        t_new = wr.fresh("t")
        _body_conv(wr, f"body.{bi}.conv", block.conv, y, [t], t_new)
        t = t_new
    tn = _layer_norm(wr, "body.norm_out", body.norm_out, t)
    _body_conv(wr, "body.conv_after_body", body.conv_after_body, tn, ["feat"], "deep")
    cur = _fp_tail(wr, model.tail, "deep")
    wr.ops.append({"op": "affine", "src": cur, "dst": "yp", "mul": wr.tensor("out.mul", ones / model.img_range),
                   "add": wr.tensor("out.add", mean)})
    wr.ops.append({"op": "crop", "src": "yp", "like": "x", "dst": "y", "scale": model.scale})


def _srbnas_conv(wr: _Writer, name: str, unit: nn.Module, src_bits: str, res: list[str], dst: str | None) -> dict:
    """Emit one SRBNAS binary op (``binsr.nas.ops.srbnas_conv``: SRBNASOp, Libra-PB weights, EDE
    signs against 0, then PowerOfTwoScale) as a bconv; returns the op (its ``dst_bits`` may be set
    later). ``dot * 2^s_o * 2^-p`` is exact in float32 whichever way it is computed, so the two
    powers of two go in as one per-channel ``shift = s_o - p``; ``res`` are added after it in their
    order."""
    from binsr.nas.ops import PowerOfTwoScale
    from binsr.nn.blocks import SRBNASOp

    parts = list(unit) if isinstance(unit, nn.Sequential) else [unit]
    if (len(parts) != 2 or type(parts[0]) is not SRBNASOp or type(parts[1]) is not PowerOfTwoScale
            or parts[0].act_quant.precision != 1 or parts[0].weight_quant.precision != 1):
        raise BinsrError(f"{name}: the packed engine runs SRBNAS cells of skip_connect and the paper's binary ops "
                         f"(recipe irnet or srbnas: SRBNASOp then PowerOfTwoScale), not {type(unit).__name__}")
    conv, p2 = parts
    ex = conv.export()
    thr, a_scale = _act_bits(conv.act_quant)
    if thr is not None or a_scale is not None or ex.bias is not None:
        raise BinsrError(f"{name}: SRBNAS ops binarize against 0 without scale or bias (EDE); this one does not")
    left, right, top, bottom = ex.padding
    if ex.stride != (1, 1) or len({left, right, top, bottom}) != 1 or ex.dilation[0] != ex.dilation[1]:
        raise BinsrError(f"{name}: only stride 1 and symmetric padding/dilation are exported")
    if ex.weight.shift is None:
        raise BinsrError(f"{name}: SRBNAS ops need power-of-two weight scales (Libra-PB)")
    shift = ex.weight.shift.numpy().astype(np.int64) - int(p2.shift)
    op = {"op": "bconv", "src": src_bits, "dst": dst, "dst_bits": None, "cin": conv.in_channels,
          "k": conv.kernel_size[0], "dil": ex.dilation[0], "pad": left, "groups": ex.groups,
          "w": wr.tensor(f"{name}.w", pack_weights(ex.weight.signs.numpy())),
          "shift": wr.tensor(f"{name}.shift", shift.astype(np.int32)), "res": list(res)}
    wr.ops.append(op)
    return op


class _States:
    """The float maps of an SRBNAS network and their sign bits, made on demand: the bits of a map a
    bconv writes come from that bconv's ``dst_bits``, others from a ``pack``."""

    def __init__(self, wr: _Writer) -> None:
        self.wr = wr
        self.maker: dict[str, dict] = {}  # map -> the bconv that writes it
        self.made: dict[str, str] = {}  # map -> its bits

    def bits(self, name: str) -> str:
        if name not in self.made:
            bits = f"{name}.bits"
            if name in self.maker:
                self.maker[name]["dst_bits"] = bits
            else:
                self.wr.ops.append({"op": "pack", "src": name, "dst": bits, "thr": None})
            self.made[name] = bits
        return self.made[name]


def _srbnas(wr: _Writer, model: nn.Module) -> None:
    """SRBNAS (``binsr.models.srbnas``, ``binsr.nas.network``): FP head, the cells, FP tail, bilinear
    shortcut. In a cell (inputs s0, s1; node j = the sum of its edges, left to right as Python's
    ``sum``): a conv edge is a bconv of its state's bits that adds the node's partial sum as its
    residual (``conv + acc``, the same float32 sum as ``acc + conv``); a skip edge is a residual of
    the previous edge's bconv (``(conv + acc) + skip``), or an ``add`` when there is none (a node's
    first edges both skips). The nodes' bits are concatenated (``concat``) for the fuse, a 1x1 bconv
    over 4C channels with residual s1 (and, after the last cell, the head features: shortcut 1).
    Every binary value is ``dot * 2^shift``, exact, so the body is bit-exact to PyTorch's given the
    same head features; a node map no edge reads as a float is written as bits only."""
    from binsr.nas.network import Cell

    wr.fp_conv("head", model.head, "x", "feat")
    st = _States(wr)
    s0 = s1 = "feat"
    cells = list(model.body)
    for ci, cell in enumerate(cells):
        if type(cell) is not Cell:
            raise BinsrError(f"body.{ci}: {type(cell).__name__} is not an SRBNAS cell (binsr.nas.network.Cell)")
        states = [s0, s1]
        for j, (ops, sources) in enumerate(zip(cell.ops, cell.sources)):
            acc: str | None = None  # the node's partial sum so far
            last: dict | None = None  # the bconv that wrote acc, while it may take more residuals
            for e, (op, src) in enumerate(zip(ops, sources)):
                name, state = f"body.{ci}.ops.{j}.{e}", states[src]
                if isinstance(op, nn.Identity):
                    if acc is None:
                        acc = state  # 0 + s: the map itself
                    elif last is not None and len(last["res"]) < 3:
                        last["res"].append(state)
                    else:
                        dst = f"c{ci}.n{j}.{e}"
                        wr.ops.append({"op": "add", "src": acc, "add": state, "dst": dst})
                        acc, last = dst, None
                    continue
                dst = f"c{ci}.n{j}.{e}"
                last = _srbnas_conv(wr, name, op, st.bits(state), [] if acc is None else [acc], dst)
                acc = dst
            node = f"c{ci}.n{j}"
            if last is not None and last["dst"] == acc:  # the node's own name
                last["dst"] = node
                st.maker[node] = last
                acc = node
            states.append(acc)
        cat = f"c{ci}.cat"
        wr.ops.append({"op": "concat", "srcs": [st.bits(n) for n in states[2:]], "dst": cat})
        out = f"c{ci}" if ci < len(cells) - 1 else "deep"
        fuse = _srbnas_conv(wr, f"body.{ci}.fuse", cell.fuse, cat, [s1] + (["feat"] if out == "deep" else []), out)
        st.maker[out] = fuse
        s0, s1 = s1, out
    # a float map no op reads (a node read only through its bits) is not written
    read = {n for op in wr.ops for k, v in op.items() if k not in ("op", "dst", "dst_bits")
            for n in (v if isinstance(v, list) else [v]) if isinstance(n, str)}
    for op in wr.ops:
        if op["op"] == "bconv" and op["dst_bits"] is not None and op["dst"] not in read:
            op["dst"] = None
    cur = _fp_tail(wr, model.tail, "deep")
    wr.ops.append({"op": "bilinear_add", "src": "x", "add": cur, "dst": "y", "scale": model.scale})


def _flatten(mod: nn.Module) -> list[nn.Module]:
    if isinstance(mod, nn.Sequential):
        return [m for child in mod for m in _flatten(child)]
    return [mod]


def _fp_tail(wr: _Writer, tail: nn.Module, src: str) -> str:
    """Emit FP convs, each with its following PixelShuffle and LeakyReLU/ReLU fused."""
    mods = _flatten(tail)
    i = 0
    while i < len(mods):
        conv = mods[i]
        if not isinstance(conv, nn.Conv2d):
            raise BinsrError(f"tail module {type(conv).__name__} is not supported by the packed engine")
        shuffle, slope = 1, None
        if i + 1 < len(mods) and isinstance(mods[i + 1], nn.PixelShuffle):
            i += 1
            shuffle = mods[i].upscale_factor
        if i + 1 < len(mods) and isinstance(mods[i + 1], (nn.LeakyReLU, nn.ReLU)):
            i += 1
            slope = _leaky_slope(mods[i])
        dst = wr.fresh("tail")
        wr.fp_conv(f"{dst}.conv", conv, src, dst, leaky=slope, shuffle=shuffle)
        src = dst
        i += 1
    return src


def export_packed(model: nn.Module, path: str | os.PathLike, fp16: bool = False) -> dict[str, int]:
    """Write ``model`` (eval mode) as a packed file; returns bytes per part (binary, fp, total).
    ``fp16``: store the FP conv weights in float16 (lossless: they must be float16 values, see
    :func:`round_fp16_`)."""
    from binsr.models.srbnas import SRBNAS
    from binsr.models.srresnet import SRResNet
    from binsr.models.swinir import SwinIR

    walk = next((fn for cls, fn in ((SRResNet, _srresnet), (SwinIR, _swinir), (SRBNAS, _srbnas))
                 if isinstance(model, cls)), None)
    if walk is None:
        raise BinsrError(f"export supports SRResNet, SwinIR and SRBNAS models, not {type(model).__name__}")
    model = model.eval()
    wr = _Writer(fp16)
    with torch.no_grad():
        walk(wr, model)
    # an absent field reads as its default (None unless runtime.DEFAULTS names one)
    ops = [{k: v for k, v in op.items() if v is not None and not (k in DEFAULTS and v == DEFAULTS[k])}
           for op in wr.ops]
    graph = {"format": FORMAT, "version": VERSION, "signature": getattr(model, "signature", None),
             "scale": model.scale, "input": "x", "output": "y", "ops": ops}
    path = Path(path)
    meta = {"binsr": json.dumps(graph, separators=(",", ":"))}
    atomic_write(path, lambda tmp: save_file(wr.tensors, str(tmp), metadata=meta))
    binary = sum(v.nbytes for v in wr.tensors.values() if v.dtype == np.uint64)
    return {"binary_bytes": binary, "fp_bytes": sum(v.nbytes for v in wr.tensors.values()) - binary,
            "file_bytes": path.stat().st_size}
