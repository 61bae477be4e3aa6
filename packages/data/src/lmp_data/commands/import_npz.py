"""`lmp-data import DIR STORE`: import precomputed features, one `<movie_id>.npz` per movie.

Each `.npz` holds the arrays `shots` [S,2], `video` [S,Dv], `audio` [S,Da], `text` [T,Dl] and
`text_spans` [T,2]. A store without audio (`--video` and `--text` only, or an encoders.json without
"audio") imports no `audio` array (a file may have one: it is left out, and the summary says so), one
without language no `text`/`text_spans`. Metadata comes from an optional sidecar `<movie_id>.json` (a dict) and/or a
`meta.json` in DIR mapping movie id -> dict (the sidecar wins per key). The store is created if
missing, with encoders from `--video/--audio/--text NAME:DIM` or from `DIR/encoders.json`.
Movies already in the store are skipped (so an interrupted import resumes) unless `--overwrite`.
A bad file (unreadable, truncated or corrupt `.npz`, bad arrays or metadata) is reported and skipped,
the import goes on and a summary ends it; the exit code is 1 if any file failed. Files named `*.npz`
that are not regular files (a FIFO, a device, a folder) are skipped with a message, never opened.
An import that cannot start (no store and no encoders, bad --dtype, ...) exits 2 with one line.
"""

from __future__ import annotations

import argparse
import json
import stat
import sys
import zipfile
import zlib
from pathlib import Path

ARRAYS = ("shots", "video", "audio", "text", "text_spans")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "import",
        help="import precomputed features (.npz per movie)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dir", type=Path, help="directory of <movie_id>.npz files")
    p.add_argument("store", type=Path, help="feature store directory (created if missing)")
    for m in ("video", "audio", "text"):
        p.add_argument(
            f"--{m}",
            metavar="NAME:DIM",
            help=f"{m} encoder of a new store" + ("" if m == "video" else f" (leave out: no {m})"),
        )
    p.add_argument("--dtype", default="float16", help="feature dtype of a new store (default float16)")
    p.add_argument("--overwrite", action="store_true", help="rewrite movies already in the store")
    p.set_defaults(func=run)


def _encoders(args: argparse.Namespace) -> dict | None:
    given = {m: getattr(args, m) for m in ("video", "audio", "text") if getattr(args, m)}
    if given:
        if "video" not in given:
            raise ValueError(
                "give --video NAME:DIM (and --audio / --text for the modalities the store has), or none"
            )
        out = {}
        for m, spec in given.items():
            name, sep, dim = spec.rpartition(":")
            if not sep or not name or not dim.isdigit():
                raise ValueError(f"--{m} {spec!r}: expected NAME:DIM, e.g. efficientnet-lite0:1280")
            out[m] = {"name": name, "dim": int(dim)}
        return out
    path = args.dir / "encoders.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
    return None


def _load_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def import_file(store, path: Path, shared_meta: dict, overwrite: bool) -> str:
    """Import one `.npz`; returns "imported" or "skipped". Raises ValueError/OSError on bad input."""
    import numpy as np

    from lmp_data.validate import check_movie_id

    movie_id = check_movie_id(path.stem)
    if store.has_movie(movie_id) and not overwrite:
        return "skipped"
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [a for a in store.arrays if a not in npz.files]
            if missing:
                raise ValueError(f"{path}: missing arrays {missing} (has {sorted(npz.files)})")
            arrays = {a: npz[a] for a in store.arrays}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        if isinstance(e, ValueError) and str(e).startswith(str(path)):
            raise
        raise ValueError(f"{path}: not a readable .npz ({type(e).__name__}: {e})") from e
    meta = dict(shared_meta.get(movie_id, {}))
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        meta.update(_load_json(sidecar))
    store.write_movie(movie_id, **arrays, meta=meta or None, overwrite=overwrite)
    return "imported"


def _not_regular(path: Path) -> str | None:
    """Why `path` is not a regular file (following symlinks), or None if it is one."""
    try:
        mode = path.stat().st_mode
    except OSError as e:
        return f"cannot stat ({e.strerror or e})"
    if stat.S_ISREG(mode):
        return None
    kinds = {stat.S_ISFIFO: "a FIFO", stat.S_ISDIR: "a folder", stat.S_ISSOCK: "a socket"}
    kind = next((k for f, k in kinds.items() if f(mode)), "a device or other special file")
    return f"not a regular file ({kind})"


def run(args: argparse.Namespace) -> int:
    from lmp_data.cli import CommandError
    from lmp_data.store import FeatureStore
    from lmp_data.validate import StoreError, check_encoders

    if not args.dir.is_dir():
        raise CommandError(f"{args.dir}: not a directory")
    files = sorted(args.dir.glob("*.npz"))
    if not files:
        raise CommandError(f"{args.dir}: no .npz files")
    encoders = _encoders(args)
    if (args.store / "store.json").exists():
        store = FeatureStore.open(args.store)
        if encoders is not None and store.encoders != check_encoders(encoders):
            raise CommandError(f"store {args.store} has encoders {store.encoders}, not {encoders}")
    elif encoders is None:
        raise CommandError(
            f"store {args.store} does not exist: give --video/--audio/--text NAME:DIM "
            f"or put an encoders.json in {args.dir}"
        )
    else:
        store = FeatureStore.create(args.store, encoders, dtype=args.dtype)
    shared_meta = _load_json(args.dir / "meta.json") if (args.dir / "meta.json").is_file() else {}

    counts = {"imported": 0, "skipped": 0, "failed": 0, "not_regular": 0}
    for path in files:
        why = _not_regular(path)
        if why is not None:
            counts["not_regular"] += 1
            print(f"SKIPPED {path.name}: {why}", file=sys.stderr)
            continue
        try:
            counts[import_file(store, path, shared_meta, args.overwrite)] += 1
        except (StoreError, ValueError, OSError) as e:
            counts["failed"] += 1
            print(f"FAILED {path.name}: {e}", file=sys.stderr)
    extra = f", {counts['not_regular']} not regular files skipped" if counts["not_regular"] else ""
    if store.missing:
        extra += (
            f" ({'/'.join(store.missing)} not imported: the store has no {' and no '.join(store.missing)})"
        )
    print(
        f"imported {counts['imported']}, skipped {counts['skipped']} (already in store), "
        f"failed {counts['failed']}{extra} -> {args.store}"
    )
    return 1 if counts["failed"] else 0
