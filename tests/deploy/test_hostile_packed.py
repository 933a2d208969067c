"""Packed ``.bsr`` graphs with every field of every op mutated (issue 16): each file either loads
and runs to a finite image of the right size, or is refused at load with one BinsrError line;
memory stays within a measured bound, and the CLI exits 1 with one line and no output."""

import json
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.numpy import save_file

from binsr.deploy import Runtime, export_packed
from binsr.deploy.graph import FIELDS
from binsr.errors import BinsrError
from binsr.models import create

#: values every field is set to in turn (plus: the field removed); names of no map or tensor,
#: wrong types, zero, negative, fractional and huge numbers
VALUES = [None, "nope", True, [], 0, -1, 1.5, 10**9, 1e300]
FLOAT32_MAX = float(np.finfo(np.float32).max)
MEMORY_FACTOR = 4  # a mutated file may take at most this many times the honest file's peak


def _export(name, **kwargs):
    torch.manual_seed(0)
    model = create(name, 4, "scales", **kwargs).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "threshold" in pname or pname.endswith("bias"):
                p.normal_(0, 0.05)
    return model


#: an SRBNAS cell with a node of two skips (``add``); every cell has a ``concat``
SRBNAS_GENOTYPE = {"format": "binsr.srbnas.genotype/1", "groups": 2,
                   "nodes": [[["conv_3x3", 0], ["skip_connect", 1]], [["skip_connect", 0], ["skip_connect", 2]],
                             [["dil_conv_3x3", 3], ["skip_connect", 1]]]}


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """Three small packed files that use every op of the format: {model: (tensors, graph)}."""
    tmp = tmp_path_factory.mktemp("packed")
    files = {}
    torch.manual_seed(0)
    srbnas = create("srbnas", 4, "irnet", genotype=SRBNAS_GENOTYPE, num_cells=2, num_feat=16).eval()
    for name, model in (("srresnet_small", _export("srresnet_small", num_block=1, num_feat=16)),
                        ("swinir_light", _export("swinir_light", embed_dim=12, depths=(1,), num_heads=(2,),
                                                 window_size=4)),
                        ("srbnas", srbnas)):
        export_packed(model, tmp / f"{name}.bsr")
        with safe_open(str(tmp / f"{name}.bsr"), framework="numpy") as f:
            files[name] = ({k: f.get_tensor(k) for k in f.keys()}, json.loads(f.metadata()["binsr"]))
    assert {op["op"] for _, g in files.values() for op in g["ops"]} == set(FIELDS)  # every op is covered
    return files


def _write(path, tensors, graph):
    save_file(tensors, str(path), metadata={"binsr": json.dumps(graph)})
    return path


LR = np.random.default_rng(0).random((1, 3, 9, 7), dtype=np.float32)


def _run(path):
    """Load and run ``path``; returns the peak traced memory (bytes). A refusal raises BinsrError."""
    tracemalloc.start()
    try:
        rt = Runtime(path)
        y = rt(LR)
        assert y.shape == (1, 3, 9 * rt.scale, 7 * rt.scale) and np.isfinite(y).all()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _cases():
    """(model, op kind, field): every field of every op kind, on the first op of that kind that
    sets the field (else the first of that kind)."""
    return [(model, kind, field) for model, kinds in (
        ("srresnet_small", ("conv", "pack", "bconv", "spatial_gate", "channel_gate", "bilinear_add")),
        # SwinIR's bconvs (its binary linears) run one by one, not in a chain as SRResNet's
        ("swinir_light", ("linear", "bconv", "sigmoid", "layernorm", "gelu", "window_attention", "pad_window",
                          "affine", "crop")),
        ("srbnas", ("concat", "add")),
    ) for kind in kinds for field in FIELDS[kind]]


@pytest.mark.parametrize("model, kind, field", _cases(), ids=[f"{k}.{f}" for _, k, f in _cases()])
def test_every_field_mutated_loads_and_runs_or_is_one_line(packed, tmp_path, model, kind, field):
    tensors, graph = packed[model]
    honest = _run(_write(tmp_path / "honest.bsr", tensors, graph))
    ops = graph["ops"]
    index = next((i for i, op in enumerate(ops) if op["op"] == kind and op.get(field) is not None),
                 next(i for i, op in enumerate(ops) if op["op"] == kind))
    for value in ["<removed>", *VALUES]:
        op = {k: v for k, v in ops[index].items() if k != field}
        if value != "<removed>":
            op[field] = value
        path = _write(tmp_path / "m.bsr", tensors, {**graph, "ops": [*ops[:index], op, *ops[index + 1:]]})
        try:
            peak = _run(path)
        except BinsrError as exc:
            assert type(exc) is BinsrError and "\n" not in str(exc), (field, value)
        else:
            assert not _must_refuse(FIELDS[kind][field], value, ops[index].get(field)), (field, value)
            assert peak <= MEMORY_FACTOR * honest, (field, value, peak, honest)


def _must_refuse(what: str, value, honest) -> bool:
    """Whether ``value`` is wrong for a field of this kind whatever the op: a wrong type, a name of
    nothing, or (integers) a negative, fractional or huge value. Numbers may be legal anywhere a
    number is (a slope of 1.5), a removed or null field may take its default, and an op may write
    a map of a new name where the honest file (``honest``: its value) wrote none (nothing reads it)."""
    if value in ("<removed>", None) or (what == "dst" and honest is None and value == "nope"):
        return False
    if value == "nope" or isinstance(value, bool):
        return what != "flag" or value == "nope"
    if isinstance(value, list):
        return what not in ("maps",)  # an empty residual list is legal; act needs three names
    if what == "number":
        return abs(value) > FLOAT32_MAX  # the engine computes in float32
    return what != "int" or value < 0 or value != int(value) or value >= 10**9


def _mutate(graph, index, **changes):
    ops = [dict(op) for op in graph["ops"]]
    ops[index].update(changes)
    return {**graph, "ops": ops}


def _first(graph, kind):
    return next(i for i, op in enumerate(graph["ops"]) if op["op"] == kind)


ISSUE_CASES = {  # the cases of issue 16: name -> (graph change, message fragment)
    "cin 0": (lambda g: _mutate(g, _first(g, "bconv"), cin=0), "cin must be an integer"),
    "cin negative": (lambda g: _mutate(g, _first(g, "bconv"), cin=-16), "cin must be an integer"),
    "k 0": (lambda g: _mutate(g, _first(g, "bconv"), k=0), "k must be an integer"),
    "k fractional": (lambda g: _mutate(g, _first(g, "bconv"), k=1.5), "k must be an integer"),
    "huge pad": (lambda g: _mutate(g, _first(g, "bconv"), pad=10**9), "pad must be an integer in 0..2"),
    "missing tensor": (lambda g: _mutate(g, _first(g, "bconv"), w="gone.w"), "the file does not hold"),
    "ops not a list": (lambda g: {**g, "ops": {"0": g["ops"][0]}}, "ops must be a list"),
    "wrong cin": (lambda g: _mutate(g, _first(g, "bconv"), cin=8), "has 16 channels, not 8"),
    "wrong groups": (lambda g: _mutate(g, _first(g, "bconv"), groups=2), "padding bits past cin / groups"),
    "wrong residual": (lambda g: _mutate(g, _first(g, "bconv"), res=["x"]), "has 3 channels, not 16"),
    "output never written": (lambda g: {**g, "output": "nothing"}, "never written"),
    "op not an object": (lambda g: {**g, "ops": [5, *g["ops"]]}, "op 0 is not an object"),
    "unknown op": (lambda g: _mutate(g, 0, op="conv3d"), "unknown op 'conv3d'"),
    "unknown field": (lambda g: _mutate(g, 0, stride=2), "unknown field stride"),
    "read before written": (lambda g: {**g, "ops": g["ops"][1:]}, "which no earlier op writes"),
    "graph scale 0": (lambda g: {**g, "scale": 0}, "scale must be an integer in 1..16"),
    "graph scale missing": (lambda g: {k: v for k, v in g.items() if k != "scale"}, "scale must be an integer"),
    "input not a name": (lambda g: {**g, "input": 3}, "input must be a map name"),
}


def _concat_with_a_bigger_map(graph):
    """A graph whose first concat also reads the bits of a map 2 pixels larger (an unpadded conv)."""
    ops = [{"op": "conv", "src": "x", "dst": "big", "w": "head.w", "pad": 2},
           {"op": "pack", "src": "big", "dst": "big.bits"}, *graph["ops"]]
    i = _first({"ops": ops}, "concat")
    ops[i] = {**ops[i], "srcs": [*ops[i]["srcs"], "big.bits"]}
    return {**graph, "ops": ops}


SRBNAS_CASES = {  # the ops SRBNAS added: name -> (graph change, message fragment)
    "concat of nothing": (lambda g: _mutate(g, _first(g, "concat"), srcs=[]), "srcs must name at least one bit map"),
    "concat of a float map": (lambda g: _mutate(g, _first(g, "concat"), srcs=["feat"]),
                              "srcs \\(feat\\) is a float map, not a bit map"),
    "concat of another size": (_concat_with_a_bigger_map, "srcs big.bits is of size 1 x x \\+2, not 1 x x"),
    "concat too wide": (lambda g: _mutate(g, _first(g, "concat"), srcs=["feat.bits"] * 5000),
                        "srcs hold 80000 channels, more than 65536"),
    "concat read as wider": (lambda g: _mutate(g, _first(g, "concat"), srcs=["feat.bits"]), "has 16 channels, not 48"),
    "add of other channels": (lambda g: _mutate(g, _first(g, "add"), add="x"), "add \\(x\\) has 3 channels, not 16"),
    "add of bits": (lambda g: _mutate(g, _first(g, "add"), src="feat.bits"), "src \\(feat.bits\\) is a bit map"),
    "add missing": (lambda g: _mutate(g, _first(g, "add"), add=None), "field add missing"),
}


REFUSED = [("srresnet_small", case, *ISSUE_CASES[case]) for case in ISSUE_CASES]
REFUSED += [("srbnas", case, *SRBNAS_CASES[case]) for case in SRBNAS_CASES]


@pytest.mark.parametrize(("model", "case", "change", "fragment"), REFUSED, ids=[f"{m}-{c}" for m, c, *_ in REFUSED])
def test_graph_cases_are_refused_at_load(packed, tmp_path, model, case, change, fragment):
    tensors, graph = packed[model]
    with pytest.raises(BinsrError, match=fragment) as err:
        Runtime(_write(tmp_path / "m.bsr", tensors, change(graph)))
    assert "\n" not in str(err.value)


def test_non_finite_tensors_are_refused(packed, tmp_path):
    tensors, graph = packed["srresnet_small"]
    name = next(k for k, t in tensors.items() if t.dtype == np.float32 and t.ndim == 1)
    bad = {**tensors, name: np.full_like(tensors[name], np.nan)}
    with pytest.raises(BinsrError, match=f"tensor {name} holds NaN or infinite values"):
        Runtime(_write(tmp_path / "m.bsr", bad, graph))


def _overflowing(tensors, graph):
    """The last FP conv's weights scaled to +-3e38: each finite in float32, their sums not."""
    name = [op["w"] for op in graph["ops"] if op["op"] == "conv"][-1]
    return {**tensors, name: np.sign(tensors[name]) * np.float32(3e38)}


def test_an_output_that_overflows_float32_is_one_line(packed, tmp_path):
    """A file that loads (each number finite in float32) but whose sums overflow: the run ends in
    one BinsrError line, not in an image of NaN (which the uint8 cast would turn black). (A NaN
    inside the body is not always seen: a sign packing turns it into a bit.)"""
    tensors, graph = packed["srresnet_small"]
    rt = Runtime(_write(tmp_path / "m.bsr", _overflowing(tensors, graph), graph))
    with pytest.raises(BinsrError, match="output holds NaN or infinite values") as err:
        rt(LR)
    assert "\n" not in str(err.value)


_TIMED_RUN = "import resource, subprocess, sys; r = subprocess.run(sys.argv[2:]); " \
             "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); " \
             "sys.exit(r.returncode)"


@pytest.mark.parametrize("case", ["huge pad", "wrong groups", "ops not a list", "overflow"])
def test_upscale_cli_refuses_a_bad_packed_file(packed, tmp_path, case):
    """``binsr upscale --model FILE.bsr`` without --debug: exit 1, one line, no traceback, no output,
    peak RSS under 256 MiB (the torch-free engine). A file refused at load stops the run; one
    whose output overflows fails each picture (here the only one)."""
    tensors, graph = packed["srresnet_small"]
    if case == "overflow":
        path = _write(tmp_path / "m.bsr", _overflowing(tensors, graph), graph)
    else:
        path = _write(tmp_path / "m.bsr", tensors, ISSUE_CASES[case][0](graph))
    Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(tmp_path / "in.png")
    rss = tmp_path / "rss"
    r = subprocess.run([sys.executable, "-c", _TIMED_RUN, str(rss), sys.executable, "-m", "binsr", "upscale",
                        str(tmp_path / "in.png"), "-o", str(tmp_path / "out"), "--model", str(path), "--quiet"],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert not list((tmp_path / "out").glob("*")) and int(rss.read_text()) < 256 * 1024


def test_shrinking_convs_set_a_minimum_input_side(tmp_path):
    """A 3x3 conv without padding, then one padded twice that upscales x4 (sizes agree again at
    the output): it loads, runs on inputs of 3 pixels a side or more, and refuses smaller ones in
    one line."""
    rng = np.random.default_rng(0)
    tensors = {"a.w": rng.normal(size=(27, 3)).astype(np.float32), "b.w": rng.normal(size=(27, 48)).astype(np.float32)}
    graph = {"format": "binsr.packed", "version": 2, "scale": 4, "input": "x", "output": "y", "ops": [
        {"op": "conv", "src": "x", "dst": "a", "w": "a.w"},
        {"op": "conv", "src": "a", "dst": "y", "w": "b.w", "pad": 2, "shuffle": 4}]}
    rt = Runtime(_write(tmp_path / "m.bsr", tensors, graph))
    assert rt.min_side == 3 and rt(LR).shape == (1, 3, 36, 28)
    with pytest.raises(BinsrError, match="an input of 2x2 pixels is smaller than this model's 3x3 minimum"):
        rt(LR[..., :2, :2])


def test_tensors_of_the_wrong_shape_are_refused(packed, tmp_path):
    """Every tensor of the file in turn replaced by one of another shape (a dimension 0, one
    more row) or dtype is refused in one line; only a channel gate's kernel may be one longer
    (its length is free: a 1-D conv over the pooled channels)."""
    tensors, graph = packed["swinir_light"]
    free = {op["w"] for op in graph["ops"] if op["op"] == "channel_gate"}
    assert free
    for name, t in tensors.items():
        for bad in (np.zeros((0,) + t.shape[1:], t.dtype), np.concatenate([t, t[:1]]), t.astype(np.float64)):
            try:
                _run(_write(tmp_path / "m.bsr", {**tensors, name: bad}, graph))
            except BinsrError as exc:
                assert "\n" not in str(exc)
            else:
                assert name in free and len(bad) == len(t) + 1, f"{name} {bad.shape} {bad.dtype} was accepted"
