"""Video decoding with PyAV: probe a file, and pull frames at chosen times in one sequential pass.

One pass (no seeking) because seeking per shot is slow on long GOPs and unreliable on broken files;
only the frames we keep are converted to RGB, which is where most of the per-frame cost lies.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from lmp_data.ingest.errors import MediaError


@dataclass(frozen=True)
class VideoInfo:
    """What the pipeline needs to know about a movie file before decoding it."""

    path: Path
    duration: float  # seconds
    fps: float
    width: int
    height: int
    has_audio: bool


def probe(path: str | Path) -> VideoInfo:
    """Open `path` and read its stream headers; `MediaError` if it is not a decodable video."""
    path = Path(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(path, "no video stream (expected a movie file with a video track)")
            vs = container.streams.video[0]
            fps = float(vs.average_rate or vs.guessed_rate or 0.0)
            duration = 0.0
            if vs.duration is not None and vs.time_base is not None:
                duration = float(vs.duration * vs.time_base)
            if duration <= 0 and container.duration:
                duration = container.duration / av.time_base
            if fps <= 0 or vs.width == 0:
                raise MediaError(
                    path, f"video stream has no frame rate or size (fps={fps}, width={vs.width})"
                )
            return VideoInfo(path, duration, fps, vs.width, vs.height, bool(container.streams.audio))
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(path, f"cannot open as video: {exc}") from exc


def decode_tolerant(
    container: av.container.InputContainer, stream: av.stream.Stream, bad: list[int] | None = None
):
    """Decode `stream`, skipping packets the decoder rejects (as the ffmpeg CLI does); counts them in `bad[0]`.

    Real files often carry a few corrupt packets (e.g. the first audio packet of Megamind.avi); one bad packet
    should not lose the movie. Demuxer errors (a truncated container) still raise.
    """
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.error.InvalidDataError:
            if bad is not None:
                bad[0] += 1
            continue
        yield from frames


def _resize_crop(frame: av.VideoFrame, size: int, crop: int) -> np.ndarray:
    """Resize so the short side is `size` (aspect kept), then centre-crop `crop` x `crop`, as RGB uint8."""
    w, h = frame.width, frame.height
    scale = size / min(w, h)
    nw, nh = max(crop, round(w * scale)), max(crop, round(h * scale))
    img = frame.reformat(width=nw, height=nh, format="rgb24").to_ndarray()
    y, x = (nh - crop) // 2, (nw - crop) // 2
    return img[y : y + crop, x : x + crop]


def iter_frames_at(
    path: str | Path, times: np.ndarray, size: int, crop: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield `(i, rgb[crop, crop, 3])` for every requested time `times[i]` (seconds, ascending).

    The frame shown at `times[i]` is the last decoded frame whose timestamp is <= that time. Times past the
    last decodable frame get the last frame. Raises `MediaError` if nothing decodes.
    """
    path = Path(path)
    times = np.asarray(times, dtype=np.float64)
    if len(times) and np.any(np.diff(times) < 0):
        raise ValueError("times must be ascending")
    n, j = len(times), 0
    prev, cached = None, None  # last decoded frame, and (frame, its RGB crop)

    def rgb(frame: av.VideoFrame) -> np.ndarray:
        nonlocal cached
        if cached is None or cached[0] is not frame:
            cached = (frame, _resize_crop(frame, size, crop))
        return cached[1]

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            t0 = None
            for frame in decode_tolerant(container, stream):
                if frame.time is None:
                    continue
                t0 = frame.time if t0 is None else t0
                t = frame.time - t0
                while j < n and prev is not None and times[j] < t - 1e-6:
                    yield j, rgb(prev)
                    j += 1
                if j >= n:
                    break
                prev = frame
    except (av.error.FFmpegError, OSError) as exc:
        if prev is None:
            raise MediaError(path, f"cannot decode video frames: {exc}") from exc
        raise MediaError(path, f"video stream broken after {j} of {n} sampled frames: {exc}") from exc
    if prev is None and n:
        raise MediaError(path, "no decodable video frame")
    while j < n:
        yield j, rgb(prev)
        j += 1


def shot_frame_times(shots: np.ndarray, n: int) -> np.ndarray:
    """`n` times per shot at the centres of `n` equal parts of it, flattened [S * n] (ascending)."""
    shots = np.asarray(shots, dtype=np.float64)
    frac = (np.arange(n) + 0.5) / n
    return (shots[:, :1] + (shots[:, 1:] - shots[:, :1]) * frac[None, :]).reshape(-1)
