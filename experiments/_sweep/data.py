"""The stores a sweep reads: given on the command line, else the generated demo benchmark.

Resolved once on the driver (the demo is built there on first use, before any trial starts), so
concurrent trials never race to build it; trials get absolute paths.
"""

from __future__ import annotations

from pathlib import Path

from .config import SweepDataConfig, repo_path


def resolve_data(cfg: SweepDataConfig) -> dict[str, str]:
    """{"store", "eval_store", "labels"} (+ "transfer", the transfer-task labels, when known) as absolute
    paths; builds the demo data if a store is not given."""
    given = {"store": cfg.store, "eval_store": cfg.eval_store, "labels": cfg.labels}
    if all(given.values()):
        out = {k: str(Path(v).expanduser().resolve()) for k, v in given.items()}
        if cfg.transfer_labels:
            out["transfer"] = str(Path(cfg.transfer_labels).expanduser().resolve())
    elif any(given.values()):
        missing = [f"--{k.replace('_', '-')}" for k, v in given.items() if not v]
        raise SystemExit(
            f"give all of --store, --eval-store and --labels, or none (demo data); missing {', '.join(missing)}"
        )
    else:
        from lmp_data.demo import demo_folder, make_demo

        demo_dir = demo_folder(cfg.demo_size, cfg.demo_seed, repo_path(cfg.demo_dir))
        print(f"[sweep] demo data under {demo_dir} (built on first use)", flush=True)
        paths = make_demo(demo_dir, seed=cfg.demo_seed, size=cfg.demo_size)
        out = {
            "store": str(Path(paths.pretrain_store).resolve()),
            "eval_store": str(Path(paths.eval_store).resolve()),
            "labels": str(Path(paths.lvu_dir).resolve()),
            "transfer": str(Path(cfg.transfer_labels or paths.transfer_dir).expanduser().resolve()),
        }
    for key, path in out.items():
        if not Path(path).exists():
            raise SystemExit(f"sweep data: {key} {path} does not exist")
    return out
