"""Every registry model x recipe builds and runs forward/backward at x2/x3/x4; profile totals."""

import pytest
import torch

from binsr import models
from binsr.errors import UsageError
from binsr.models.complexity import has_binary_weights, is_binary
from binsr.nn.recipes import linear_recipe_names, recipe_names

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
