"""Binary conv units: shape-preserving drop-in replacements for one body conv, one per method.

Every unit maps (N, in_ch, H, W) to (N, out_ch, H', W') with ``H' = H`` at stride 1 (same
padding from :func:`binsr.nn.same_padding`) and takes ``(in_ch, out_ch, kernel_size, stride=1,
dilation=1, groups=1)`` first. Each holds exactly one ``BinaryConv2d`` (the only module with
quantizers, so bit-aware profilers count one binary conv per unit); BN, skips, RPReLU and gates
are full precision.

Full-precision skip with ``in_ch != out_ch`` (:class:`FPSkip`): E2FIF's code (``BasicBlock``)
drops the skip then, while the paper keeps "a full-precision skip connection or its variant over
each binarized convolution" and BBCU's upsampling unit (``BinaryUpConv2d``) repeats the input.
binsr keeps a parameter-free skip whenever the channel counts divide: ``out = m * in`` repeats
each channel m times (``repeat_interleave``; followed by PixelShuffle this is nearest upsampling,
exactly BBCU's upsampling skip; ReActNet tiles instead, by concatenating two convs), ``in = m *
out`` averages groups of m consecutive channels; otherwise the skip is dropped, as E2FIF's code
does. At stride s > 1 the skip is s x s average pooled (ceil mode; ReActNet pools its shortcut
the same way) to the conv's output size (odd receptive fields).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from binsr.nn.attention import ChannelGate, SpatialGate
from binsr.nn.bias_act import RPReLU
from binsr.nn.binary_conv import BinaryConv2d, same_padding

__all__ = [
    "FPSkip",
    "same_binary_conv",
    "E2FIFConv",
    "BBCUConv",
    "ScalesConv",
    "IRNetConv",
    "SRBNASOp",
    "LTAttnConv",
    "WeightOnlyConv",
]

QuantizerSpec = Any  # name, config dict, Quantizer instance or None (see binsr.quant.get)


class FPSkip(nn.Module):
    """Parameter-free full-precision shortcut from ``in_ch`` to ``out_ch`` channels (see module doc).

    Args:
        in_ch: input channels.
        out_ch: output channels; one of ``in_ch``, ``out_ch`` must divide the other.
        stride: spatial stride of the conv it bypasses. Default 1.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        if not self.supported(in_ch, out_ch):
            raise ValueError(f"no parameter-free skip from {in_ch} to {out_ch} channels")
        self.in_ch, self.out_ch, self.stride = in_ch, out_ch, stride

    @staticmethod
    def supported(in_ch: int, out_ch: int) -> bool:
        """True when one channel count divides the other."""
        return out_ch % in_ch == 0 or in_ch % out_ch == 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = F.avg_pool2d(x, self.stride, self.stride, ceil_mode=True)
        if self.out_ch > self.in_ch:
            return x.repeat_interleave(self.out_ch // self.in_ch, dim=1)
        if self.out_ch < self.in_ch:
            n, _, h, w = x.shape
            return x.view(n, self.out_ch, self.in_ch // self.out_ch, h, w).mean(2)
        return x

    def extra_repr(self) -> str:
        return f"{self.in_ch}, {self.out_ch}, stride={self.stride}"


def same_binary_conv(
    in_ch: int,
    out_ch: int,
    kernel_size: int,
    stride: int = 1,
    dilation: int = 1,
    groups: int = 1,
    act_quant: QuantizerSpec = "ste",
    weight_quant: QuantizerSpec = "xnor",
) -> BinaryConv2d:
    """A ``BinaryConv2d`` with same-size (+1) padding and no bias; defaults give a plain BNN conv.

    Plain BNN (``bnn`` recipe): sign activations with the identity STE and XNOR weights (Rastegari
    et al. 2016, arXiv:1603.05279), no skip, no BN. Forward/backward: see ``BinaryConv2d``.
    """
    return BinaryConv2d(
        in_ch, out_ch, kernel_size, stride, same_padding(kernel_size, dilation, stride), dilation, groups,
        bias=False, act_quant=act_quant, weight_quant=weight_quant,
    )


class _SkipUnit(nn.Module):
    """``branch(x) + FPSkip(x)`` (the skip is dropped when the channel counts do not divide)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.skip = FPSkip(in_ch, out_ch, stride) if FPSkip.supported(in_ch, out_ch) else None

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.branch(x)
        return y if self.skip is None else y + self.skip(x)


class E2FIFConv(_SkipUnit):
    """E2FIF unit: binary conv, BN, and a full-precision skip over it.

    ``y = BN(BinConv(x)) + skip(x)`` with ``BinConv`` = sign activations with the ApproxSign
    estimator (E2FIF's ``Q_A``: backward ``max(2 - 2|x|, 0)``) and plain sign weights with the
    identity estimator (``Q_W``), no weight scale. Lang et al., "E2FIF: Push the Limit of Binarized
    Deep Imagery Super-resolution using End-to-end Full-precision Information Flow",
    arXiv:2207.06893; code pppLang/E2FIF ``model/edsr_e2fif.py`` (``ResBlock``: ``conv1(x) + x``).
    The conv has no bias (E2FIF's has one before BN, where it is redundant).

    Args:
        in_ch, out_ch, kernel_size, stride, dilation, groups: conv geometry.
        act_quant: activation binarizer. Default ``"approx_sign"``.
        weight_quant: weight binarizer. Default ``"sign"``.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        act_quant: QuantizerSpec = "approx_sign",
        weight_quant: QuantizerSpec = "sign",
    ) -> None:
        super().__init__(in_ch, out_ch, stride)
        self.conv = same_binary_conv(in_ch, out_ch, kernel_size, stride, dilation, groups, act_quant, weight_quant)
        self.bn = nn.BatchNorm2d(out_ch)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class BBCUConv(_SkipUnit):
    """BBCU: RSign, binary conv with XNOR weights, RPReLU, aligned residual; no BN.

    ``y = RPReLU(BinConv(x)) / k + skip(x)``; ``BinConv`` binarizes ``sign(x - b_c)`` (RSign with
    the ApproxSign estimator) and XNOR weights ``mean|W_o| sign(W)`` (clipped STE). Xia et al.,
    "Basic Binary Convolution Unit for Binarized Image Restoration Network", ICLR 2023,
    arXiv:2210.00405; code Zj-BinXia/BBCU ``quant_convs_bbcu.py`` (``BinaryConv2d``: move0, sign,
    ``HardBinaryConv``, RPReLU, ``+ x``; RPReLU comes before the residual addition, as the code).

    Residual alignment: BBCU's ``BBCUL.forward`` multiplies the network input by ``k`` (``k:
    130.`` in ``train_BBCUL_x*.yml`` and ``train_BBCUM_x*.yml``, all at 64 channels) and divides the
    output by ``k`` so the residual is not drowned by the binary branch. Since the head/tail convs
    are affine and (R)PReLU/LeakyReLU are positively homogeneous, that equals, up to rescaling
    biases and thresholds, dividing every unit's binary branch by ``k``, which this unit does so
    that any backbone gets the alignment. Reading for other widths: ``k = 130 * n / 64`` for ``n``
    input channels (BBCU's README; the binary branch's magnitude grows with the ``n * k * k`` terms
    it sums), so 130 at the published width.

    Args:
        in_ch, out_ch, kernel_size, stride, dilation, groups: conv geometry.
        act_quant: activation binarizer. Default ``"rsign"``.
        weight_quant: weight binarizer. Default ``"xnor"``.
        alignment: the residual-alignment constant ``k``. Default None: ``130 * in_ch / 64``.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        act_quant: QuantizerSpec = "rsign",
        weight_quant: QuantizerSpec = "xnor",
        alignment: float | None = None,
    ) -> None:
        super().__init__(in_ch, out_ch, stride)
        self.alignment = 130.0 * in_ch / 64 if alignment is None else float(alignment)
        self.conv = same_binary_conv(in_ch, out_ch, kernel_size, stride, dilation, groups, act_quant, weight_quant)
        self.act = RPReLU(out_ch)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x)) / self.alignment

    def extra_repr(self) -> str:
        return f"alignment={self.alignment}"


class ScalesConv(_SkipUnit):
    """SCALES unit: layer-wise scaled binary activations, XNOR weights, spatial and channel re-scaling.

    ``y = [alpha * (sign(x - beta) (*) sign(W)) * mean|W_o|] . S(x) . C(x) + skip(x)`` where
    ``(*)`` is the +1-padded binary conv, ``S(x) = sigmoid(Conv(x))`` the spatial re-scaling
    (Eq. (4), :class:`SpatialGate`), ``C(x) = sigmoid(Conv1d_5(GAP(x)))`` the channel re-scaling
    (Eq. (5), :class:`ChannelGate`), both computed from the FP activation before binarization, and
    ``skip`` the FP shortcut (Sec. IV-C: "we also incorporate a skip connection following [Bi-Real,
    E2FIF]"); no BN. Backward: SCALES Eqs. (2)-(3) for ``alpha``, ``beta`` (``ScalesAct``),
    autograd for the rest. Wei et al., "SCALES", arXiv:2303.12270, Sec. IV, Fig. 8.
    The flags build the ablation rows of Table V: LSF (both off), LSF + chl. re-scale
    (``spatial=False``), LSF + spatial re-scale (``channel=False``), SCALES (both on).

    Args:
        in_ch, out_ch, kernel_size, stride, dilation, groups: conv geometry.
        act_quant: activation binarizer. Default ``"scales_act"``.
        weight_quant: weight binarizer. Default ``"xnor"``.
        spatial: use the spatial re-scaling. Default True.
        channel: use the channel re-scaling. Default True.
        channel_kernel: Conv1d kernel of the channel re-scaling. Default 5 (the paper's).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        act_quant: QuantizerSpec = "scales_act",
        weight_quant: QuantizerSpec = "xnor",
        spatial: bool = True,
        channel: bool = True,
        channel_kernel: int = 5,
    ) -> None:
        super().__init__(in_ch, out_ch, stride)
        self.conv = same_binary_conv(in_ch, out_ch, kernel_size, stride, dilation, groups, act_quant, weight_quant)
        self.spatial = SpatialGate(in_ch, kernel_size, stride, dilation) if spatial else None
        self.channel = ChannelGate(channel_kernel, out_ch) if channel else None

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.spatial is not None:
            y = y * self.spatial(x)
        if self.channel is not None:
            y = y * self.channel(x)
        return y


class IRNetConv(E2FIFConv):
    """IR-Net unit: Libra-PB weights, EDE activations, BN and a full-precision skip.

    ``y = BN(BinConv(x)) + skip(x)``; ``BinConv`` binarizes activations with ``sign`` and the EDE
    backward ``k t (1 - tanh^2(t x))``, and weights with Libra-PB (``sign((W - mean)/std)`` times
    ``2^round(log2 mean|W_hat|)``, EDE backward). Qin et al., "Forward and Backward Information
    Retention for Accurate Binary Neural Networks", CVPR 2020, arXiv:1909.10788; code htqin/IR-Net
    ``ir_1w1a.py`` (``IRConv2d``) and ``resnet.py`` (``bn(conv(x)) + shortcut`` per conv). The
    code's ``hardtanh`` after each addition is left out (it would clip SR features to [-1, 1]).
    Call :func:`binsr.nn.set_progress` to move both EDE schedules. The unit is
    :class:`E2FIFConv`'s (BN over the binary conv, FP skip) with these binarizers.

    Args:
        in_ch, out_ch, kernel_size, stride, dilation, groups: conv geometry.
        act_quant: activation binarizer. Default ``"ede"``.
        weight_quant: weight binarizer. Default ``"libra_pb"``.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        act_quant: QuantizerSpec = "ede",
        weight_quant: QuantizerSpec = "libra_pb",
    ) -> None:
        super().__init__(in_ch, out_ch, kernel_size, stride, dilation, groups, act_quant, weight_quant)


class SRBNASOp(BinaryConv2d):
    """SRBNAS search-space operation: binary (dilated) group conv with Libra-PB and EDE, no BN.

    ``y = (sign(x) (*) sign(W_hat)) << s_o``: +1-padded binary conv, Libra-PB weights (SRBNAS
    Eqs. (14)-(16)), EDE backward for both (Sec. 5); no batch norm ("batch norm acts as a contrast
    stretcher", Sec. 5) and no skip inside the op (the cell's ``skip connection`` is a separate
    candidate, Table 1). Covers Table 1's 3x3/5x5 (dilated) and 7x7 binary group convs. Su et al.,
    "Deep Learning and Neural Architecture Search for Optimizing Binary Neural Network Image Super
    Resolution", Biomimetics 2024, 9(6):369, doi:10.3390/biomimetics9060369 (no arXiv version).

    Args:
        in_ch, out_ch, kernel_size, stride, dilation, groups: conv geometry (same-size padding).
        act_quant: activation binarizer. Default ``"ede"``.
        weight_quant: weight binarizer. Default ``"libra_pb"``.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        act_quant: QuantizerSpec = "ede",
        weight_quant: QuantizerSpec = "libra_pb",
    ) -> None:
        super().__init__(
            in_ch, out_ch, kernel_size, stride, same_padding(kernel_size, dilation, stride), dilation, groups,
            bias=False, act_quant=act_quant, weight_quant=weight_quant,
        )


class LTAttnConv(_SkipUnit):
    """LT-attn unit of the seed preprint: attention-reweighted input, learnable-threshold sign.

    ``a = x . C(x) [. S(x)]``, ``y = RPReLU(BinConv(a)) + skip(x)``: a light attention re-weights
    the FP input before binarization (channel gate ``C = sigmoid(Conv1d_3(GAP(x)))``, optional
    spatial gate ``S = sigmoid(Conv3x3_{C -> 1}(x))``), then ``sign(a - b_c)`` with a selectable
    estimator (RSign, the learnable threshold the preprint takes from BBCU), XNOR weights with a
    per-channel scale (Ma et al. 2019's scaled binary weights) and BBCU's RPReLU and FP skip.
    Ovcharenko & Zharikov, "Lossless picture quality for binary neural networks in pixel-level
    tasks" (preprint, ``shared/papers/lossless-bnn-sr-preprint.md``, Sec. 1); the preprint gives
    no equations, so the attention forms and the BBCU body are binsr's reading. Its estimator study
    is ``estimator`` in {ste, clipped_ste, approx_sign, ede} x ``attention`` in {none, channel}.

    Args:
        in_ch, out_ch, kernel_size, stride, dilation, groups: conv geometry.
        estimator: sign estimator of the RSign (name, config or module). Default ``"approx_sign"``.
        weight_quant: weight binarizer. Default ``"xnor"``.
        attention: ``"none"``, ``"channel"`` or ``"channel_spatial"``. Default ``"channel"``.
        channel_kernel: Conv1d kernel of the channel gate. Default 3 (ECA's size for 64 channels).
    """

    ATTENTION = ("none", "channel", "channel_spatial")

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        estimator: QuantizerSpec = "approx_sign",
        weight_quant: QuantizerSpec = "xnor",
        attention: str = "channel",
        channel_kernel: int = 3,
    ) -> None:
        super().__init__(in_ch, out_ch, stride)
        if attention not in self.ATTENTION:
            raise ValueError(f"attention must be one of {', '.join(self.ATTENTION)}; got {attention!r}")
        self.attention = attention
        self.channel = ChannelGate(channel_kernel) if attention != "none" else None
        self.spatial = SpatialGate(in_ch, 3) if attention == "channel_spatial" else None
        act_quant = {"type": "rsign", "estimator": estimator}
        self.conv = same_binary_conv(in_ch, out_ch, kernel_size, stride, dilation, groups, act_quant, weight_quant)
        self.act = RPReLU(out_ch)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        a = x
        if self.channel is not None:
            a = a * self.channel(x)
        if self.spatial is not None:
            a = a * self.spatial(x)
        return self.act(self.conv(a))

    def extra_repr(self) -> str:
        return f"attention={self.attention}"


class WeightOnlyConv(nn.Module):
    """Ma et al. 2019 unit: FP activations, sign weights with a learnable per-filter scale, BN; no skip.

    ``y = BN(x (*) (alpha_o sign(W)))``: the full-precision input, zero padded, convolved with the
    binary weights (:class:`~binsr.quant.ScaledSign`: ``alpha_o`` learnable, initialised to
    ``mean |W_o|``, clipped-STE backward ``alpha_o 1[|W| <= 1]``; no bias, BN follows), then BN.
    Ma et al., "Efficient Super Resolution Using Binarized Neural Network", CVPR Workshops 2019,
    arXiv:1812.06378 ("we binarize the convolutional filters in only residual blocks, and adopt a
    learnable weight for each binary filter", abstract); SCALES (arXiv:2303.12270, Sec. II-B, its
    [23]): "they only binarize weights and leave activations at FP".

    Reading, block by block (the stored copies of the paper give its abstract only; the one public
    implementation is the unofficial twice154/binary-srgan-pytorch):

    * Block: SRResNet's (Ledig et al. 2017, arXiv:1609.04802, Fig. 4), which the paper binarizes
      with only the convs changed: ``x + BN(conv(PReLU(BN(conv(x)))))``. So BN stays after each
      binary conv (twice154's SRResNet_x4.json: ``"norm_type": "batch"``) and the kept activation
      is PReLU (SRResNet's, one slope per layer, ``nn.PReLU()``; twice154 trains ``nn.PReLU``
      parameters), and the unit has no skip of its own: the block keeps its one outer path.
    * ``alpha_o`` starts at XNOR-Net's ``mean |W_o|`` (Rastegari et al. 2016, Sec. 3.1, the
      scale it makes learnable; twice154's ``bin.py`` recomputes that value every step instead).
      In training mode BN right after the conv cancels any per-channel factor up to its ``eps``,
      so ``alpha_o`` gets nearly no gradient there; it is kept, as the paper's block has both.
    * Weight gradient: the clipped STE ``1[|W| <= 1]`` (BNN/BinaryConnect, arXiv:1602.02830,
      Sec. 1.3; twice154's ``updateBinaryGradWeight`` zeroes the sign's term outside [-1, 1]
      too). twice154's XNOR-Net extras (mean-centring and clamping the latent weights each
      step) are left out, as in binsr's other weight binarizers.
    * Activations stay FP: no activation quantizer, so the packed engine cannot run the unit
      (``binsr export`` refuses it) and ``binsr profile`` counts its weights as binary
      parameters and its MACs as FLOPs (``binsr.models.complexity``).

    Args:
        in_ch, out_ch, kernel_size, stride, dilation, groups: conv geometry.
        weight_quant: weight binarizer. Default ``"scaled_sign"``.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        weight_quant: QuantizerSpec = "scaled_sign",
    ) -> None:
        super().__init__()
        self.conv = same_binary_conv(in_ch, out_ch, kernel_size, stride, dilation, groups, None, weight_quant)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))
