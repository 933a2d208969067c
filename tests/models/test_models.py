"""Every registry model x recipe builds and runs forward/backward at x2/x3/x4; profile totals."""

import pytest
import torch
import torch.nn.functional as F

from binsr import models
from binsr.errors import UsageError
from binsr.models.complexity import has_binary_weights, is_binary
from binsr.nn.recipes import linear_recipe_names, recipe_names
from binsr.nn.exact import ExactConv2d

SMALL = {  # shrink the big backbones so the full grid stays fast on 2 cores
    "srresnet": dict(num_feat=16, num_block=2),
    "srresnet_small": dict(num_feat=8, num_block=1),
    "srresnet_lite": dict(num_feat=8, num_block=1),
    "srresnet_lite16": dict(num_feat=8, num_block=1),
    "edsr_baseline": dict(num_feat=16, num_block=2),
    "vdsr": dict(num_feat=16, depth=4),
    "espcn": dict(num_feat=(16, 8)),
    "fsrcnn": dict(d=16, s=8, m=2),
    "srbnas": dict(num_cells=1, num_feat=8),
    "srbnas_large": dict(num_cells=2, num_feat=8),
    "swinir_light": dict(embed_dim=8, depths=[2], num_heads=[2], window_size=4),
    "swinir": dict(embed_dim=8, depths=[2], num_heads=[2], window_size=4, num_feat=8),
}
TRANSFORMERS = {"swinir_light", "swinir"}  # need a recipe with a linear unit (Recipe.linear)


def test_every_model_is_exercised():
    assert set(models.names()) <= set(SMALL), "add new models to SMALL"


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("recipe", recipe_names())
@pytest.mark.parametrize("name", sorted(SMALL))
def test_forward_shape(name, recipe, scale):
    torch.manual_seed(0)
    if name in TRANSFORMERS and recipe not in linear_recipe_names():
        with pytest.raises(UsageError, match="no binary linear"):
            models.create(name, scale=scale, recipe=recipe, **SMALL[name])
        return
    model = models.create(name, scale=scale, recipe=recipe, **SMALL[name])
    x = torch.rand(1, 3, 7, 9)
    y = model(x)
    assert y.shape == (1, 3, 7 * scale, 9 * scale)
    assert torch.isfinite(y).all()
    y.mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    kwargs = dict(SMALL[name], **({"block": "published"} if hasattr(model, "block") else {}))
    assert model.signature == {"model": name, "scale": scale, "recipe": recipe, "kwargs": kwargs}


@pytest.mark.parametrize("recipe", [r for r in recipe_names() if r != "fp"])
def test_binary_recipes_binarize_the_body(recipe):
    model = models.create("srresnet", scale=4, recipe=recipe, num_feat=16, num_block=2)
    binary = [n for n, m in model.named_modules() if has_binary_weights(m)]
    assert len(binary) == 4 and all(n.startswith("body.") for n in binary)
    # binary by binary everywhere but in weight_only, whose convs read FP activations (Ma et al. 2019)
    assert [n for n, m in model.named_modules() if is_binary(m)] == ([] if recipe == "weight_only" else binary)


def test_srresnet_fp_params_match_scales_table():
    prof = models.profile(models.create("srresnet", scale=4, recipe="fp"), (32, 32))
    assert prof.binary_params == 0 and prof.bops == 0
    assert prof.params == sum(p.numel() for p in models.create("srresnet", scale=4).parameters())
    assert abs(prof.params - 1_517_000) / 1_517_000 < 0.01  # SCALES Table III: 1517K


@pytest.mark.parametrize("scale, budget_k, params_k", [(3, 192, 49.1), (4, 156, 61.2)])
def test_srbnas_large_fits_the_papers_budget(scale, budget_k, params_k):
    """8 cells x 64 of the shipped cell: the docstring's params, under SRBNAS's 192K (x3) / 156K (x4)."""
    model = models.create("srbnas_large", scale=scale, recipe="irnet")
    assert len(model.body) == 8
    assert round(models.profile(model, (16, 16)).params / 1e3, 1) == params_k < budget_k


def test_profile_counts_binary_macs():
    model = models.create("srresnet", scale=2, recipe="e2fif", num_feat=16, num_block=1)
    h, w = 10, 12
    prof = models.profile(model, (h, w))
    assert prof.bops == 2 * h * w * 16 * 16 * 9  # two binary 3x3 convs, 16 -> 16
    assert prof.binary_params == 2 * 16 * 16 * 9
    assert prof.params == pytest.approx(prof.binary_params / 32 + prof.fp_params)
    assert prof.ops == pytest.approx(prof.bops / 64 + prof.flops)
    n_params = sum(p.numel() for p in model.parameters())
    assert prof.binary_params + prof.fp_params == n_params


def test_profile_counts_scales_gates():
    """SCALES' gates compute their convs functionally (float64 at inference): their FLOPs still count,
    a 16 -> 1 3x3 conv per pixel and a 5-tap Conv1d over 16 pooled values per binary conv."""
    kwargs = dict(scale=2, num_feat=16, num_block=1)
    h, w = 10, 12
    e2fif = models.profile(models.create("srresnet", recipe="e2fif", **kwargs), (h, w))
    scales = models.profile(models.create("srresnet", recipe="scales", **kwargs), (h, w))
    assert scales.bops == e2fif.bops
    assert scales.flops - e2fif.flops == 2 * (h * w * 16 * 9 + 16 * 5)


def test_profile_counts_weight_only_as_binary_params_and_flops():
    """Binary weights with FP activations: 1 bit per weight, but FP MACs (no XNOR-popcount)."""
    model = models.create("srresnet", scale=2, recipe="weight_only", num_feat=16, num_block=1)
    h, w = 10, 12
    prof = models.profile(model, (h, w))
    body = prof.totals("body.")
    assert prof.bops == 0 and body["binary_params"] == prof.binary_params == 2 * 16 * 16 * 9
    assert body["flops"] == 2 * h * w * 16 * 16 * 9
    assert body["fp_params"] == 2 * 16 + 2 * 2 * 16 + 1  # per-filter alphas, two BNs, one PReLU slope
    assert prof.params == pytest.approx(prof.binary_params / 32 + prof.fp_params)
    assert prof.binary_params + prof.fp_params == sum(p.numel() for p in model.parameters())


@torch.no_grad()
def test_weight_only_block_is_srresnets_with_binary_weights():
    """``x + BN(conv(PReLU(BN(conv(x)))))`` (Ledig et al. 2017), the convs binarized (Ma et al. 2019)."""
    torch.manual_seed(0)
    m = models.create("srresnet_lite16", scale=4, recipe="weight_only").eval()
    assert m(torch.rand(1, 3, 8, 6)).shape == (1, 3, 32, 24)
    b = m.body[0]
    x = torch.randn(1, 64, 8, 6)
    assert b.outer_skip and isinstance(b.act, torch.nn.PReLU)
    assert torch.equal(b(x), x + b.conv2.bn(b.conv2.conv(b.act(b.conv1.bn(b.conv1.conv(x))))))


def test_unknown_names_and_scales_are_usage_errors():
    with pytest.raises(UsageError, match="valid models"):
        models.create("nope")
    with pytest.raises(UsageError, match="valid recipes"):
        models.create("srresnet", recipe="nope")
    with pytest.raises(UsageError, match="x5"):
        models.create("srresnet", scale=5)


def test_zero_tail_starts_as_the_bilinear_skip_and_res_scale_bounds_the_body():
    x = torch.rand(2, 3, 6, 7)
    bilinear = torch.nn.functional.interpolate(x, scale_factor=3, mode="bilinear", align_corners=False)
    for tail in ("lite", "msrresnet"):
        model = models.create("srresnet", scale=3, recipe="e2fif", num_feat=16, num_block=2, tail=tail,
                              zero_tail=True)
        assert torch.equal(model(x), bilinear)
    assert torch.equal(models.create("srbnas", scale=3, num_cells=1, num_feat=8, zero_tail=True)(x), bilinear)
    torch.manual_seed(0)
    grow = {r: models.create("srresnet_lite", scale=2, recipe="e2fif", num_feat=16, res_scale=r, block="outer_skip")
            for r in (1.0, 0.2)}
    std = {r: m.body(m.lrelu(m.conv_first(x))).std().item() for r, m in grow.items()}
    assert std[1.0] > 20 * std[0.2]  # each block doubles its input at res_scale 1.0


@torch.no_grad()
def test_published_block_is_the_authors_and_keeps_the_body_bounded():
    """E2FIF's ResBlock (``out = BN(c1(x)) + x; act; BN(c2(out)) + out``, no outer path) and
    MSRResNet's ``x + conv2(relu(conv1(x)))``; 16 x 64 at init, training mode: body std / head std
    about 20 for the published E2FIF block, about 1e5 with binsr's earlier outer path at res_scale 1
    (issue 20)."""
    torch.manual_seed(0)
    x = torch.rand(2, 3, 24, 24)
    ratio = {}
    for block in ("published", "outer_skip"):
        m = models.create("srresnet_lite16", scale=4, recipe="e2fif", block=block)  # BN on batch statistics
        head = m.lrelu(m.conv_first(x))
        ratio[block] = (m.body(head).std() / head.std()).item()
        b = m.body[0].eval()
        unit1 = b.conv1.bn(b.conv1.conv(head)) + head
        out = b.act(unit1)
        expect = b.conv2.bn(b.conv2.conv(out)) + out
        assert torch.equal(b(head), expect if block == "published" else head + expect)
    assert ratio["published"] < 100 < 1000 < ratio["outer_skip"]
    fp = models.create("srresnet", scale=2, recipe="fp", num_feat=8, num_block=1).body[0]
    h = torch.rand(1, 8, 5, 5)
    assert torch.equal(fp(h), h + fp.conv2(torch.relu(fp.conv1(h))))


def test_res_scale_needs_an_outer_path():
    with pytest.raises(UsageError, match="no outer path"):
        models.create("srresnet", recipe="e2fif", res_scale=0.2)
    with pytest.raises(UsageError, match="unknown block"):
        models.create("srresnet", recipe="fp", block="nope")
    assert models.create("srresnet", recipe="bnn", num_feat=8, num_block=1, res_scale=0.2).body[0].outer_skip


def test_build_for_eval_rebuilds_the_saved_kwargs(tmp_path):
    from binsr.train.checkpoint import save_weights

    model = models.create("srresnet_lite", scale=2, recipe="e2fif", num_feat=8, num_block=1, res_scale=0.2,
                          block="outer_skip")
    path = tmp_path / "w.safetensors"
    save_weights(path, model)
    again = models.build_for_eval("srresnet_lite", 2, weights=str(path))
    assert again.signature == model.signature and not again.training
    assert torch.equal(again.conv_first.weight, model.conv_first.weight)
    with pytest.raises(UsageError, match="holds a 'srresnet_lite' model, not 'srresnet'"):
        models.build_for_eval("srresnet", 2, weights=str(path))


# --- top-level wiring against each paper's diagram, written out (issue 21, part 3) ---

DIV2K_MEAN = torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1)  # EDSR's / SwinIR's rgb_mean


def _conv(layer: torch.nn.Module, h: torch.Tensor) -> torch.Tensor:
    """A full-precision conv, zero padded to the same size, from the layer's own weight and bias."""
    assert type(layer) in (torch.nn.Conv2d, ExactConv2d) and layer.stride == (1, 1) and layer.dilation == (1, 1)
    return F.conv2d(h, layer.weight, layer.bias, padding=layer.kernel_size[0] // 2)


def _subpixel(convs: list, h: torch.Tensor, scale: int, act=None) -> torch.Tensor:
    """ESPCN's sub-pixel upsampler: (conv to f^2 C, PixelShuffle(f)) per factor, x4 = x2 twice."""
    factors = {2: [2], 3: [3], 4: [2, 2]}[scale]
    assert len(convs) == len(factors)
    for conv, f in zip(convs, factors):
        h = F.pixel_shuffle(_conv(conv, h), f)
        h = h if act is None else act(h)
    return h


def _bilinear(x: torch.Tensor, scale: int) -> torch.Tensor:
    return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)


def _convs(module: torch.nn.Module) -> list:
    return [m for m in module if isinstance(m, torch.nn.Conv2d)]


def _run_body(body, h: torch.Tensor) -> torch.Tensor:
    for block in body:
        h = block(h)
    return h


def _randomize_bn(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.uniform_(-1.0, 1.0)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 2.0)
            bn.bias.uniform_(-0.5, 0.5)


@torch.no_grad()
@pytest.mark.parametrize("scale", [3, 4])
@pytest.mark.parametrize("recipe", ["fp", "e2fif", "irnet"])
@pytest.mark.parametrize("tail", ["msrresnet", "lite"])
def test_srresnet_wiring(tail, recipe, scale):
    """MSRResNet (BasicSR; Ledig et al. 2017) as the module docstring reads it: f = LReLU_0.1(conv_first(x)),
    t = body(f) + f (binsr's head-to-tail skip), tail: (conv, PixelShuffle, LReLU_0.1) per factor, conv_hr,
    LReLU_0.1, conv_last ("msrresnet") or conv to 3 s^2 + PixelShuffle ("lite"); plus bilinear(x)."""
    torch.manual_seed(20)
    m = models.create("srresnet", scale=scale, recipe=recipe, num_feat=8, num_block=2, tail=tail).eval()
    _randomize_bn(m)
    x = torch.rand(2, 3, 6, 5)
    lrelu = lambda h: F.leaky_relu(h, 0.1)  # noqa: E731
    feat = lrelu(_conv(m.conv_first, x))
    h = _run_body(m.body, feat) + feat
    if tail == "msrresnet":
        up, conv_hr, conv_last = m.tail[0], m.tail[1], m.tail[3]
        h = _conv(conv_last, lrelu(_conv(conv_hr, _subpixel(_convs(up), h, scale, lrelu))))
    else:
        assert m.tail[0].out_channels == 3 * scale**2
        h = F.pixel_shuffle(_conv(m.tail[0], h), scale)  # one sub-pixel step, x4 included
    torch.testing.assert_close(m(x), h + _bilinear(x, scale))


@torch.no_grad()
@pytest.mark.parametrize("scale", [3, 4])
@pytest.mark.parametrize("recipe", ["fp", "e2fif", "irnet"])
def test_edsr_wiring(recipe, scale):
    """EDSR (Lim et al. 2017, Fig. 3 baseline): x' = x - DIV2K mean, h = conv_first(x'),
    r = conv_after_body(body(h)) + h, out = conv_last(upsample(r)) + mean, upsample = (conv, shuffle)
    per factor, no activation."""
    torch.manual_seed(21)
    m = models.create("edsr_baseline", scale=scale, recipe=recipe, num_feat=8, num_block=2).eval()
    _randomize_bn(m)
    x = torch.rand(2, 3, 5, 6)
    h = _conv(m.conv_first, x - DIV2K_MEAN)
    r = _conv(m.conv_after_body, _run_body(m.body, h)) + h
    expect = _conv(m.conv_last, _subpixel(_convs(m.upsample), r, scale)) + DIV2K_MEAN
    torch.testing.assert_close(m(x), expect)


@torch.no_grad()
@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("recipe", ["fp", "e2fif", "irnet"])
def test_espcn_wiring(recipe, scale):
    """ESPCN (Shi et al. 2016, Fig. 1): PS_r(conv3x3(tanh(f2(tanh(conv5x5(x)))))), 3 r^2 output channels;
    f2 (3x3, 64 -> 32) is the recipe's unit."""
    torch.manual_seed(22)
    m = models.create("espcn", scale=scale, recipe=recipe, num_feat=(8, 4)).eval()
    _randomize_bn(m)
    conv1, unit, conv3 = m.body[0], m.body[2], m.body[4]
    assert conv1.kernel_size == (5, 5) and conv3.kernel_size == (3, 3) and conv3.out_channels == 3 * scale**2
    x = torch.rand(2, 3, 6, 5)
    expect = F.pixel_shuffle(_conv(conv3, torch.tanh(unit(torch.tanh(_conv(conv1, x))))), scale)
    torch.testing.assert_close(m(x), expect)


@torch.no_grad()
@pytest.mark.parametrize("recipe", ["irnet", "fp", "e2fif"])
def test_srbnas_wiring(recipe):
    """SRBNAS (Su et al. 2024, Fig. 2, binsr.nas.network's reading): f = head(x); cells read the two previous
    outputs (s_{-2} = s_{-1} = f); out = PS(tail_conv(s_N + f)) + bilinear(x). Each cell (DARTS): node j =
    sum of its genotype edges op(state[src]), cell out = s_{-1} + fuse(concat(nodes)), fuse a 1x1 conv."""
    torch.manual_seed(23)
    scale = 3
    m = models.create("srbnas", scale=scale, recipe=recipe, num_cells=2, num_feat=8).eval()
    _randomize_bn(m)
    geno = m.genotype
    kernels = {"dil_conv_3x3": (3, 2), "conv_3x3": (3, 1), "dil_conv_5x5": (5, 2), "conv_5x5": (5, 1),
               "conv_7x7": (7, 1)}  # SRBNAS Table 1
    x = torch.rand(2, 3, 7, 6)
    feat = _conv(m.head, x)

    def cell(c, s0, s1):
        states = [s0, s1]
        for ops, node in zip(c.ops, geno.nodes):
            assert len(ops) == len(node)
            for op, (name, _) in zip(ops, node):
                if name == "skip_connect":
                    assert isinstance(op, torch.nn.Identity)
                else:
                    conv = next(mod for mod in op.modules() if isinstance(mod, torch.nn.Conv2d))
                    k, d = kernels[name]
                    assert conv.kernel_size == (k, k) and conv.dilation == (d, d) and conv.groups == geno.groups
                    if recipe == "irnet":
                        assert type(op[0]).__name__ == "SRBNASOp"
            states.append(sum(op(states[src]) for op, (_, src) in zip(ops, node)))
        fuse = next(mod for mod in c.fuse.modules() if isinstance(mod, torch.nn.Conv2d))
        assert fuse.kernel_size == (1, 1) and fuse.in_channels == len(geno.nodes) * 8
        return s1 + c.fuse(torch.cat(states[2:], dim=1))

    s0 = s1 = feat
    for c in m.body:
        s0, s1 = s1, cell(c, s0, s1)
    expect = F.pixel_shuffle(_conv(m.tail[0], s1 + feat), scale) + _bilinear(x, scale)
    torch.testing.assert_close(m(x), expect)


@torch.no_grad()
@pytest.mark.parametrize("recipe", ["fp", "bibert"])
@pytest.mark.parametrize("name", ["swinir_light", "swinir"])
def test_swinir_wiring(name, recipe):
    """SwinIR (Liang et al. 2021, Fig. 2; official network_swinir.py): z = (pad(x) - mean) * img_range,
    f = conv_first(z), body = conv_after_body(LN(RSTB_K(...RSTB_1(LN(tokens(f)))))), out = tail(body + f)
    / img_range + mean, cropped; tail pixelshuffledirect = PS(conv) (light) or conv, LReLU_0.01,
    (conv, PS) per factor, conv (classical). pad: bottom/right reflect to a window multiple."""
    from binsr.models.swinir import shifted_window_mask

    torch.manual_seed(24)
    scale, ws = 2, 4
    for (h, w), img_range in (((8, 8), 1.0), ((7, 6), 255.0)):
        m = models.create(name, scale=scale, recipe=recipe, img_range=img_range, **SMALL[name]).eval()
        x = torch.rand(1, 3, h, w)
        z = (F.pad(x, (0, (-w) % ws, 0, (-h) % ws), mode="reflect") - DIV2K_MEAN) * img_range
        feat = _conv(m.conv_first, z)
        size = tuple(feat.shape[2:])
        t = m.body.norm_in(feat.flatten(2).transpose(1, 2))
        mask = shifted_window_mask(*size, ws, ws // 2)
        for rstb in m.body.blocks:
            t = rstb(t, size, mask)
        t = m.body.norm_out(t).transpose(1, 2).reshape(feat.shape)
        body = m.body.conv_after_body(t)
        if name == "swinir_light":
            out = F.pixel_shuffle(_conv(m.tail[0], body + feat), scale)
        else:
            hh = F.leaky_relu(_conv(m.tail[0], body + feat), 0.01)
            out = _conv(m.tail[3], _subpixel(_convs(m.tail[2]), hh, scale))
        expect = (out / img_range + DIV2K_MEAN)[..., : h * scale, : w * scale]
        torch.testing.assert_close(m(x), expect)
