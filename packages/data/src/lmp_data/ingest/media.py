"""Generated real media for the demo and tests: H.264/AAC mp4 files with cuts, a soundtrack and subtitles.

Each movie is a sequence of shots; a shot is a colour gradient with a moving shape (so the shot detectors
see real cuts and the video encoder real images) and its own tone + noise (so audio differs per shot).
Where `espeak-ng` is installed, the subtitle lines are also spoken into the soundtrack at their cue times.
Files are written under a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

from lmp_data.files import atomic_write

SAMPLE_RATE = 16000
WORDS = (
    "the night train leaves at dawn and nobody knows why she came back to the old house by the river "
    "we have to find the key before the storm breaks over the harbour tonight"
).split()


def _speech(text: str) -> np.ndarray | None:
    """`text` spoken by espeak-ng as mono float32 at 16 kHz, or None if espeak-ng is unavailable."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        try:
            subprocess.run([exe, "-w", str(wav), "--", text], check=True, capture_output=True, timeout=30)
        except (subprocess.SubprocessError, OSError):
            return None
        from lmp_data.ingest.audio import load_audio

        return load_audio(wav, SAMPLE_RATE)


def _frame(rng_colors: np.ndarray, shot: int, t: float, w: int, h: int) -> np.ndarray:
    c0, c1 = rng_colors[shot, 0], rng_colors[shot, 1]
    ramp = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :, None]
    img = (c0[None, None] * (1 - ramp) + c1[None, None] * ramp) * np.ones((h, 1, 1), np.float32)
    size = max(8, h // 4)
    x = int((0.1 + 0.8 * ((t * 0.4 + shot * 0.37) % 1.0)) * (w - size))
    y = int((0.5 + 0.35 * np.sin(2 * np.pi * (t * 0.5 + shot * 0.21))) * (h - size))
    img[y : y + size, x : x + size] = 255.0 - c0
    return img.astype(np.uint8)


def write_movie(
    path: str | Path,
    shot_lengths: list[float],
    seed: int = 0,
    size: tuple[int, int] = (192, 108),
    fps: int = 12,
    audio: bool = True,
    speech: bool = True,
    subtitles: bool = True,
) -> dict:
    """Write one generated movie to `path` (.mp4) and, with `subtitles`, `<stem>.srt` beside it.

    Returns `{"video": Path, "srt": Path | None, "cuts": [seconds], "speech": bool}`.
    """
    path = Path(path)
    rng = np.random.default_rng(seed)
    w, h = size
    colors = rng.uniform(0, 255, size=(len(shot_lengths), 2, 3)).astype(np.float32)
    for i in range(1, len(colors)):  # each shot's colours far from the previous one's: a clear cut
        colors[i] = (colors[i - 1] + 128 + rng.uniform(-30, 30, size=(2, 3))) % 256
    bounds = np.concatenate([[0.0], np.cumsum(shot_lengths)])
    duration = float(bounds[-1])
    n_frames = int(round(duration * fps))

    wave, cues, spoken = _soundtrack(rng, bounds, duration, audio, speech, subtitles)
    _write_mp4(path, colors, bounds, len(shot_lengths), wave, n_frames, fps, w, h, audio)
    srt = None
    if subtitles:
        srt = path.with_suffix(".srt")
        atomic_write(srt, lambda tmp: cues.save(str(tmp), format_="srt"))
    return {"video": path, "srt": srt, "cuts": bounds[1:-1].tolist(), "speech": spoken}


def _soundtrack(
    rng: np.random.Generator, bounds: np.ndarray, duration: float, audio: bool, speech: bool, subtitles: bool
):
    """The soundtrack (one tone + noise per shot, plus speech of the cues) and the subtitle cues (one line
    per shot of >= 1 s); returns (wave, cues, whether any line was spoken)."""
    import pysubs2

    wave = np.zeros(int(duration * SAMPLE_RATE), np.float32)
    cues = pysubs2.SSAFile()
    spoken = False
    if audio:
        t = np.arange(len(wave)) / SAMPLE_RATE
        for a, b in zip(bounds[:-1], bounds[1:]):
            sl = slice(int(a * SAMPLE_RATE), int(b * SAMPLE_RATE))
            freq = 220.0 * 2 ** (rng.integers(0, 24) / 12)
            wave[sl] = 0.15 * np.sin(2 * np.pi * freq * t[sl]) + 0.02 * rng.standard_normal(len(t[sl]))
    if subtitles:
        for a, b in zip(bounds[:-1], bounds[1:]):
            if b - a < 1.0:
                continue
            line = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 7))))
            start, end = a + 0.1, min(b - 0.1, a + 0.1 + 0.4 * len(line.split()))
            voice = _speech(line) if (audio and speech) else None
            if voice is not None:
                spoken = True
                k = int(start * SAMPLE_RATE)
                voice = voice[: max(0, len(wave) - k)]
                wave[k : k + len(voice)] += 0.8 * voice
                end = min(b - 0.05, start + len(voice) / SAMPLE_RATE)
            cues.append(
                pysubs2.SSAEvent(start=int(start * 1000), end=int(end * 1000), text=line.capitalize())
            )
    return wave, cues, spoken


def _write_mp4(
    path: Path,
    colors: np.ndarray,
    bounds: np.ndarray,
    n_shots: int,
    wave: np.ndarray,
    n_frames: int,
    fps: int,
    w: int,
    h: int,
    audio: bool,
) -> None:
    """Encode the frames (H.264) and, with `audio`, the soundtrack (AAC) into the mp4 file `path` (written
    under a temporary name, then renamed)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    with av.open(str(tmp), mode="w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"preset": "veryfast", "crf": "23"}
        as_ = None
        if audio:
            as_ = out.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        for i in range(n_frames):
            t = i / fps
            shot = min(int(np.searchsorted(bounds, t, side="right")) - 1, n_shots - 1)
            frame = av.VideoFrame.from_ndarray(_frame(colors, shot, t - bounds[shot], w, h), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        if as_ is not None:
            samples = np.clip(wave, -1, 1).astype(np.float32)
            step = 1024
            for i in range(0, len(samples), step):
                chunk = samples[i : i + step]
                frame = av.AudioFrame.from_ndarray(chunk[None, :], format="flt", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = SAMPLE_RATE, i, Fraction(1, SAMPLE_RATE)
                for packet in as_.encode(frame):
                    out.mux(packet)
            for packet in as_.encode():
                out.mux(packet)
    os.replace(tmp, path)


def write_demo_media(
    out_dir,
    seed: int = 0,
    n_movies: int = 3,
    shots_per_movie: tuple[int, int] = (4, 8),
    shot_seconds: tuple[float, float] = (1.0, 3.5),
    size: tuple[int, int] = (192, 108),
    fps: int = 12,
    speech: bool = True,
) -> list[Path]:
    """Write `n_movies` generated movies `demo_000.mp4`... (+ .srt) into a folder `lmp-data ingest` can read.

    `out_dir` is a folder, or the demo's paths object (its `.root`, else `.out`): then `<root>/media`.
    Returns the video paths. Deterministic in `seed` (speech timing aside).
    """
    if not isinstance(out_dir, str | os.PathLike):
        root = getattr(out_dir, "root", None) or getattr(out_dir, "out", None)
        if root is None:
            raise TypeError(f"out_dir must be a folder path or have a .root, got {type(out_dir).__name__}")
        out_dir = Path(root) / "media"
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    videos = []
    for m in range(n_movies):
        n = int(rng.integers(shots_per_movie[0], shots_per_movie[1] + 1))
        lengths = np.round(rng.uniform(*shot_seconds, size=n), 2).tolist()
        info = write_movie(
            out_dir / f"demo_{m:03d}.mp4", lengths, seed=seed * 1000 + m, size=size, fps=fps, speech=speech
        )
        videos.append(info["video"])
    return videos
