"""`lmp-data`: the data command line.

Each subcommand lives in its own module exposing `register(subparsers)`, which adds a parser and sets
`func=<callable(args) -> int>` as its default. Modules keep heavy imports inside `func` so `--help` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "lmp_data.commands.info",  # info STORE
    "lmp_data.commands.import_npz",  # import DIR STORE
    "lmp_data.demo.command",  # demo OUT
    "lmp_data.ingest.command",  # ingest MOVIES_DIR STORE
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmp-data", description="Movies -> shots -> base features -> Zarr feature store."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
