"""Audio: decode a movie's audio track once with PyAV (mono, resampled), then cut it per shot."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from lmp_data.ingest.errors import MediaError
from lmp_data.ingest.video import decode_tolerant


def load_audio(path: str | Path, sample_rate: int = 16000) -> np.ndarray | None:
    """The whole audio track as mono float32 at `sample_rate`, or None if the file has no audio stream.

    Time 0 is the start of the video stream: an audio track that starts later is padded with silence.
    """
    path = Path(path)
    chunks: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            video_start = 0.0
            if container.streams.video and container.streams.video[0].start_time is not None:
                vs = container.streams.video[0]
                video_start = float(vs.start_time * vs.time_base)
            offset = None
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            for frame in decode_tolerant(container, stream):
                if offset is None:
                    offset = (frame.time or 0.0) - video_start
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except (av.error.FFmpegError, OSError) as exc:
        if not chunks:
            raise MediaError(path, f"cannot decode the audio track: {exc}") from exc
        offset = offset or 0.0
    wave = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if offset and offset > 0:
        wave = np.concatenate([np.zeros(round(offset * sample_rate), np.float32), wave])
    elif offset and offset < 0:
        wave = wave[round(-offset * sample_rate) :]
    return wave


def cut_shots(
    wave: np.ndarray, sample_rate: int, shots: np.ndarray, min_samples: int = 0
) -> list[np.ndarray]:
    """The audio of each shot; a shot past the end of the track gets silence, each at least `min_samples`."""
    out = []
    for start, end in np.asarray(shots, dtype=np.float64):
        a, b = round(start * sample_rate), round(end * sample_rate)
        seg = wave[a:b]
        if len(seg) < max(min_samples, b - a):
            seg = np.pad(seg, (0, max(min_samples, b - a) - len(seg)))
        out.append(seg)
    return out
