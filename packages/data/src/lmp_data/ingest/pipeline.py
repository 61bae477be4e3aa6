"""The ingest pipeline: a folder of movies -> a `FeatureStore`, one movie at a time, resumable.

A decoder thread (`lmp_data.ingest.decode`) runs ahead of the encoders: for each movie it detects shots,
decodes and cuts the audio, reads the language timeline, and streams the sampled frames in batches through
a bounded queue, while the main thread encodes (batched, on the GPU when there is one) and writes. So
decoding of the next shots (and the next movie) overlaps with encoding. A movie that fails is reported and
skipped; the others finish. Finished movies are skipped on a re-run; a movie interrupted mid-way was never
committed, so it is redone.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmp_data.ingest.decode import TRUNCATION_TOLERANCE, _decoder, _Prepared  # noqa: F401  (re-exported)
from lmp_data.ingest.encoders import EncoderSet, build, load_config
from lmp_data.ingest.errors import IngestError

VIDEO_EXTS = (".mp4", ".mkv", ".avi", ".mov", ".webm")


@dataclass
class IngestConfig:
    """Options of `lmp-data ingest` (see docs/ingest.md)."""

    encoders: str = "offline"  # offline | paper | path to an encoders YAML file
    shots: str = "scenedetect"  # scenedetect | transnetv2
    min_shot_len: float = 0.25  # seconds; shorter shots are merged into a neighbour
    shot_threshold: float | None = None  # detector threshold (None: the detector's default)
    overwrite: bool = False  # re-ingest movies already in the store
    dtype: str = "float16"  # feature dtype of a new store
    max_tokens_per_cue: int = 128
    subtitle_encoding: str | None = None  # for non-UTF-8 subtitles; None: detect with charset-normalizer
    progress: bool = True  # a live bar on a terminal; elsewhere (a log, CI) one plain line per movie


@dataclass
class MovieSource:
    """The files of one movie in MOVIES_DIR."""

    movie_id: str
    video: Path
    subtitles: Path | None = None
    descriptions: Path | None = None


@dataclass
class MovieResult:
    movie_id: str
    status: str  # done | skipped | failed
    reason: str = ""
    duration: float = 0.0  # seconds of movie
    timings: dict[str, float] = field(default_factory=dict)  # decode / encode / write seconds


@dataclass
class IngestSummary:
    results: list[MovieResult]
    wall_seconds: float = 0.0

    def by_status(self, status: str) -> list[MovieResult]:
        return [r for r in self.results if r.status == status]

    @property
    def failed(self) -> list[MovieResult]:
        return self.by_status("failed")

    def format(self) -> str:
        lines = [
            f"ingest: {len(self.by_status('done'))} done, {len(self.by_status('skipped'))} skipped, "
            f"{len(self.failed)} failed in {self.wall_seconds:.1f} s"
        ]
        for r in self.results:
            if r.status != "done":
                lines.append(f"  {r.status:7s} {r.movie_id}: {r.reason}")
        return "\n".join(lines)


def find_movies(movies_dir: str | Path) -> tuple[list[MovieSource], list[MovieResult]]:
    """The movies in `movies_dir` (sorted by id) and failures for files that cannot be movies of the store
    (an id outside `[A-Za-z0-9._-]`, or two video files with one id)."""
    from lmp_data.validate import StoreError, check_movie_id

    movies_dir = Path(movies_dir)
    if not movies_dir.is_dir():
        raise FileNotFoundError(f"{movies_dir}: movies folder not found")
    by_id: dict[str, list[Path]] = {}
    for p in sorted(movies_dir.iterdir()):
        if p.is_file() and p.suffix.lower() in VIDEO_EXTS:
            by_id.setdefault(p.stem, []).append(p)
    sources, failures = [], []
    for movie_id, files in sorted(by_id.items()):
        try:
            check_movie_id(movie_id)
        except StoreError as exc:
            failures.append(MovieResult(movie_id, "failed", f"{files[0].name}: {exc}"))
            continue
        if len(files) > 1:
            names = ", ".join(f.name for f in files)
            failures.append(MovieResult(movie_id, "failed", f"ambiguous: several video files ({names})"))
            continue
        srt, ad = movies_dir / f"{movie_id}.srt", movies_dir / f"{movie_id}.ad.csv"
        sources.append(
            MovieSource(movie_id, files[0], srt if srt.is_file() else None, ad if ad.is_file() else None)
        )
    return sources, failures


def read_metadata(movies_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Rows of `metadata.parquet` or `metadata.csv` keyed by `movie_id` (empty if neither exists)."""
    import polars as pl

    from lmp_data.validate import RESERVED_COLUMNS

    movies_dir = Path(movies_dir)
    for name in ("metadata.parquet", "metadata.csv"):
        path = movies_dir / name
        if not path.is_file():
            continue
        try:
            df = pl.read_parquet(path) if name.endswith(".parquet") else pl.read_csv(path)
        except Exception as exc:
            raise IngestError(path, f"cannot read movie metadata: {exc}") from exc
        if "movie_id" not in df.columns:
            raise IngestError(path, f"movie metadata needs a 'movie_id' column, has {df.columns}")
        bad = [c for c in df.columns if c in RESERVED_COLUMNS and c != "movie_id" or c in _OWN_META]
        if bad:
            raise IngestError(path, f"columns {bad} are reserved for the store/ingest; rename them")
        return {str(r.pop("movie_id")): r for r in df.iter_rows(named=True)}
    return {}


_OWN_META = (
    "source_file",
    "fps",
    "width",
    "height",
    "declared_duration",
    "shot_detector",
    "min_shot_len",
    "audio_missing",
    "audio_bad_packets",
    "subtitle_encoding",
    "subtitle_cues",
    "subtitle_dropped",
    "subtitle_empty",
    "subtitle_overlapping",
    "descriptions",
    "descriptions_kept",
    "cues_outside_movie",
    "language_missing",
)


def _reason(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, IngestError | ValueError) else f"{type(exc).__name__}: {exc}"


def ingest(
    movies_dir: str | Path,
    store_path: str | Path,
    config: IngestConfig | None = None,
    encoders: EncoderSet | None = None,
) -> IngestSummary:
    """Ingest every movie of `movies_dir` into the store at `store_path` (created if needed).

    `encoders` (already built) overrides `config.encoders`. A store built with other encoders is refused
    (`StoreError`). Returns a summary; movie failures are in it, not raised.
    """
    from lmp_data.console import is_tty, no_library_bars
    from lmp_data.store import FeatureStore

    cfg = config or IngestConfig()
    bars = cfg.progress and is_tty(sys.stderr)
    if not bars:
        no_library_bars()  # the encoders' own loading bars too
    wall0 = time.perf_counter()
    sources, results = find_movies(movies_dir)
    metadata = read_metadata(movies_dir)
    enc = encoders or build(load_config(cfg.encoders))
    store = FeatureStore.create(store_path, encoders=enc.record(), dtype=cfg.dtype, exist_ok=True)
    todo = _todo(sources, store, cfg, results)
    _run(todo, cfg, enc, store, metadata, bars, results)
    order = {s.movie_id: i for i, s in enumerate(sources)}
    results.sort(key=lambda r: (order.get(r.movie_id, -1), r.movie_id))
    return IngestSummary(results, time.perf_counter() - wall0)


def _todo(
    sources: list[MovieSource], store, cfg: IngestConfig, results: list[MovieResult]
) -> list[MovieSource]:
    """The movies to ingest: those not in the store yet (all with `cfg.overwrite`); the others are skipped."""
    todo = []
    for s in sources:
        if store.has_movie(s.movie_id) and not cfg.overwrite:
            results.append(MovieResult(s.movie_id, "skipped", "already in the store"))
        else:
            todo.append(s)
    return todo


def _run(
    todo: list[MovieSource],
    cfg: IngestConfig,
    enc: EncoderSet,
    store,
    metadata: dict,
    bars: bool,
    results: list[MovieResult],
) -> None:
    """Start the decoder thread on `todo`, encode and write each movie it delivers (appending to
    `results`), and stop the thread when done or interrupted."""
    from tqdm.auto import tqdm

    overall = tqdm(total=len(todo), desc="movies", unit="movie", position=0, disable=not bars)
    lines = _MovieLines(len(todo)) if cfg.progress and not bars else None
    q: queue.Queue = queue.Queue(maxsize=4)
    stop = threading.Event()
    thread = threading.Thread(
        target=_decoder, args=(todo, cfg, enc, q, stop), name="ingest-decoder", daemon=True
    )
    thread.start()
    try:
        while True:
            msg = q.get()
            if msg[0] == "done":
                break
            if msg[0] == "error":
                results.append(MovieResult(msg[1].movie_id, "failed", _reason(msg[2])))
            else:
                prep: _Prepared = msg[1]
                results.append(_encode_and_write(prep, q, enc, store, metadata, cfg, bars))
            overall.update(1)
            if lines is not None:
                lines.done(results[-1])
    finally:
        stop.set()
        while thread.is_alive():  # unblock the producer if it waits on a full queue
            try:
                q.get(timeout=0.1)
            except queue.Empty:
                pass
        overall.close()


class _MovieLines:
    """Progress without a terminal: one plain line per movie on stderr (no control codes)."""

    def __init__(self, total: int):
        self.total, self.n, self.t0 = total, 0, time.perf_counter()

    def done(self, r: MovieResult) -> None:
        self.n += 1
        head = f"ingest [{self.n}/{self.total}] {r.movie_id}"
        if r.status == "done":
            took = sum(r.timings.values())
            text = f"{head}: done, {r.duration:.0f} s of video in {took:.1f} s"
        else:
            text = f"{head}: {r.status}: {r.reason}"
        print(f"{text} ({time.perf_counter() - self.t0:.0f} s elapsed)", file=sys.stderr, flush=True)


def _encode_and_write(
    prep: _Prepared,
    q: queue.Queue,
    enc: EncoderSet,
    store,
    metadata: dict,
    cfg: IngestConfig,
    bars: bool = False,
) -> MovieResult:
    """Consume this movie's frame batches from `q`, encode all three modalities and write the movie."""
    import torch
    from tqdm.auto import tqdm

    mid, n = prep.source.movie_id, len(prep.shots)
    timings = {"decode": prep.decode_s, "encode": 0.0, "write": 0.0}
    bar = tqdm(total=n, desc=mid, unit="shot", position=1, leave=False, disable=not bars)
    video, error = [], None
    try:
        while True:
            msg = q.get()
            if msg[0] == "end":
                break
            if msg[0] == "error":
                error = msg[2]
                break
            timings["decode"] += msg[2]
            t0 = time.perf_counter()
            video.append(enc.video.encode(torch.from_numpy(msg[1])).numpy())
            timings["encode"] += time.perf_counter() - t0
            bar.update(len(msg[1]))
    finally:
        bar.close()
    if error is not None:
        return MovieResult(mid, "failed", _reason(error), timings=timings)
    try:
        t0 = time.perf_counter()
        if prep.audio is None:
            audio = np.zeros((n, enc.audio.dim), np.float32)
        else:
            audio = np.concatenate(
                [enc.audio.encode(prep.audio[i : i + enc.batch_size]) for i in range(0, n, enc.batch_size)]
            )
        text, spans = enc.text.encode(prep.tokens)
        timings["encode"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        meta = {**metadata.get(mid, {}), **prep.meta}
        store.write_movie(
            mid,
            shots=prep.shots,
            video=np.concatenate(video),
            audio=audio,
            text=text,
            text_spans=spans,
            meta=meta,
            overwrite=cfg.overwrite,
        )
        timings["write"] = time.perf_counter() - t0
    except Exception as exc:
        return MovieResult(mid, "failed", _reason(exc), timings=timings)
    return MovieResult(mid, "done", duration=float(prep.shots[-1, 1]), timings=timings)
