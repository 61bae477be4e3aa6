"""Checkpoint folders of a run: `<run_dir>/checkpoints/step00000012/` (DeepSpeed's files + our marker).

A checkpoint counts only once rank 0 has written `lmp_complete.json` in it after every rank saved; the
`latest` file (DeepSpeed's name and format: one line, the tag) is replaced atomically after that. So a
process killed mid-save leaves an incomplete folder that resume ignores and deletes, never a visible
half-written checkpoint.

The marker is also the checkpoint's manifest: the size and sha256 of every file of the folder, computed
by rank 0 once all ranks saved, and written atomically last. `resume_tag` trusts a checkpoint only if
its files still match (a truncated or bit-flipped file, a deleted shard fail), falls back to the newest
intact one with a warning naming the bad folder, and moves the bad folder aside as
`corrupt-<tag>-<time>` (kept for inspection; never listed, resumed or pruned). Checkpoints written
before manifests existed (no "files" in the marker) are trusted as before.

Loading never runs code from a checkpoint: DeepSpeed's own engine unpickles with
`torch.load(weights_only=False)`; `WeightsOnlyCheckpointEngine` (installed on every engine by the
trainer) loads every file of a checkpoint with `weights_only=True` and allows exactly the globals our
checkpoints hold (`checkpoint_globals`, measured on ZeRO 0-3, fp32 and bf16); anything else is refused
with a `CheckpointError` naming the file, before the object is built.

`Checkpointer` is the trainer's side of all this: which checkpoint to resume, save and load (the engine).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import random
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmp_data.files import atomic_write  # also `ckpt.atomic_write` for the trainer

COMPLETE = "lmp_complete.json"
LATEST = "latest"
CORRUPT_PREFIX = "corrupt-"

log = logging.getLogger("lmp_model.pretrain")


class CheckpointError(RuntimeError):
    """No checkpoint of the run can be trusted (the message names each folder and what is wrong)."""


def checkpoint_globals() -> list[Any]:
    """The non-tensor classes and functions DeepSpeed's checkpoint files of our runs hold: numpy arrays
    (the numpy RNG state in the client state), and in ZeRO optimizer states DeepSpeed's loss scaler,
    ZeRO stage enum and fragment addresses."""
    import numpy as np
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    uint32 = type(np.dtype(np.uint32))  # numpy.dtypes.UInt32DType: the MT19937 key array
    return [
        np._core.multiarray._reconstruct,
        np.ndarray,
        np.dtype,
        uint32,
        LossScaler,
        ZeroStageEnum,
        fragment_address,
    ]


def safe_load(path: str | os.PathLike, map_location: Any = None) -> Any:
    """`torch.load(weights_only=True)` with `checkpoint_globals` allowed; `CheckpointError` naming the file
    if it holds anything else (a crafted pickle is refused before it can run)."""
    import pickle

    with torch.serialization.safe_globals(checkpoint_globals()):
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as e:
            text = str(e)
            why = text.split("WeightsUnpickler error:", 1)[-1].strip().split("\n")[0][:300]
            raise CheckpointError(
                f"checkpoint file {path} holds objects a checkpoint of lmp-pretrain never holds; not loaded "
                f"(weights_only): {why}"
            ) from e


@functools.cache
def _weights_only_engine_class() -> type:
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    class WeightsOnlyCheckpointEngine(TorchCheckpointEngine):
        """DeepSpeed's TorchCheckpointEngine, loading with `safe_load` (weights_only) instead of pickle."""

        def load(self, path: str, map_location: Any = None) -> Any:
            return safe_load(path, map_location)

    return WeightsOnlyCheckpointEngine


def weights_only_engine(engine: Any) -> Any:
    """Make `engine.checkpoint_engine` (DeepSpeed's TorchCheckpointEngine) load with `safe_load`; saving and
    its settings are unchanged. Every file `engine.load_checkpoint` reads goes through it. Returns the
    engine."""
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    current = engine.checkpoint_engine
    if type(current) is not TorchCheckpointEngine:
        raise RuntimeError(
            f"unexpected DeepSpeed checkpoint engine {type(current).__name__}: cannot load safely"
        )
    current.__class__ = _weights_only_engine_class()
    return engine


def tag_for(step: int) -> str:
    return f"step{step:08d}"


def complete_tags(ckpt_dir: Path) -> list[str]:
    """Tags of complete checkpoints, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    return sorted(
        p.name
        for p in ckpt_dir.iterdir()
        if p.is_dir() and p.name.startswith("step") and (p / COMPLETE).is_file()
    )


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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """{relative path: {"size", "sha256"}} of every regular file under `folder` except the marker."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.is_symlink() and p.name != COMPLETE and not p.name.startswith(".tmp-"):
            out[p.relative_to(folder).as_posix()] = {"size": p.stat().st_size, "sha256": _sha256(p)}
    return out


def verify(ckpt_dir: Path, tag: str) -> str | None:
    """None if checkpoint `tag` is intact (its files match the manifest in its marker), else why not."""
    folder = ckpt_dir / tag
    try:
        info = json.loads((folder / COMPLETE).read_text())
    except (OSError, ValueError) as e:
        return f"marker {COMPLETE} unreadable ({e})"
    files = info.get("files") if isinstance(info, dict) else None
    if files is None:
        return None  # written before manifests existed: trusted as before
    for rel, want in files.items():
        p = folder / rel
        try:
            size = p.stat().st_size
        except OSError:
            return f"{rel} is missing"
        if size != want["size"]:
            return f"{rel} has {size} bytes, {want['size']} were saved"
        if _sha256(p) != want["sha256"]:
            return f"{rel} does not match the sha256 recorded at save time"
    return None


def resume_tag(ckpt_dir: Path) -> str | None:
    """The newest intact checkpoint to resume from (None: there is none). Corrupt newer ones are named
    in a warning and moved aside; `CheckpointError` if complete checkpoints exist but none is intact."""
    first = latest_tag(ckpt_dir)
    tags = complete_tags(ckpt_dir)[::-1]
    if first is not None:
        tags = [first, *[t for t in tags if t != first]]
    bad = []
    for tag in tags:
        why = verify(ckpt_dir, tag)
        if why is None:
            if bad:
                log.warning("resuming from the newest intact checkpoint %s instead", ckpt_dir / tag)
                atomic_write(ckpt_dir / LATEST, tag)
            return tag
        aside = ckpt_dir / f"{CORRUPT_PREFIX}{tag}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
        log.warning(
            "checkpoint %s is corrupt (%s): not resuming from it, moved to %s", ckpt_dir / tag, why, aside
        )
        os.rename(ckpt_dir / tag, aside)
        bad.append(f"{tag} ({why}; moved to {aside.name})")
    if bad:
        raise CheckpointError(f"{ckpt_dir}: no intact checkpoint to resume from: " + "; ".join(bad))
    return None


def last_run_id(ckpt_dir: Path) -> str | None:
    """The MLflow run id recorded in the newest readable marker (also in moved-aside corrupt folders)."""
    if not ckpt_dir.is_dir():
        return None
    for p in sorted(ckpt_dir.iterdir(), key=lambda p: p.name.removeprefix(CORRUPT_PREFIX), reverse=True):
        try:
            rid = json.loads((p / COMPLETE).read_text()).get("mlflow_run_id")
        except (OSError, ValueError, AttributeError):
            continue
        if rid:
            return str(rid)
    return None


def mark_complete(ckpt_dir: Path, tag: str, info: dict[str, Any], keep_last: int) -> None:
    """Rank 0, after every rank saved: marker (with the manifest of the folder's files), then `latest`,
    then prune old checkpoints."""
    info = {**info, "files": file_manifest(ckpt_dir / tag)}
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


class Checkpointer:
    """A run's checkpoints through its DeepSpeed engine: which one to resume (`prepare`), `save` with the
    client state (step, data position, every rank's RNG states, MLflow run id, loss history, config), `load`.
    `last_good` is the newest checkpoint this process saved or loaded (named when a run stops)."""

    def __init__(self, ckpt_dir: Path, cfg: Any, ctx: Any, resume: bool):
        self.ckpt_dir, self.cfg, self.ctx, self.resume = ckpt_dir, cfg, ctx, resume
        self.last_good: str | None = None

    def prepare(self) -> str | None:
        """Create the folder; the checkpoint tag to resume from (None: fresh start), the same on every rank.
        Without `resume` an existing checkpoint is an error (`FileExistsError`)."""
        from lmp_model.pretrain.dist import broadcast

        tag = None
        if self.ctx.is_main:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            removed = remove_incomplete(self.ckpt_dir)
            if removed:
                log.warning("removed incomplete checkpoints %s in %s", removed, self.ckpt_dir)
            try:  # resume: the newest intact checkpoint (corrupt newer ones are named and moved aside)
                tag = resume_tag(self.ckpt_dir) if self.resume else latest_tag(self.ckpt_dir)
            except CheckpointError as e:
                tag = f"?{e}"
            if tag is not None and not self.resume:
                tag = f"!{tag}"
        tag = broadcast(self.ctx, tag)
        if tag is not None and tag.startswith("?"):
            raise CheckpointError(tag[1:])
        if tag is not None and tag.startswith("!"):
            raise FileExistsError(
                f"{self.ckpt_dir} already holds checkpoint {tag[1:]}: pass --resume (resume=True) to continue "
                f"it, or choose another `name` / `train.out_dir`"
            )
        return tag

    def save(self, engine: Any, step: int, micro_step: int, run_id: str | None, history: list) -> None:
        """Collective: every rank saves its part, then rank 0 marks the checkpoint complete."""
        from lmp_model.pretrain.config import config_to_dict, config_to_yaml
        from lmp_model.pretrain.dist import all_gather, barrier

        tag, world = tag_for(step), self.ctx.world
        client = {
            "step": step,
            "micro_step": micro_step,
            "world": world,
            "rng": all_gather(self.ctx, rng_state()),
            "mlflow_run_id": run_id,
            "history": history,
            "config": config_to_dict(self.cfg),
        }
        engine.save_checkpoint(str(self.ckpt_dir), tag=tag, client_state=client, save_latest=False)
        barrier(self.ctx)
        if self.ctx.is_main:
            (self.ckpt_dir / tag / "pretrain.yaml").write_text(config_to_yaml(self.cfg))
            info = {"step": step, "micro_step": micro_step, "world": world, "time": time.time()}
            info["mlflow_run_id"] = run_id  # ends the run as FAILED if no checkpoint is intact
            mark_complete(self.ckpt_dir, tag, info, self.cfg.train.keep_last)
        barrier(self.ctx)
        self.last_good = str(self.ckpt_dir / tag)

    def load(self, engine: Any, tag: str) -> tuple[int, str | None, list]:
        """Restore checkpoint `tag` into `engine` and this rank's RNGs: (step, MLflow run id, loss history).
        The lr of the next step comes from the current schedule (`train.steps` may have grown)."""
        path, client = engine.load_checkpoint(str(self.ckpt_dir), tag=tag)
        if path is None or client is None:
            raise RuntimeError(f"checkpoint {self.ckpt_dir / tag}: DeepSpeed could not load it")
        if client["world"] != self.ctx.world:
            raise ValueError(
                f"checkpoint {self.ckpt_dir / tag} was written by {client['world']} ranks, this run has "
                f"{self.ctx.world}: resume with the same world size"
            )
        set_rng_state(client["rng"][self.ctx.rank])
        sched = engine.lr_scheduler
        for group, base, lam in zip(sched.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas):
            group["lr"] = base * lam(sched.last_epoch)
        self.last_good = str(self.ckpt_dir / tag)
        log.info("resumed from %s (step %d)", self.ckpt_dir / tag, client["step"])
        return int(client["step"]), client.get("mlflow_run_id"), list(client.get("history", []))
