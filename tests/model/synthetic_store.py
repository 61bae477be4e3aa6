"""The small synthetic store the pretraining tests train on (shared by test_pretrain*.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_store(path: Path, movies: int = 6, seed: int = 0, dims=(24, 16, 16)) -> Path:
    """Movies whose video, audio and text are noisy views of one slowly drifting latent per shot."""
    from lmp_data import FeatureStore

    rng = np.random.default_rng(seed)
    enc = {m: {"name": f"synthetic-{m}", "dim": d} for m, d in zip(("video", "audio", "text"), dims)}
    store = FeatureStore.create(path, enc, dtype="float32")
    proj = [rng.normal(size=(8, d)) for d in dims]
    for i in range(movies):
        n = int(rng.integers(30, 60))
        z = np.cumsum(rng.normal(size=(n, 8)), 0) * 0.3 + rng.normal(size=(n, 8))
        ends = np.cumsum(rng.uniform(1, 4, n).round(2)).round(2)
        starts = np.concatenate([[0.0], ends[:-1]])
        tok_shot = np.sort(rng.integers(0, n, 2 * n))
        a = starts[tok_shot] + rng.uniform(0, 0.5, 2 * n) * (ends - starts)[tok_shot]
        store.write_movie(
            f"m{i:02d}",
            shots=np.stack([starts, ends], 1),
            video=(z @ proj[0] + 0.3 * rng.normal(size=(n, dims[0]))).astype("float32"),
            audio=(z @ proj[1] + 0.3 * rng.normal(size=(n, dims[1]))).astype("float32"),
            text=((z[tok_shot] + 0.3 * rng.normal(size=(2 * n, 8))) @ proj[2]).astype("float32"),
            text_spans=np.stack([a, a + 0.3 * (ends - starts)[tok_shot]], 1),
            meta={"split": "train" if i < movies - 1 else "val"},
        )
    return path
