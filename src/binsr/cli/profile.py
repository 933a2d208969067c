"""``binsr profile``: per-layer binary/FP parameters, BOPs and FLOPs of a model, with totals."""

from __future__ import annotations

import argparse
import json

from binsr.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="count params (binary/32 + FP) and OPs (BOPs/64 + FLOPs) per layer",
                       description=__doc__)
    p.add_argument("--model", required=True, help="registry name (binsr.models.names())")
    p.add_argument("--recipe", default="fp", help="binarization recipe (default: fp)")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--lr-size", default="320x180", help="LR input WxH the operations are counted at (default 320x180: 1280x720 output at x4)")
    p.add_argument("--genotype", help="genotype JSON for searched models")
    p.add_argument("--json", dest="json_path", help="write the profile as JSON to PATH ('-' for stdout)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--quiet", action="store_true", help="totals only")
    p.set_defaults(func=run)


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--lr-size must look like 320x180, got {text!r}") from None
    return h, w


def format_table(prof) -> str:
    """Markdown table of a :class:`binsr.models.Profile`."""
    lines = [f"{prof.model} / {prof.recipe} / x{prof.scale}, LR {prof.lr_size[1]}x{prof.lr_size[0]}", "",
             "| layer | kind | binary | binary params | FP params | BOPs (M) | FLOPs (M) |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in prof.layers:
        lines.append(f"| {r.name} | {r.kind} | {'yes' if r.binary else 'no'} | {r.binary_params:,} | {r.fp_params:,} "
                     f"| {r.bops / 1e6:,.1f} | {r.flops / 1e6:,.1f} |")
    lines.append("")
    for label, prefix in (("body", "body."), ("total", "")):
        t = prof.totals(prefix)
        lines.append(f"{label:5s}: binary params {t['binary_params']:,}  FP params {t['fp_params']:,}  "
                     f"params (binary/32 + FP) {t['params'] / 1e3:,.1f}K  BOPs {t['bops'] / 1e9:,.2f}G  "
                     f"FLOPs {t['flops'] / 1e9:,.2f}G  OPs (BOPs/64 + FLOPs) {t['ops'] / 1e9:,.2f}G")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from binsr.files import STDOUT, claim_output, write_output
    from binsr.models import create, profile

    if args.json_path:
        claim_output(args.json_path, args.overwrite)

    kwargs = {"genotype": args.genotype} if args.genotype else {}
    model = create(args.model, scale=args.scale, recipe=args.recipe, **kwargs)
    prof = profile(model, _size(args.lr_size))
    if args.json_path != STDOUT:  # with --json - standard output is the JSON alone
        text = format_table(prof)
        print("\n".join(text.splitlines()[-2:]) if args.quiet else text)
        if prof.note:
            print(f"note : {prof.note}")
    if args.json_path:
        write_output(args.json_path, json.dumps(prof.to_dict(), indent=2) + "\n")
    return 0
