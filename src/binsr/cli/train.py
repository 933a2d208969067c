"""``binsr train``: train a model from a YAML config (see ``configs/train/``).

Examples::

    binsr train --config configs/train/srresnet_e2fif_x4_small.yaml
    binsr train --config configs/train/srresnet_fp_x4.yaml --set train.lr=1e-4 --set data.batch_size=32
    binsr train --resume --out runs/srresnet_e2fif_x4_small     # continue where the run stopped
    binsr train --resume --out runs/... --stop-after 9000        # checkpoint and stop after 2.5 h
    binsr train --config configs/zoo/srbnas_x3.yaml --auto-resume  # start, continue or skip: for queues
    binsr train --config configs/zoo/srresnet_lite16_scales_x4_c3.yaml --print-config  # base: files merged
    torchrun --standalone --nproc_per_node 2 -m binsr train --config ...   # see binsr.train.distributed
"""

from __future__ import annotations

import argparse
from pathlib import Path

from binsr.errors import UsageError
from binsr.files import read_json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train a model from a YAML config",
                              description=__doc__.splitlines()[0], epilog=__doc__.split("\n", 2)[2],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML config (configs/train/*.yaml); with --resume, default: OUT/config.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.lr=1e-4 (repeatable)")
    p.add_argument("--out", help="run folder (default: <log.root>/<name>, i.e. runs/<name>)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--resume", action="store_true", help="continue the run in the run folder from last.pt")
    how.add_argument("--auto-resume", action="store_true",
                     help="continue the run folder's run if it holds one (last.pt), else start it; a finished "
                          "run (results.json at the config's steps) is left as it is (BasicSR's --auto_resume)")
    p.add_argument("--data-root", help="data folder (default: $BINSR_DATA, then ../shared/data)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto: CUDA when available (default)")
    p.add_argument("--stop-after", type=float, metavar="SECONDS",
                   help="checkpoint and stop once this many seconds of this call have passed (a time-boxed "
                        "piece of a long run, e.g. on a lent GPU or before a session ends); --resume continues it")
    p.add_argument("--print-config", action="store_true",
                   help="print the config as it would train (base: files merged, --set applied, defaults "
                        "filled, checked) as YAML, and exit without training")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from binsr.train import load_config, train

    config = args.config
    if config is None:
        if not (args.resume and args.out):
            raise UsageError("--config is required (or --resume --out RUN_DIR to continue a run with its config.yaml)")
        config = Path(args.out) / "config.yaml"
    if args.stop_after is not None and not args.stop_after > 0:
        raise UsageError(f"--stop-after must be > 0 seconds, got {args.stop_after}")
    cfg = load_config(config, args.overrides)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None), end="")
        return 0
    resume = args.resume
    if args.auto_resume:
        out = Path(args.out) if args.out else Path(cfg.log.root) / cfg.name
        done = out / "results.json"
        if done.exists() and read_json(done, "run results").get("steps") == cfg.train.steps:
            print(f"{cfg.name}: finished ({cfg.train.steps} steps) in {out}; nothing to do")
            return 0
        resume = (out / "last.pt").is_file()
    result = train(cfg, args.out, resume=resume, device=args.device, data_root=args.data_root,
                   stop_after=args.stop_after)
    if result.get("stopped"):
        print(f"{result['name']}: stopped at step {result['steps']} of {cfg.train.steps} after "
              f"{args.stop_after:g} s; checkpoint saved, continue with --resume --out {result['run_dir']}")
    elif result:
        val, best = result["val"], result["best"]
        print(f"{result['name']}: {result['steps']} steps in {result['train_seconds']:.0f} s; "
              f"{val['dataset']} PSNR {val['psnr']:.3f} dB / SSIM {val['ssim']:.4f} "
              f"(best {best['psnr']:.3f} dB at step {best['step']})")
    return 0
