"""``binsr report``: gather ``runs/*/results.json``, evaluate each run and write ``docs/results.md``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="compare every training run with the published numbers (docs/results.md)",
                       description=__doc__)
    p.add_argument("--runs", default="runs", help="folder of run folders (default: runs)")
    p.add_argument("--out", default="docs/results.md", help="Markdown file to write (default: docs/results.md)")
    p.add_argument("--published", default="docs/published_results.csv",
                   help="published results CSV (default: docs/published_results.csv)")
    p.add_argument("--dataset", default="Set5,Set14,B100", help="comma-separated benchmark sets (default: Set5,Set14,B100)")
    p.add_argument("--data-root", help="data folder (default: $BINSR_DATA, else ../shared/data)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from binsr.report import write_report

    datasets = [d.strip() for d in args.dataset.split(",") if d.strip()]
    out = write_report(args.runs, args.out, args.published, datasets, args.data_root)
    print(out.read_text())
    return 0
