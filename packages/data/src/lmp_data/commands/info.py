"""`lmp-data info STORE [--check] [--repair]`: what a feature store holds (encoders, movies, shots, tokens,
size on disk).

Movies whose manifest row is unreadable or whose group is missing are not counted (a warning names
each). `--check` lists every inconsistency (unreadable manifest rows, rows whose group is missing,
orphan groups that no row names, temporary leftovers) and exits 1 if there is any; `--repair` removes
orphan groups older than `--min-age` seconds, and nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "info",
        help="summarise a feature store (--check: list inconsistencies, --repair: remove orphan groups)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("store", type=Path, help="feature store directory")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--check", action="store_true", help="list every inconsistency; exit 1 if any")
    p.add_argument("--repair", action="store_true", help="remove orphan groups (implies --check)")
    p.add_argument(
        "--min-age",
        type=float,
        default=60.0,
        metavar="S",
        help="--repair leaves orphan groups younger than S seconds (a write in progress; default 60)",
    )
    p.set_defaults(func=run)


def disk_bytes(path: Path) -> int:
    """Bytes of all regular files under `path` (symlinks not followed)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except FileNotFoundError:  # removed by a concurrent writer
                pass
    return total


def summary(store_path: Path) -> dict:
    from lmp_data.store import FeatureStore

    store = FeatureStore.open(store_path)
    movies = store.movies()
    out = {
        "store": str(store_path),
        "dtype": store.dtype.name,
        "encoders": store.encoders,
        "modalities": list(store.modalities),
        "movies": movies.height,
        "shots": int(movies["n_shots"].sum()) if movies.height else 0,
        "tokens": int(movies["n_tokens"].sum()) if movies.height else 0,
        "hours": round(float(movies["duration"].sum()) / 3600, 3) if movies.height else 0.0,
        "bytes_on_disk": disk_bytes(store_path),
    }
    if "split" in movies.columns:
        counts = movies.group_by("split").len().sort("split").rows()
        out["splits"] = {str(s): int(n) for s, n in counts}
    return out


def run(args: argparse.Namespace) -> int:
    from lmp_data.store import FeatureStore

    s = summary(args.store)  # StoreError: one line from lmp_data.cli
    check = None
    if args.check or args.repair:
        store = FeatureStore.open(args.store)
        removed = store.repair(args.min_age) if args.repair else []
        check = store.check()
        s["check"] = {
            "ok": check.ok,
            "unreadable_rows": check.unreadable_rows,
            "missing_groups": check.missing_groups,
            "orphan_groups": check.orphan_groups,
            "unreadable_groups": check.unreadable_groups,
            "temporary": check.temporary,
            "removed": removed,
        }
    if args.json:
        print(json.dumps(s, indent=2))
    else:
        _print(s)
        if check is not None:
            for r in s["check"]["removed"]:
                print(f"removed   {r}")
            lines = check.lines()
            n = len(lines) - len(check.temporary)  # temporary files: writes in progress (or cleanup's)
            print(f"check     {'ok' if check.ok else f'{n} problem(s)'}")
            for line in lines:
                print(f"  {line}")
    return 1 if check is not None and not check.ok else 0


def _print(s: dict) -> None:
    print(f"store     {s['store']}  ({s['dtype']})")
    for m, spec in s["encoders"].items():
        extra = {k: v for k, v in spec.items() if k not in ("name", "dim")}
        print(f"  {m:<6}  {spec['name']}  dim {spec['dim']}" + (f"  {extra}" if extra else ""))
    missing = [m for m in ("video", "audio", "text") if m not in s["encoders"]]
    if missing:
        print(f"  (no {' and no '.join(missing)}: pretraining drops the loss terms that need it)")
    print(f"movies    {s['movies']}")
    print(f"shots     {s['shots']}")
    print(f"tokens    {s['tokens']}")
    print(f"hours     {s['hours']}")
    if "splits" in s:
        print("splits    " + ", ".join(f"{k}: {v}" for k, v in s["splits"].items()))
    print(f"on disk   {s['bytes_on_disk'] / 2**20:.1f} MiB ({s['bytes_on_disk']} bytes)")
