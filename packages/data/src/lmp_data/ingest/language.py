"""Language: subtitle cues and audio-description sentences on one timeline, then tokenized with time spans.

The paper (section 3, "Pretraining Dataset") aligns official subtitles (where there is speech) with MAD's
audio descriptions (where there is none), excluding overlapping content: a description is kept only where
no subtitle cue overlaps it. Each token produced by the text encoder's tokenizer keeps its cue's span.
Offline ASR (pocketsphinx) for movies without subtitles is not implemented.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmp_data.ingest.errors import SubtitleError

SUBTITLE = "subtitle"
DESCRIPTION = "description"


@dataclass(frozen=True)
class Cue:
    """One timed piece of text: `start`/`end` in seconds from the start of the movie."""

    start: float
    end: float
    text: str
    source: str  # SUBTITLE or DESCRIPTION


def decode_text(path: Path, data: bytes, fallback: str | None = None) -> tuple[str, str]:
    """Decode subtitle bytes: UTF-8 (with or without BOM) first, else `fallback` if given, else the charset
    charset-normalizer detects (short Western texts can come out as a sibling code page: pass `fallback`)."""
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        pass
    if fallback:
        try:
            return data.decode(fallback), fallback
        except (UnicodeDecodeError, LookupError) as exc:
            raise SubtitleError(path, f"neither UTF-8 nor {fallback}: {exc}") from exc
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None or best.encoding is None:
        raise SubtitleError(
            path, "not UTF-8 and no text encoding could be detected (expected a text subtitle file)"
        )
    return str(best), best.encoding


def read_subtitles(path: str | Path, encoding: str | None = None) -> tuple[list[Cue], dict]:
    """Parse an SRT file with pysubs2; returns its cues (time order) and info for the manifest.

    Non-UTF-8 files are decoded with `encoding` if given, else with the detected charset. An empty file gives no cues. A non-empty file in which no cue parses raises `SubtitleError`. Cues with
    no text or with `end <= start` are dropped (counted in the info); overlapping cues are kept as they are.
    """
    import pysubs2

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SubtitleError(path, f"cannot read subtitle file: {exc}") from exc
    if not data.strip():
        return [], {
            "subtitle_encoding": None,
            "subtitle_cues": 0,
            "subtitle_dropped": 0,
            "subtitle_empty": True,
        }
    text, encoding = decode_text(path, data, encoding)
    try:
        subs = pysubs2.SSAFile.from_string(text, format_="srt")
    except Exception as exc:  # pysubs2 raises several types for bad input
        raise SubtitleError(path, f"malformed SRT: {exc}") from exc
    cues, dropped = [], 0
    for ev in subs.events:
        body = " ".join(ev.plaintext.split())
        if ev.is_comment or not body or ev.end <= ev.start:
            dropped += 1
            continue
        cues.append(Cue(ev.start / 1000.0, ev.end / 1000.0, body, SUBTITLE))
    if not cues:
        raise SubtitleError(
            path,
            "malformed SRT: no cue found (expected blocks of 'N', 'HH:MM:SS,mmm --> HH:MM:SS,mmm', text lines)",
        )
    cues.sort(key=lambda c: (c.start, c.end))
    info = {"subtitle_encoding": encoding, "subtitle_cues": len(cues), "subtitle_dropped": dropped}
    info["subtitle_empty"] = False
    info["subtitle_overlapping"] = int(sum(b.start < a.end for a, b in zip(cues, cues[1:])))
    return cues, info


def read_descriptions(path: str | Path) -> list[Cue]:
    """Read audio descriptions `<id>.ad.csv` with a header naming `start`, `end`, `sentence` (seconds, as MAD)."""
    import polars as pl

    path = Path(path)
    try:
        df = pl.read_csv(path, infer_schema_length=0)
    except Exception as exc:
        raise SubtitleError(path, f"cannot read audio descriptions as CSV: {exc}") from exc
    cols = {c.strip().lower(): c for c in df.columns}
    missing = [c for c in ("start", "end", "sentence") if c not in cols]
    if missing:
        raise SubtitleError(path, f"audio descriptions need columns start, end, sentence; missing {missing}")
    cues = []
    for i, row in enumerate(df.select(cols["start"], cols["end"], cols["sentence"]).iter_rows()):
        try:
            start, end = float(row[0]), float(row[1])
        except (TypeError, ValueError) as exc:
            raise SubtitleError(path, f"row {i + 2}: start/end must be seconds, got {row[:2]}") from exc
        text = " ".join(str(row[2] or "").split())
        if text and end > start:
            cues.append(Cue(start, end, text, DESCRIPTION))
    return sorted(cues, key=lambda c: (c.start, c.end))


def merge_timeline(subtitles: list[Cue], descriptions: list[Cue]) -> list[Cue]:
    """Subtitles plus the descriptions that no subtitle cue overlaps, in time order (the paper's rule)."""
    starts = np.array([c.start for c in subtitles])
    ends = np.array([c.end for c in subtitles])
    kept = [d for d in descriptions if not np.any((starts < d.end) & (ends > d.start))]
    return sorted([*subtitles, *kept], key=lambda c: (c.start, c.end))


@dataclass
class TokenizedCues:
    """Tokenizer output per cue: ids with special tokens, which positions are real words, the cue spans."""

    input_ids: list[list[int]]
    word_mask: list[list[bool]]  # False for special tokens ([CLS], <s>, ...): they get no time span
    spans: np.ndarray  # [C, 2] seconds


def tokenize_cues(cues: list[Cue], tokenizer, max_length: int = 128) -> TokenizedCues:
    """Tokenize each cue on its own with a Hugging Face tokenizer (truncated to `max_length`)."""
    if not cues:
        return TokenizedCues([], [], np.zeros((0, 2)))
    enc = tokenizer(
        [c.text for c in cues], truncation=True, max_length=max_length, return_special_tokens_mask=True
    )
    masks = [[not s for s in m] for m in enc["special_tokens_mask"]]
    spans = np.array([[c.start, c.end] for c in cues], dtype=np.float64)
    return TokenizedCues(list(enc["input_ids"]), masks, spans)
