"""``binsr bench``: the bit-packed engine against PyTorch and ONNX Runtime, side by side.

End to end, two baselines: the simulated binary network in PyTorch and ONNX Runtime (what research
code runs: float convs on +-1 values, signs and scales as ops), and the FP32 network of the same
conv shapes (the ``fp`` recipe of the same architecture: what a deployment engineer would ship
instead). Outputs are checked before any ratio is reported (:func:`check_agreement`).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from binsr.cpu import cpu_name
from binsr.errors import BinsrError, UsageError

HELP = """\
One process, measured side by side (alternating, median of --repeat runs, wall clock):
(1) per binary layer kind (64 -> 64 channels on a 320x180 map): the engine (packed input ->
float output + next layer's packed bits) vs torch.nn.functional.conv2d FP32 of the same shape
with the same thread count; (2) end to end: the packed runtime vs two baselines, each in PyTorch
and in ONNX Runtime: the simulated binary network (float convs on +-1 values) and the FP32
network of the same conv shapes (the fp recipe; PyTorch in channels_last or contiguous layout,
whichever is faster); (3) file sizes. Before reporting a ratio the outputs are compared: engine
vs PyTorch simulation >= 99.9% equal uint8 values, never more than 1 apart; ONNX Runtime vs
PyTorch allclose (FP network) or >= 40 dB PSNR (simulated network, whose signs flip where a
pre-activation is within rounding of zero); otherwise bench stops with an error.
--model FILE.bsr benchmarks a packed file: the engine alone, plus the baselines when its network
can be rebuilt (the file is a zoo entry's packed file, or --weights names the weights it was
exported from).
"""

LAYERS = [("3x3", 3, 1, 1), ("5x5", 5, 1, 1), ("7x7", 7, 1, 1), ("3x3 d=2", 3, 2, 1), ("3x3 g=4", 3, 1, 4)]
#: the default end-to-end model: the zoo's trained 16 x 64 E2FIF SRResNet (issue 21's network)
DEFAULT_MODEL = "zoo:srresnet_lite16_e2fif_x4"
#: ONNX Runtime vs PyTorch on the simulated network: float convs in another summation order flip
#: the signs of pre-activations within rounding of zero, so only a PSNR bound can hold
SIM_ORT_PSNR_DB = 40.0
#: the largest --size (LR pixels): a 1920x1080 frame, whose 64-channel float map alone is 0.5 GB
MAX_SIZE_PIXELS = 1920 * 1080
#: allclose tolerances for two float runs of the same FP network (ONNX Runtime, channels_last)
RTOL, ATOL = 1e-3, 1e-4


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
    if min(w, h) < 1:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (expected WxH)")
    if w * h > MAX_SIZE_PIXELS:
        raise argparse.ArgumentTypeError(f"size {text!r} is {w * h:,} pixels; bench measures at most "
                                         f"{MAX_SIZE_PIXELS:,} (1920x1080)")
    return w, h


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="engine vs PyTorch / ONNX Runtime timings", description=HELP,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"end-to-end model: a registry name, zoo:<name> or a packed FILE.bsr "
                        f"(default: {DEFAULT_MODEL})")
    p.add_argument("--recipe", help="its recipe (default: e2fif; a zoo:<name> model brings its own)")
    p.add_argument("--scale", type=int, help="its scale (default: 4; a zoo model or .bsr file brings its own)")
    p.add_argument("--weights", metavar="FILE",
                   help="its weights (default: random init); with a .bsr: the weights it was exported from")
    p.add_argument("--fp16-weights", action="store_true",
                   help="round its FP conv weights to float16 first (all runs use the rounded model; the packed "
                        "file stores them in 2 bytes, see binsr export --fp16-weights)")
    p.add_argument("--threads", type=_csv_int, default=[1, 2], help="thread counts (default: 1,2)")
    p.add_argument("--repeat", type=int, default=5, help="runs per measurement, median kept (default: 5)")
    p.add_argument("--size", type=_size, default=(320, 180),
                   help="LR / feature map size WxH, at most 1920x1080 pixels (default: 320x180)")
    p.add_argument("--path", default="auto", help="kernel path: auto, avx512, avx2, portable, numpy")
    p.add_argument("--skip", choices=["layers", "end-to-end", "onnx"], action="append", default=[],
                   help="leave out a part (repeatable)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON ('-': standard output)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--verbose", action="store_true", help="show the ONNX exporter's own output")
    p.set_defaults(func=run)


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


def agreement(out: np.ndarray, ref: np.ndarray) -> dict[str, float | None]:
    """Two [0, 1] images rounded to uint8: the share of equal values, the largest difference and
    the PSNR of one against the other in dB (None when identical)."""
    d = np.abs(np.clip(np.round(out * 255.0), 0, 255) - np.clip(np.round(ref * 255.0), 0, 255))
    mse = float(np.mean(np.square(d, dtype=np.float64)))
    return {"equal": float(np.mean(d == 0)), "max_diff": float(d.max()),
            "psnr_db": None if mse == 0 else float(10 * np.log10(255.0**2 / mse))}


def _describe(a: dict[str, Any]) -> str:
    psnr = "identical" if a["psnr_db"] is None else f"PSNR {a['psnr_db']:.1f} dB"
    extra = f", allclose: {a['allclose']}" if "allclose" in a else ""
    return f"{100 * a['equal']:.4f}% of uint8 values equal, max difference {a['max_diff']:.0f}, {psnr}{extra}"


def check_agreement(outs: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Compare the runs' outputs before any ratio is reported; :class:`BinsrError` on a mismatch.

    engine vs PyTorch simulation: >= 99.9% equal uint8 values, never more than 1 apart (the
    project's exactness rule); ONNX Runtime vs PyTorch simulation: PSNR >= :data:`SIM_ORT_PSNR_DB`
    (float convs summed in another order flip signs at rounding ties, so allclose cannot hold);
    FP network, ONNX Runtime and channels_last vs PyTorch contiguous: ``np.allclose``."""
    rules = {("engine", "torch_sim"): lambda a: a["equal"] >= 0.999 and a["max_diff"] <= 1,
             ("onnxruntime_sim", "torch_sim"): lambda a: a["psnr_db"] is None or a["psnr_db"] >= SIM_ORT_PSNR_DB,
             ("torch_fp_channels_last", "torch_fp_contiguous"): lambda a: a["allclose"],
             ("onnxruntime_fp", "torch_fp_contiguous"): lambda a: a["allclose"]}
    checked = {}
    for (run, ref), ok in rules.items():
        if run not in outs or ref not in outs:
            continue
        a: dict[str, Any] = agreement(outs[run], outs[ref])
        if ref == "torch_fp_contiguous":
            a["allclose"] = bool(np.allclose(outs[run], outs[ref], rtol=RTOL, atol=ATOL))
        if not ok(a):
            raise BinsrError(f"{run} and {ref} outputs disagree ({_describe(a)}): no ratio reported")
        checked[f"{run} vs {ref}"] = a
    return checked


def _conv_shapes(model: Any) -> list[tuple[int, ...]]:
    from torch import nn

    return [tuple(m.weight.shape) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _fp_twin(sim: Any) -> tuple[Any, str]:
    """The FP32 network of the same architecture and conv shapes as ``sim`` (the ``fp`` recipe,
    random init: timings do not depend on weights), or None and why not."""
    from binsr.models import create

    sig = sim.signature
    kwargs = {k: v for k, v in sig["kwargs"].items() if k != "recipe_kwargs"}
    fp = create(sig["model"], scale=sig["scale"], recipe="fp", **kwargs).eval()
    if _conv_shapes(fp) != _conv_shapes(sim):
        return None, f"the fp recipe of {sig['model']} has other conv shapes than the {sig['recipe']} recipe"
    return fp, f"{sig['model']} x{sig['scale']} fp, the same {len(_conv_shapes(fp))} conv/linear weight shapes"


def _has_fp16(path: Path) -> bool:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return any(f.get_slice(k).get_dtype() == "F16" for k in f.keys())


def _from_packed(args: argparse.Namespace) -> tuple[Path, Any, str]:
    """A packed file's path, the torch model it was exported from (None when it cannot be rebuilt)
    and what the runs compare."""
    from binsr.deploy import Runtime, round_fp16_
    from binsr.models import build_for_eval
    from binsr.pretrained import packed_file, zoo_names

    path = Path(args.model)
    if args.recipe or args.scale or args.fp16_weights:
        raise UsageError("a packed file brings its own recipe, scale and float16 weights: "
                         "drop --recipe/--scale/--fp16-weights")
    if not path.is_file():
        raise UsageError(f"packed model not found: {path}")
    sig = Runtime(path).graph.get("signature")
    data = path.read_bytes()
    zoo = next((n for n in zoo_names() if (p := packed_file(n)) is not None and p.read_bytes() == data), None)
    if zoo is not None and not args.weights:
        model, how = build_for_eval(f"zoo:{zoo}", None), f"zoo:{zoo} (the file is its shipped packed file)"
    elif args.weights and sig:
        model = build_for_eval(sig["model"], sig["scale"], sig["recipe"], args.weights)
        how = f"{sig['model']} x{sig['scale']} {sig['recipe']} with {args.weights}"
    else:
        why = "no --weights" if sig else "the file has no model signature"
        return path, None, (f"the engine on {path} alone ({why}: the network it was exported from cannot be "
                            "rebuilt, so neither its output nor a baseline can be checked)")
    if _has_fp16(path):
        round_fp16_(model)
        how += ", FP conv weights rounded to float16 as in the file"
    return path, model, f"the engine on {path} vs the PyTorch simulation of {how}"


def _from_model(args: argparse.Namespace, tmp: Path) -> tuple[Path, Any, str, dict[str, Any]]:
    """Packed file, torch model, what is compared and the file sizes for a registry or zoo model."""
    from binsr.deploy import export_packed, round_fp16_
    from binsr.models import build_for_eval
    from binsr.train.checkpoint import save_weights

    model = build_for_eval(args.model, args.scale or 4, args.recipe, args.weights, default_recipe="e2fif")
    if args.fp16_weights:
        round_fp16_(model)
    fp32 = tmp / "model.safetensors"
    save_weights(fp32, model)
    packed = tmp / "model.bsr"
    parts = export_packed(model, packed, fp16=args.fp16_weights)
    files = {"fp32_safetensors": fp32.stat().st_size, "packed": parts["file_bytes"],
             "packed_binary_weights": parts["binary_bytes"], "packed_fp_parts": parts["fp_bytes"],
             "packed_graph_and_index": parts["file_bytes"] - parts["binary_bytes"] - parts["fp_bytes"],
             "ratio": fp32.stat().st_size / parts["file_bytes"]}
    return packed, model, "the engine on the packed export vs the PyTorch simulation it was exported from", files


class _Exporter:
    """ONNX exports and sessions with the exporter's output hidden: counted, or shown (``verbose``)."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.hidden = 0

    def _keep(self, lines: list[str]) -> None:
        if self.verbose:
            print("\n".join(lines), file=sys.stderr)
        else:
            self.hidden += len(lines)

    def export(self, model: Any, path: Path, x: Any) -> Path:
        from binsr.deploy.onnx import export_onnx

        self._keep(export_onnx(model, path, x, dynamic=False))  # the bench's own shape: ORT's best case
        return path

    def session(self, path: Path, threads: int) -> Any:
        from binsr.deploy.onnx import captured_output, ort_session

        with captured_output() as lines:
            sess = ort_session(path, threads)
        self._keep(lines)
        return sess


def bench_end_to_end(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """End-to-end rows, the output checks, what was compared and the file sizes."""
    import torch

    from binsr.deploy import Runtime

    if args.model.endswith(".bsr"):
        packed, sim, compared = _from_packed(args)
        files: dict[str, Any] = {"packed": packed.stat().st_size}
    else:
        packed, sim, compared, files = _from_model(args, tmp)
    fp, fp_twin = _fp_twin(sim) if sim is not None else (None, "not measured (no simulation to check the engine)")
    w, h = args.size
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    xn = x.numpy()
    nets: dict[str, Callable[[Any], Any]] = {}
    if sim is not None:
        nets["torch_sim"] = sim
    if fp is not None:
        fp_cl = copy.deepcopy(fp).to(memory_format=torch.channels_last)
        nets["torch_fp_contiguous"] = fp
        nets["torch_fp_channels_last"] = lambda t: fp_cl(t.contiguous(memory_format=torch.channels_last))
    ex = _Exporter(args.verbose)
    onnx_files = {}
    if "onnx" not in args.skip:
        onnx_files = {f"onnxruntime_{k}": ex.export(m, tmp / f"{k}.onnx", x)
                      for k, m in (("sim", sim), ("fp", fp)) if m is not None}
    rows, checks = [], {}
    for t in args.threads:
        torch.set_num_threads(t)
        rt = Runtime(packed, threads=t, path_isa=args.path)
        fns: dict[str, Callable[[], Any]] = {"engine": lambda: rt(xn)}
        for name, net in nets.items():
            fns[name] = (lambda n: lambda: _forward(n, x))(net)
        for name, onnx_path in onnx_files.items():
            fns[name] = (lambda s: lambda: s.run(None, {"lr": xn})[0])(ex.session(onnx_path, t))
        checks = check_agreement({k: _numpy(f()) for k, f in fns.items()})
        times = dict(zip(fns, _median_pair(list(fns.values()), args.repeat)))
        time.sleep(0.5)  # ONNX Runtime's worker threads stop spinning (they cost the split up to 40%)
        rt(xn, profile=True)
        rows.append(_row(args, sim, rt, t, times))
    if ex.hidden:
        print(f"ONNX exporter and runtime: {ex.hidden} lines of their output hidden (--verbose shows them)")
    versions = {"torch": torch.__version__}
    if onnx_files:
        versions["onnxruntime"] = __import__("onnxruntime").__version__
    return {"end_to_end": rows, "agreement": checks, "compared": compared, "fp_twin": fp_twin, "file_bytes": files,
            "versions": versions}


def _numpy(out: Any) -> np.ndarray:
    """A copy of a run's output as an array (the engine reuses its buffers; torch gives tensors)."""
    return np.array(out.numpy() if hasattr(out, "numpy") else out)


def _forward(net: Callable[[Any], Any], x: Any) -> Any:
    import torch

    with torch.inference_mode():
        return net(x)


def _row(args: argparse.Namespace, sim: Any, rt: Any, threads: int, times: dict[str, float]) -> dict[str, Any]:
    """One end-to-end row: milliseconds of each run and the engine's speed-up over each baseline."""
    w, h = args.size
    sig = None if sim is None else sim.signature
    own = sig is None or args.model.startswith("zoo:")  # a file's path or a zoo name says it best
    model = args.model if own else f"{sig['model']} x{sig['scale']} {sig['recipe']}"
    row: dict[str, Any] = {"model": model + (" fp16-weights" if args.fp16_weights else ""), "input": f"{w}x{h}",
                           "threads": threads, "path": rt.path}
    if "torch_fp_contiguous" in times:
        cl = times["torch_fp_channels_last"] < times["torch_fp_contiguous"]
        times["torch_fp"] = times["torch_fp_channels_last" if cl else "torch_fp_contiguous"]
        row["torch_fp_layout"] = "channels_last" if cl else "contiguous"
    for name, sec in times.items():
        row[f"{name}_ms"] = sec * 1e3
        if name not in ("engine", "torch_fp_contiguous", "torch_fp_channels_last"):
            row[f"speedup_vs_{name}"] = sec / times["engine"]
    row["engine_split_ms"] = {k: v * 1e3 for k, v in sorted(rt.timings.items(), key=lambda kv: -kv[1])}
    return row


def _cell(r: dict[str, Any], name: str) -> str:
    """``ms | speed-up`` of baseline ``name`` in row ``r``, dashes where it was not run."""
    if f"{name}_ms" not in r:
        return "- | -"
    return f"{r[f'{name}_ms']:.0f} | {r[f'speedup_vs_{name}']:.2f}x"


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
        print("\n| model | input | threads | engine ms | torch sim ms | vs torch sim | ORT sim ms | vs ORT sim "
              "| torch FP ms | vs torch FP | FP layout | ORT FP ms | vs ORT FP |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in result["end_to_end"]:
            print(f"| {r['model']} | {r['input']} | {r['threads']} | {r['engine_ms']:.0f} | "
                  f"{_cell(r, 'torch_sim')} | {_cell(r, 'onnxruntime_sim')} | {_cell(r, 'torch_fp')} | "
                  f"{r.get('torch_fp_layout', '-')} | {_cell(r, 'onnxruntime_fp')} |")
        print(f"compared: {result['compared']}; sim = that simulated binary network (float convs on +-1 values), "
              f"FP = {result['fp_twin']}")
        for pair, a in result["agreement"].items():
            print(f"checked before timing: {pair}: {_describe(a)}")
        for r in result["end_to_end"]:
            split = ", ".join(f"{k} {v:.0f}" for k, v in r["engine_split_ms"].items())
            print(f"engine time split, {r['threads']} thread(s), ms: {split}")
    f = result["file_bytes"]
    if "fp32_safetensors" in f:
        print(f"\nfiles: FP32 safetensors {f['fp32_safetensors']:,} B, packed {f['packed']:,} B "
              f"({f['ratio']:.1f}x smaller; binary weights {f['packed_binary_weights']:,} B, "
              f"FP parts {f['packed_fp_parts']:,} B = {f['packed_fp_parts'] / f['packed']:.0%} of the file, "
              f"graph + index {f['packed_graph_and_index']:,} B)")
    elif f:
        print(f"\nfile: packed {f['packed']:,} B")


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
    result: dict[str, Any] = {"cpu": cpu_name(), "isa": path, "kernel": kernel(path), "layers": [], "end_to_end": [],
                              "file_bytes": {}}
    if "end-to-end" not in args.skip:  # first: a bad model or file fails before minutes of layers
        with tempfile.TemporaryDirectory() as tmp:
            result.update(bench_end_to_end(args, Path(tmp)))
    if "layers" not in args.skip:
        result["layers"] = bench_layers(args.threads, args.repeat, args.size, args.path)
    _print_tables(result)
    if args.json:
        write_output(args.json, json.dumps(result, indent=2) + "\n")
    return 0
