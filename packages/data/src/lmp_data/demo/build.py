"""`make_demo`: generate the demo benchmark and publish it atomically under OUT.

Layout of OUT (see docs/demo_benchmark.md)::

    OUT/demo.json                 format, the DemoConfig it was built from, array checksums, counts
    OUT/pretrain.zarr/            FeatureStore: unlabeled long movies (ids = IMDb ids, manifest metadata)
    OUT/eval.zarr/                FeatureStore: clips clip00000... cut from held-out movies
    OUT/lvu/{task}/{split}.csv    LVU-format labels for the nine tasks
    OUT/transfer/                 shot_attributes.parquet, descriptions.npz, README.md
    OUT/truth/                    clips.parquet (every label of every clip), clip_latents.npz and
                                  clip_setups.npz (the true content latent and setup sequences, for oracles)

Everything is written into a sibling temporary folder and renamed to OUT at the end, so OUT is either
absent or a complete demo; `demo.json` inside it is what marks a complete build. A complete demo built by
an older generator (`demo.json` format version or config `generator_version` below the current ones) is
stale: it is rebuilt and replaced, never reused, and never refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmp_data.files import atomic_write

from .config import GENERATOR_VERSION, DemoConfig
from .generate import CAMERA_MOTIONS, SHOT_SIZES, Demo, generate
from .labels import write_lvu

FORMAT, VERSION = "lmp-demo", 2
"""VERSION 2: generator version 2 (setups); adds truth/clip_setups.npz."""


@dataclass(frozen=True)
class DemoPaths:
    """Where a built demo's parts are."""

    root: Path
    pretrain_store: Path
    eval_store: Path
    lvu_dir: Path
    transfer_dir: Path
    truth_dir: Path

    @classmethod
    def under(cls, root: str | os.PathLike) -> DemoPaths:
        r = Path(root)
        return cls(r, r / "pretrain.zarr", r / "eval.zarr", r / "lvu", r / "transfer", r / "truth")

    def as_dict(self) -> dict[str, Path]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def info(self) -> dict[str, Any]:
        """The parsed `demo.json`."""
        return json.loads((self.root / "demo.json").read_text())


class DemoError(RuntimeError):
    """OUT cannot hold the requested demo (it holds something else)."""


def make_demo(
    out_dir: str | os.PathLike,
    seed: int = 0,
    size: str = "default",
    *,
    overwrite: bool = False,
    **overrides: Any,
) -> DemoPaths:
    """Build the demo benchmark for `DemoConfig.preset(size, seed=seed, **overrides)` into `out_dir`.

    Idempotent: if `out_dir` already holds a complete demo of the same config, it is returned untouched.
    A demo built by an older generator is stale and is rebuilt in place (as with `overwrite=True`).
    If it holds a different demo, `DemoError` unless `overwrite=True`; anything that is not a demo (no
    `demo.json` of this format) is never replaced, `DemoError` names what is there. Concurrent
    callers are safe: each builds privately, the first rename wins, the others reuse its result.
    """
    cfg = DemoConfig.preset(size, seed=seed, **overrides)
    out = Path(out_dir).absolute()
    paths = DemoPaths.under(out)
    if _matches(out, cfg):
        return paths
    if _stale(out):
        overwrite = True  # our own demo from an older generator: rebuild it rather than reuse or refuse
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise DemoError(
                f"demo {out}: exists but does not hold a complete demo of this config (size={size}, "
                f"seed={seed}, overrides={overrides}); pass overwrite=True (--overwrite) or choose another folder"
            )
        _check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-{out.name}.{uuid.uuid4().hex[:8]}"
    try:
        build_into(tmp, cfg, size=size)
        _publish(tmp, out, cfg, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return paths


def _matches(out: Path, cfg: DemoConfig) -> bool:
    try:
        info = json.loads((out / "demo.json").read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return False
    return (
        info.get("format") == FORMAT
        and info.get("version") == VERSION
        and info.get("config") == _jsonable(cfg.to_dict())
    )


def _check_replaceable(out: Path) -> None:
    """`overwrite` replaces only a demo: a folder whose `demo.json` has this module's format."""
    try:
        fmt = json.loads((out / "demo.json").read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        fmt = None
    if fmt != FORMAT:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir())
        shown = ", ".join(names[:8]) + (f", ... ({len(names)} entries)" if len(names) > 8 else "")
        raise DemoError(
            f"demo {out}: refusing to overwrite, it is not a demo (no demo.json of format {FORMAT!r}); "
            f"it holds: {shown}. Choose another folder, or remove it yourself"
        )


def _stale(out: Path) -> bool:
    """OUT holds a complete demo made by an older generator (its data no longer match any current config)."""
    try:
        info = json.loads((out / "demo.json").read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return False
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        return False
    gen = (info.get("config") or {}).get("generator_version", 1)
    return int(info.get("version", 0)) < VERSION or int(gen) < GENERATOR_VERSION


def _publish(tmp: Path, out: Path, cfg: DemoConfig, overwrite: bool) -> None:
    try:
        os.rename(tmp, out)  # atomic; succeeds onto an absent or empty folder
        return
    except OSError:
        if _matches(out, cfg):  # a concurrent builder won the race with the same demo
            return
        if not overwrite:
            raise DemoError(f"demo {out}: appeared while building and holds a different demo") from None
        _check_replaceable(out)
    trash = out.parent / f".trash-{out.name}.{uuid.uuid4().hex[:8]}"
    os.rename(out, trash)
    try:
        os.rename(tmp, out)
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def build_into(root: Path, cfg: DemoConfig, size: str = "", write_threads: int = 4) -> dict[str, Any]:
    """Generate and write every part of the demo into the (new) folder `root`; returns `demo.json`'s dict."""
    from lmp_data.store import FeatureStore

    t0 = time.perf_counter()
    demo = generate(cfg)
    t_gen = time.perf_counter() - t0
    p = DemoPaths.under(root)
    root.mkdir(parents=True)
    checksums = {}
    for path, movies in ((p.pretrain_store, demo.pretrain), (p.eval_store, demo.clips)):
        store = FeatureStore.create(path, encoders=cfg.encoders())
        h = hashlib.sha256()
        with ThreadPoolExecutor(write_threads) as pool:  # writers of different movies need no lock
            list(
                pool.map(
                    lambda m, s=store: s.write_movie(m.movie_id, **m.store_arrays(), meta=m.meta), movies
                )
            )
        for m in sorted(movies, key=lambda m: m.movie_id):
            _update(h, m.movie_id, m.store_arrays(), store.dtype)
        checksums[path.name] = h.hexdigest()
    counts = write_lvu(demo, p.lvu_dir)
    write_transfer(demo, p.transfer_dir)
    write_truth(demo, p.truth_dir)
    info = {
        "format": FORMAT,
        "version": VERSION,
        "generator_version": cfg.generator_version,
        "size": size,
        "config": _jsonable(cfg.to_dict()),
        "checksums": checksums,
        "counts": {
            "pretrain_movies": len(demo.pretrain),
            "pretrain_shots": int(sum(len(m.shots) for m in demo.pretrain)),
            "pretrain_tokens": int(sum(len(m.text) for m in demo.pretrain)),
            "clips": len(demo.clips),
            "clip_shots": int(sum(len(c.shots) for c in demo.clips)),
            "lvu_rows": counts,
        },
        "seconds": {"generate": round(t_gen, 2), "total": round(time.perf_counter() - t0, 2)},
    }
    atomic_write(root / "demo.json", json.dumps(info, indent=2))  # last: marks the build complete
    return info


def store_checksum(store: Any, dtype: Any = None) -> str:
    """sha256 over every movie's arrays of a FeatureStore (id order); equals `demo.json`'s checksum."""
    h = hashlib.sha256()
    for mid in sorted(store.movies()["movie_id"].to_list()):
        _update(h, mid, store.read_movie(mid), dtype or store.dtype)
    return h.hexdigest()


def _update(h: Any, movie_id: str, arrays: dict[str, np.ndarray], dtype: Any) -> None:
    h.update(movie_id.encode())
    for name in ("shots", "video", "audio", "text", "text_spans"):
        a = np.asarray(arrays[name])
        a = a.astype(np.float64 if name in ("shots", "text_spans") else dtype)
        h.update(name.encode() + str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())


def write_transfer(demo: Demo, out: Path) -> None:
    """Transfer-task labels (formats in `TRANSFER_README`)."""
    import polars as pl

    out.mkdir(parents=True, exist_ok=True)
    split = {r["clip_id"]: r["split"] for r in demo.clip_table}
    rows = {k: [] for k in ("clip_id", "shot_index", "shot_size", "shot_size_name", "camera_motion",
                            "camera_motion_name", "split")}  # fmt: skip
    for c in demo.clips:
        n = len(c.shots)
        rows["clip_id"] += [c.movie_id] * n
        rows["shot_index"] += list(range(n))
        rows["shot_size"] += c.shot_size.tolist()
        rows["shot_size_name"] += [SHOT_SIZES[i] for i in c.shot_size]
        rows["camera_motion"] += c.camera_motion.tolist()
        rows["camera_motion_name"] += [CAMERA_MOTIONS[i] for i in c.camera_motion]
        rows["split"] += [split[c.movie_id]] * n
    pl.DataFrame(rows).with_columns(
        pl.col("shot_index", "shot_size", "camera_motion").cast(pl.Int32)
    ).write_parquet(out / "shot_attributes.parquet")
    d = demo.descriptions
    np.savez(
        out / "descriptions.npz",
        clip_id=d["clip_id"].astype("U16"),
        split=np.array([split[c] for c in d["clip_id"]], dtype="U5"),
        offsets=d["offsets"],
        tokens=d["tokens"],
    )
    (out / "README.md").write_text(TRANSFER_README)


def write_truth(demo: Demo, out: Path) -> None:
    """Ground truth for analysis and oracle baselines (never needed by the LVU protocol itself)."""
    import polars as pl

    out.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(demo.clip_table).write_parquet(out / "clips.parquet")
    clip_ids = np.array([c.movie_id for c in demo.clips], dtype="U16")
    np.savez(
        out / "clip_latents.npz",
        clip_id=clip_ids,
        latent=np.stack([c.truth_latent.mean(0) for c in demo.clips]).astype(np.float32),
    )
    np.savez(  # clip i's shots are rows offsets[i]:offsets[i+1] (= the clip's shot order in eval.zarr)
        out / "clip_setups.npz",
        clip_id=clip_ids,
        offsets=np.r_[0, np.cumsum([len(c.setup) for c in demo.clips])].astype(np.int64),
        video_setup=np.concatenate([c.setup for c in demo.clips]).astype(np.int16),
        audio_setup=np.concatenate([c.audio_setup for c in demo.clips]).astype(np.int16),
        scene=np.concatenate([c.scene_of_shot for c in demo.clips]).astype(np.int16),
    )


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d))


TRANSFER_README = """\
# Transfer-task labels (demo benchmark)

Bring real data in the same formats. Clip ids refer to movies in the evaluation store (`eval.zarr`);
shot indices are row indices of that clip's shots in the store. `split` is train / val / test (by source
movie, the same as the LVU files).

## shot_attributes.parquet -- per-shot attribute classification (AVE-style)
One row per shot of every clip: `clip_id` (str), `shot_index` (int32), `shot_size` (int32, 0-4:
extreme_wide, wide, medium, close_up, extreme_close_up), `shot_size_name` (str), `camera_motion`
(int32, 0-3: static, pan, tilt, handheld), `camera_motion_name` (str), `split` (str).
Metric: average per-class accuracy of a linear layer on each shot's contextual feature.

## descriptions.npz -- description -> scene retrieval
Description i is the language-token sequence `tokens[offsets[i]:offsets[i+1]]` ([n_i, Dl] float32, the
same text encoder space as the store's `text`) and describes the main scene of clip `clip_id[i]`;
`split[i]` is that clip's split. Metrics: R@1/5/10, median and mean rank of the right clip.

## No labels needed
- Scene <-> soundtrack retrieval: a clip's video and its own audio are the positive pair.
- Shot sequence ordering (3 consecutive shots shuffled, 6-way) and next-shot selection (4 context shots,
  the true next shot among 5 candidates from the same clip): derived from the shot order in the store.
"""
