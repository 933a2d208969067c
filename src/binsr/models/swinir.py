"""SwinIR (Liang et al., ICCVW 2021) for SR, lightweight and classical, with injected binarization.

Paper: "SwinIR: Image Restoration Using Swin Transformer", arXiv:2108.10257.
Ref code: JingyunLiang/SwinIR ``models/network_swinir.py`` (read for the details; written anew).

Structure (as the official code): RGB mean subtraction (DIV2K mean, ``img_range`` 1), head conv
``conv_first``; the body (:class:`SwinIRBody`): LayerNorm over the tokens, residual Swin
Transformer blocks (RSTB: ``depth`` Swin Transformer layers, window multi-head self-attention
with a relative position bias, shifted windows with the attention mask in every second layer,
MLP with GELU, pre-LN residuals, stochastic depth; then a 3x3 conv and the RSTB residual), a
final LayerNorm and ``conv_after_body``; the global residual from the head features; the tail
(``pixelshuffledirect``: one conv to ``3 * scale**2`` channels and PixelShuffle, the lightweight
model; ``pixelshuffle``: conv + LeakyReLU, PixelShuffle stages, conv, the classical model); the
mean added back. The input is padded to a multiple of ``window_size`` (reflect, as the official
``check_image_size``; replicate where the image is too small to reflect) and the output cropped
back, so any image size works. Differences from the official code: shifted layers always shift
and mask (the official code drops the shift when its training ``img_size`` fits in one window),
the mask is computed for the padded size at every forward (no buffer), no absolute position
embedding option (``ape``, off in every released model), no ``patch_size`` > 1 option.

``swinir_light`` with recipe ``fp`` has 897,228 parameters at x4 and 877,752 at x2 (SCALES Table
IV: 897K and 878K).

Binarization (a recipe, :mod:`binsr.nn.recipes`): inside the body, the four linears of every
Swin Transformer layer (``attn.qkv``, ``attn.proj``, ``mlp.fc1``, ``mlp.fc2``) are
``recipe.linear`` and the conv of every RSTB and ``conv_after_body`` are ``recipe.conv``. Full
precision in every recipe: the head conv and the tail (SCALES Sec. V-A: "the head and tail modules
are not binarized"), the LayerNorms, the attention products ``q k^T`` and ``attn v`` and the
softmax, the relative position bias, GELU, the linear biases and the recipe's gates. Recipes
without a linear unit (e2fif, bbcu, irnet, lt_attn) raise ``UsageError``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from binsr.errors import UsageError
from binsr.models._common import Upsampler, check_scale, get_recipe
from binsr.models._registry import register_model
from binsr.nn.exact import ExactConv2d, ExactGELU, ExactLayerNorm, fp64_at_inference
from binsr.nn.recipes import Recipe, linear_recipe_names

__all__ = [
    "SwinIR",
    "SwinIRBody",
    "RSTB",
    "SwinTransformerLayer",
    "WindowAttention",
    "window_partition",
    "window_reverse",
    "shifted_window_mask",
]

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)  # the official code's ``rgb_mean``


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * H/ws * W/ws, ws * ws, C), windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // window_size, window_size, w // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size * window_size, c)


def window_reverse(windows: torch.Tensor, window_size: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B * nW, ws * ws, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window_size, w // window_size, window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


def shifted_window_mask(h: int, w: int, window_size: int, shift: int, device=None) -> torch.Tensor:
    """Attention mask of the shifted windows, (nW, ws*ws, ws*ws): 0 within a region, -100 across.

    After the cyclic shift by ``-shift``, a window at the bottom/right border holds tokens from up
    to four image regions that are not neighbours; tokens of different regions must not attend
    to each other (Swin Transformer, Liu et al. 2021, arXiv:2103.14030, Sec. 3.2; -100 as the
    official code, which the softmax turns into 0).
    """
    label = torch.zeros(1, h, w, 1, device=device)
    cuts = (slice(0, -window_size), slice(-window_size, -shift), slice(-shift, None))
    region = 0
    for hs in cuts:
        for ws in cuts:
            label[:, hs, ws, :] = region
            region += 1
    windows = window_partition(label, window_size).squeeze(-1)  # nW, N
    diff = windows.unsqueeze(1) - windows.unsqueeze(2)
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


class DropPath(nn.Module):
    """Stochastic depth per sample (Huang et al. 2016): zero a residual branch with probability ``p``
    in training and scale the kept ones by ``1 / (1 - p)``; the identity in eval mode."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class WindowAttention(nn.Module):
    """Window multi-head self-attention with a learned relative position bias (W-MSA / SW-MSA).

    ``softmax(q k^T / sqrt(d) + B + mask) v`` per window and head, ``B`` gathered from a
    ``(2 ws - 1)^2 x heads`` table by the relative offset of the two tokens. ``qkv`` and ``proj``
    come from ``recipe.linear``; the products, the softmax and the bias table stay FP.

    Args:
        dim: channels C (a multiple of ``num_heads``).
        window_size: window side ws.
        num_heads: heads.
        recipe: the binarization recipe.
        qkv_bias: bias on ``qkv``. Default True.
    """

    def __init__(self, dim: int, window_size: int, num_heads: int, recipe: Recipe, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise UsageError(f"SwinIR embed_dim {dim} is not a multiple of num_heads {num_heads}")
        self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij"))
        coords = coords.flatten(1)  # 2, N
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window_size - 1)  # N, N, 2
        self.register_buffer("relative_position_index", rel[..., 0] * (2 * window_size - 1) + rel[..., 1],
                             persistent=False)
        self.qkv = recipe.linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = recipe.linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B * nW, N, C) windows; mask: (nW, N, N) or None. The products and the softmax run
        in float64 at inference, rounded once (:mod:`binsr.nn.exact`), as the packed engine's
        ``window_attention`` op with its ``fp64`` flag."""
        n = x.shape[1]
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        bias = bias.view(n, n, -1).permute(2, 0, 1)
        return self.proj(fp64_at_inference(self, self.qkv(x), self._attend, bias, mask))

    def _attend(self, qkv: torch.Tensor, bias: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``softmax(q k^T * scale + bias + mask) v`` of the (B * nW, N, 3C) ``qkv``, as (B * nW, N, C)."""
        bw, n, c = qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3
        q, k, v = qkv.reshape(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1) + bias.unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(bw // nw, nw, self.num_heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, n, n)
        attn = attn.softmax(dim=-1)
        return (attn @ v).transpose(1, 2).reshape(bw, n, c)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}"


class Mlp(nn.Module):
    """``fc2(GELU(fc1(x)))``, both linears from the recipe."""

    def __init__(self, dim: int, hidden: int, recipe: Recipe) -> None:
        super().__init__()
        self.fc1 = recipe.linear(dim, hidden)
        self.act = ExactGELU()
        self.fc2 = recipe.linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinTransformerLayer(nn.Module):
    """Swin Transformer layer: ``x + (S)W-MSA(LN(x))``, then ``x + MLP(LN(x))`` (pre-LN).

    With ``shift > 0`` the tokens are cyclically shifted by ``-shift`` before the window
    partition and back after it, and the attention uses :func:`shifted_window_mask`.

    Args:
        dim, num_heads, window_size: attention geometry.
        shift: cyclic shift (0 or ``window_size // 2``).
        mlp_ratio: MLP hidden width / dim.
        recipe: the binarization recipe.
        drop_path: stochastic depth rate of both residual branches.
        qkv_bias: bias on ``qkv``.
    """

    def __init__(
        self, dim: int, num_heads: int, window_size: int, shift: int, mlp_ratio: float, recipe: Recipe,
        drop_path: float = 0.0, qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        if not 0 <= shift < window_size:
            raise UsageError(f"shift {shift} must be in [0, window_size {window_size})")
        self.window_size, self.shift = window_size, shift
        self.norm1 = ExactLayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, recipe, qkv_bias)
        self.drop_path = DropPath(drop_path)
        self.norm2 = ExactLayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), recipe)

    def forward(self, x: torch.Tensor, size: tuple[int, int], mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B, H*W, C) tokens of an (H, W) map, H and W multiples of the window size."""
        h, w = size
        b, n, c = x.shape
        y = self.norm1(x).view(b, h, w, c)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(window_partition(y, self.window_size), mask if self.shift else None)
        y = window_reverse(y, self.window_size, h, w)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + self.drop_path(y.reshape(b, n, c))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def extra_repr(self) -> str:
        return f"window_size={self.window_size}, shift={self.shift}"


def _to_tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, H*W, C)


def _to_map(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return x.transpose(1, 2).reshape(x.shape[0], -1, *size)  # (B, H*W, C) -> (B, C, H, W)


class RSTB(nn.Module):
    """Residual Swin Transformer block: ``x + conv(layers(x))``, ``conv`` a 3x3 ``recipe.conv``.

    Layers alternate regular (shift 0) and shifted (shift ``window_size // 2``) windows.
    """

    def __init__(
        self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float, recipe: Recipe,
        drop_path: Sequence[float], qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            SwinTransformerLayer(dim, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2, mlp_ratio,
                                 recipe, drop_path[i], qkv_bias)
            for i in range(depth)
        )
        self.conv = recipe.conv(dim, dim, 3)

    def forward(self, x: torch.Tensor, size: tuple[int, int], mask: torch.Tensor | None) -> torch.Tensor:
        y = x
        for layer in self.layers:
            y = layer(y, size, mask)
        return x + _to_tokens(self.conv(_to_map(y, size)))


class SwinIRBody(nn.Module):
    """SwinIR's deep feature extraction: (B, C, H, W) -> (B, C, H, W), H, W multiples of the window.

    ``conv_after_body(LN(RSTB_K(... RSTB_1(LN(tokens(x))))))``; the global residual is added by
    :class:`SwinIR`. ``drop_path_rate`` rises linearly from 0 over the layers (stochastic depth).
    """

    def __init__(
        self, dim: int, depths: Sequence[int], num_heads: Sequence[int], window_size: int, mlp_ratio: float,
        recipe: Recipe, drop_path_rate: float = 0.1, qkv_bias: bool = True, patch_norm: bool = True,
    ) -> None:
        super().__init__()
        if len(depths) != len(num_heads):
            raise UsageError(f"SwinIR depths {list(depths)} and num_heads {list(num_heads)} differ in length")
        self.window_size = window_size
        self.norm_in = ExactLayerNorm(dim) if patch_norm else nn.Identity()
        total = sum(depths)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.blocks = nn.ModuleList()
        start = 0
        for depth, heads in zip(depths, num_heads):
            rate = rates[start:start + depth]
            self.blocks.append(RSTB(dim, depth, heads, window_size, mlp_ratio, recipe, rate, qkv_bias))
            start += depth
        self.norm_out = ExactLayerNorm(dim)
        self.conv_after_body = recipe.conv(dim, dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[2], x.shape[3])
        shift = self.window_size // 2
        mask = shifted_window_mask(*size, self.window_size, shift, x.device).to(x.dtype) if shift else None
        t = self.norm_in(_to_tokens(x))
        for block in self.blocks:
            t = block(t, size, mask)
        return self.conv_after_body(_to_map(self.norm_out(t), size))


class SwinIR(nn.Module):
    """SwinIR for SR (see the module docstring for the structure and the binarized layers).

    Args:
        scale (int): upscaling factor, 2, 3 or 4.
        recipe (str): binarization recipe with a linear unit (``binsr.nn.linear_recipe_names()``).
            Default: ``"fp"``.
        num_in_ch (int): input channels. Default: 3.
        num_out_ch (int): output channels. Default: 3.
        embed_dim (int): token channels C. Default: 60 (lightweight).
        depths (list[int]): Swin Transformer layers per RSTB. Default: [6, 6, 6, 6].
        num_heads (list[int]): attention heads per RSTB. Default: [6, 6, 6, 6].
        window_size (int): attention window side. Default: 8.
        mlp_ratio (float): MLP hidden width / C. Default: 2.
        qkv_bias (bool): bias on the qkv linears. Default: True.
        drop_path_rate (float): stochastic depth rate of the last layer. Default: 0.1 (official).
        patch_norm (bool): LayerNorm on the tokens entering the body. Default: True.
        img_range (float): the input is ``(x - mean) * img_range``. Default: 1.
        upsampler (str): ``"pixelshuffledirect"`` (lightweight) or ``"pixelshuffle"`` (classical:
            conv to ``num_feat`` + LeakyReLU, PixelShuffle stages, conv). Default: pixelshuffledirect.
        num_feat (int): width of the ``pixelshuffle`` tail. Default: 64.
        recipe_kwargs (dict): passed to the recipe (e.g. ``{"spatial": False}``).
    """

    def __init__(
        self,
        scale: int = 4,
        recipe: str = "fp",
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        embed_dim: int = 60,
        depths: Sequence[int] = (6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6),
        window_size: int = 8,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.1,
        patch_norm: bool = True,
        img_range: float = 1.0,
        upsampler: str = "pixelshuffledirect",
        num_feat: int = 64,
        recipe_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        self.scale = check_scale(scale, (2, 3, 4))
        rec = get_recipe(recipe, recipe_kwargs)
        if not rec.supports_linear:
            raise UsageError(f"recipe {recipe!r} has no binary linear layer for SwinIR; "
                             f"valid recipes: {', '.join(linear_recipe_names())}")
        if window_size < 1:
            raise UsageError(f"SwinIR window_size must be >= 1, got {window_size}")
        self.window_size, self.img_range = int(window_size), float(img_range)
        mean = DIV2K_RGB_MEAN if num_in_ch == 3 else (0.0,) * num_in_ch
        self.register_buffer("mean", torch.tensor(mean).view(1, num_in_ch, 1, 1), persistent=False)
        self.conv_first = ExactConv2d(num_in_ch, embed_dim, 3, 1, 1)
        self.body = SwinIRBody(embed_dim, list(depths), list(num_heads), self.window_size, mlp_ratio, rec,
                               drop_path_rate, qkv_bias, patch_norm)
        if upsampler == "pixelshuffledirect":
            self.tail = nn.Sequential(nn.Conv2d(embed_dim, num_out_ch * scale * scale, 3, 1, 1), nn.PixelShuffle(scale))
        elif upsampler == "pixelshuffle":
            fp = get_recipe("fp")
            self.tail = nn.Sequential(
                nn.Conv2d(embed_dim, num_feat, 3, 1, 1), nn.LeakyReLU(inplace=True),
                Upsampler(scale, num_feat, fp), nn.Conv2d(num_feat, num_out_ch, 3, 1, 1),
            )
        else:
            raise UsageError(f"unknown SwinIR upsampler {upsampler!r}; valid: pixelshuffledirect, pixelshuffle")
        for m in self.body.modules():  # the official init: trunc-normal linears, unit LayerNorms
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.recipe_name = recipe

    def profile_note(self, prof) -> str:
        """The ``binsr profile`` note: which layers stay FP, and the count without the bias tables.

        SwinIR's and SCALES' tables leave out the relative position bias tables (swinir_light x4:
        929,628 parameters here, 897,228 = 897K published; 32,400 = 24 layers x 225 x 6 heads): a
        counter that sums the parameters of leaf modules misses them, as they belong to
        ``WindowAttention`` itself. The note gives both.
        """
        table = sum(m.relative_position_bias_table.numel() for m in self.modules() if isinstance(m, WindowAttention))
        fp = ("FP: head conv_first, tail, LayerNorms, softmax and attention products (q k^T, attn v; not counted "
              "in FLOPs), relative position bias, GELU, biases")
        if self.recipe_name == "fp":
            head = "all layers FP"
        else:
            head = (f"binary: body linears (qkv, proj, fc1, fc2) and body convs (RSTB conv, conv_after_body); {fp}"
                    + (", recipe gates, thresholds and scales" if self.recipe_name != "bibert" else ""))
        return (f"{head}. Relative position bias tables: {table:,} FP params; params without them "
                f"(SwinIR/SCALES tables' convention) {(prof.params - table) / 1e3:,.1f}K")

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Pad bottom/right to a multiple of the window (reflect, or replicate for tiny images)."""
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.window_size, (-w) % self.window_size
        if not ph and not pw:
            return x
        mode = "reflect" if ph < h and pw < w else "replicate"
        return F.pad(x, (0, pw, 0, ph), mode=mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = (self.pad(x) - self.mean) * self.img_range
        feat = self.conv_first(x)
        out = self.tail(self.body(feat) + feat)
        return (out / self.img_range + self.mean)[..., : h * self.scale, : w * self.scale]


@register_model
def swinir_light(scale: int = 4, recipe: str = "fp", **kwargs) -> SwinIR:
    """SwinIR lightweight (embed 60, 4 RSTB x 6 layers, 6 heads, window 8, MLP ratio 2, one-step
    pixel-shuffle tail): 897K parameters at x4 in FP; SCALES' binary Transformer backbone."""
    return SwinIR(scale=scale, recipe=recipe, **kwargs)


@register_model
def swinir(scale: int = 4, recipe: str = "fp", **kwargs) -> SwinIR:
    """SwinIR classical SR (embed 180, 6 RSTB x 6 layers, 6 heads, window 8, MLP ratio 2,
    conv + PixelShuffle + conv tail with 64 features), about 11.8M parameters in FP."""
    cfg = dict(embed_dim=180, depths=(6,) * 6, num_heads=(6,) * 6, upsampler="pixelshuffle")
    return SwinIR(scale=scale, recipe=recipe, **dict(cfg, **kwargs))

