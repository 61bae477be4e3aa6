"""Checkpoint folders of a run: `<run_dir>/checkpoints/step00000012/` (DeepSpeed's files + our marker).

A checkpoint counts only once rank 0 has written `lmp_complete.json` in it after every rank saved; the
`latest` file (DeepSpeed's name and format: one line, the tag) is replaced atomically after that. So a
process killed mid-save leaves an incomplete folder that resume ignores and deletes, never a visible
half-written checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

COMPLETE = "lmp_complete.json"
LATEST = "latest"


def tag_for(step: int) -> str:
    return f"step{step:08d}"


def atomic_write(path: Path, text: str) -> None:
    tmp = path.parent / f".tmp-{path.name}.{uuid.uuid4().hex[:8]}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def complete_tags(ckpt_dir: Path) -> list[str]:
    """Tags of complete checkpoints, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    return sorted(p.name for p in ckpt_dir.iterdir() if p.is_dir() and (p / COMPLETE).is_file())


def latest_tag(ckpt_dir: Path) -> str | None:
    """The newest complete checkpoint (the `latest` file if it names a complete one)."""
    f = ckpt_dir / LATEST
    if f.is_file():
        tag = f.read_text().strip()
        if (ckpt_dir / tag / COMPLETE).is_file():
            return tag
    tags = complete_tags(ckpt_dir)
    return tags[-1] if tags else None


def remove_incomplete(ckpt_dir: Path) -> list[str]:
    """Delete checkpoint folders without the completion marker (left by a kill mid-save)."""
    removed = []
    if ckpt_dir.is_dir():
        for p in ckpt_dir.iterdir():
            if p.is_dir() and p.name.startswith("step") and not (p / COMPLETE).is_file():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p.name)
    return removed


def mark_complete(ckpt_dir: Path, tag: str, info: dict[str, Any], keep_last: int) -> None:
    """Rank 0, after every rank saved: marker, then `latest`, then prune old checkpoints."""
    atomic_write(ckpt_dir / tag / COMPLETE, json.dumps(info, indent=2, default=str))
    atomic_write(ckpt_dir / LATEST, tag)
    if keep_last > 0:
        for old in complete_tags(ckpt_dir)[:-keep_last]:
            if old != tag:
                shutil.rmtree(ckpt_dir / old, ignore_errors=True)


def rng_state() -> dict[str, Any]:
    """Every RNG a training step draws from (torch CPU/CUDA, numpy, python)."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
