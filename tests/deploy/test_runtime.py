"""Packed export + torch-free runtime vs the PyTorch eval forward of the same checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import save_file

from binsr.cli import main
from binsr.deploy import Runtime, export_packed, round_fp16_
from binsr.deploy.runtime import DEFAULTS, VERSION
from binsr.errors import BinsrError
from binsr.models import create
from binsr.pretrained import packed_file


def _random_model(name: str, recipe: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    """A random-init model with non-trivial BN statistics, thresholds and RPReLU shifts."""
    torch.manual_seed(seed)
    model = create(name, scale=4, recipe=recipe, **kwargs).eval()
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.normal_(1.0, 0.2)
                mod.bias.normal_(0, 0.1)
        for n, p in model.named_parameters():
            if "threshold" in n or "shift_" in n:
                p.normal_(0, 0.1)
    return model


def _uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255), 0, 255).astype(np.int16)


@pytest.mark.parametrize("name,recipe,kwargs", [
    ("srresnet_small", "e2fif", {}), ("srresnet_small", "scales", {}), ("srresnet_small", "bbcu", {}),
    ("srresnet_lite", "e2fif", {}), ("srresnet_lite", "e2fif", {"block": "outer_skip", "res_scale": 0.2}),
    ("srresnet_small", "bbcu", {"block": "outer_skip", "res_scale": 0.5}), ("srresnet_small", "scales", {"block": "outer_skip", "res_scale": 0.3}),
    ("srresnet_small", "bnn", {"recipe_kwargs": {"weight_quant": "libra_pb"}}),  # power-of-two scales: shift
])
def test_runtime_matches_torch(tmp_path, name: str, recipe: str, kwargs: dict) -> None:
    model = _random_model(name, recipe, **kwargs)
    path = tmp_path / "m.bsr"
    sizes = export_packed(model, path)
    assert sizes["binary_bytes"] > 0 and sizes["file_bytes"] == path.stat().st_size
    x = torch.rand(2, 3, 13, 19, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = _uint8(model(x).numpy())
    out = _uint8(Runtime(path, threads=2)(x.numpy()))
    assert out.shape == ref.shape == (2, 3, 52, 76)
    diff = np.abs(out - ref)
    assert diff.max() <= 1 and (diff == 0).mean() >= 0.999


@pytest.mark.parametrize("recipe,kwargs", [
    ("bbcu", {}), ("bbcu", {"block": "outer_skip", "res_scale": 0.5}), ("e2fif", {}),
    ("e2fif", {"block": "outer_skip", "res_scale": 0.2}), ("scales", {}),
    ("scales", {"block": "outer_skip", "res_scale": 0.3}), ("scales", {"recipe_kwargs": {"spatial": False}}),
    ("scales", {"recipe_kwargs": {"channel": False}}),
])
def test_body_is_bit_exact(assert_body_exact, recipe: str, kwargs: dict) -> None:
    """Random BN statistics, thresholds and RPReLU shifts; BBCU's RPReLU(v) / 130 divides as torch does;
    SCALES' gates in float64 rounded once on both sides, multiplied in torch's order."""
    assert_body_exact(_random_model("srresnet_small", recipe, **kwargs))


def test_fp16_weights_are_lossless(tmp_path) -> None:
    """A rounded model's FP conv weights go into the file as float16, bit for bit; the runtime
    matches the rounded model's torch forward as an FP32 file does; an unrounded one is refused."""
    model = _random_model("srresnet_lite", "e2fif", block="outer_skip", res_scale=0.2)
    with pytest.raises(BinsrError, match="float16"):
        export_packed(model, tmp_path / "no.bsr", fp16=True)
    full = export_packed(model, tmp_path / "fp32.bsr")
    round_fp16_(model)
    assert model.conv_first.weight.dtype == torch.float32
    half = export_packed(model, tmp_path / "m.bsr", fp16=True)
    assert half["binary_bytes"] == full["binary_bytes"] and half["fp_bytes"] < 0.6 * full["fp_bytes"]
    with safe_open(str(tmp_path / "m.bsr"), framework="numpy") as f:
        head = f.get_tensor("head.w")
    assert head.dtype == np.float16
    np.testing.assert_array_equal(head.astype(np.float32).reshape(3, 3, 3, -1).transpose(3, 2, 0, 1),
                                  model.conv_first.weight.detach().numpy())
    x = torch.rand(1, 3, 21, 34, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = _uint8(model(x).numpy())
    diff = np.abs(_uint8(Runtime(tmp_path / "m.bsr")(x.numpy())) - ref)
    assert diff.max() <= 1 and (diff == 0).mean() >= 0.999


def test_reused_maps_give_the_same_output(tmp_path) -> None:
    """The runtime's arena hands dead maps to later convs and to the next call: repeated calls, a
    call of another size in between, and a call that keeps every intermediate all agree."""
    model = _random_model("srresnet_small", "e2fif", block="outer_skip", res_scale=0.3)
    export_packed(model, tmp_path / "m.bsr")
    rt = Runtime(tmp_path / "m.bsr", threads=2)
    rng = np.random.default_rng(0)
    a, b = rng.random((1, 3, 17, 23), np.float32), rng.random((1, 3, 9, 30), np.float32)
    first = rt(a)
    keep: dict = {}
    kept = rt.run_hwc(np.ascontiguousarray(a[0].transpose(1, 2, 0)), keep=keep)
    np.testing.assert_array_equal(kept.transpose(2, 0, 1)[None], first)
    assert len(keep) > 4
    for _ in range(3):
        np.testing.assert_array_equal(rt(a), first)
        other = rt(b)
    np.testing.assert_array_equal(other, Runtime(tmp_path / "m.bsr")(b))


def test_lanes_run_side_by_side_with_the_same_output() -> None:
    """Runtime.lane: a one-thread twin sharing the weights, with its own maps and chains; two lanes
    in two Python threads give, call for call, what the two-thread Runtime (its chains cut into
    two parts) gives."""
    rt = Runtime(packed_file("srresnet_lite_e2fif_x4"), threads=2)
    lanes = [rt.lane(), rt.lane()]
    assert rt._chains and rt.threads == 2
    for lane in lanes:
        assert lane.threads == 1 and lane._chains and lane.tensors is rt.tensors and lane._arena is not rt._arena
    rng = np.random.default_rng(1)
    xs = [rng.random((1, 3, 24 + 3 * i, 40), np.float32) for i in range(6)]
    want = [rt(x) for x in xs]
    got: list = [None] * len(xs)

    def work(k: int) -> None:
        for i in range(k, len(xs), 2):
            got[i] = lanes[k](xs[i])

    workers = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_packed_file_layout(tmp_path) -> None:
    model = _random_model("srresnet_small", "e2fif")
    export_packed(model, tmp_path / "m.bsr")
    with safe_open(str(tmp_path / "m.bsr"), framework="numpy") as f:
        graph = json.loads(f.metadata()["binsr"])
        bconvs = [op for op in graph["ops"] if op["op"] == "bconv"]
        assert len(bconvs) == 16
        w = f.get_tensor(bconvs[0]["w"])
    assert w.dtype == np.uint64 and w.shape == (32, 3, 3, 1)  # 32 channels -> one word, 1 bit each
    assert graph["signature"]["recipe"] == "e2fif" and graph["version"] == VERSION
    # the block's LeakyReLU is a scalar on the first conv, not constant vectors; defaults are left out
    assert [op.get("leaky") for op in bconvs[:2]] == [0.1, None] and not any("act" in op for op in bconvs)
    assert not any(k in op and op[k] == v for op in graph["ops"] for k, v in DEFAULTS.items())


def _rewrite_graph(src, dst, **changes) -> None:
    with safe_open(str(src), framework="numpy") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        graph = json.loads(f.metadata()["binsr"])
    save_file(tensors, str(dst), metadata={"binsr": json.dumps({**graph, **changes})})


def test_bad_packed_files_are_refused(tmp_path) -> None:
    """Another format version, a foreign graph, a corrupt graph and a truncated file each give one
    clear error."""
    good = tmp_path / "m.bsr"
    export_packed(_random_model("srresnet_small", "e2fif"), good)
    _rewrite_graph(good, tmp_path / "v1.bsr", version=1)
    with pytest.raises(BinsrError, match="format v1, this binsr reads v2: export it again"):
        Runtime(tmp_path / "v1.bsr")
    _rewrite_graph(good, tmp_path / "other.bsr", format="onnx")
    with pytest.raises(BinsrError, match="not a binsr packed model"):
        Runtime(tmp_path / "other.bsr")
    save_file({}, str(tmp_path / "junk.bsr"), metadata={"binsr": "{not json"})
    with pytest.raises(BinsrError, match="corrupt graph"):
        Runtime(tmp_path / "junk.bsr")
    (tmp_path / "cut.bsr").write_bytes(good.read_bytes()[:5000])
    with pytest.raises(BinsrError, match="cannot read packed model"):
        Runtime(tmp_path / "cut.bsr")


def test_runtime_imports_no_torch(tmp_path) -> None:
    export_packed(_random_model("srresnet_small", "scales"), tmp_path / "m.bsr")
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        from binsr.deploy import Runtime, isa
        y = Runtime({str(tmp_path / 'm.bsr')!r})(np.random.rand(1, 3, 11, 9).astype(np.float32))
        assert y.shape == (1, 3, 44, 36) and np.isfinite(y).all()
        assert "torch" not in sys.modules, "the runtime imported torch"
        print("ok", isa())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


def test_numpy_path_agrees(tmp_path) -> None:
    export_packed(_random_model("srresnet_small", "e2fif"), tmp_path / "m.bsr")
    x = np.random.default_rng(0).random((1, 3, 7, 10), dtype=np.float32)
    a = Runtime(tmp_path / "m.bsr", path_isa="numpy")(x)
    b = Runtime(tmp_path / "m.bsr")(x)
    assert (np.abs(_uint8(a) - _uint8(b)) <= 1).all()


def test_export_cli(tmp_path, capsys) -> None:
    out = tmp_path / "m.bsr"
    assert main(["export", "--model", "srresnet_small", "--recipe", "e2fif", "--scale", "4", "--out", str(out)]) == 0
    assert out.is_file() and "random-init" in capsys.readouterr().out
    assert main(["export", "--model", "srresnet_small", "--recipe", "lt_attn", "--out", str(out), "--overwrite"]) == 1
    half = tmp_path / "h.bsr"
    assert main(["export", "--model", "srresnet_lite16", "--recipe", "e2fif", "--out", str(half),
                 "--fp16-weights"]) == 0
    assert "rounded to float16" in capsys.readouterr().out
    with safe_open(str(half), framework="numpy") as f:
        assert f.get_tensor("tail1.conv.w").dtype == np.float16 and f.get_tensor("head.w").dtype == np.float16


def test_weight_only_export_is_one_error_line(tmp_path, capsys) -> None:
    """Ma et al.'s recipe keeps FP activations, which the engine cannot run: exit 1, one line, no file."""
    out = tmp_path / "m.bsr"
    assert main(["export", "--model", "srresnet_lite16", "--recipe", "weight_only", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "full-precision activations" in err and "Traceback" not in err
    assert not out.exists()


def test_numpy_fallback_without_extension(tmp_path) -> None:
    export_packed(_random_model("srresnet_small", "e2fif"), tmp_path / "m.bsr")
    code = textwrap.dedent(f"""
        import sys
        sys.modules["binsr.deploy._engine"] = None  # as if no compiler was found at install time
        import numpy as np
        from binsr.deploy import Runtime, isa
        assert isa() == "numpy"
        y = Runtime({str(tmp_path / 'm.bsr')!r})(np.random.rand(1, 3, 6, 5).astype(np.float32))
        assert y.shape == (1, 3, 24, 20) and np.isfinite(y).all()
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
