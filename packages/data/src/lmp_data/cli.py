"""`lmp-data`: the data command line.

Each subcommand lives in its own module exposing `register(subparsers)`, which adds a parser and sets
`func=<callable(args) -> int>` as its default. Modules keep heavy imports inside `func` so `--help` is fast.

Errors: a subcommand raises (`CommandError` for its own usage errors, or the library's `StoreError`,
`DemoError`, `IngestError`, `OSError`, ...); `main` prints ONE line `lmp-data CMD: error: ...` and exits
2 (`-v` / `--verbose` prints the traceback too); a missing module names the `lmp-data[ingest]` extra
(`ingest` and `import-mad` need it). Per-movie failures are reported by the subcommand
itself, which then exits 1.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback

COMMAND_MODULES = (
    "lmp_data.commands.info",  # info STORE
    "lmp_data.commands.import_npz",  # import DIR STORE
    "lmp_data.commands.import_mad",  # import-mad FRAMES.h5 STORE --annotations MAD_*.json
    "lmp_data.demo.command",  # demo OUT
    "lmp_data.ingest.command",  # ingest MOVIES_DIR STORE
)


EXIT_ERROR = 2
"""Exit status of a run that could not start or stopped on an error (1: some movie/file failed)."""


class CommandError(ValueError):
    """A subcommand's own usage error (bad argument value, OUT folder in the way, ...): one line."""


def expected_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input or a bad state of a file, not a bug: reported in one line. The
    modules defining them are looked up only if the subcommand imported them (no heavy imports here)."""
    errors: tuple[type[BaseException], ...] = (CommandError, ValueError, KeyError, OSError)
    for module, name in (("lmp_data.demo.build", "DemoError"), ("lmp_data.ingest.errors", "IngestError")):
        if module in sys.modules:
            errors += (getattr(sys.modules[module], name),)
    return errors


def print_error(prog: str, exc: BaseException, verbose: bool) -> None:
    """The one-line error of every lmp CLI: `PROG: error: MESSAGE` on stderr, the traceback first with -v.
    A KeyError shows its key, an OSError its file name."""
    if verbose:
        traceback.print_exception(exc)
    msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    if isinstance(exc, OSError) and exc.filename is not None and str(exc.filename) not in str(msg):
        msg = f"{exc.filename}: {msg}"
    print(f"{prog}: error: {msg}", file=sys.stderr)


def report(command: str, exc: BaseException, verbose: bool) -> int:
    """Print `lmp-data COMMAND: error: MESSAGE` (and the traceback when `verbose`); the exit status."""
    print_error(f"lmp-data {command}", exc, verbose)
    return EXIT_ERROR


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmp-data", description="Movies -> shots -> base features -> Zarr feature store."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for p in sub.choices.values():
        p.add_argument("-v", "--verbose", action="store_true", help="show the traceback of an error")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except expected_errors() as e:
        return report(args.command, e, args.verbose)
    except ModuleNotFoundError as e:  # ingest / import-mad without the optional dependencies
        hint = CommandError(f"{e}: install the ingest extra (pip install 'lmp-data[ingest]')")
        return report(args.command, hint, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
