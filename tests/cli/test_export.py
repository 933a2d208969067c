"""``binsr export --format onnx``: one line of output (the exporter's hidden), a graph whose ONNX
Runtime output matches the PyTorch forward of the same weights, the --overwrite rule."""

import numpy as np
import pytest
import torch

from binsr.cli import main
from binsr.models import create, from_weights
from binsr.train.checkpoint import save_weights


def test_export_onnx_is_quiet_and_matches_pytorch(tmp_path, capfd):
    pytest.importorskip("onnxscript", reason="the ONNX exporter needs the bench extra: pip install 'binsr[bench]'")
    pytest.importorskip("onnxruntime", reason="ONNX Runtime is in the bench extra: pip install 'binsr[bench]'")
    from binsr.deploy.onnx import ort_session

    torch.manual_seed(0)
    save_weights(tmp_path / "w.safetensors", create("srresnet_small", scale=2, recipe="e2fif", num_block=1,
                                                    num_feat=8).eval())
    args = ["export", "--model", "srresnet_small", "--scale", "2", "--weights", str(tmp_path / "w.safetensors"),
            "--format", "onnx", "--out", str(tmp_path / "m.onnx")]
    assert main(args) == 0
    out, err = capfd.readouterr()
    assert err == "" and len(out.splitlines()) == 1 and "lines of exporter output hidden" in out
    assert "GreaterOrEqual" in out and "Where" in out
    x = torch.rand(1, 3, 19, 26, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = from_weights(tmp_path / "w.safetensors")(x).numpy()
    np.testing.assert_allclose(ort_session(tmp_path / "m.onnx", 1).run(None, {"lr": x.numpy()})[0], ref,
                               rtol=1e-4, atol=1e-5)
    assert main(args) == 2  # the file is kept without --overwrite
    assert "exists" in capfd.readouterr().err


def test_export_takes_model_and_scale_from_the_weights_file(tmp_path, capsys):
    """``--weights FILE`` alone: the file's architecture and scale, as it brings its recipe; a
    --scale (exit 1: the file does not match) or --model (exit 2: the command is wrong for the
    file) that disagrees with the file is one line."""
    from binsr.deploy import Runtime

    torch.manual_seed(0)
    model = create("srresnet_small", scale=2, recipe="e2fif", num_block=1, num_feat=8).eval()
    save_weights(tmp_path / "w.safetensors", model)
    out = tmp_path / "m.bsr"
    assert main(["export", "--weights", str(tmp_path / "w.safetensors"), "--out", str(out)]) == 0
    assert "random-init" not in capsys.readouterr().out
    rt = Runtime(out)
    assert rt.scale == 2
    x = np.random.default_rng(0).random((1, 3, 11, 13), dtype=np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    got = rt(x)
    assert got.shape == ref.shape == (1, 3, 22, 26)
    a, b = np.round(np.clip(got, 0, 1) * 255), np.round(np.clip(ref, 0, 1) * 255)
    assert (a == b).mean() >= 0.999 and np.abs(a - b).max() <= 1
    for extra, code in ((["--scale", "3"], 1), (["--model", "srresnet"], 2)):
        assert main(["export", "--weights", str(tmp_path / "w.safetensors"), "--out", str(out), "--overwrite",
                     *extra]) == code
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and "w.safetensors" in err


def test_build_for_eval_needs_a_name_and_scale_without_weights():
    from binsr.errors import UsageError
    from binsr.models import build_for_eval

    with pytest.raises(UsageError, match="name and scale"):
        build_for_eval(None, 4)
