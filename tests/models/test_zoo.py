"""Every shipped zoo model is truly binary (weight-only recipes: binary weights, FP activations),
loads by name, and its card agrees with its weights."""

import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from binsr.cli import main
from binsr.errors import UsageError
from binsr.models import build_for_eval, load_zoo, profile, zoo_card, zoo_names
from binsr.models.complexity import is_binary
from binsr.nn import BinaryConv2d, BinaryLinear, SpatialGate, TokenGate
from binsr.pretrained import packed_file


def _body_operands(model, x):
    """Input and weight tensors each body conv and linear hands to ``F.conv2d`` / ``F.linear``
    during ``model(x)``; SCALES' spatial gates (FP by the method: a C -> 1 conv or linear and a
    sigmoid per binary layer) are left out."""
    seen, current = {}, []
    gates = {f"{n}.conv" for n, m in model.named_modules() if isinstance(m, SpatialGate)}
    gates |= {f"{n}.fc" for n, m in model.named_modules() if isinstance(m, TokenGate)}
    layers = {n: m for n, m in model.named_modules()
              if n.startswith("body.") and isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and n not in gates}
    hooks = [m.register_forward_pre_hook(lambda mod, args, n=n: current.append(n)) for n, m in layers.items()]
    real = {"conv2d": F.conv2d, "linear": F.linear}

    def spy(op):
        def call(inp, weight, *args, **kwargs):
            if current:
                seen[current.pop()] = (inp.detach(), weight.detach())
            return real[op](inp, weight, *args, **kwargs)
        return call

    try:
        F.conv2d, F.linear = spy("conv2d"), spy("linear")
        with torch.no_grad():
            model(x)
    finally:
        F.conv2d, F.linear = real["conv2d"], real["linear"]
        for h in hooks:
            h.remove()
    return layers, seen


# recipes whose method keeps the activations full precision (binary weights only): their body
# convs see FP inputs, and the packed engine cannot run them (no .bsr; inference runs PyTorch)
FP_ACTIVATIONS = {"weight_only"}
PACKED = [n for n in zoo_names() if packed_file(n) is not None]


@pytest.mark.parametrize("name", zoo_names())
def test_zoo_model_body_convs_see_only_plus_minus_one(name):
    """Every body conv and linear but SCALES' spatial gates is binary and fed +-1 operands; a gate
    has one output channel (its FLOPs are in the card's OPs). A weight-only recipe's convs get +-1
    weights and FP inputs (Ma et al. 2019), and its MACs count as FLOPs. At most 100K parameters,
    SwinIR's relative position bias tables left out as the papers' counts do (SCALES Table IV)."""
    card = zoo_card(name)
    model = load_zoo(name)
    fp_inputs = card["recipe"] in FP_ACTIVATIONS
    assert all(m.conv.out_channels == 1 for m in model.modules() if isinstance(m, SpatialGate))
    assert all(m.fc.out_features == 1 for m in model.modules() if isinstance(m, TokenGate))
    layers, seen = _body_operands(model, torch.rand(1, 3, 13, 11))
    assert layers and set(seen) == set(layers)
    for layer_name, layer in layers.items():
        assert isinstance(layer, (BinaryConv2d, BinaryLinear)) and is_binary(layer) != fp_inputs, layer_name
        inp, weight = seen[layer_name]
        assert (set(inp.unique().tolist()) <= {-1.0, 1.0}) != fp_inputs, layer_name  # scales come after
        assert set(weight.unique().tolist()) <= {-1.0, 1.0}, layer_name
    prof = profile(model, (180, 320))
    bias_tables = sum(p.numel() for n, p in model.named_parameters() if n.endswith("relative_position_bias_table"))
    assert round(prof.params / 1e3, 2) == card["params_k"] and prof.params - bias_tables <= 100_000
    assert round(prof.ops / 1e9, 3) == card["ops_g_320x180"]
    assert card["scale"] == model.signature["scale"] and card["recipe"] == model.signature["recipe"]


@pytest.mark.parametrize("name", zoo_names())
def test_zoo_model_by_name_and_wrong_scale(name):
    card = zoo_card(name)
    assert build_for_eval(f"zoo:{name}", card["scale"]).signature["scale"] == card["scale"]
    with pytest.raises(UsageError, match=f"x{card['scale']} model"):
        build_for_eval(f"zoo:{name}", 5 if card["scale"] != 5 else 2)


def test_zoo_cli_lists_every_model(capsys, tmp_path):
    assert main(["zoo", "--json", "-"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == zoo_names()
    hr = tmp_path / "benchmark" / "Set5" / "image_SRF_4" / "img_001_SRF_4_HR.png"  # eval finds its data first
    hr.parent.mkdir(parents=True)
    Image.new("RGB", (16, 16)).save(hr)
    assert main(["eval", "--model", "zoo:nope", "--scale", "4", "--dataset", "Set5", "--data-root", str(tmp_path)]) == 2
    assert "unknown zoo model" in capsys.readouterr().err


@pytest.mark.parametrize("name", PACKED)
def test_zoo_model_on_the_engine_matches_torch(name, tmp_path):
    """The Deployment issue's bar on a real picture: the packed engine's output equals the PyTorch
    eval forward on >= 99.9% of uint8 values, never more than 1 apart."""
    from importlib.resources import files

    import numpy as np

    from binsr.data import imresize, read_image
    from binsr.deploy import Runtime

    model = load_zoo(f"zoo:{name}").eval()
    scale = zoo_card(f"zoo:{name}")["scale"]
    hr = read_image(files("binsr.assets") / "sample_hr.png")
    lr = imresize(hr[: hr.shape[0] // scale * scale, : hr.shape[1] // scale * scale], 1 / scale)
    x = (lr.astype(np.float32) / 255).transpose(2, 0, 1)[None].copy()
    with torch.no_grad():
        ref = np.clip(np.round(model(torch.from_numpy(x)).numpy() * 255), 0, 255)
    out = np.clip(np.round(Runtime(packed_file(name), threads=2)(x) * 255), 0, 255)  # the shipped file
    diff = np.abs(out - ref)
    assert diff.max() <= 1 and (diff == 0).mean() >= 0.999


@pytest.mark.parametrize("name", zoo_names())
def test_shipped_packed_file_is_a_fresh_export(name, tmp_path):
    """Every zoo entry the engine runs ships its .bsr, byte for byte what export_packed writes today
    (after a packed-format change: binsr zoo --repack); one with FP activations ships none, the
    exporter refuses it, and ``binsr upscale`` runs it in PyTorch with a one-line notice."""
    from binsr.deploy import export_packed
    from binsr.errors import BinsrError
    from binsr.infer import load_upscaler

    if zoo_card(name)["recipe"] in FP_ACTIVATIONS:
        with pytest.raises(BinsrError, match="full-precision activations"):
            export_packed(load_zoo(f"zoo:{name}"), tmp_path / "m.bsr")
        up = load_upscaler(f"zoo:{name}", backend="engine")
        assert packed_file(name) is None and up.notice and "PyTorch" in up.notice
        return
    export_packed(load_zoo(f"zoo:{name}"), tmp_path / "m.bsr")
    assert packed_file(name) is not None, f"{name}.bsr missing: run binsr zoo --repack"
    assert packed_file(name).read_bytes() == (tmp_path / "m.bsr").read_bytes(), "stale: run binsr zoo --repack"


@pytest.mark.parametrize("name", PACKED)
def test_zoo_model_body_is_bit_exact_on_the_engine(name, assert_body_exact):
    """BN folded with PyTorch's single rounding, residual scaling in PyTorch's order, the FP layers
    that feed binary ones in float64: every map the body binarizes is bit-identical (see the
    ``assert_body_exact`` fixture)."""
    assert_body_exact(load_zoo(f"zoo:{name}").eval())


def test_add_to_zoo_writes_card_weights_and_packed_file(tmp_path, monkeypatch, data_root, capsys):
    """binsr zoo --add: weights copied, card with measured metrics and the run's validation curve,
    the packed file written; an existing name is refused without --overwrite; --note adds the card's
    note. binsr zoo --curve restores the curve of an older card from its own run only."""
    import shutil

    from binsr import pretrained
    from binsr.models import add_to_zoo, create
    from binsr.train.checkpoint import save_weights

    torch.manual_seed(0)
    run = tmp_path / "run"
    run.mkdir()
    save_weights(run / "best.safetensors", create("srresnet_lite", scale=2, recipe="e2fif", num_feat=8, num_block=1,
                                                        zero_tail=True))  # starts as bilinear
    (run / "log.csv").write_text("step,loss,lr,it_s,val_psnr,val_ssim\n5,0.1,0.001,1.0,,\n10,,,,31.5,0.91\n"
                                 "20,0.1,0.001,1.0,32.25,0.92\n")
    (run / "config.yaml").write_text("val:\n  every: 10\n  dataset: Set14\n")
    monkeypatch.setattr(pretrained, "ZOO_DIR", tmp_path / "zoo")
    card = add_to_zoo(run, "tiny_x2", data_root=str(data_root), datasets=("Set5",))
    assert zoo_names() == ["tiny_x2"] and card["scale"] == 2 and card["metrics"]["Set5"]["psnr"] > 20
    assert card["val_dataset"] == "Set14" and card["val_curve"] == [[10, 31.5], [20, 32.25]]
    assert json.loads((tmp_path / "zoo" / "tiny_x2.json").read_text()) == card
    assert packed_file("tiny_x2") == tmp_path / "zoo" / "tiny_x2.bsr"
    with pytest.raises(UsageError, match="exists"):
        add_to_zoo(run, "tiny_x2", data_root=str(data_root), datasets=("Set5",))
    for bad in ("../tiny_x2", "a/b", "zoo:tiny", "Tiny X2", "", "x" * 101):  # refused before measuring
        with pytest.raises(UsageError, match="must be lowercase letters, digits and underscores"):
            add_to_zoo(run, bad, data_root=str(tmp_path / "no_data"), datasets=("Set5",))
    assert add_to_zoo(run, "tiny_x2", data_root=str(data_root), datasets=("Set5",), overwrite=True) == card
    noted = add_to_zoo(run, "tiny_x2", data_root=str(data_root), datasets=("Set5",), overwrite=True,
                       note="10000 steps before this run")
    assert noted == {**card, "note": "10000 steps before this run"} and zoo_card("tiny_x2") == noted
    assert main(["zoo", "--note", "x", "--name", "tiny_x2"]) == 2  # --note without --add
    assert "--note goes with --add" in capsys.readouterr().err
    old = {k: v for k, v in card.items() if k not in ("val_dataset", "val_curve")}  # a card from before curves
    (tmp_path / "zoo" / "tiny_x2.json").write_text(json.dumps(old))
    shutil.copytree(run, tmp_path / "other")
    assert main(["zoo", "--curve", str(tmp_path / "other"), "--name", "tiny_x2"]) == 2  # not its source run
    assert "is not the run of zoo:tiny_x2" in capsys.readouterr().err
    assert main(["zoo", "--curve", str(run), "--name", "tiny_x2"]) == 0
    assert "2 validation points on Set14" in capsys.readouterr().out
    assert zoo_card("tiny_x2") == card
    zoo = {p.name: p.read_bytes() for p in (tmp_path / "zoo").iterdir()}  # a failed --add leaves the zoo as it was
    (run / "results.json").write_text("{")
    with pytest.raises(UsageError, match="run results file .* is not valid JSON"):
        add_to_zoo(run, "tiny_x2", data_root=str(data_root), datasets=("Set5",), overwrite=True)
    (run / "results.json").unlink()
    with pytest.raises(UsageError):  # the measurement fails after the model is built: still nothing written
        add_to_zoo(run, "tiny_x2", data_root=str(tmp_path / "no_data"), datasets=("Set5",), overwrite=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "zoo").iterdir()} == zoo


def test_default_model_per_scale(tmp_path, monkeypatch):
    """The default entry is the named one while shipped, not whichever sorts first."""
    from binsr import pretrained

    assert [pretrained.default_model(s) for s in (2, 3, 4)] == [f"zoo:{pretrained.DEFAULT[s]}" for s in (2, 3, 4)]
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    for name, scale in (("a_deep_x4", 4), ("b_x4", 4), ("odd", 4), ("c_x2", 2)):
        (zoo / f"{name}.json").write_text(json.dumps({"name": name, "scale": scale}))
        (zoo / f"{name}.safetensors").write_bytes(b"")
    monkeypatch.setattr(pretrained, "ZOO_DIR", zoo)
    monkeypatch.setattr(pretrained, "DEFAULT", {4: "b_x4"})
    assert [pretrained.default_model(s) for s in (2, 3, 4)] == ["zoo:c_x2", None, "zoo:b_x4"]
    monkeypatch.setattr(pretrained, "DEFAULT", {})
    assert pretrained.default_model(4) == "zoo:a_deep_x4"
