"""``binsr eval``: PSNR/SSIM of a model (or bicubic) on benchmark sets, as a table and JSON."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from binsr.errors import UsageError
from binsr.files import STDOUT, claim_output, write_output

HELP = """\
Evaluate with the published SR protocol: PSNR/SSIM on the Y channel of MATLAB rgb2ycbcr,
`scale` pixels cropped on each border, SR rounded to uint8. By default the LR input is
made from each HR image with MATLAB-compatible imresize(HR, 1/scale, 'bicubic')
(--lr-source matlab), because the published tables were made that way; --lr-source shipped
uses the LR files that come with the benchmark sets instead.
"""


def _csv(kind: type, what: str):
    def parse(text: str) -> list:
        try:
            items = [kind(t.strip()) for t in text.split(",") if t.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad {what} list {text!r}") from None
        if not items:
            raise argparse.ArgumentTypeError(f"empty {what} list")
        return items

    return parse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="PSNR/SSIM on benchmark sets",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default="bicubic",
                   help="'bicubic' (default), a model name from binsr.models, zoo:<name>, or a packed .bsr file "
                        "(measures the 1-bit engine's own output)")
    p.add_argument(
        "--dataset",
        type=_csv(str, "dataset"),
        default=["Set5", "Set14", "B100"],
        help="comma-separated benchmark sets, or folders of HR images (paths with '/') (default: Set5,Set14,B100)",
    )
    p.add_argument("--scale", type=_csv(int, "scale"), default=[2, 3, 4], help="comma-separated scales (default: 2,3,4)")
    p.add_argument(
        "--json", metavar="PATH", help="write the results as JSON to PATH ('-': stdout, and the table goes to stderr)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.add_argument("--per-image", action="store_true", help="add per-image PSNR/SSIM to the JSON")
    p.add_argument("--self-ensemble", action="store_true",
                   help="upscale each image as the mean of its 8 flips and quarter turns "
                        "(EDSR's '+' rows; 8x the work)")
    p.add_argument("--data-root", metavar="DIR", help="data folder (default: $BINSR_DATA, else ../shared/data)")
    p.add_argument(
        "--lr-source",
        choices=["matlab", "shipped"],
        default="matlab",
        help="matlab (default): LR = imresize(HR, 1/s), as the published tables; shipped: the sets' LR files",
    )
    p.add_argument("--recipe", help="training recipe of the model (passed to binsr.models.build_for_eval)")
    p.add_argument("--weights", metavar="FILE", help="weights file of the model")
    p.set_defaults(func=run)


def _build_model(name: str, scale: int, recipe: str | None, weights: str | None) -> Any:
    if name == "bicubic" or name.lower().endswith(".bsr"):
        if recipe or weights:
            raise UsageError(f"--recipe/--weights apply to trained models, not to {name}")
        if name == "bicubic":
            return "bicubic"
        from binsr.infer import open_packed

        return open_packed(name)
    import binsr.models

    build = getattr(binsr.models, "build_for_eval", None)
    if build is None:
        raise UsageError(f"unknown model {name!r} (no models are available yet; use --model bicubic)")
    return build(name, scale, recipe, weights)


def run(args: argparse.Namespace) -> int:
    from binsr.evaluation import evaluate, open_dataset

    # Resolve every (dataset, scale) and the output first, so a typo fails before any work is done.
    if args.json:
        claim_output(args.json, args.overwrite)
    if args.self_ensemble and args.model == "bicubic":
        raise UsageError("--self-ensemble applies to trained models, not to bicubic")
    jobs = [(open_dataset(d, s, args.lr_source, args.data_root), s) for d in args.dataset for s in args.scale]
    out = sys.stderr if args.json == STDOUT else sys.stdout
    ensemble = "   self-ensemble: x8 (flips, quarter turns)" if args.self_ensemble else ""
    print(f"model: {args.model}   LR: {args.lr_source}   metrics: Y channel, border = scale{ensemble}", file=out)
    print(f"{'dataset':<10} {'scale':>5} {'images':>6} {'PSNR':>8} {'SSIM':>7} {'seconds':>8}", file=out)
    models: dict[int, Any] = {}
    results = []
    for data, scale in jobs:
        if scale not in models:
            models[scale] = _build_model(args.model, scale, args.recipe, args.weights)
        r = evaluate(models[scale], data, scale, per_image=args.per_image, self_ensemble=args.self_ensemble)
        r["model"] = args.model
        results.append(r)
        row = f"{r['dataset']:<10} {'x' + str(scale):>5} {r['n_images']:>6}"
        print(f"{row} {r['psnr']:>8.3f} {r['ssim']:>7.4f} {r['seconds']:>8.1f}", file=out, flush=True)
    if args.json:
        write_output(args.json, json.dumps(results, indent=2) + "\n")
    return 0
