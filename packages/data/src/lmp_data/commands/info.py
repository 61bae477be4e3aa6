"""`lmp-data info STORE`: what a feature store holds (encoders, movies, shots, tokens, size on disk)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("info", help="summarise a feature store", description=__doc__)
    p.add_argument("store", type=Path, help="feature store directory")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
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
    from lmp_data.validate import StoreError

    try:
        s = summary(args.store)
    except StoreError as e:
        print(f"lmp-data info: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    print(f"store     {s['store']}  ({s['dtype']})")
    for m, spec in s["encoders"].items():
        extra = {k: v for k, v in spec.items() if k not in ("name", "dim")}
        print(f"  {m:<6}  {spec['name']}  dim {spec['dim']}" + (f"  {extra}" if extra else ""))
    print(f"movies    {s['movies']}")
    print(f"shots     {s['shots']}")
    print(f"tokens    {s['tokens']}")
    print(f"hours     {s['hours']}")
    if "splits" in s:
        print("splits    " + ", ".join(f"{k}: {v}" for k, v in s["splits"].items()))
    print(f"on disk   {s['bytes_on_disk'] / 2**20:.1f} MiB ({s['bytes_on_disk']} bytes)")
    return 0
