"""`lmp-data demo OUT --seed S [--size tiny|small|default|large] [--movies N] [--set key=value ...]`."""

from __future__ import annotations

import argparse
from typing import Any

from .config import SIZES


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="generate the demo benchmark (pretraining store, clip store, LVU labels, transfer labels)",
        description=(
            "Generate the feature-level demo benchmark into OUT: OUT/pretrain.zarr (unlabeled long movies), "
            "OUT/eval.zarr (clips), OUT/lvu/{task}/{train,val,test}.csv, OUT/transfer/. Seeded and "
            "deterministic; an OUT that already holds the same demo is reused. See docs/demo_benchmark.md."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("out", metavar="OUT", help="output folder (created atomically)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the generative model")
    p.add_argument("--size", choices=SIZES, default="default", help="size preset")
    p.add_argument(
        "--movies", type=int, default=None, help="number of pretraining movies (overrides the preset)"
    )
    p.add_argument("--eval-movies", type=int, default=None, help="number of held-out movies cut into clips")
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="any other DemoConfig field, e.g. video_dim=256 shots_per_movie=[100,200] agree_prob=0.9",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an OUT that holds a different demo")
    p.add_argument(
        "--media",
        action="store_true",
        help="also write real video files for the demo movies (lmp_data.ingest.media.write_demo_media)",
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`["video_dim=256", "shots_per_movie=[100,200]"]` -> dict, typed and checked against `DemoConfig`."""
    from omegaconf import OmegaConf

    from .config import DemoConfig

    if not items:
        return {}
    for it in items:
        if "=" not in it:
            raise SystemExit(f"lmp-data demo --set: expected KEY=VALUE, got {it!r}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(DemoConfig), OmegaConf.from_dotlist(list(items)))
    except Exception as e:  # unknown key or wrong type: OmegaConf names it
        raise SystemExit(f"lmp-data demo --set: {e}") from e
    keys = {it.split("=", 1)[0].split(".")[0] for it in items}
    full = OmegaConf.to_container(merged)
    return {k: tuple(v) if isinstance(v, list) else v for k, v in full.items() if k in keys}  # type: ignore[union-attr]


def run(args: argparse.Namespace) -> int:
    import time

    from . import make_demo

    overrides = parse_overrides(args.set)
    if args.movies is not None:
        overrides["pretrain_movies"] = args.movies
    if args.eval_movies is not None:
        overrides["eval_movies"] = args.eval_movies
    t = time.perf_counter()
    paths = make_demo(args.out, seed=args.seed, size=args.size, overwrite=args.overwrite, **overrides)
    if not args.quiet:
        print(f"demo ({args.size}, seed {args.seed}) ready in {time.perf_counter() - t:.1f} s:")
        for name, path in paths.as_dict().items():
            print(f"  {name:15s} {path}")
    if args.media:
        from lmp_data.ingest.media import write_demo_media  # owned by the ingest module

        write_demo_media(paths, seed=args.seed)
    return 0
