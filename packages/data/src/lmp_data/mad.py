"""MAD (Soldan et al., CVPR 2022) as released, into a video + language `FeatureStore` (MAD has no audio).

MAD's public release (its README's data documentation and the loaders of its baselines) is:

- frame features, `CLIP_B32_frames_features_5fps.h5` / `CLIP_L14_frames_features_5fps.h5`: one HDF5
  dataset per movie at the file's root, named by the movie id (e.g. `3001_21_JUMP_STREET`), of shape
  [n_frames, D] (CLIP B/32: 512, L/14: 768), frame i sampled at i / 5 s;
- annotations, `MAD_train.json` / `MAD_val.json` / `MAD_test.json`: one JSON object per split mapping an
  annotation id (a string) to {"movie": id, "sentence": str, "ext_timestamps": [start, end] seconds,
  "movie_duration": seconds, ...} ("timestamps" is read when "ext_timestamps" is absent);
- optionally language token features, `CLIP_B32_language_tokens_features.h5`: one dataset per annotation
  id, [n_tokens, D] (a sentence-level file, [D] per id, reads as one token per sentence).

What `import_mad` makes of them, per movie of the frame file:

1. shots: cuts where the frame embedding changes (`lmp_data.feature_shots`: PySceneDetect's
   AdaptiveDetector on the cosine distance of consecutive frames), or the shot start times a boundaries
   file gives (JSON: movie id -> [seconds, ...]); frame f covers [f / fps, (f + 1) / fps);
2. video: each shot's mean frame feature;
3. language: each sentence of the movie (all annotation files together), clipped to the movie, becomes
   tokens that all carry the sentence's time span: MAD's own token features when a token file is given,
   else the tokens of the offline text encoder (`lmp_data.ingest.encoders`, default `minilm`);
4. one atomic `FeatureStore.write_movie`, manifest columns `split` (from the annotation file's name,
   e.g. MAD_train.json -> "train"), `fps`, `n_frames`, `movie_duration`, `n_sentences`,
   `sentences_dropped` (no overlap with the movie, or end <= start), `shot_source` ("detected" or
   "boundaries").

Every problem is a `MadError` whose one-line message names the file and the movie, annotation or field;
a bad movie costs that movie only (`import_mad` reports it and goes on).

MAD's files are read by `lmp_data.mad_files` (its public names are re-exported here).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmp_data.feature_shots import (
    FeatureShotConfig,
    cuts_from_times,
    detect_cuts,
    frame_distances,
    shot_means,
    shots_from_cuts,
)
from lmp_data.mad_files import (  # noqa: F401  (re-exported: the public names of this module)
    MAD_FPS,
    SPLITS,
    Annotations,
    MadError,
    Sentence,
    h5_array,
    h5_file,
    read_annotations,
    read_boundaries,
    split_of,
)


@dataclass
class TextSource:
    """Where token features come from: MAD's token file (`tokens_h5`) or a text encoder (`encoder`)."""

    name: str
    dim: int
    record: dict[str, Any]
    tokens_h5: Any = None
    tokens_path: Path | None = None
    encoder: Any = None

    def encode(self, movie: str, sentences: list[Sentence]) -> tuple[np.ndarray, np.ndarray]:
        """Token features [T, dim] and spans [T, 2] of the sentences (each token has its sentence's span)."""
        if not sentences:
            return np.zeros((0, self.dim), np.float32), np.zeros((0, 2), np.float64)
        if self.tokens_h5 is not None:
            feats, spans = [], []
            for s in sentences:
                a = h5_array(self.tokens_h5, s.ann_id, self.tokens_path, f"token features of movie {movie!r}")
                a = a.reshape(1, -1) if a.ndim == 1 else a
                if a.ndim != 2 or a.shape[1] != self.dim:
                    raise MadError(
                        f"{self.tokens_path}: dataset {s.ann_id!r} (movie {movie!r}): expected [tokens, "
                        f"{self.dim}], got shape {a.shape}"
                    )
                feats.append(a)
                spans.append(np.repeat([[s.start, s.end]], len(a), axis=0))
            return np.concatenate(feats), np.concatenate(spans).astype(np.float64)
        from lmp_data.ingest.language import DESCRIPTION, Cue, tokenize_cues

        cues = [Cue(s.start, s.end, s.text, DESCRIPTION) for s in sentences if s.text]
        tok = tokenize_cues(cues, self.encoder.tokenizer, self.encoder.max_length)
        return self.encoder.encode(tok)

    def close(self) -> None:
        if self.tokens_h5 is not None:
            self.tokens_h5.close()


def text_source(tokens: str | Path | None, encoder: str = "minilm", device: str = "auto") -> TextSource:
    """MAD's token features file when given, else the named text encoder of the registry (offline)."""
    if tokens is not None:
        path = Path(tokens)
        f = h5_file(path, "token features file")
        dim = None
        for key in f:
            obj = f[key]
            if hasattr(obj, "shape") and len(obj.shape) in (1, 2) and obj.shape[-1] > 0:
                dim = int(obj.shape[-1])
                break
        if dim is None:
            f.close()
            raise MadError(f"{path}: no [tokens, D] dataset found (expected one per annotation id)")
        rec = {"name": f"mad:{path.stem}", "dim": dim, "source": path.name, "span": "sentence"}
        return TextSource(rec["name"], dim, rec, tokens_h5=f, tokens_path=path)
    from lmp_data.ingest.encoders import REGISTRY, offline, paper  # noqa: F401  (registers the built-ins)
    from lmp_data.ingest.encoders.base import resolve_device

    if encoder not in REGISTRY["text"]:
        raise MadError(f"--text-encoder {encoder!r}: unknown; registered: {sorted(REGISTRY['text'])}")
    enc = REGISTRY["text"][encoder](resolve_device(device), {}, {})
    rec = {"name": enc.name, "dim": int(enc.dim), "checksum": enc.checksum, "span": "sentence"}
    return TextSource(enc.name, int(enc.dim), rec, encoder=enc)


@dataclass
class MadMovie:
    """One movie ready for `FeatureStore.write_movie`."""

    movie_id: str
    shots: np.ndarray
    video: np.ndarray
    text: np.ndarray
    text_spans: np.ndarray
    meta: dict[str, Any]


def build_movie(
    movie: str,
    frames: np.ndarray,
    sentences: list[Sentence],
    text: TextSource,
    *,
    fps: float = MAD_FPS,
    shot_cfg: FeatureShotConfig | None = None,
    boundaries: np.ndarray | None = None,
    split: str | None = None,
    duration: float | None = None,
    frames_path: Path | None = None,
) -> MadMovie:
    """Shots, per-shot video means and language tokens of one movie (see the module docstring)."""
    where = f"{frames_path}: movie {movie!r}" if frames_path else f"movie {movie!r}"
    if frames.ndim != 2 or frames.shape[0] < 1 or frames.shape[1] < 1:
        raise MadError(f"{where}: frame features must be [frames >= 1, dim >= 1], got shape {frames.shape}")
    if not np.isfinite(frames).all():
        bad = np.argwhere(~np.isfinite(frames))[0].tolist()
        raise MadError(f"{where}: frame features hold NaN or inf at [frame, dim] {bad}")
    n = len(frames)
    if boundaries is not None:
        cuts, source = cuts_from_times(boundaries, n, fps), "boundaries"
    else:
        cuts, source = detect_cuts(frame_distances(frames), shot_cfg, fps), "detected"
    shots = shots_from_cuts(cuts, n, fps)
    video = shot_means(frames, cuts).astype(np.float32)
    end = n / fps
    kept, dropped = [], 0
    for s in sorted(sentences, key=lambda s: (s.start, s.end, s.ann_id)):
        a, b = max(s.start, 0.0), min(s.end, end)
        if b <= a:
            dropped += 1
            continue
        kept.append(Sentence(s.ann_id, s.source, a, b, s.text))
    tokens, spans = text.encode(movie, kept)
    meta = {
        "split": split,
        "fps": float(fps),
        "n_frames": int(n),
        "movie_duration": float(duration) if duration is not None else end,
        "n_sentences": len(kept),
        "sentences_dropped": int(dropped),
        "shot_source": source,
    }
    return MadMovie(movie, shots, video, tokens, spans, meta)


@dataclass
class ImportReport:
    """What `import_mad` did: imported / skipped ids, failed id -> message, and annotation problems."""

    imported: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    bad_annotations: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    """Movies that have sentences but no frame features in the frame file."""


def mad_encoders(frames_path: Path, video_dim: int, text: TextSource, fps: float) -> dict[str, dict]:
    """The store's encoder record: video (the frame file, pooled per shot) and text; no audio."""
    video = {
        "name": f"mad:{frames_path.stem}",
        "dim": int(video_dim),
        "source": frames_path.name,
        "fps": float(fps),
        "pooling": "shot mean",
    }
    return {"video": video, "text": text.record}


def first_dim(f, path: Path, movies: Iterable[str]) -> int:
    """The feature width of the first movie dataset of the frame file (the store's video dim)."""
    for m in movies:
        obj = f.get(m)
        if obj is not None and hasattr(obj, "shape") and len(obj.shape) == 2 and obj.shape[1] > 0:
            return int(obj.shape[1])
    raise MadError(f"{path}: no [frames, D] dataset among the movies to import")


def import_mad(
    frames_path: str | Path,
    annotation_paths: list[str | Path],
    store_path: str | Path,
    *,
    tokens_path: str | Path | None = None,
    text_encoder: str = "minilm",
    boundaries_path: str | Path | None = None,
    shot_cfg: FeatureShotConfig | None = None,
    fps: float = MAD_FPS,
    movies: list[str] | None = None,
    dtype: str = "float16",
    overwrite: bool = False,
    device: str = "auto",
    on_event: Callable[[str, str, str], None] | None = None,
) -> ImportReport:
    """Import MAD-layout files into the video + language store at `store_path` (created if missing).

    `on_event(kind, movie, message)` is called per movie with kind "imported", "skipped" or "failed".
    Raises `MadError` (one line, naming the file) when the import cannot start: unreadable frame,
    annotation, token or boundaries file, a store with other encoders.
    """
    frames_path = Path(frames_path)
    if not (fps > 0 and np.isfinite(fps)):
        raise MadError(f"--fps {fps}: expected a positive number of frames per second")
    anns = read_annotations(annotation_paths)
    bounds = read_boundaries(boundaries_path) if boundaries_path is not None else {}
    report = ImportReport(bad_annotations=list(anns.bad))
    emit = on_event or (lambda kind, movie, msg: None)
    f = h5_file(frames_path, "frame features file")
    text = None
    try:
        wanted = _wanted(f, frames_path, movies, anns, report)
        store_path = Path(store_path)
        store, todo = _todo(store_path, wanted, overwrite, report, emit)
        if not todo:
            return report
        text = text_source(tokens_path, text_encoder, device)
        encoders = mad_encoders(frames_path, first_dim(f, frames_path, todo), text, fps)
        store = _open_store(store, store_path, encoders, dtype)
        for m in todo:
            _import_movie(
                m, f, frames_path, anns, bounds, text, store, fps, shot_cfg, overwrite, report, emit
            )
    finally:
        f.close()
        if text is not None:
            text.close()
    return report


def _wanted(
    f, frames_path: Path, movies: list[str] | None, anns: Annotations, report: ImportReport
) -> list[str]:
    """The movies to import (`movies`, else every movie of the frame file); notes the unmatched ones."""
    in_file = [str(k) for k in f.keys()]
    if not in_file:
        raise MadError(f"{frames_path}: no datasets (expected one [frames, D] dataset per movie id)")
    wanted = list(movies) if movies else in_file
    missing = [m for m in wanted if m not in f]
    if movies and missing:
        raise MadError(f"{frames_path}: no frame features for --movies {missing[:10]}")
    report.unmatched = sorted(set(anns.sentences) - set(in_file))
    return wanted


def _todo(
    store_path: Path,
    wanted: list[str],
    overwrite: bool,
    report: ImportReport,
    emit: Callable[[str, str, str], None],
) -> tuple[Any, list[str]]:
    """The existing store (or None) and the wanted movies it lacks (all with `overwrite`); skips the rest."""
    from lmp_data.store import FeatureStore

    exists = (store_path / "store.json").exists()
    store = FeatureStore.open(store_path) if exists else None
    todo = [m for m in wanted if overwrite or store is None or not _has(store, m)]
    for m in wanted:
        if m not in todo:
            report.skipped.append(m)
            emit("skipped", m, "already in the store")
    return store, todo


def _open_store(store, store_path: Path, encoders: dict[str, dict], dtype: str):
    """A new store with `encoders`, or the existing one if its encoders are these (else `MadError`)."""
    from lmp_data.store import FeatureStore
    from lmp_data.validate import check_encoders

    if store is None:
        store = FeatureStore.create(store_path, encoders, dtype=dtype, exist_ok=True)
    else:
        want = check_encoders(encoders)
        have = {m: {k: store.encoders[m].get(k) for k in ("name", "dim")} for m in store.encoders}
        if have != {m: {k: want[m].get(k) for k in ("name", "dim")} for m in want}:
            raise MadError(
                f"store {store_path}: has encoders {have}, this import makes "
                f"{ {m: (v['name'], v['dim']) for m, v in want.items()} } (use another store)"
            )
    return store


def _import_movie(
    m: str,
    f,
    frames_path: Path,
    anns: Annotations,
    bounds: dict[str, np.ndarray],
    text: TextSource,
    store,
    fps: float,
    shot_cfg: FeatureShotConfig | None,
    overwrite: bool,
    report: ImportReport,
    emit: Callable[[str, str, str], None],
) -> None:
    """Build and write one movie; a failure is reported (`report.failed`, "failed" event), not raised."""
    from lmp_data.validate import StoreError, check_movie_id

    try:
        check_movie_id(m)
        if m in anns.movie_errors:
            raise MadError(anns.movie_errors[m])
        frames = h5_array(f, m, frames_path, f"frame features of movie {m!r}")
        mv = build_movie(
            m,
            frames,
            anns.sentences.get(m, []),
            text,
            fps=fps,
            shot_cfg=shot_cfg,
            boundaries=bounds.get(m),
            split=anns.split.get(m),
            duration=anns.duration.get(m),
            frames_path=frames_path,
        )
        store.write_movie(
            mv.movie_id,
            shots=mv.shots,
            video=mv.video,
            text=mv.text,
            text_spans=mv.text_spans,
            meta=mv.meta,
            overwrite=overwrite,
        )
    except (MadError, StoreError, OSError) as e:
        msg = str(e)
        if isinstance(e, StoreError) and not msg.startswith(str(frames_path)):
            msg = f"{frames_path}: {msg}"
        report.failed[m] = msg
        emit("failed", m, msg)
        return
    report.imported.append(m)
    emit("imported", m, f"{len(mv.shots)} shots, {mv.meta['n_sentences']} sentences")


def _has(store, movie: str) -> bool:
    try:
        return store.has_movie(movie)
    except ValueError:  # not a valid movie id: it fails on import, with its message
        return False


def iter_lines(report: ImportReport) -> Iterator[str]:
    """The report's problem lines (bad annotations, movies with sentences but no frames)."""
    for line in report.bad_annotations:
        yield f"SKIPPED annotation {line}"
    for m in report.unmatched:
        yield f"SKIPPED movie {m!r}: has sentences but no frame features in the frame file"
