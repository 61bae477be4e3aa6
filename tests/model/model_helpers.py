"""Small LMP configs and window batches shared by the model tests."""

from __future__ import annotations

from pathlib import Path

import torch

from lmp_model import LMP, ModelConfig, load_model_config

CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "configs" / "model"
DIMS = {"video": 20, "audio": 12, "text": 16}


def tiny(*overrides: str) -> ModelConfig:
    return load_model_config(CONFIGS / "tiny.yaml", list(overrides))


def make_batch(n=4, k=8, t=12, seed=0):
    """Synthetic window batch: one window with padding past shot 5, one without text."""
    g = torch.Generator().manual_seed(seed)
    shot_mask = torch.ones(n, k, dtype=torch.bool)
    shot_mask[1, 5:] = False
    text_mask = torch.ones(n, t, dtype=torch.bool)
    text_mask[0, 9:] = False
    text_mask[2] = False
    token_shot = torch.zeros(n, t, k, dtype=torch.bool)
    for j in range(n):  # token c spans shot c * k // t (and the next one for every third token)
        for c in range(t):
            token_shot[j, c, c * k // t] = True
            if c % 3 == 0:
                token_shot[j, c, min(k - 1, c * k // t + 1)] = True
    token_shot &= text_mask.unsqueeze(-1)
    return {
        "video": torch.randn(n, k, DIMS["video"], generator=g) * shot_mask.unsqueeze(-1),
        "audio": torch.randn(n, k, DIMS["audio"], generator=g) * shot_mask.unsqueeze(-1),
        "shot_mask": shot_mask,
        "text": torch.randn(n, t, DIMS["text"], generator=g) * text_mask.unsqueeze(-1),
        "text_mask": text_mask,
        "token_shot": token_shot,
        "start": torch.zeros(n, dtype=torch.int64),
        "movie": [f"m{j // 2}" for j in range(n)],  # two windows per movie (data.views = 2)
    }


def build(cfg=None, seed=0):
    torch.manual_seed(seed)
    return LMP(cfg or tiny(), DIMS)
