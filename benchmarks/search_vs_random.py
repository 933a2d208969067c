"""Searched cell against random cells of its size, as NAS reviewers ask (src/binsr/nas/README.md).

``commands CONFIG``: the ``binsr train`` commands of one comparison, one run per line, for a queue
that runs them one after the other on one core (``--auto-resume``: rerunning the queue continues
an interrupted run and skips finished ones). Every run is CONFIG (an SRBNAS config of
``configs/compare/search_vs_random_*.yaml``: data, seed and steps shared by all rows) with
``--set`` overrides: the searched cell (CONFIG as it is), ``--cells`` random cells
``random_sized:K:<CONFIG's genotype>`` (K = 1..cells: the same node count, groups and conv
footprint within 10%) and SRResNet-lite with recipe e2fif, CONFIG's width and the block count
whose params (binary/32 + FP) are closest to the SRBNAS net's (within 10%, or an error).

``table RUN_DIR...``: evaluate each run's ``best.safetensors`` with the MATLAB protocol
(``binsr.report.run_record``, cached in ``<run>/benchmark.json``) and print the Markdown table of
``binsr.report.search_vs_random``: one row per run, the random mean and sample std, the searched
cell's rank and whether it beats mean + 1 std, per set::

    .venv/bin/python benchmarks/search_vs_random.py commands configs/compare/search_vs_random_x4.yaml > queue.sh
    sh queue.sh       # 7 runs, one after the other, on core 1
    .venv/bin/python benchmarks/search_vs_random.py table runs/search_vs_random_x4_*
"""

from __future__ import annotations

import argparse
import shlex
import sys

import yaml

from binsr.errors import UsageError
from binsr.models import create, profile
from binsr.report import run_record, search_vs_random
from binsr.train import load_config
from binsr.train.config import TrainConfig

PREFIX = "OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/binsr train"
TOLERANCE = 0.1  # the hand-designed net's params within 10% of the SRBNAS net's


def _params(name: str, scale: int, recipe: str, kwargs: dict) -> float:
    """Params (binary/32 + FP) as ``binsr profile`` counts them."""
    return profile(create(name, scale=scale, recipe=recipe, **kwargs), (16, 16)).params


def e2fif_kwargs(cfg: TrainConfig) -> tuple[dict, float, float]:
    """SRResNet-lite kwargs with the width of ``cfg``'s SRBNAS net and the block count whose params
    are closest to its; returns them, their params and the SRBNAS net's."""
    target = _params(cfg.model.name, cfg.scale, cfg.model.recipe, cfg.model.kwargs)
    width = cfg.model.kwargs.get("num_feat", 64)
    fits = {b: _params("srresnet_lite", cfg.scale, "e2fif", {"num_feat": width, "num_block": b})
            for b in range(1, 33)}
    block = min(fits, key=lambda b: abs(fits[b] - target))
    if abs(fits[block] - target) > TOLERANCE * target:
        raise UsageError(f"no srresnet_lite of width {width} within {TOLERANCE:.0%} of {target / 1e3:.1f}K params")
    return {"num_feat": width, "num_block": block, "zero_tail": True}, fits[block], target


def commands(config: str, overrides: list[str], cells: int = 5, prefix: str = PREFIX) -> list[str]:
    """The ``binsr train`` command of every row (searched, random 1..cells, e2fif) between a comment
    line with the params and one with the ``table`` command; ``overrides`` (``key=value``) go to every row."""
    cfg = load_config(config, overrides)
    if not cfg.model.name.startswith("srbnas"):
        raise UsageError(f"{config}: model.name must be an SRBNAS model, got {cfg.model.name!r}")
    genotype = cfg.model.kwargs.get("genotype")
    ref = f":{genotype}" if genotype else ""
    e2fif, e2fif_params, params = e2fif_kwargs(cfg)
    rows = {"searched": [],
            **{f"random{k}": [f"model.kwargs.genotype=random_sized:{k}{ref}"] for k in range(1, cells + 1)},
            "e2fif": ["model.name=srresnet_lite", "model.recipe=e2fif",
                      "model.kwargs=" + yaml.safe_dump(e2fif, default_flow_style=True).strip()]}
    lines = [f"# {cfg.name}: {cfg.model.name} x{cfg.scale}, {params / 1e3:.1f}K params; srresnet_lite e2fif "
             f"{e2fif['num_block']} blocks x {e2fif['num_feat']}: {e2fif_params / 1e3:.1f}K "
             f"({e2fif_params / params - 1:+.1%}); {cfg.train.steps} steps per run"]
    for row, sets in rows.items():
        args = ["--config", config, *(a for s in [*overrides, f"name={cfg.name}_{row}", *sets] for a in ("--set", s)),
                "--auto-resume"]
        lines.append(f"{prefix} {shlex.join(args)}")
    runs = " ".join(f"{cfg.log.root}/{cfg.name}_{row}" for row in rows)
    return lines + [f"# then: .venv/bin/python benchmarks/search_vs_random.py table {runs}"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("commands", help="print the binsr train command of every row")
    c.add_argument("config", help="configs/compare/search_vs_random_*.yaml")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override for every row, e.g. train.steps=2000 (repeatable)")
    c.add_argument("--cells", type=int, default=5, help="random cells (default 5)")
    c.add_argument("--prefix", default=PREFIX, help=f"command prefix (default: {PREFIX})")
    t = sub.add_parser("table", help="evaluate the runs and print the comparison table")
    t.add_argument("runs", nargs="+", help="run folders (results.json + best.safetensors)")
    t.add_argument("--dataset", default="Set5,Set14,B100", help="comma-separated benchmark sets")
    t.add_argument("--data-root", help="data folder (default: $BINSR_DATA, else ../shared/data)")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "commands":
            print("\n".join(commands(args.config, args.overrides, args.cells, args.prefix)))
        else:
            datasets = [d.strip() for d in args.dataset.split(",") if d.strip()]
            records = [run_record(run, datasets, args.data_root) for run in args.runs]
            unfinished = [run for run, rec in zip(args.runs, records) if rec is None]
            if unfinished:
                raise UsageError(f"not finished runs (no results.json or weights): {', '.join(unfinished)}")
            print(search_vs_random(records, datasets), end="")
    except UsageError as exc:
        print(f"search_vs_random: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
