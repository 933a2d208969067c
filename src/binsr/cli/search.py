"""``binsr search``: SRBNAS differentiable search of a binary SR cell (see ``configs/search/``).

Writes into ``--out``: genotype.json, cell.png, alpha_history.{csv,png}, beta_history.{csv,png},
history.csv, summary.json (search time), config.yaml, checkpoint.pt and tb/ (TensorBoard).

Examples::

    binsr search --config configs/search/srbnas_x4.yaml --out runs/search/srbnas_x4
    binsr search --config configs/search/srbnas_x4.yaml --out runs/search/srbnas_x4 --resume
    binsr search --config configs/search/ablation_mu0.5_rho0.5.yaml --out runs/search/abl55 --set search.epochs=5
    binsr train --config configs/train/srbnas_x4.yaml --set model.kwargs.genotype=runs/search/srbnas_x4/genotype.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from binsr.errors import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("search", help="SRBNAS architecture search of a binary SR cell",
                              description=__doc__.splitlines()[0], epilog=__doc__.split("\n", 2)[2],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML config (configs/search/*.yaml); with --resume, default: OUT/config.yaml")
    p.add_argument("--out", required=True, help="output folder, e.g. runs/search/<name>")
    p.add_argument("--resume", action="store_true", help="continue the search in --out from its checkpoint.pt")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set reg.mu=0.5 (repeatable)")
    p.add_argument("--data-root", help="data folder (default: $BINSR_DATA, then ../shared/data)")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"),
                   help="cpu (default), cuda, or auto: CUDA when available")
    p.add_argument("--threads", type=int,
                   help="torch CPU threads (default: torch's choice; 1 is fastest on a busy machine)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from binsr.nas.config import load_search_config
    from binsr.nas.search import run_search

    config = args.config
    if config is None:
        if not args.resume:
            raise UsageError("--config is required (or --resume to continue the search in --out with its config.yaml)")
        config = Path(args.out) / "config.yaml"
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device available")
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device.replace("auto", "cpu")
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    cfg = load_search_config(config, args.overrides)
    geno = run_search(cfg, args.out, resume=args.resume, data_root=args.data_root, device=device)
    time_h = geno.meta.get("search_time_s", 0.0) / 3600
    print(f"{cfg.name}: {geno.meta.get('epochs')} epochs in {time_h:.3f} h; "
          f"genotype {Path(args.out) / 'genotype.json'}")
    for j, node in enumerate(geno.nodes):
        print(f"  node {j}: " + ", ".join(f"{op}({src})" for op, src in node))
    return 0
