"""SRBNAS (``binsr.models.srbnas``) on the packed format and the torch-free runtime: random-init
cells of every op and edge pattern at x2/x3/x4 on every kernel path, a bit-exact body, the shipped
``zoo:srbnas_x4`` on a real picture (the Deployment bar: >= 99.9% of uint8 values equal, none
more than 1 apart), the CLI, the refusals, and the two ops SRBNAS added (``concat``, ``add``)."""

from __future__ import annotations

import json
from importlib.resources import files

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from binsr.cli import main
from binsr.data import imresize, read_image
from binsr.deploy import Runtime, available_paths, export_packed
from binsr.deploy.bitpack import concat_bits, pack_bits, unpack_bits
from binsr.errors import BinsrError
from binsr.models import create, load_zoo
from binsr.nas.genotype import Genotype


def _geno(nodes: list, groups: int = 2) -> dict:
    return {"format": "binsr.srbnas.genotype/1", "groups": groups, "nodes": nodes}


GENOTYPES = {
    # every op of Table 1; node 2 sums two skips (an `add`); node 0 is skip after conv (a residual)
    "all_ops": _geno([[["dil_conv_3x3", 0], ["skip_connect", 1]], [["conv_5x5", 0], ["conv_7x7", 2]],
                      [["skip_connect", 0], ["skip_connect", 1]], [["dil_conv_5x5", 3], ["conv_3x3", 4]]]),
    # tests/nas/test_model.py's SMALL (2 nodes) and HEAVY (7x7 everywhere)
    "small": _geno([[["dil_conv_3x3", 0], ["skip_connect", 1]], [["conv_5x5", 0], ["conv_7x7", 2]]]),
    "heavy": _geno([[["conv_7x7", 0], ["conv_7x7", 1]]] + [[["conv_7x7", j], ["conv_7x7", j + 1]] for j in range(3)]),
    # edge patterns the format allows beyond two edges a node: conv then two skips (residuals), one
    # skip alone (the state itself), skip + skip + conv (an add, then a residual), conv + conv + four
    # skips (three residuals, then adds), groups 4
    "chains": _geno([[["conv_3x3", 0], ["skip_connect", 1], ["skip_connect", 0]], [["skip_connect", 1]],
                     [["skip_connect", 0], ["skip_connect", 2], ["dil_conv_3x3", 3]],
                     [["conv_3x3", 1], ["dil_conv_5x5", 2], ["skip_connect", 0], ["skip_connect", 3],
                      ["skip_connect", 4], ["skip_connect", 1]]], groups=4),
    "shipped": "srbnas_x4",
}
#: (genotype, num_feat, num_cells): 16 and 48 channels take concat's bit-shifting path, 64 its word path
CASES = [("all_ops", 16, 2), ("all_ops", 48, 3), ("small", 64, 1), ("heavy", 32, 1), ("chains", 16, 3),
         ("chains", 64, 2), ("shipped", 64, 3)]


def _model(genotype: str, num_feat: int, num_cells: int, scale: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create("srbnas", scale=scale, recipe="irnet", genotype=GENOTYPES[genotype], num_cells=num_cells,
                  num_feat=num_feat).eval()


def _uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255), 0, 255).astype(np.int16)


def _graph(path) -> dict:
    with safe_open(str(path), framework="numpy") as f:
        return json.loads(f.metadata()["binsr"])


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("genotype,num_feat,num_cells", CASES, ids=[f"{g}-{c}x{n}" for g, n, c in CASES])
def test_random_srbnas_matches_torch_on_every_path(tmp_path, genotype, num_feat, num_cells, scale) -> None:
    """Random init (Libra-PB signs, PyTorch's default head and tail) vs the PyTorch eval forward:
    the uint8 rule holds on random nets too, and the floats agree to float32 rounding of the FP
    head and tail (signs near 0 of the head features could flip, a random net's output is in [-4, 4]:
    the 1e-4 bound leaves room for none)."""
    model = _model(genotype, num_feat, num_cells, scale)
    export_packed(model, tmp_path / "m.bsr")
    x = torch.rand(2, 3, 13, 11, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x).numpy()
    for path in available_paths():
        out = Runtime(tmp_path / "m.bsr", threads=2, path_isa=path)(x.numpy())
        assert out.shape == ref.shape == (2, 3, 13 * scale, 11 * scale)
        diff = np.abs(_uint8(out) - _uint8(ref))
        assert diff.max() <= 1 and (diff == 0).mean() >= 0.999, (path, diff.max(), (diff == 0).mean())
        assert np.abs(out - ref).max() < 1e-4, path


@pytest.mark.parametrize("genotype,num_feat,num_cells", CASES, ids=[f"{g}-{c}x{n}" for g, n, c in CASES])
def test_srbnas_body_is_bit_exact(tmp_path, genotype, num_feat, num_cells) -> None:
    """With head features PyTorch and the engine compute alike (dyadic head weights and inputs,
    exact in float32 in any sum order), every cell output and the tail's input are bit-identical:
    no sign in the body can flip. Also checks what the graph is made of."""
    model = _model(genotype, num_feat, num_cells, 4)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.head.weight.copy_(torch.randint(-8, 9, model.head.weight.shape, generator=gen) / 8)
        model.head.bias.copy_(torch.randint(-8, 9, model.head.bias.shape, generator=gen) / 8)
    x = (torch.randint(0, 65, (1, 3, 17, 23), generator=gen) / 64).numpy()
    export_packed(model, tmp_path / "m.bsr")
    seen: dict[str, np.ndarray] = {}
    hooks = [cell.register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(f"c{i}", out[0].permute(1, 2, 0)))
             for i, cell in enumerate(model.body)]
    hooks.append(model.tail.register_forward_pre_hook(lambda m, a: seen.__setitem__("deep", a[0][0].permute(1, 2, 0))))
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    for h in hooks:
        h.remove()
    kept: dict[str, np.ndarray] = {}
    out = Runtime(tmp_path / "m.bsr", threads=2).run_hwc(x[0].transpose(1, 2, 0).copy(), keep=kept)
    seen.pop(f"c{num_cells - 1}")  # the last cell's output is only written with the head features added
    assert set(seen) <= set(kept)
    for key, t in seen.items():
        assert np.array_equal(kept[key], t.numpy()), key
    assert np.abs(out.transpose(2, 0, 1) - ref[0]).max() < 1e-4  # the FP tail: float32 rounding
    ops = _graph(tmp_path / "m.bsr")["ops"]
    kinds = [op["op"] for op in ops]
    convs = sum(1 for cell in model.body for node in cell.ops for op in node if not isinstance(op, torch.nn.Identity))
    assert kinds.count("bconv") == convs + num_cells and kinds.count("concat") == num_cells
    assert kinds.count("conv") == 2 and kinds[-1] == "bilinear_add"
    if genotype in ("all_ops", "chains"):
        assert "add" in kinds
    assert all(op.get("shift") and not op.get("scale") for op in ops if op["op"] == "bconv")


@pytest.fixture(scope="module")
def zoo_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("zoo") / "srbnas_x4.bsr"
    export_packed(load_zoo("zoo:srbnas_x4"), path)
    return path


@pytest.mark.parametrize("path", available_paths())
def test_zoo_srbnas_x4_on_a_real_picture(zoo_file, path) -> None:
    """The Deployment bar (tests/models/test_zoo.py's engine test) with the shipped weights, on every
    kernel path: measured 100% of uint8 values equal (max float difference 5e-7)."""
    model = load_zoo("zoo:srbnas_x4").eval()
    hr = read_image(files("binsr.assets") / "sample_hr.png")
    lr = imresize(hr[: hr.shape[0] // 4 * 4, : hr.shape[1] // 4 * 4], 1 / 4)
    x = (lr.astype(np.float32) / 255).transpose(2, 0, 1)[None].copy()
    with torch.no_grad():
        ref = np.clip(np.round(model(torch.from_numpy(x)).numpy() * 255), 0, 255)
    runtime = Runtime(zoo_file, threads=2, path_isa=path)
    assert runtime.path == path and runtime.scale == 4
    out = np.clip(np.round(runtime(x) * 255), 0, 255)
    diff = np.abs(out - ref)
    assert out.shape == ref.shape and diff.max() <= 1 and (diff == 0).mean() >= 0.999


def test_export_and_upscale_cli(tmp_path, capsys) -> None:
    """``binsr export --model zoo:srbnas_x4`` writes a file whose graph carries the signature, and
    ``binsr upscale --model file.bsr`` runs it on the engine."""
    out = tmp_path / "x.bsr"
    assert main(["export", "--model", "zoo:srbnas_x4", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    graph = _graph(out)
    assert graph["scale"] == 4 and graph["signature"]["model"] == "srbnas"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(tmp_path / "in.png")
    assert main(["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "up"), "--model", str(out)]) == 0
    (result,) = (tmp_path / "up").glob("*.png")
    assert Image.open(result).size == (40, 48)
    assert main(["export", "--model", "srbnas_large", "--recipe", "irnet", "--scale", "3", "--out",
                 str(tmp_path / "l.bsr")]) == 0
    assert Runtime(tmp_path / "l.bsr").scale == 3


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(recipe="e2fif"), "the paper's binary ops"),
    (dict(recipe="fp"), "the paper's binary ops"),
    (dict(genotype=Genotype(((("none", 0), ("skip_connect", 1)),), 2)), "binary ops .*, not Zero"),
])
def test_unsupported_srbnas_variants_are_refused(tmp_path, kwargs, fragment) -> None:
    kwargs = {"recipe": "irnet", "genotype": GENOTYPES["small"], **kwargs}
    model = create("srbnas", scale=2, num_cells=1, num_feat=16, **kwargs).eval()
    with pytest.raises(BinsrError, match=fragment) as err:
        export_packed(model, tmp_path / "m.bsr")
    assert "\n" not in str(err.value) and not (tmp_path / "m.bsr").exists()


@pytest.mark.parametrize("channels", [(64, 64, 64, 64), (16, 16, 16, 16), (48, 48, 48), (64, 7), (3, 64, 130), (70,)])
def test_concat_bits(channels) -> None:
    rng = np.random.default_rng(sum(channels))
    vals = [rng.standard_normal((5, 3, c)).astype(np.float32) for c in channels]
    got = concat_bits([pack_bits(v) for v in vals], channels)
    assert np.array_equal(got, pack_bits(np.concatenate(vals, axis=-1)))  # padding bits 1 included
    assert np.array_equal(unpack_bits(got, sum(channels)), np.where(np.concatenate(vals, axis=-1) >= 0, 1.0, -1.0))
