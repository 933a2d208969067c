"""``train.precision``: bfloat16 operands for the binary convs, exact where bfloat16 is, fp32 elsewhere."""

import pytest
import torch
from safetensors.torch import load_file

from _trainkit import evaluate, raw_config
from binsr import cpu, models
from binsr.errors import UsageError
from binsr.nn import BinaryConv2d, BinaryLinear, set_binary_dtype
from binsr.train import config_from_dict, train
from binsr.train import precision as prec


def test_auto_follows_the_cpu(monkeypatch):
    cpu_dev, cuda = torch.device("cpu"), torch.device("cuda")
    for fast, expect in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(prec, "has_fast_bf16", lambda: fast)
        assert prec.resolve_precision("auto", cpu_dev) == expect
        assert prec.resolve_precision("auto", cuda) == "bf16"
        assert prec.resolve_precision("fp32", cuda) == "fp32" and prec.resolve_precision("bf16", cpu_dev) == "bf16"
    assert cpu.has_fast_bf16() == bool(cpu.cpu_flags() & {"avx512_bf16", "amx_bf16"})
    assert cpu.cpu_name()


def test_cast_summary_takes_binary_by_binary_convs_and_linears_only():
    """bf16 casts the two binary convs of each block; weight_only's convs (FP inputs) stay float32;
    SwinIR casts its RSTB convs and the four linears of every layer; fp32 casts nothing."""
    for recipe, expect in (("e2fif", "6 binary convs in bfloat16"), ("weight_only", "every conv and linear in float32"),
                           ("fp", "every conv and linear in float32")):
        model = models.create("srresnet_lite", scale=2, recipe=recipe, num_feat=8, num_block=3)
        assert prec.cast_summary(model, "bf16") == expect, recipe
    e2fif = models.create("srresnet_lite", scale=2, recipe="e2fif", num_feat=8, num_block=3)
    assert prec.cast_summary(e2fif, "fp32") == "every conv and linear in float32"
    swin = models.create("swinir_light", scale=2, recipe="scales", embed_dim=12, depths=(2, 2), num_heads=(2, 2))
    assert prec.cast_summary(swin, "bf16") == "3 binary convs, 16 binary linears in bfloat16"


def test_unknown_precision_is_one_line(tmp_path):
    with pytest.raises(UsageError, match="train.precision 'fp8'; valid: auto, bf16, fp32"):
        config_from_dict(raw_config(tmp_path, train={"precision": "fp8"}), check_names=False)


@pytest.mark.parametrize("layer, shape", [
    (lambda: BinaryConv2d(16, 8, 3, padding=1, act_quant="ste", weight_quant="xnor"), (2, 16, 11, 13)),
    (lambda: BinaryLinear(120, 60, act_quant="scales_act", weight_quant="xnor"), (2, 64, 120)),
], ids=["conv", "linear"])
def test_bf16_binary_layer_is_exact_up_to_256_and_keeps_float32(layer, shape):
    """+-1 operands are exact in bfloat16 and oneDNN sums in float32; the output is rounded to
    bfloat16, which holds every integer up to 256 (sums over 9 x 16 = 144 terms, and over 120:
    SwinIR-light's widest linear input, never exceed it). Gradients: bfloat16-close."""
    torch.manual_seed(0)
    mod = layer()
    x = torch.randn(*shape, requires_grad=True)
    ref = mod(x)
    set_binary_dtype(mod, torch.bfloat16)
    out = mod(x)
    assert out.dtype == torch.float32 and torch.equal(out, ref)
    (g,) = torch.autograd.grad(out.square().sum(), x)
    set_binary_dtype(mod, None)
    (g_ref,) = torch.autograd.grad(mod(x).square().sum(), x)
    assert torch.allclose(g, g_ref, rtol=2e-2, atol=2e-2 * g_ref.abs().max().item())


class _Stop(Exception):
    pass


def test_bf16_training_resumes_exactly_validates_in_fp32_and_saves_fp32(tmp_path, data_root):
    """A binary model trained 4 steps in bf16 equals the same run stopped after its step-2
    checkpoint and resumed, bit for bit; checkpoints are float32; validation sees float32 binary convs."""
    seen = []

    def run(out, resume=False, stop=False):
        def check(model, dataset, scale):
            seen.append({m.binary_dtype for m in model.modules() if isinstance(m, BinaryConv2d)})
            if stop:
                raise _Stop  # at the step-3 validation: the last checkpoint is step 2's
            return evaluate(model, dataset, scale)

        raw = raw_config(data_root, model={"name": "srresnet_small", "recipe": "e2fif",
                                           "kwargs": {"num_feat": 8, "num_block": 1}},
                         train={"steps": 4, "checkpoint_every": 2, "precision": "bf16", "ema": 0.0},
                         val={"every": 3})
        raw["scale"], raw["data"]["patch_size"] = 2, 16
        cfg = config_from_dict(raw)
        torch.manual_seed(cfg.seed)
        model = models.create("srresnet_small", scale=2, recipe="e2fif", num_feat=8, num_block=1)
        return train(cfg, out, resume=resume, model=model, evaluate=check)

    full = run(tmp_path / "full")
    with pytest.raises(_Stop):
        run(tmp_path / "cut", stop=True)
    resumed = run(tmp_path / "cut", resume=True)
    assert full["precision"] == resumed["precision"] == "bf16"
    assert seen and all(s == {None} for s in seen)
    a, b = (load_file(str(tmp_path / r / "last.safetensors")) for r in ("full", "cut"))
    assert all(t.dtype == torch.float32 for t in a.values() if t.is_floating_point())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_compiled_training_keeps_one_graph_through_the_ede_schedule(tmp_path, data_root):
    """``train.compile``: an IR-Net model (EDE moves its ``t, k`` every step) trains compiled with
    one graph and no recompilation, its losses match the eager run's, and its weights stay float32
    and keep their names (the checkpoint holds the module, not the compiled wrapper)."""
    from torch._dynamo.utils import counters

    def run(out, compiled):
        raw = raw_config(data_root, model={"name": "srresnet_small", "recipe": "irnet",
                                           "kwargs": {"num_feat": 8, "num_block": 1}},
                         train={"steps": 4, "checkpoint_every": 4, "precision": "bf16", "compile": compiled},
                         val={"every": 4})
        raw["scale"], raw["data"]["patch_size"] = 2, 16
        return train(config_from_dict(raw), out, evaluate=evaluate)

    torch._dynamo.reset()
    counters.clear()
    eager, compiled = run(tmp_path / "eager", False), run(tmp_path / "compiled", True)
    assert compiled["compile"] is True and eager["compile"] is False
    assert counters["stats"]["unique_graphs"] == 1 and not counters["recompiles"]
    a, b = (load_file(str(tmp_path / r / "last.safetensors")) for r in ("eager", "compiled"))
    assert a.keys() == b.keys() and all(b[k].dtype == a[k].dtype for k in a)
    assert all(torch.allclose(a[k], b[k], atol=1e-3) for k in a if a[k].is_floating_point())
    torch._dynamo.reset()
