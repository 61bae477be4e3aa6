"""Ingest steps without models: shots from cuts, the language timeline, subtitles, encoder configs."""

from __future__ import annotations

import numpy as np
import pytest

from lmp_data.ingest import SubtitleError, WeightsError
from lmp_data.ingest.encoders import build, load_config
from lmp_data.ingest.language import (
    DESCRIPTION,
    SUBTITLE,
    Cue,
    merge_timeline,
    read_descriptions,
    read_subtitles,
)
from lmp_data.ingest.pipeline import find_movies
from lmp_data.ingest.shots import cuts_to_shots

SRT = "1\n00:00:01,000 --> 00:00:02,500\nHello there.\n\n2\n00:00:03,000 --> 00:00:04,000\n<i>Bye</i>\n"


def test_cuts_to_shots_no_cut_is_one_shot_and_short_shots_merge():
    assert cuts_to_shots([], 7.5).tolist() == [[0.0, 7.5]]
    shots = cuts_to_shots([1.0, 1.1, 4.0, 9.9], 10.0, min_shot_len=0.5)
    assert shots.tolist() == [
        [0.0, 1.0],
        [1.0, 4.0],
        [4.0, 10.0],
    ]  # 1.1 (0.1 s shot) and 9.9 (last 0.1 s) merged
    assert cuts_to_shots([0.0, 12.0], 10.0).tolist() == [[0.0, 10.0]]  # cuts outside the movie ignored


def test_descriptions_only_where_no_subtitle_overlaps():
    subs = [Cue(1.0, 2.0, "a", SUBTITLE), Cue(5.0, 6.0, "b", SUBTITLE)]
    descs = [
        Cue(0.0, 0.9, "d0", DESCRIPTION),
        Cue(1.5, 3.0, "d1", DESCRIPTION),
        Cue(2.0, 4.9, "d2", DESCRIPTION),
    ]
    merged = merge_timeline(subs, descs)
    assert [c.text for c in merged] == ["d0", "a", "d2", "b"]  # d1 overlaps "a"; touching ends do not overlap


def test_subtitles_utf8_non_utf8_empty_malformed_overlapping(tmp_path):
    p = tmp_path / "m.srt"
    p.write_text(SRT, encoding="utf-8")
    cues, info = read_subtitles(p)
    assert [(c.start, c.end, c.text) for c in cues] == [(1.0, 2.5, "Hello there."), (3.0, 4.0, "Bye")]
    assert info["subtitle_encoding"] == "utf-8"

    ru = "1\n00:00:01,000 --> 00:00:02,000\nПривет, как дела? Всё хорошо, спасибо.\n\n2\n00:00:03,000 --> 00:00:04,000\nГде ключ от старого дома у реки?\n"
    p.write_bytes(ru.encode("cp1251"))  # detected
    cues, info = read_subtitles(p)
    assert [c.text for c in cues] == [
        "Привет, как дела? Всё хорошо, спасибо.",
        "Где ключ от старого дома у реки?",
    ]
    assert info["subtitle_encoding"] == "cp1251"
    latin = "1\n00:00:01,000 --> 00:00:02,000\nÇa va très bien, garçon, déjà vu à l'été.\n"
    p.write_bytes(latin.encode("cp1252"))  # given (detection of short Latin text is ambiguous)
    assert read_subtitles(p, "cp1252")[0][0].text == "Ça va très bien, garçon, déjà vu à l'été."
    p.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(SubtitleError, match=r"m\.srt"):
        read_subtitles(p)

    p.write_bytes(b"")
    assert read_subtitles(p)[0] == []

    p.write_text("this is not a subtitle file\nat all\n")
    with pytest.raises(SubtitleError, match=r"m\.srt.*malformed SRT"):
        read_subtitles(p)

    p.write_text("1\n00:00:01,000 --> 00:00:05,000\nA\n\n2\n00:00:02,000 --> 00:00:03,000\nB\n")
    cues, info = read_subtitles(p)
    assert [c.text for c in cues] == ["A", "B"] and info["subtitle_overlapping"] == 1


def test_descriptions_csv(tmp_path):
    p = tmp_path / "m.ad.csv"
    p.write_text("start,end,sentence\n3.5,5.0,A door opens.\n1.0,2.0,She smiles.\n")
    assert [(c.start, c.text) for c in read_descriptions(p)] == [(1.0, "She smiles."), (3.5, "A door opens.")]
    p.write_text("begin,stop,text\n1,2,x\n")
    with pytest.raises(SubtitleError, match=r"m\.ad\.csv.*missing \['start', 'end', 'sentence'\]"):
        read_descriptions(p)


def test_bad_movie_ids_and_ambiguous_files_are_failures(tmp_path):
    for name in ("good.mp4", "bad id!.mp4", "twice.mp4", "twice.mkv", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "good.srt").write_text(SRT)
    sources, failures = find_movies(tmp_path)
    assert [s.movie_id for s in sources] == ["good"] and sources[0].subtitles == tmp_path / "good.srt"
    reasons = {f.movie_id: f.reason for f in failures}
    assert set(reasons) == {"bad id!", "twice"}
    assert "bad id!.mp4" in reasons["bad id!"] and "[A-Za-z0-9._-]" in reasons["bad id!"]


def test_encoder_configs_presets_yaml_and_missing_weights(tmp_path, monkeypatch):
    assert load_config("offline").video.name == "efficientnet_lite0"
    y = tmp_path / "enc.yaml"
    y.write_text('video: {name: r2plus1d, weights: {model: "${oc.env:W}/v.pth"}}\nbatch_size: 4\n')
    monkeypatch.setenv("W", str(tmp_path))
    cfg = load_config(y, ["device=cpu"])
    assert (
        cfg.video.weights["model"] == f"{tmp_path}/v.pth"
        and cfg.batch_size == 4
        and cfg.audio.name == "egemaps_logmel"
    )
    with pytest.raises(WeightsError, match=r"v\.pth: weights file for video encoder r2plus1d"):
        build(cfg)
    monkeypatch.setenv("LMP_WEIGHTS_DIR", str(tmp_path / "none"))
    with pytest.raises(WeightsError, match=r"none/r2plus1d_18\.pth"):
        build(load_config("paper"))
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    np.testing.assert_equal(load_config("paper").batch_size, 16)
