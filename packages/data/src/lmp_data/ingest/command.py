"""`lmp-data ingest MOVIES_DIR STORE`: turn a folder of movies into a feature store (docs/ingest.md)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "ingest",
        help="movies (+ .srt subtitles, .ad.csv audio descriptions) -> shots -> base features -> store",
        description="Ingest <id>.<mp4|mkv|avi|mov|webm> movies (optional <id>.srt, <id>.ad.csv, "
        "metadata.csv/.parquet) into a FeatureStore. Resumable; exits 1 if any movie failed.",
    )
    p.add_argument("movies_dir", metavar="MOVIES_DIR")
    p.add_argument("store", metavar="STORE")
    p.add_argument("--encoders", default="offline", help="offline (default) | paper | FILE.yaml")
    p.add_argument("--shots", default="scenedetect", choices=("scenedetect", "transnetv2"))
    p.add_argument("--min-shot-len", type=float, default=0.25, metavar="S", help="seconds (default 0.25)")
    p.add_argument("--shot-threshold", type=float, default=None, help="detector threshold (default: its own)")
    p.add_argument(
        "--subtitle-encoding", default=None, help="encoding of non-UTF-8 subtitles (default: detect)"
    )
    p.add_argument("--overwrite", action="store_true", help="re-ingest movies already in the store")
    p.add_argument("--dtype", default="float16", help="feature dtype of a new store (default float16)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lmp_data.ingest.pipeline import IngestConfig, ingest

    cfg = IngestConfig(
        encoders=args.encoders,
        shots=args.shots,
        min_shot_len=args.min_shot_len,
        shot_threshold=args.shot_threshold,
        subtitle_encoding=args.subtitle_encoding,
        overwrite=args.overwrite,
        dtype=args.dtype,
        progress=not args.no_progress,
    )
    summary = ingest(args.movies_dir, args.store, cfg)  # a run that cannot start: one line (lmp_data.cli)
    print(summary.format())
    return 1 if summary.failed else 0
