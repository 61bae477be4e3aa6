"""The `paper` encoder set (section 3, "Implementation Details"), loaded from local weight files only.

- video `r2plus1d`: torchvision's R(2+1)D architecture (`r2plus1d_18`, 512-d; the paper's R(2+1)D-50 is not
  in torchvision), `frames_per_shot` frames (default 16) at 112x112 as one clip per shot, Kinetics normalisation.
- audio `vggish_wav2vec2`: VGGish (128-d, patches averaged over the shot; soundtrack) concatenated with
  wav2vec 2.0 base (torchaudio `wav2vec2_base`, 768-d, last layer averaged over the shot; speech) = 896-d.
- text `bart`: `transformers.BartModel` encoder token states, model + tokenizer from a local folder
  (`save_pretrained` layout).
Weights: torch state dicts (`weights_only=True`) or `.safetensors`; a missing file is a `WeightsError`.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from lmp_data.ingest.encoders.base import HFTextEncoder, load_into, require_path, sha256_paths
from lmp_data.ingest.encoders.vggish import SAMPLE_RATE, VGGish, VGGishFrontend

WAV2VEC2_BASE = dict(  # torchaudio.models.wav2vec2_base's architecture, for `wav2vec2_arch` overrides
    extractor_mode="group_norm",
    extractor_conv_layer_config=None,
    extractor_conv_bias=False,
    encoder_embed_dim=768,
    encoder_projection_dropout=0.1,
    encoder_pos_conv_kernel=128,
    encoder_pos_conv_groups=16,
    encoder_num_layers=12,
    encoder_num_heads=12,
    encoder_attention_dropout=0.1,
    encoder_ff_interm_features=3072,
    encoder_ff_interm_dropout=0.1,
    encoder_dropout=0.1,
    encoder_layer_norm_first=False,
    encoder_layer_drop=0.1,
    aux_num_out=None,
)
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


class R2Plus1DVideo:
    """One R(2+1)D clip per shot: [B, F, H, W, 3] uint8 -> pooled features before the classifier."""

    name = "r2plus1d"

    def __init__(self, device: torch.device, weights: dict, options: dict):
        from torchvision.models import video as tv_video

        arch = options.get("arch", "r2plus1d_18")
        if not hasattr(tv_video, arch):
            raise ValueError(
                f"unknown video architecture {arch!r} (torchvision.models.video has r2plus1d_18)"
            )
        path = require_path(weights.get("model"), f"video encoder r2plus1d ({arch})")
        layers = options.get("layers")  # blocks per stage; default: the architecture's own ([2, 2, 2, 2])
        if layers is None:
            model = getattr(tv_video, arch)(weights=None)
        else:
            from torchvision.models.video.resnet import BasicBlock, Conv2Plus1D, R2Plus1dStem, VideoResNet

            model = VideoResNet(BasicBlock, [Conv2Plus1D] * 4, list(layers), R2Plus1dStem)
        load_into(model, path, f"r2plus1d ({arch})")
        self.dim = int(model.fc.in_features)
        model.fc = torch.nn.Identity()
        self.model, self.device, self.checksum = model.eval().to(device), device, sha256_paths(path)
        self.frames_per_shot = int(options.get("frames_per_shot", 16))
        self.resize, self.crop = int(options.get("resize", 128)), int(options.get("crop", 112))
        self.mean = torch.tensor(KINETICS_MEAN, device=device).view(1, 3, 1, 1, 1)
        self.std = torch.tensor(KINETICS_STD, device=device).view(1, 3, 1, 1, 1)

    @torch.inference_mode()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.to(self.device).permute(0, 4, 1, 2, 3).float() / 255.0  # [B, 3, F, H, W]
        return self.model((x - self.mean) / self.std).float().cpu()


class VGGishWav2Vec2Audio:
    """VGGish (soundtrack) and wav2vec 2.0 (speech) per shot, concatenated as in the paper."""

    name = "vggish_wav2vec2"

    def __init__(self, device: torch.device, weights: dict, options: dict):
        from torchaudio.models import wav2vec2_base, wav2vec2_model

        vggish_path = require_path(weights.get("vggish"), "audio encoder VGGish")
        w2v_path = require_path(
            weights.get("wav2vec2"), "audio encoder wav2vec 2.0 (torchaudio wav2vec2_base)"
        )
        self.vggish, self.frontend = VGGish(int(options.get("vggish_hidden", 4096))), VGGishFrontend()
        load_into(self.vggish, vggish_path, "VGGish")
        arch = options.get("wav2vec2_arch")  # wav2vec2_model(**arch) overrides; default: wav2vec2_base
        self.wav2vec2 = wav2vec2_base() if arch is None else wav2vec2_model(**{**WAV2VEC2_BASE, **dict(arch)})
        load_into(self.wav2vec2, w2v_path, "wav2vec2_base")
        self.vggish, self.wav2vec2 = self.vggish.eval().to(device), self.wav2vec2.eval().to(device)
        self.frontend = self.frontend.to(device)
        self.device, self.sample_rate = device, SAMPLE_RATE
        self.max_seconds = float(options.get("max_seconds", 30.0))  # wav2vec2 sees at most this (centre)
        self.dim = 128 + int(self.wav2vec2.encoder.transformer.layers[0].attention.k_proj.out_features)
        self.checksum = sha256_paths(vggish_path, w2v_path)

    @torch.inference_mode()
    def encode(self, segments: list[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(segments), self.dim), np.float32)
        cap, min_len = round(self.max_seconds * SAMPLE_RATE), SAMPLE_RATE // 2
        waves = []
        for i, seg in enumerate(segments):
            wave = torch.from_numpy(np.asarray(seg, np.float32)).to(self.device)
            out[i, :128] = self.vggish(self.frontend(wave)).mean(0).float().cpu().numpy()
            if wave.numel() > cap:
                start = (wave.numel() - cap) // 2
                wave = wave[start : start + cap]
            if wave.numel() < min_len:
                wave = torch.nn.functional.pad(wave, (0, min_len - wave.numel()))
            waves.append(wave)
        if waves:
            lengths = torch.tensor([w.numel() for w in waves], device=self.device)
            batch = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
            feats, out_len = self.wav2vec2(batch, lengths)
            valid = torch.arange(feats.shape[1], device=self.device)[None] < out_len[:, None]
            pooled = (feats * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp(min=1)
            out[:, 128:] = pooled.float().cpu().numpy()
        return out


def bart_text(device: torch.device, weights: dict, options: dict) -> HFTextEncoder:
    """BART encoder token states; `weights.model` is a local folder with the model and its tokenizer."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer, BartModel

    path = require_path(weights.get("model"), "text encoder bart (save_pretrained folder)", folder=True)
    try:
        model = BartModel.from_pretrained(str(path), local_files_only=True).get_encoder()
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except OSError as exc:
        from lmp_data.ingest.errors import WeightsError

        raise WeightsError(path, f"cannot load BART model/tokenizer from this folder: {exc}") from exc
    return HFTextEncoder(
        "bart",
        model,
        tokenizer,
        sha256_paths(path),
        device,
        max_length=int(options.get("max_length", 128)),
        batch_size=int(options.get("batch_size", 32)),
        pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 1,
    )


def _register():
    from lmp_data.ingest.encoders import register

    register("video", "r2plus1d")(R2Plus1DVideo)
    register("audio", "vggish_wav2vec2")(VGGishWav2Vec2Audio)
    register("text", "bart")(bart_text)


_register()
