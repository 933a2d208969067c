"""ONNX export of a binsr model, for users of other runtimes (ONNX Runtime, OpenVINO, TensorRT).

The graph is the FP simulation of the binary network, as the PyTorch eval forward computes it:
signs as ``GreaterOrEqual`` + ``Where``, scales and folded norms as ``Mul`` / ``Add`` /
``BatchNormalization``, convs as float ``Conv``; standard ONNX operators only (checked by
:func:`standard_ops`), so any ONNX runtime reads it. It is not bit-packed: for real 1-bit
inference use the ``.bsr`` file (:func:`binsr.deploy.export_packed`). Height and width are
dynamic unless asked otherwise. The exporter is torch's dynamo exporter
(``torch.onnx.export(dynamo=True)``; it needs ``onnx`` and ``onnxscript``: ``pip install 'binsr[bench]'``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

from binsr.errors import BinsrError, UsageError
from binsr.files import atomic_write

__all__ = ["export_onnx", "standard_ops", "ort_session", "captured_output"]

#: the domains of standard ONNX operators ("" is the default domain, ai.onnx)
STANDARD_DOMAINS = ("", "ai.onnx")


def _require(module: str) -> Any:
    """Import an optional ONNX package, or one :class:`UsageError` line naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(f"{module} is not installed: pip install 'binsr[bench]' (or install {module})") from None


def _stream_handlers() -> list[logging.StreamHandler]:
    loggers = [logging.getLogger()] + [lg for lg in logging.root.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    return [h for lg in loggers for h in lg.handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


@contextlib.contextmanager
def captured_output() -> Iterator[list[str]]:
    """Capture what is printed while the block runs into the yielded list of lines (filled on
    exit): ``sys.stdout`` / ``sys.stderr``, every logging stream handler (whichever stream it
    holds) and file descriptors 1 and 2 (C++ messages).

    torch's ONNX exporter reports its progress with prints, and its optimizer logs every merged
    constant (``onnx_ir``: "Replaced initializer ...", one line each, hundreds per network) through
    the handlers the CLI's ``logging.basicConfig`` set up; redirecting ``sys.stdout`` alone misses
    those.
    """
    lines: list[str] = []
    text = io.StringIO()
    handlers = {h: h.stream for h in _stream_handlers()}
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        try:
            for h in handlers:
                h.setStream(text)
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
                yield lines
        finally:
            for h, stream in handlers.items():
                h.setStream(stream)
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            lines.extend(text.getvalue().splitlines() + sink.read().decode(errors="replace").splitlines())


def export_onnx(model: Any, path: str | os.PathLike, example: Any = None, dynamic: bool = True) -> list[str]:
    """Write ``model`` (eval mode) as one self-contained ONNX file (input ``lr``, NCHW float32 in
    [0, 1]; output ``sr``) and return the exporter's output lines (its progress prints and log
    records), captured so that callers print a summary or nothing.

    Args:
        model: a binsr model (``nn.Module``).
        path: the ``.onnx`` file, written atomically.
        example: an input to trace with (default: a 1x3x32x32 random image).
        dynamic: height and width dynamic (any input size), else fixed to ``example``'s.
    """
    import torch

    _require("onnx")
    _require("onnxscript")
    model = model.eval()
    if example is None:
        example = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    dims = {2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}
    with captured_output() as lines:
        try:
            program = torch.onnx.export(model, (example,), dynamo=True, input_names=["lr"], output_names=["sr"],
                                        dynamic_shapes=(dims,) if dynamic else None)
        except Exception as exc:  # noqa: BLE001 - the exporter raises many types; one line names it
            raise BinsrError(f"the ONNX exporter failed on {type(model).__name__}: "
                             f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    atomic_write(path, lambda tmp: program.save(str(tmp), external_data=False))
    standard_ops(path)
    return lines


def standard_ops(path: str | os.PathLike) -> set[str]:
    """The operator types of ONNX file ``path``; :class:`BinsrError` when one is outside the standard
    domains or the file defines local functions (custom ops another runtime would not have)."""
    onnx = _require("onnx")
    graph = onnx.load(os.fspath(path))
    custom = sorted({f"{n.domain}::{n.op_type}" for n in graph.graph.node if n.domain not in STANDARD_DOMAINS})
    custom += [f"function {f.domain}::{f.name}" for f in graph.functions]
    if custom:
        raise BinsrError(f"{path} uses non-standard ONNX ops: {', '.join(custom)}")
    return {n.op_type for n in graph.graph.node}


def ort_session(path: str | os.PathLike, threads: int) -> Any:
    """An ONNX Runtime CPU session of ``path`` on ``threads`` intra-op threads (one inter-op)."""
    ort = _require("onnxruntime")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(os.fspath(Path(path)), so, providers=["CPUExecutionProvider"])
