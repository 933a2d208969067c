"""The ``binsr`` console script: one entry point, one module per subcommand.

Each subcommand module in :data:`SUBCOMMANDS` exposes ``register(subparsers)``, which adds its
parser and sets ``func=run``; ``run(args) -> int`` returns the exit code. Modules are imported
lazily so that ``binsr --help`` and the torch-free commands stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from binsr.errors import BinsrError

#: subcommand name -> module under ``binsr.cli``
SUBCOMMANDS = {
    "eval": "eval",
    "demo": "demo",
    "profile": "profile",
    "train": "train",
    "search": "search",
    "export": "export",
    "bench": "bench",
    "zoo": "zoo",
    "report": "report",
    "upscale": "upscale",
    "serve": "serve",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="binsr", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in SUBCOMMANDS.items():
        try:
            mod = importlib.import_module(f"binsr.cli.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"binsr.cli.{module}":
                continue  # subcommand not built yet
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(message)s")
    logging.getLogger("PIL").setLevel(logging.INFO)  # --debug is about binsr: not every chunk Pillow parses
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BinsrError as exc:
        if args.debug:
            raise
        print(f"binsr {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"binsr {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
