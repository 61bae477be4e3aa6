"""What every base encoder provides, and the shared helpers: weight loading (safe) and checksums.

Encoders are frozen and run under `torch.inference_mode()`. Each exposes `name`, `dim` and `checksum`
(sha256 of its weight files, or of its exact recipe when it has no weights) for the store's record.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from lmp_data.ingest.errors import WeightsError
from lmp_data.ingest.language import TokenizedCues


class VideoEncoder(Protocol):
    name: str
    dim: int
    checksum: str
    frames_per_shot: int  # frames sampled evenly over each shot
    resize: int  # short side the frames are resized to ...
    crop: int  # ... before a centre crop of crop x crop

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [B, F, crop, crop, 3] -> float32 [B, dim] (on CPU)."""


class AudioEncoder(Protocol):
    name: str
    dim: int
    checksum: str
    sample_rate: int

    def encode(self, segments: list[np.ndarray]) -> np.ndarray:
        """One mono float32 waveform per shot -> float32 [B, dim]."""


class TextEncoder(Protocol):
    name: str
    dim: int
    checksum: str
    tokenizer: object  # a Hugging Face tokenizer
    max_length: int

    def encode(self, cues: TokenizedCues) -> tuple[np.ndarray, np.ndarray]:
        """Tokenized cues -> token states float32 [T, dim] and their time spans float64 [T, 2]."""


def resolve_device(device: str = "auto") -> torch.device:
    """ "auto" -> the GPU when there is one, else the CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def require_path(path: str | Path | None, what: str, folder: bool = False) -> Path:
    """The weights path named in the config, or a `WeightsError` naming it (and what it should hold)."""
    if path is None or str(path) == "":
        raise WeightsError(None, f"no weights path given for {what}: set it in the encoders config")
    p = Path(path).expanduser()
    if folder and not p.is_dir():
        raise WeightsError(p, f"weights folder for {what} not found (expected a local folder)")
    if not folder and not p.is_file():
        raise WeightsError(
            p, f"weights file for {what} not found (expected a local .pt/.pth/.safetensors file)"
        )
    return p


def load_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    """A state dict from `.safetensors` or a torch file, never unpickling code (`weights_only=True`)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(path, f"cannot load weights for {what}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(path, f"weights for {what} must be a state dict, got {type(state).__name__}")
    return state


def load_into(module: torch.nn.Module, path: Path, what: str, strict: bool = True) -> None:
    """Load `path` into `module`; a mismatch is a `WeightsError` naming the file."""
    try:
        module.load_state_dict(load_state_dict(path, what), strict=strict)
    except RuntimeError as exc:
        raise WeightsError(path, f"weights do not fit the {what} architecture: {exc}") from exc


def sha256_paths(*paths: Path) -> str:
    """The store's weights checksum: of one file, its plain sha256 (as `sha256sum` prints it); of several
    files or folders, a sha256 over every file's relative name and bytes."""
    h = hashlib.sha256()
    if len(paths) == 1 and paths[0].is_file():
        with open(paths[0], "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    for p in paths:
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
            with open(f, "rb") as fh:
                for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    """Checksum of a weight-free recipe (e.g. an openSMILE feature set), so stores still record what made them."""
    return hashlib.sha256(text.encode()).hexdigest()


def batched_cues(cues: TokenizedCues, batch_size: int):
    """Yield (ids [B, L] padded with 0, attention mask, index of the first cue) over `cues`."""
    for i in range(0, len(cues.input_ids), batch_size):
        chunk = cues.input_ids[i : i + batch_size]
        width = max(len(x) for x in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        for r, x in enumerate(chunk):
            ids[r, : len(x)] = torch.tensor(x)
            mask[r, : len(x)] = 1
        yield ids, mask, i


class HFTextEncoder:
    """Token states from a Hugging Face model; each word token gets its cue's span (special tokens dropped)."""

    def __init__(
        self,
        name: str,
        model,
        tokenizer,
        checksum: str,
        device: torch.device,
        max_length: int,
        batch_size: int = 32,
        pad_id: int = 0,
    ):
        self.name, self.checksum, self.device = name, checksum, device
        self.model = model.eval().to(device)
        self.tokenizer, self.max_length, self.batch_size, self.pad_id = (
            tokenizer,
            max_length,
            batch_size,
            pad_id,
        )
        self.dim = int(
            model.config.hidden_size if hasattr(model.config, "hidden_size") else model.config.d_model
        )

    @torch.inference_mode()
    def encode(self, cues: TokenizedCues) -> tuple[np.ndarray, np.ndarray]:
        states, spans = [], []
        for ids, mask, first in batched_cues(cues, self.batch_size):
            ids = ids.masked_fill(mask == 0, self.pad_id)
            out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device))
            hidden = out.last_hidden_state.float().cpu().numpy()
            for r in range(ids.shape[0]):
                keep = np.array(cues.word_mask[first + r], dtype=bool)
                states.append(hidden[r, : len(keep)][keep])
                spans.append(np.repeat(cues.spans[first + r][None], int(keep.sum()), axis=0))
        if not states:
            return np.zeros((0, self.dim), np.float32), np.zeros((0, 2), np.float64)
        return np.concatenate(states).astype(np.float32), np.concatenate(spans)
