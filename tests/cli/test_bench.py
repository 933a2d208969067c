"""``binsr bench``: the output checks that gate every ratio, both end-to-end baselines, packed
files benchmarked directly, and no exporter chatter. Tiny networks and maps: seconds, not a
measurement (timings belong to benchmark runs, see benchmarks/README.md)."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from binsr.cli import main
from binsr.cli.bench import SIM_ORT_PSNR_DB, agreement, check_agreement
from binsr.errors import BinsrError
from binsr.models import create
from binsr.train.checkpoint import save_weights

TINY = dict(num_block=1, num_feat=8)
BENCH = ["bench", "--skip", "layers", "--threads", "1", "--repeat", "1", "--size", "20x12"]


def _tiny_weights(path, seed):
    torch.manual_seed(seed)
    save_weights(path, create("srresnet_small", scale=2, recipe="e2fif", **TINY).eval())
    return str(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Weights of a 1-block x 8-channel binary SRResNet (x2), and its packed export."""
    folder = tmp_path_factory.mktemp("tiny")
    weights = _tiny_weights(folder / "tiny.safetensors", 0)
    assert main(["export", "--model", "srresnet_small", "--scale", "2", "--weights", weights,
                 "--out", str(folder / "tiny.bsr")]) == 0
    return weights, str(folder / "tiny.bsr")


@settings(max_examples=25, deadline=None)
@given(arrays(np.float32, (1, 3, 4, 5), elements=st.floats(-0.5, 1.5, width=32)))
def test_agreement_of_an_image_with_itself(img):
    assert agreement(img, img) == {"equal": 1.0, "max_diff": 0.0, "psnr_db": None}


def test_agreement_counts_uint8_differences():
    ref = np.full((1, 3, 10, 10), 100 / 255, np.float32)
    out = ref.copy()
    out[0, 0, 0, :2] = 102 / 255  # 2 of 300 values 2 apart
    a = agreement(out, ref)
    assert a["equal"] == pytest.approx(298 / 300) and a["max_diff"] == 2
    assert a["psnr_db"] == pytest.approx(10 * np.log10(255**2 / (8 / 300)))


def test_check_agreement_applies_each_rule():
    rng = np.random.default_rng(0)
    sim = rng.random((1, 3, 40, 40), dtype=np.float32)
    one_apart = sim.copy()
    one_apart.flat[:4] += 1 / 255  # 4 of 4800 values (0.08%) one apart: within the exactness rule
    fp = rng.random((1, 3, 40, 40), dtype=np.float32)
    outs = {"engine": one_apart, "torch_sim": sim, "onnxruntime_sim": sim, "torch_fp_contiguous": fp,
            "torch_fp_channels_last": fp + 1e-6, "onnxruntime_fp": fp}
    checked = check_agreement(outs)
    assert set(checked) == {"engine vs torch_sim", "onnxruntime_sim vs torch_sim",
                            "torch_fp_channels_last vs torch_fp_contiguous", "onnxruntime_fp vs torch_fp_contiguous"}
    assert checked["onnxruntime_fp vs torch_fp_contiguous"]["allclose"] is True
    bad = {"engine": sim + np.where(np.arange(sim.size).reshape(sim.shape) == 0, 2 / 255, 0).astype(np.float32)}
    noisy = {"onnxruntime_sim": np.clip(sim + rng.normal(0, 0.05, sim.shape).astype(np.float32), 0, 1)}
    assert agreement(noisy["onnxruntime_sim"], sim)["psnr_db"] < SIM_ORT_PSNR_DB
    for change in (bad, noisy, {"onnxruntime_fp": fp + 0.01}, {"torch_fp_channels_last": fp[..., ::-1]}):
        with pytest.raises(BinsrError, match="disagree.*no ratio reported"):
            check_agreement({**outs, **change})


def test_bench_both_baselines_checked_and_quiet(tiny, tmp_path, capfd):
    """Engine vs the simulation and vs the FP network of the same shapes, in PyTorch (both layouts
    timed, the faster kept) and ONNX Runtime; the exporters' hundreds of lines are one summary."""
    pytest.importorskip("onnxruntime", reason="ONNX Runtime is in the bench extra: pip install 'binsr[bench]'")
    out = tmp_path / "b.json"
    assert main([*BENCH, "--model", "srresnet_small", "--scale", "2", "--weights", tiny[0], "--json", str(out)]) == 0
    printed = capfd.readouterr()
    assert "Replaced initializer" not in printed.out + printed.err and "[torch.onnx]" not in printed.out + printed.err
    assert printed.out.count("lines of their output hidden") == 1
    result = json.loads(out.read_text())
    (row,) = result["end_to_end"]
    for name in ("torch_sim", "onnxruntime_sim", "torch_fp", "onnxruntime_fp"):
        assert row[f"speedup_vs_{name}"] == pytest.approx(row[f"{name}_ms"] / row["engine_ms"])
    best = min(row["torch_fp_contiguous_ms"], row["torch_fp_channels_last_ms"])
    assert row["torch_fp_ms"] == best and row[f"torch_fp_{row['torch_fp_layout']}_ms"] == best
    assert result["fp_twin"] == "srresnet_small x2 fp, the same 6 conv/linear weight shapes"
    assert result["agreement"]["engine vs torch_sim"]["equal"] >= 0.999
    assert result["agreement"]["onnxruntime_fp vs torch_fp_contiguous"]["allclose"] is True


def test_bench_packed_file_alone_or_with_its_weights(tiny, tmp_path, capsys):
    weights, packed = tiny
    alone, rebuilt = tmp_path / "alone.json", tmp_path / "rebuilt.json"
    assert main([*BENCH, "--skip", "onnx", "--model", packed, "--json", str(alone)]) == 0
    result = json.loads(alone.read_text())
    assert "alone (no --weights" in result["compared"] and result["agreement"] == {}
    assert set(result["end_to_end"][0]) == {"model", "input", "threads", "path", "engine_ms", "engine_split_ms"}
    assert main([*BENCH, "--skip", "onnx", "--model", packed, "--weights", weights, "--json", str(rebuilt)]) == 0
    result = json.loads(rebuilt.read_text())
    assert result["compared"].startswith(f"the engine on {packed} vs the PyTorch simulation of srresnet_small x2")
    assert {"speedup_vs_torch_sim", "speedup_vs_torch_fp"} <= set(result["end_to_end"][0])
    capsys.readouterr()
    other = _tiny_weights(tmp_path / "other.safetensors", 1)  # not the weights the file holds
    assert main([*BENCH, "--skip", "onnx", "--model", packed, "--weights", other]) == 1
    assert "engine and torch_sim outputs disagree" in capsys.readouterr().err


def test_bench_file_sizes_and_fp16_weights(tiny, tmp_path):
    fp32, half = tmp_path / "fp32.json", tmp_path / "half.json"
    assert main([*BENCH, "--skip", "onnx", "--model", "srresnet_small", "--scale", "2", "--weights", tiny[0],
                 "--json", str(fp32)]) == 0
    assert main([*BENCH, "--skip", "onnx", "--model", "srresnet_small", "--scale", "2", "--weights", tiny[0],
                 "--fp16-weights", "--json", str(half)]) == 0
    res, res16 = json.loads(fp32.read_text()), json.loads(half.read_text())
    f = res["file_bytes"]
    assert f["packed_binary_weights"] + f["packed_fp_parts"] + f["packed_graph_and_index"] == f["packed"]
    assert f["ratio"] == pytest.approx(f["fp32_safetensors"] / f["packed"]) and f["ratio"] > 1
    assert res["kernel"].startswith(res["isa"])  # "avx512" reports which of its two kernels ran
    assert res16["end_to_end"][0]["model"].endswith("fp16-weights")
    assert res16["file_bytes"]["packed_fp_parts"] < f["packed_fp_parts"]
    assert res16["agreement"]["engine vs torch_sim"]["max_diff"] <= 1  # the rounded model on both sides


def test_bench_zoo_packed_file_is_recognised(tmp_path):
    from binsr.pretrained import packed_file, zoo_names

    name = next((n for n in zoo_names() if packed_file(n) is not None), None)
    if name is None:
        pytest.skip("no zoo entry ships a packed file")
    out = tmp_path / "z.json"
    assert main([*BENCH, "--skip", "onnx", "--size", "12x8", "--model", str(packed_file(name)),
                 "--json", str(out)]) == 0
    assert f"zoo:{name} (the file is its shipped packed file)" in json.loads(out.read_text())["compared"]


@pytest.mark.parametrize("extra, code, message", [
    (["--model", "missing.bsr"], 2, "packed model not found"),
    (["--model", "x.bsr", "--recipe", "bnn"], 2, "a packed file brings its own"),
    (["--repeat", "0"], 2, "--repeat must be >= 1"),
])
def test_bench_usage_errors(extra, code, message, capsys):
    assert main([*BENCH, *extra]) == code
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_bench_layers_rows(tmp_path):
    out = tmp_path / "l.json"
    assert main(["bench", "--skip", "end-to-end", "--threads", "1", "--repeat", "1", "--size", "16x8",
                 "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["layers"]
    assert [r["op"] for r in rows] == ["3x3", "5x5", "7x7", "3x3 d=2", "3x3 g=4"]
    assert all(r["speedup"] == pytest.approx(r["torch_ms"] / r["engine_ms"]) for r in rows)


@pytest.mark.parametrize("size, message", [("0x4", "bad size"), ("4", "bad size"), ("1921x1081", "at most 2,073,600")])
def test_bench_size_is_bounded(size, message, capsys):
    """A --size whose maps would not fit in memory is refused before anything is allocated."""
    with pytest.raises(SystemExit) as exc:
        main([*BENCH, "--size", size])
    assert exc.value.code == 2 and message in capsys.readouterr().err
