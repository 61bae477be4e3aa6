"""A tiny clip store with LVU-format labels and planted structure, and a tiny exported LMP."""

import numpy as np
import pytest

DIMS = {"video": 12, "audio": 8, "text": 10}
N_CLIPS = 90


def write_clip_store(path, n_clips=N_CLIPS, seed=0):
    """Clips whose mean video feature carries a genre centre (4 classes) and a view count."""
    from lmp_data import FeatureStore

    rng = np.random.default_rng(seed)
    enc = {m: {"name": f"tiny-{m}", "dim": d} for m, d in DIMS.items()}
    store = FeatureStore.create(path, enc, dtype="float32")
    centres = np.random.default_rng(99).normal(size=(4, DIMS["video"])) * 2.0
    genre = rng.integers(0, 4, n_clips)
    ids = [f"clip{i:03d}" for i in range(n_clips)]
    for i, cid in enumerate(ids):
        n = int(rng.integers(3, 14))
        t = np.cumsum(rng.uniform(1, 3, n + 1))
        shots = np.stack([t[:-1], t[1:]], 1)
        nt = int(rng.integers(0, 2 * n))
        a = np.sort(rng.uniform(t[0], t[-1] - 0.5, nt))
        store.write_movie(
            cid,
            shots=shots,
            video=rng.normal(size=(n, DIMS["video"])) + centres[genre[i]],
            audio=rng.normal(size=(n, DIMS["audio"])),
            text=rng.normal(size=(nt, DIMS["text"])),
            text_spans=np.stack([a, a + 0.5], 1),
        )
    return store, ids, genre


def write_lvu_labels(root, ids, genre, views, split_sizes=(50, 20, 20), extra_missing=("gone01",)):
    """genre and view_count in LVU's space-separated format; `extra_missing` clips are not in the store."""
    tr, va, _ = split_sizes
    split = ["train"] * tr + ["val"] * va + ["test"] * (len(ids) - tr - va)
    for task, header in (
        ("genre", "class_id class_name youtube_id imdb_id"),
        ("view_count", "view_count youtube_id imdb_id"),
    ):
        (root / task).mkdir(parents=True)
        for s in ("train", "val", "test"):
            rows = [
                f"{genre[i]} g{genre[i]} {c} tt{i:07d}"
                if task == "genre"
                else f"{int(views[i])} {c} tt{i:07d}"
                for i, c in enumerate(ids)
                if split[i] == s
            ]
            if s == "test":
                rows += [("0 g0 " if task == "genre" else "1000 ") + f"{m} tt9999999" for m in extra_missing]
            (root / task / f"{s}.csv").write_text(header + "\n" + "\n".join(rows) + "\n")


@pytest.fixture(scope="session")
def tiny_cfg():
    """A tiny `ModelConfig` (d=16, one layer)."""
    return tiny_model_config()


def tiny_model_config():
    from lmp_model.config import CrossModalConfig, EncoderConfig, ModelConfig

    return ModelConfig(
        encoder=EncoderConfig(d=16, layers=1, heads=2, ff_mult=2),
        cross=CrossModalConfig(layers=1, heads=2, ff_mult=2),
        max_shots=16,
        max_tokens=64,
    )


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory):
    """(store path, labels dir, clip ids, genre) of the tiny benchmark."""
    root = tmp_path_factory.mktemp("bench")
    store, ids, genre = write_clip_store(root / "clips.zarr")
    views = np.exp(11.76 + np.random.default_rng(5).normal(size=len(ids)))
    write_lvu_labels(root / "lvu", ids, genre, views)
    return root / "clips.zarr", root / "lvu", ids, genre
