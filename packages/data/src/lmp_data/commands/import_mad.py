"""`lmp-data import-mad FRAMES.h5 STORE --annotations MAD_*.json`: MAD's released features -> a store.

MAD (movie audio descriptions) is released as CLIP frame features at 5 fps (one HDF5 dataset per movie,
[frames, D]) and per-split annotation JSON (annotation id -> movie, sentence, ext_timestamps,
movie_duration), optionally CLIP token features per annotation id. It has no audio, so the store made here
has video and language only (`FeatureStore.modalities`); pretraining and probes on it drop what needs
audio. Shots come from the frame features (PySceneDetect's adaptive threshold on the cosine distance of
consecutive frames, `--adaptive-threshold` ...) or from `--boundaries FILE` (JSON: movie id -> shot start
seconds; movies it does not list are detected); each shot's video feature is the mean of its frames. Each
sentence's tokens carry its time span: MAD's own token features with `--text-features`, else the offline
text encoder (`--text-encoder`, default minilm). See docs/import.md.

Movies already in the store are skipped (an interrupted import resumes) unless `--overwrite`. Each movie
is written atomically. A bad movie (unreadable dataset, wrong shape, NaN, bad annotation) is reported in
one line naming the file, the movie and the field, and the import goes on; the exit code is then 1. An
import that cannot start (a missing or unreadable file, a store with other encoders) exits 2 with one line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "import-mad",
        help="import MAD-layout features (HDF5 frame features + annotation JSON) as a video + text store",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("frames", type=Path, help="frame features HDF5 (e.g. CLIP_B32_frames_features_5fps.h5)")
    p.add_argument("store", type=Path, help="feature store directory (created if missing)")
    p.add_argument(
        "--annotations",
        type=Path,
        nargs="+",
        required=True,
        metavar="JSON",
        help="MAD annotation files (MAD_train.json MAD_val.json MAD_test.json); the split is read from the name",
    )
    p.add_argument(
        "--text-features",
        type=Path,
        default=None,
        metavar="H5",
        help="MAD's token features per annotation id (e.g. CLIP_B32_language_tokens_features.h5)",
    )
    p.add_argument(
        "--text-encoder",
        default="minilm",
        help="text encoder when --text-features is not given (default minilm, offline)",
    )
    p.add_argument("--boundaries", type=Path, default=None, help="JSON movie id -> shot start seconds")
    p.add_argument("--fps", type=float, default=5.0, help="frame rate of the frame features (MAD: 5)")
    p.add_argument(
        "--adaptive-threshold", type=float, default=3.0, help="cut when distance >= this x local mean"
    )
    p.add_argument("--window-width", type=int, default=2, help="frames each side in the local mean")
    p.add_argument("--min-distance", type=float, default=0.05, help="smallest cosine distance of a cut")
    p.add_argument("--min-shot-frames", type=int, default=3, help="frames between two cuts at least")
    p.add_argument(
        "--movies", default=None, help="comma-separated movie ids (default: every movie in FRAMES)"
    )
    p.add_argument("--dtype", default="float16", help="feature dtype of a new store (default float16)")
    p.add_argument("--device", default="auto", help="device of the text encoder (auto, cpu, cuda)")
    p.add_argument("--overwrite", action="store_true", help="rewrite movies already in the store")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lmp_data.cli import CommandError
    from lmp_data.feature_shots import FeatureShotConfig
    from lmp_data.mad import MadError, import_mad, iter_lines

    try:
        shot_cfg = FeatureShotConfig(
            adaptive_threshold=args.adaptive_threshold,
            window_width=args.window_width,
            min_content_val=args.min_distance,
            min_shot_frames=args.min_shot_frames,
        )
    except ValueError as e:
        raise CommandError(str(e)) from None
    movies = [m.strip() for m in args.movies.split(",") if m.strip()] if args.movies else None

    def event(kind: str, movie: str, msg: str) -> None:
        if kind == "failed":
            print(f"FAILED {movie}: {msg}", file=sys.stderr)

    try:
        report = import_mad(
            args.frames,
            args.annotations,
            args.store,
            tokens_path=args.text_features,
            text_encoder=args.text_encoder,
            boundaries_path=args.boundaries,
            shot_cfg=shot_cfg,
            fps=args.fps,
            movies=movies,
            dtype=args.dtype,
            overwrite=args.overwrite,
            device=args.device,
            on_event=event,
        )
    except MadError as e:
        raise CommandError(str(e)) from None
    for line in iter_lines(report):
        print(line, file=sys.stderr)
    extra = f", {len(report.bad_annotations)} bad annotations skipped" if report.bad_annotations else ""
    print(
        f"imported {len(report.imported)}, skipped {len(report.skipped)} (already in store), "
        f"failed {len(report.failed)}{extra} -> {args.store} (video + text, no audio)"
    )
    return 1 if report.failed else 0
