"""SwinIR: window attention, shifted-window mask, padding, binary recipes and parameter counts."""

import pytest
import torch
import torch.nn.functional as F

from binsr import models
from binsr.errors import UsageError
from binsr.models.complexity import is_binary
from binsr.models.swinir import SwinIR, shifted_window_mask, window_partition, window_reverse
from binsr.nn import BinaryLinear, ScalesLinear

TINY = dict(embed_dim=12, depths=[2, 2], num_heads=[2, 3], window_size=4, drop_path_rate=0.0)


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("recipe", ["fp", "scales", "bibert"])
@pytest.mark.parametrize("size", [(7, 9), (8, 8), (3, 5), (5, 12)])
def test_forward_backward_every_parameter(recipe, scale, size):
    torch.manual_seed(0)
    model = models.create("swinir_light", scale=scale, recipe=recipe, **TINY)
    x = torch.rand(2, 3, *size)
    y = model(x)
    assert y.shape == (2, 3, size[0] * scale, size[1] * scale) and torch.isfinite(y).all()
    (y * torch.randn_like(y)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_padding_crops_back_and_is_a_no_op_on_window_multiples():
    torch.manual_seed(0)
    model = models.create("swinir_light", scale=2, recipe="fp", **TINY).eval()
    x = torch.rand(1, 3, 8, 12)
    assert model.pad(x) is x
    odd = torch.rand(1, 3, 7, 9)
    assert model.pad(odd).shape == (1, 3, 8, 12)
    assert torch.equal(model.pad(odd)[..., :7, :9], odd)
    assert model.pad(torch.rand(1, 3, 2, 3)).shape == (1, 3, 4, 4)  # replicate: too small to reflect


def test_windows_and_shift_mask():
    x = torch.randn(2, 8, 12, 5)
    win = window_partition(x, 4)
    assert win.shape == (2 * 6, 16, 5)
    assert torch.equal(window_reverse(win, 4, 8, 12), x)
    assert torch.equal(win[1].view(4, 4, 5), x[0, :4, 4:8])  # row-major windows
    mask = shifted_window_mask(8, 12, 4, 2)
    assert mask.shape == (6, 16, 16) and set(mask.unique().tolist()) == {-100.0, 0.0}
    assert (mask[0] == 0).all()  # an inner window holds one region
    assert (mask[-1] != 0).any() and torch.equal(mask, mask.transpose(1, 2))
    # last window (bottom right) holds 4 regions of 4 tokens each: 4 x 16 allowed pairs
    assert int((mask[-1] == 0).sum()) == 4 * 16


def test_shifted_attention_matches_a_per_region_reference():
    """A shifted FP layer with one head attends only within the regions of the rolled map."""
    torch.manual_seed(0)
    model = models.create("swinir_light", scale=2, recipe="fp", **TINY).eval()
    layer = model.body.blocks[0].layers[1]
    assert layer.shift == 2
    attn = layer.attn
    x = torch.randn(1, 8, 8, 12)
    rolled = torch.roll(x, (-2, -2), (1, 2))
    win = window_partition(rolled, 4)
    mask = shifted_window_mask(8, 8, 4, 2)
    out = attn(win, mask)
    # reference: the bottom-right window, attention restricted to tokens of the same region
    w = win[-1:]
    allowed = mask[-1] == 0
    qkv = attn.qkv(w).reshape(1, 16, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    bias = attn.relative_position_bias_table[attn.relative_position_index.reshape(-1)].view(16, 16, -1).permute(2, 0, 1)
    logits = (q * attn.scale) @ k.transpose(-2, -1) + bias
    logits = logits.masked_fill(~allowed, float("-inf"))
    ref = attn.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(1, 16, -1))
    assert torch.allclose(out[-1:], ref, atol=1e-5)


@pytest.mark.parametrize("recipe", ["scales", "bibert"])
def test_binarized_operands_are_signs_times_the_declared_scale(recipe):
    torch.manual_seed(0)
    model = models.create("swinir_light", scale=2, recipe=recipe, **TINY)
    seen = []

    def hook(module, inputs, output):
        x = inputs[0]
        signs, a = module.binarize_input(x)
        ws, alpha = module.weight_quant.binarize(module.weight)
        assert set(signs.unique().tolist()) <= {-1.0, 1.0} and set(ws.unique().tolist()) <= {-1.0, 1.0}
        assert torch.allclose(alpha.reshape(-1), module.weight.abs().mean(1))  # XNOR: mean |W| per output
        if recipe == "scales":
            assert a.numel() == 1  # layer-wise scale
            thr = module.act_quant.threshold.reshape(-1)
            assert thr.numel() == module.in_features  # channel-wise threshold
            assert torch.equal(signs, torch.where(x - thr >= 0, 1.0, -1.0))
        else:
            assert a is None and torch.equal(signs, torch.where(x >= 0, 1.0, -1.0))
        scale = alpha.reshape(-1) * (1.0 if a is None else a.reshape(()))
        gate = inputs[1] if len(inputs) > 1 else None  # SCALES' token gate multiplies output and bias
        expected = F.linear(signs, ws) * scale + module.bias if gate is None else \
            F.linear(signs, ws) * scale * gate + module.bias * gate
        assert (gate is not None) == (recipe == "scales")
        assert torch.allclose(output, expected, atol=1e-5)
        seen.append(module)

    linears = [m for m in model.modules() if isinstance(m, BinaryLinear)]
    for m in linears:
        m.register_forward_hook(hook)
    model(torch.rand(1, 3, 7, 9))
    assert len(seen) == len(linears) == 4 * sum(TINY["depths"])
    for name, m in model.named_modules():
        if isinstance(m, ScalesLinear):
            assert recipe == "scales" and m.spatial is not None
    binary = [n for n, m in model.named_modules() if is_binary(m)]
    assert all(n.startswith("body.") for n in binary)
    assert len(binary) == 4 * sum(TINY["depths"]) + len(TINY["depths"]) + 1  # linears, RSTB convs, conv_after_body
    assert not is_binary(model.conv_first) and not any(is_binary(m) for m in model.tail.modules())


def test_unsupported_recipes_are_usage_errors():
    for recipe in ("e2fif", "bbcu", "irnet", "lt_attn"):
        with pytest.raises(UsageError, match="no binary linear"):
            models.create("swinir_light", scale=4, recipe=recipe, **TINY)
    with pytest.raises(UsageError, match="upsampler"):
        SwinIR(upsampler="nearest", **TINY)
    with pytest.raises(UsageError, match="x8"):
        models.create("swinir_light", scale=8)


@pytest.mark.parametrize(("scale", "published"), [(4, 897_000), (2, 878_000)])
def test_swinir_light_fp_params_match_the_published_count(scale, published):
    model = models.create("swinir_light", scale=scale, recipe="fp")
    prof = models.profile(model, (16, 16))
    assert prof.binary_params == 0 and prof.params == sum(p.numel() for p in model.parameters())
    tables = 24 * (2 * 8 - 1) ** 2 * 6  # relative position bias tables, left out by the papers' counts
    assert prof.params == {4: 929_628, 2: 910_152}[scale]
    assert abs(prof.params - tables - published) / published < 0.002  # SwinIR / SCALES Table IV
    assert "without them" in prof.note and f"{(prof.params - tables) / 1e3:,.1f}K" in prof.note


def test_swinir_light_binary_counts():
    counts = {}
    for recipe in ("scales", "bibert"):
        prof = models.profile(models.create("swinir_light", scale=4, recipe=recipe), (16, 16))
        counts[recipe] = (prof.binary_params, prof.fp_params)
        assert "binary: body linears" in prof.note
    # 24 layers x (60*180 + 60*60 + 60*120 + 120*60) + 5 convs x 60*60*9 binary weights
    assert counts["bibert"][0] == counts["scales"][0] == 24 * 28_800 + 5 * 32_400
    assert counts["bibert"][1] == 76_128
    # SCALES adds per linear: C thresholds + 1 scale + a C -> 1 token gate (C + 1); per conv unit:
    # 60 thresholds + 1 scale + spatial gate (60*9 + 1) + channel gate (5)
    linear_extra = 24 * sum(2 * c + 2 for c in (60, 60, 60, 120))
    conv_extra = 5 * (60 + 1 + 541 + 5)
    assert counts["scales"][1] - counts["bibert"][1] == linear_extra + conv_extra
