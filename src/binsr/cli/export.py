"""``binsr export``: write a binary model as one packed file for the torch-free runtime, or as ONNX."""

from __future__ import annotations

import argparse
import sys

HELP = """\
Export a binary model to a packed safetensors file (.bsr, the default --format): binary weights
1 bit each, integer shifts / float scales, BN folded into per-channel affines, the FP
head/tail/upsampler and gates, and the graph as JSON metadata. Run it with
binsr.deploy.Runtime(path) (NumPy + compiled kernels, no torch). --format onnx writes the FP
simulation of the same network as an ONNX graph for other runtimes (signs and scales as standard
ONNX ops, float convs, height and width dynamic; needs pip install 'binsr[bench]'): not
bit-packed, so not faster than a float network. Without --weights the model is randomly
initialised (for testing).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="export a binary model to a packed .bsr file (or ONNX)",
                              description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model name or zoo:<name> (default: the --weights file's model, else srresnet)")
    p.add_argument("--recipe", help="binarization recipe (default: e2fif; a zoo:<name> or weights file brings its own)")
    p.add_argument("--scale", type=int,
                   help="upscaling factor (default: the --weights file's or zoo model's, else 4)")
    p.add_argument("--weights", metavar="FILE", help="trained weights (safetensors); default: random init")
    p.add_argument("--out", metavar="FILE", required=True, help="output file (.bsr, or .onnx with --format onnx)")
    p.add_argument("--format", choices=["bsr", "onnx"], default="bsr",
                   help="bsr: bit-packed for binsr's engine (default); onnx: the FP simulation as an ONNX graph")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--fp16-weights", action="store_true",
                   help="round the FP conv weights (head, tail, upsampler) to float16 and store them in 2 bytes "
                        "(the file then matches the rounded model: binsr.deploy.round_fp16_)")
    p.add_argument("--verbose", action="store_true", help="show the ONNX exporter's own output")
    p.set_defaults(func=run)


def _onnx(args: argparse.Namespace, model) -> str:
    """Write the ONNX graph; the summary of what was written."""
    from pathlib import Path

    from binsr.deploy.onnx import export_onnx, standard_ops

    lines = export_onnx(model, args.out)
    if args.verbose:
        print("\n".join(lines), file=sys.stderr)
    ops = sorted(standard_ops(args.out))
    hidden = "" if args.verbose or not lines else f"; {len(lines)} lines of exporter output hidden (--verbose)"
    return (f"wrote {args.out}: {Path(args.out).stat().st_size:,} bytes, the FP simulation in standard ONNX ops "
            f"({', '.join(ops)}), input 'lr' NCHW float32 in [0, 1] of any height and width{hidden}")


def run(args: argparse.Namespace) -> int:
    from binsr.deploy import export_packed, round_fp16_
    from binsr.files import claim_output
    from binsr.models import PREFIX, build_for_eval

    claim_output(args.out, args.overwrite)
    # a weights file or zoo model brings its own architecture and scale; --model / --scale, when
    # given, must then agree with it (build_for_eval refuses a mismatch in one line)
    zoo = args.model is not None and args.model.startswith(PREFIX)
    name = args.model if args.model is not None or args.weights else "srresnet"
    scale = args.scale if args.scale is not None or args.weights or zoo else 4
    model = build_for_eval(name, scale, args.recipe, args.weights, default_recipe="e2fif")
    if args.fp16_weights:
        round_fp16_(model)
    if args.format == "onnx":
        line = _onnx(args, model)
    else:
        sizes = export_packed(model, args.out, fp16=args.fp16_weights)
        fp_share = sizes["fp_bytes"] / max(1, sizes["binary_bytes"] + sizes["fp_bytes"])
        line = (f"wrote {args.out}: {sizes['file_bytes']:,} bytes (binary weights {sizes['binary_bytes']:,}, "
                f"FP parts {sizes['fp_bytes']:,} = {fp_share:.0%} of the tensors)")
    print(line + ("" if args.weights or zoo else "; random-init weights")
          + ("; FP conv weights rounded to float16" if args.fp16_weights else ""))
    return 0
