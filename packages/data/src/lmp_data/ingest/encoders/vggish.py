"""VGGish (Hershey et al. 2017) and its log-mel frontend, kept in the project since torchaudio 2.9 dropped it.

Module names follow the widely used PyTorch port (`features.*`, `embeddings.*`), so its converted
`vggish-*.pth` state dict loads as is. The PCA/quantisation postprocessing is not applied: the 128-d
embeddings (after the final ReLU, as in the port) are used directly.
"""

from __future__ import annotations

import torch
from torch import nn

SAMPLE_RATE = 16000
PATCH_FRAMES, N_MELS = 96, 64  # 0.96 s patches of 10 ms frames x 64 mel bands


class VGGishFrontend(nn.Module):
    """Waveform (16 kHz) -> log-mel patches [P, 1, 96, 64]: 25 ms window, 10 ms hop, 125-7500 Hz, log(mel+0.01)."""

    def __init__(self):
        super().__init__()
        import torchaudio

        self.mel = torchaudio.transforms.MelSpectrogram(
            SAMPLE_RATE,
            n_fft=512,
            win_length=400,
            hop_length=160,
            f_min=125.0,
            f_max=7500.0,
            n_mels=N_MELS,
            power=1.0,
            center=False,
        )

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        need = 400 + 160 * (PATCH_FRAMES - 1)
        if wave.numel() < need:  # shorter than one patch: pad with silence
            wave = nn.functional.pad(wave, (0, need - wave.numel()))
        logmel = torch.log(self.mel(wave) + 0.01).T  # [frames, 64]
        n = logmel.shape[0] // PATCH_FRAMES
        return logmel[: n * PATCH_FRAMES].reshape(n, 1, PATCH_FRAMES, N_MELS)


class VGGish(nn.Module):
    """The VGGish network: log-mel patch [P, 1, 96, 64] -> 128-d embedding per patch (`hidden`=4096 in the real one)."""

    def __init__(self, hidden: int = 4096):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for block in ([64], [128], [256, 256], [512, 512]):
            for c_out in block:
                layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True)]
                c_in = c_out
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 4 * 6, 4096),
            nn.ReLU(True),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
            nn.Linear(4096, 128),
            nn.ReLU(True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # [P, 512, 6, 4]
        x = x.transpose(1, 3).transpose(1, 2).contiguous()  # TF's NHWC flattening order
        return self.embeddings(x.view(x.size(0), -1))
