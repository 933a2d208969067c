"""``binsr zoo``: list the shipped pretrained models, or add a trained run to the zoo (weights, a
card with measured metrics and the run's validation curve)."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("zoo", help="list the pretrained models shipped with binsr", description=__doc__)
    p.add_argument("--json", dest="json_path", help="write the list as JSON to PATH ('-' for stdout)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file or --add entry")
    p.add_argument("--add", metavar="RUN_DIR", help="(maintainers) copy RUN_DIR's weights into the zoo and measure them")
    p.add_argument("--curve", metavar="RUN_DIR",
                   help="(maintainers) store RUN_DIR's validation curve in the card of --name (RUN_DIR must be "
                        "the entry's source run; for cards added before cards kept the curve)")
    p.add_argument("--repack", action="store_true",
                   help="(maintainers) rewrite every entry's packed .bsr file (after a packed-format change)")
    p.add_argument("--name", help="zoo entry name for --add and --curve")
    p.add_argument("--note", help="(maintainers) with --add: a line for the card on how the model was trained where "
                                   "the run folder does not tell (warm starts, earlier pieces and their hours)")
    p.add_argument("--weights", default="best", choices=["best", "last"], help="which checkpoint --add takes")
    p.add_argument("--data-root", help="benchmark data root (else $BINSR_DATA, else ../shared/data)")
    p.set_defaults(func=run)


def _row(card: dict) -> dict:
    return {k: card.get(k) for k in ("name", "scale", "model", "recipe", "params_k", "ops_g_320x180", "steps",
                                     "train_seconds", "metrics")}


def run(args: argparse.Namespace) -> int:
    from binsr.errors import UsageError
    from binsr.files import STDOUT, claim_output, write_output
    from binsr.models import add_to_zoo, refresh_zoo_curve, repack_zoo, zoo_card, zoo_names

    if args.repack:
        for path in repack_zoo():
            print(f"wrote {path} ({path.stat().st_size:,} bytes)")
        return 0
    if (args.add or args.curve) and not args.name:
        raise UsageError(f"{'--add' if args.add else '--curve'} needs --name")
    if args.note and not args.add:
        raise UsageError("--note goes with --add")
    if args.add:
        card = add_to_zoo(args.add, args.name, args.weights, args.data_root, overwrite=args.overwrite, note=args.note)
        print(json.dumps(_row(card), indent=2))
        return 0
    if args.curve:
        card = refresh_zoo_curve(args.name, args.curve)
        print(f"zoo:{card['name']}: {len(card['val_curve'])} validation points on {card['val_dataset']}")
        return 0
    rows = [_row(zoo_card(n)) for n in zoo_names()]
    if args.json_path:
        claim_output(args.json_path, args.overwrite)
        write_output(args.json_path, json.dumps(rows, indent=2) + "\n")
        if args.json_path == STDOUT:
            return 0
    sets = ("Set5", "Set14", "B100")
    print("| name | scale | recipe | params (K) | OPs 320x180 (G) | " + " | ".join(f"{s} PSNR/SSIM" for s in sets) + " |")
    print("|---|---:|---|---:|---:|" + "---|" * len(sets))
    for r in rows:
        m = r["metrics"] or {}
        cells = [f"{m[s]['psnr']:.2f} / {m[s]['ssim']:.4f}" if s in m else "-" for s in sets]
        print(f"| zoo:{r['name']} | x{r['scale']} | {r['recipe']} | {r['params_k']} | {r['ops_g_320x180']} | " + " | ".join(cells) + " |")
    return 0
