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
