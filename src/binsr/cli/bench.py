"""``binsr bench``: the bit-packed engine against PyTorch FP32 (and ONNX Runtime), side by side."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from binsr.errors import UsageError

HELP = """\
One process, measured side by side (alternating, median of --repeat runs, wall clock):
(1) per binary layer kind (64 -> 64 channels on a 320x180 map): the engine (packed input ->
float output + next layer's packed bits) vs torch.nn.functional.conv2d FP32 of the same shape
with the same thread count; (2) end to end: the packed runtime vs the PyTorch FP32 forward of
the same (simulated binary) network vs ONNX Runtime FP32 of its ONNX export; (3) file sizes.
"""

LAYERS = [("3x3", 3, 1, 1), ("5x5", 5, 1, 1), ("7x7", 7, 1, 1), ("3x3 d=2", 3, 2, 1), ("3x3 g=4", 3, 1, 4)]


def _csv_int(text: str) -> list[int]:
    try:
        vals = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad list {text!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"bad list {text!r}")
    return vals


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (expected WxH)") from None
    return w, h


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="engine vs PyTorch / ONNX Runtime timings", description=HELP,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="srresnet",
                   help="end-to-end model: a registry name or zoo:<name> (default: srresnet)")
    p.add_argument("--recipe", help="its recipe (default: e2fif; a zoo:<name> model brings its own)")
    p.add_argument("--scale", type=int, default=4, help="its scale (default: 4)")
    p.add_argument("--weights", metavar="FILE", help="its weights (default: random init)")
    p.add_argument("--fp16-weights", action="store_true",
                   help="round its FP conv weights to float16 first (all three run the rounded model; the packed "
                        "file stores them in 2 bytes, see binsr export --fp16-weights)")
    p.add_argument("--threads", type=_csv_int, default=[1, 2], help="thread counts (default: 1,2)")
    p.add_argument("--repeat", type=int, default=5, help="runs per measurement, median kept (default: 5)")
    p.add_argument("--size", type=_size, default=(320, 180), help="LR / feature map size WxH (default: 320x180)")
    p.add_argument("--path", default="auto", help="kernel path: auto, avx512, avx2, portable, numpy")
    p.add_argument("--skip", choices=["layers", "end-to-end", "onnx"], action="append", default=[],
                   help="leave out a part (repeatable)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _median_pair(fns: list[Callable[[], Any]], repeat: int, warm_s: float = 0.02) -> list[float]:
    """Median seconds of each function, run alternately ``repeat`` times. Each timed run follows a
    pause (so the previous function's idle worker threads, OpenMP or ONNX Runtime spin waits, stop
    competing for the cores) and untimed runs of the same function for at least ``warm_s`` (warm
    caches and clocks: after the pause a core needs about 5 ms of work to come back to speed, which
    one call of a 1-2 ms kernel does not give it; a 25 ms torch conv warms itself)."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for i, f in enumerate(fns):
            time.sleep(0.05)
            t0 = time.perf_counter()
            f()
            while time.perf_counter() - t0 < warm_s:
                f()
            t0 = time.perf_counter()
            f()
            times[i].append(time.perf_counter() - t0)
    return [float(np.median(t)) for t in times]


def bench_layers(threads: list[int], repeat: int, size: tuple[int, int], path: str) -> list[dict[str, Any]]:
    """Per-layer engine vs torch FP32 conv rows."""
    import torch
    import torch.nn.functional as F

    from binsr.deploy import BinaryConv, pack_bits, pack_weights
    from binsr.deploy.engine import aligned_empty

    w, h = size
    c = 64
    rng = np.random.default_rng(0)
    x = rng.choice(np.array([-1.0, 1.0], np.float32), (1, h, w, c))
    xb = pack_bits(x)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    rows = []
    for t in threads:
        torch.set_num_threads(t)
        for name, k, d, g in LAYERS:
            wt = rng.choice(np.array([-1.0, 1.0], np.float32), (c, c // g, k, k))
            conv = BinaryConv(pack_weights(wt), c, k, d, None, g)
            wtt = torch.from_numpy(wt)
            pad = d * (k - 1) // 2
            first = conv(xb, path=path, pack=True)
            used = first.path
            out, bits = aligned_empty(first.out.shape), aligned_empty(first.bits.shape, np.uint64)

            def eng() -> None:  # into the buffers a runtime reuses from layer to layer
                conv(xb, path=path, threads=t, pack=True, out=out, bits_out=bits)

            def eng_fresh() -> None:  # a newly allocated map each call (page faults on first write)
                conv(xb, path=path, threads=t, pack=True)

            def eng_bits() -> None:
                conv(xb, path=path, threads=t, pack=True, out_float=False, bits_out=bits)

            def ref() -> None:
                with torch.no_grad():
                    F.conv2d(xt, wtt, None, 1, pad, d, g)

            te, tf, tb, tt = _median_pair([eng, eng_fresh, eng_bits, ref], repeat)
            macs = h * w * c * (c // g) * k * k
            rows.append({"op": name, "threads": t, "engine_ms": te * 1e3, "torch_ms": tt * 1e3,
                         "speedup": tt / te, "binary_gmacs_per_s": macs / te / 1e9, "path": used,
                         "engine_bits_ms": tb * 1e3, "speedup_bits": tt / tb,
                         "engine_fresh_ms": tf * 1e3, "speedup_fresh": tt / tf})
    return rows


def _onnx_session(model: Any, x: Any, threads: int, tmp: Path) -> tuple[Any, str]:
    """ONNX Runtime session of ``model`` (dynamo exporter, else the TorchScript one) and which exporter."""
    import onnxruntime as ort
    import torch

    onnx_path = tmp / "model.onnx"
    how = "dynamo"
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            torch.onnx.export(model, (x,), str(onnx_path), dynamo=True, verbose=False, input_names=["lr"],
                              output_names=["sr"])
        except Exception as exc:  # noqa: BLE001 - any exporter failure falls back to the legacy exporter
            how = f"dynamo=False (dynamo failed: {type(exc).__name__})"
            torch.onnx.export(model, (x,), str(onnx_path), dynamo=False, input_names=["lr"], output_names=["sr"],
                              opset_version=17)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"]), how


def bench_end_to_end(args: argparse.Namespace, tmp: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """End-to-end rows and file sizes."""
    import torch

    from binsr.deploy import Runtime, export_packed, round_fp16_
    from binsr.models import build_for_eval
    from binsr.train.checkpoint import save_weights

    model = build_for_eval(args.model, args.scale, args.recipe, args.weights, default_recipe="e2fif")
    if args.fp16_weights:
        round_fp16_(model)
    recipe = model.signature["recipe"]
    fp32 = tmp / "model.safetensors"
    save_weights(fp32, model)
    packed = tmp / "model.bsr"
    parts = export_packed(model, packed, fp16=args.fp16_weights)
    files = {"fp32_safetensors": fp32.stat().st_size, "packed": parts["file_bytes"],
             "packed_binary_weights": parts["binary_bytes"], "packed_fp_parts": parts["fp_bytes"],
             "packed_graph_and_index": parts["file_bytes"] - parts["binary_bytes"] - parts["fp_bytes"],
             "ratio": fp32.stat().st_size / parts["file_bytes"]}
    w, h = args.size
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    xn = x.numpy()
    rows = []
    for t in args.threads:
        torch.set_num_threads(t)
        rt = Runtime(packed, threads=t, path_isa=args.path)
        fns: list[Callable[[], Any]] = [lambda: rt(xn)]

        def ref() -> None:
            with torch.no_grad():
                model(x)

        fns.append(ref)
        how = None
        if "onnx" not in args.skip:
            sess, how = _onnx_session(model, x, t, tmp)
            fns.append(lambda: sess.run(None, {sess.get_inputs()[0].name: xn}))
        times = _median_pair(fns, args.repeat)
        time.sleep(0.5)  # ONNX Runtime's worker threads stop spinning (they cost the split up to 40%)
        rt(xn, profile=True)
        split = {k: v * 1e3 for k, v in sorted(rt.timings.items(), key=lambda kv: -kv[1])}
        row = {"model": f"{args.model} x{args.scale} {recipe}" + (" fp16-weights" if args.fp16_weights else ""),
               "input": f"{w}x{h}", "threads": t,
               "path": rt.path, "engine_ms": times[0] * 1e3, "torch_ms": times[1] * 1e3,
               "speedup_vs_torch": times[1] / times[0], "engine_split_ms": split}
        if how is not None:
            row.update(onnxruntime_ms=times[2] * 1e3, speedup_vs_onnxruntime=times[2] / times[0], onnx_exporter=how)
        rows.append(row)
    return rows, files


def _print_tables(result: dict[str, Any]) -> None:
    print(f"CPU: {result['cpu']}; engine path: {result['isa']} (kernel {result['kernel']})")
    if result["layers"]:
        print("\n| op | threads | engine ms | torch FP32 ms | speedup | binary GMAC/s | bits-out ms | speedup "
              "| fresh-output ms | speedup | path |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in result["layers"]:
            print(f"| {r['op']} | {r['threads']} | {r['engine_ms']:.2f} | {r['torch_ms']:.2f} | "
                  f"{r['speedup']:.1f}x | {r['binary_gmacs_per_s']:.0f} | {r['engine_bits_ms']:.2f} | "
                  f"{r['speedup_bits']:.1f}x | {r['engine_fresh_ms']:.2f} | {r['speedup_fresh']:.1f}x | {r['path']} |")
        print("engine ms: float32 output + sign bits (a block with an FP skip) into reused buffers, as the runtime "
              "runs a network; bits-out: only the packed signs the next binary layer reads (fused threshold + "
              "packing, no float written); fresh-output: float + bits into newly allocated arrays each call "
              "(as torch does)")
    if result["end_to_end"]:
        print("\n| model | input | threads | engine ms | torch FP32 ms | vs torch | ORT FP32 ms | vs ORT |")
        print("|---|---|---|---|---|---|---|---|")
        for r in result["end_to_end"]:
            ort = (f"{r['onnxruntime_ms']:.0f} | {r['speedup_vs_onnxruntime']:.2f}x" if "onnxruntime_ms" in r
                   else "- | -")
            print(f"| {r['model']} | {r['input']} | {r['threads']} | {r['engine_ms']:.0f} | {r['torch_ms']:.0f} | "
                  f"{r['speedup_vs_torch']:.2f}x | {ort} |")
        for r in result["end_to_end"]:
            split = ", ".join(f"{k} {v:.0f}" for k, v in r["engine_split_ms"].items())
            print(f"engine time split, {r['threads']} thread(s), ms: {split}")
            if "onnx_exporter" in r:
                print(f"ONNX exporter: {r['onnx_exporter']}")
    if result["file_bytes"]:
        f = result["file_bytes"]
        print(f"\nfiles: FP32 safetensors {f['fp32_safetensors']:,} B, packed {f['packed']:,} B "
              f"({f['ratio']:.1f}x smaller; binary weights {f['packed_binary_weights']:,} B, "
              f"FP parts {f['packed_fp_parts']:,} B = {f['packed_fp_parts'] / f['packed']:.0%} of the file, "
              f"graph + index {f['packed_graph_and_index']:,} B)")


def run(args: argparse.Namespace) -> int:
    from binsr.deploy.engine import kernel, resolve_path
    from binsr.files import claim_output, write_output

    if args.repeat < 1:
        raise UsageError("--repeat must be >= 1")
    if args.json:
        claim_output(args.json, args.overwrite)  # before minutes of benchmarking, not after
    try:
        path = resolve_path(args.path)
    except RuntimeError as exc:
        raise UsageError(str(exc)) from None
    result: dict[str, Any] = {"cpu": _cpu(), "isa": path, "kernel": kernel(path), "layers": [], "end_to_end": [],
                              "file_bytes": {}}
    if "layers" not in args.skip:
        result["layers"] = bench_layers(args.threads, args.repeat, args.size, args.path)
    if "end-to-end" not in args.skip:
        with tempfile.TemporaryDirectory() as tmp:
            result["end_to_end"], result["file_bytes"] = bench_end_to_end(args, Path(tmp))
    _print_tables(result)
    if args.json:
        write_output(args.json, json.dumps(result, indent=2) + "\n")
    return 0
