"""The decoder thread of the ingest pipeline (`lmp_data.ingest.pipeline`): the producer ahead of the encoders.

Per movie, `_prepare` does everything but the frames and the encoders (probe, shots, per-shot audio,
language timeline, manifest meta); `_decoder` then streams the sampled frames in batches through the
bounded queue the main thread encodes from.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lmp_data.ingest import audio as audio_mod
from lmp_data.ingest import language
from lmp_data.ingest import shots as shots_mod
from lmp_data.ingest import video as video_mod
from lmp_data.ingest.encoders import EncoderSet
from lmp_data.ingest.errors import MediaError

if TYPE_CHECKING:
    from lmp_data.ingest.pipeline import IngestConfig, MovieSource

TRUNCATION_TOLERANCE = (
    0.9  # decoded length below this share of the declared length (and >1 s short): truncated
)


@dataclass
class _Prepared:
    """A movie decoded up to the encoders: shots, per-shot audio, tokenized language, manifest meta."""

    source: MovieSource
    shots: np.ndarray
    audio: list[np.ndarray] | None
    tokens: language.TokenizedCues
    meta: dict[str, Any]
    decode_s: float = 0.0


def _language(
    source: MovieSource, duration: float, tokenizer, max_len: int, meta: dict, encoding: str | None = None
) -> language.TokenizedCues:
    subs: list[language.Cue] = []
    if source.subtitles is not None:
        subs, info = language.read_subtitles(source.subtitles, encoding)
        meta.update(info)
    descs = language.read_descriptions(source.descriptions) if source.descriptions is not None else []
    cues = language.merge_timeline(subs, descs)
    meta["descriptions"] = len(descs)
    meta["descriptions_kept"] = sum(c.source == language.DESCRIPTION for c in cues)
    inside = [
        language.Cue(c.start, min(c.end, duration), c.text, c.source) for c in cues if c.start < duration
    ]
    meta["cues_outside_movie"] = len(cues) - len(inside)
    meta["language_missing"] = not inside
    return language.tokenize_cues(inside, tokenizer, max_len)


def _prepare(source: MovieSource, cfg: IngestConfig, enc: EncoderSet) -> _Prepared:
    """Everything but the frames and the encoders: probe, shots, audio, language (runs in the decoder thread)."""
    t0 = time.perf_counter()
    info = video_mod.probe(source.video)
    shots = shots_mod.detect_shots(source.video, cfg.shots, cfg.min_shot_len, cfg.shot_threshold)
    decoded = float(shots[-1, 1])
    if info.duration > 0 and decoded < TRUNCATION_TOLERANCE * info.duration and info.duration - decoded > 1.0:
        raise MediaError(
            source.video,
            f"truncated or corrupt: frames decode only up to {decoded:.2f} s of the declared {info.duration:.2f} s",
        )
    meta: dict[str, Any] = {
        "source_file": source.video.name,
        "fps": info.fps,
        "width": info.width,
        "height": info.height,
        "declared_duration": info.duration,
        "shot_detector": cfg.shots,
        "min_shot_len": cfg.min_shot_len,
    }
    wave = audio_mod.load_audio(source.video, enc.audio.sample_rate) if info.has_audio else None
    meta["audio_missing"] = wave is None
    per_shot = None if wave is None else audio_mod.cut_shots(wave, enc.audio.sample_rate, shots)
    tokens = _language(
        source, decoded, enc.text.tokenizer, cfg.max_tokens_per_cue, meta, cfg.subtitle_encoding
    )
    return _Prepared(source, shots, per_shot, tokens, meta, time.perf_counter() - t0)


def _decoder(
    sources: list[MovieSource], cfg: IngestConfig, enc: EncoderSet, out: queue.Queue, stop: threading.Event
) -> None:
    """Producer: per movie ("movie", prepared) | ("error", source, exc), then ("frames", batch)..., ("end",)."""
    v = enc.video
    f = v.frames_per_shot
    for source in sources:
        if stop.is_set():
            return
        try:
            prep = _prepare(source, cfg, enc)
        except Exception as exc:
            out.put(("error", source, exc))
            continue
        out.put(("movie", prep))
        try:
            t0 = time.perf_counter()
            times = video_mod.shot_frame_times(prep.shots, f)
            buf = np.zeros((min(enc.batch_size, len(prep.shots)), f, v.crop, v.crop, 3), np.uint8)
            filled = 0
            for i, img in video_mod.iter_frames_at(source.video, times, v.resize, v.crop):
                buf[(i // f) % len(buf), i % f] = img
                if i % f == f - 1:
                    filled += 1
                    if filled == len(buf) or i == len(times) - 1:
                        out.put(("frames", buf[:filled].copy(), time.perf_counter() - t0))
                        filled, t0 = 0, time.perf_counter()
                if stop.is_set():
                    return
            out.put(("end", None))
        except Exception as exc:
            out.put(("error", source, exc))
    out.put(("done", None))
