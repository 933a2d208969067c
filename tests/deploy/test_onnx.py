"""ONNX export (``binsr.deploy.onnx``): standard ops only, binsr's sign tie rule kept, the output of
ONNX Runtime equal to the PyTorch forward at sizes other than the traced one, exporter output
captured."""

import logging
import os
import sys

import numpy as np
import pytest
import torch

from binsr.deploy.onnx import _require, captured_output, export_onnx, ort_session, standard_ops
from binsr.errors import BinsrError, UsageError
from binsr.models import create
from binsr.quant.functional import sign

pytest.importorskip("onnxscript", reason="the ONNX exporter needs the bench extra: pip install 'binsr[bench]'")
pytest.importorskip("onnxruntime", reason="ONNX Runtime is in the bench extra: pip install 'binsr[bench]'")


class _Sign(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sign(x)


def test_sign_keeps_the_tie_rule(tmp_path):
    """sign(0) = sign(-0.0) = +1 (docs/CONVENTIONS.md) in the graph too, with standard ops only."""
    export_onnx(_Sign(), tmp_path / "s.onnx", torch.zeros(1, 3, 2, 2))
    x = np.array([-1.0, -1e-30, -0.0, 0.0, 1e-30, 2.0, np.inf, -np.inf], np.float32)
    x = np.resize(x, (1, 3, 4, 4))
    out = ort_session(tmp_path / "s.onnx", 1).run(None, {"lr": x})[0]
    np.testing.assert_array_equal(out, np.where(x >= 0, 1.0, -1.0))
    np.testing.assert_array_equal(out, sign(torch.from_numpy(x)).numpy())


def test_binary_network_matches_pytorch_at_any_size(tmp_path):
    torch.manual_seed(0)
    model = create("srresnet_small", scale=2, recipe="e2fif", num_block=1, num_feat=8).eval()
    export_onnx(model, tmp_path / "m.onnx")  # traced at 32x32, height and width dynamic
    ops = standard_ops(tmp_path / "m.onnx")
    assert {"Conv", "GreaterOrEqual", "Where"} <= ops  # float convs on signs computed by ONNX ops
    sess = ort_session(tmp_path / "m.onnx", 1)
    for h, w in ((17, 23), (40, 8)):
        x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h))
        with torch.no_grad():
            ref = model(x).numpy()
        out = sess.run(None, {"lr": x.numpy()})[0]
        assert out.shape == ref.shape == (1, 3, 2 * h, 2 * w)
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_standard_ops_refuses_custom_domains(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("BinaryConv", ["x"], ["y"], domain="com.example")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), tmp_path / "c.onnx")
    with pytest.raises(BinsrError, match="non-standard ONNX ops: com.example::BinaryConv"):
        standard_ops(tmp_path / "c.onnx")


def test_captured_output_takes_prints_logs_and_file_descriptors(capfd):
    log = logging.getLogger("binsr.test_onnx")
    handler = logging.StreamHandler(sys.stderr)  # holds the stream it was given, as basicConfig's does
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        with captured_output() as lines:
            print("a print")
            log.info("a log record")
            os.write(2, b"a C-level message\n")
    finally:
        log.removeHandler(handler)
    assert {"a print", "a log record", "a C-level message"} <= set(lines)
    assert capfd.readouterr() == ("", "")  # nothing got through
    assert handler.stream is sys.stderr
    print("restored")
    assert capfd.readouterr().out == "restored\n"


def test_a_missing_optional_package_is_a_usage_error():
    with pytest.raises(UsageError, match=r"pip install 'binsr\[bench\]'"):
        _require("binsr_no_such_module")
