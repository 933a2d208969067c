"""``binsr report``: gather the zoo cards (``src/binsr/zoo/*.json``, not evaluated again),
``runs/*/results.json`` and ``runs/zoo/*/results.json`` (each run evaluated) and the archive of the
runs reported before (``docs/results_runs.json``: runs whose folder is not on this machine, marked
†), write ``docs/results.md`` and rewrite the archive; any of them may be absent."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="the zoo models and every training run beside the published numbers "
                                      "(docs/results.md)",
                       description=__doc__)
    p.add_argument("--runs", default="runs", help="folder of run folders (default: runs; may be missing)")
    p.add_argument("--zoo", help="folder of zoo cards and weights (default: the package's zoo, src/binsr/zoo)")
    p.add_argument("--out", default="docs/results.md", help="Markdown file to write (default: docs/results.md)")
    p.add_argument("--published", default="docs/published_results.csv",
                   help="published results CSV (default: docs/published_results.csv)")
    p.add_argument("--dataset", default="Set5,Set14,B100", help="comma-separated benchmark sets (default: Set5,Set14,B100)")
    p.add_argument("--data-root", help="data folder (default: $BINSR_DATA, else ../shared/data)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from binsr.report import write_report

    datasets = [d.strip() for d in args.dataset.split(",") if d.strip()]
    out = write_report(args.runs, args.out, args.published, datasets, args.data_root, zoo=args.zoo)
    print(out.read_text())
    return 0
