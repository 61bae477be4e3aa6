"""Every pretraining recipe (HSSL, M2S; LMP in test_pretrain_dist.py) through `lmp-pretrain` as users run it:
2 gloo ranks under torchrun, a DeepSpeed engine, SIGKILL mid-run and --resume (same losses within 1e-6),
the export (`load_pretrained` rebuilds the recipe) and `lmp-bench lvu` on it. M2S's stages chain with
`experiments/pretrain_m2s.py` (train.init_from). Real processes, tens of seconds each on 2 cores.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import torch

from lmp_model.export import load_pretrained
from lmp_model.pretrain.dist import launch_command

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "experiments" / "configs" / "pretrain"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_pretrain_dist import _env, descendants, launch, metrics, runs_in  # noqa: E402

CLASS = {"hssl": "HSSL", "m2s": "M2S"}
FEATURE = {"hssl": "v_ctx", "m2s": "v_scene"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The tiny demo: pretraining store, clip store and LVU labels of the same encoders (~10 s)."""
    from lmp_data.demo import make_demo

    return make_demo(tmp_path_factory.mktemp("demo") / "tiny", seed=0, size="tiny")


def command(recipe: str, demo, tmp: Path, nproc: int, *overrides: str, resume: bool = False) -> list[str]:
    args = [
        str(CONFIGS / f"tiny_{recipe}.yaml"),
        f"data.store={demo.pretrain_store}",
        f"train.out_dir={tmp / 'runs'}",
        f"mlflow.tracking_uri=sqlite:///{tmp / 'mlflow.db'}",
        "train.threads=1",
        *overrides,
    ] + (["--resume"] if resume else [])
    return launch_command(args, nproc)


def bench(export: str | Path, demo, out: Path) -> pl.DataFrame:
    """`lmp-bench lvu --model EXPORT` on the tiny demo's clips (2 tasks, 1 seed), as a user runs it."""
    cmd = [
        str(Path(sys.executable).parent / "lmp-bench"), "lvu", "--model", str(export),
        "--store", str(demo.eval_store), "--labels", str(demo.lvu_dir), "--tasks", "genre,view_count",
        "--seeds", "1", "--no-mlflow", "--out", str(out),
    ]  # fmt: skip
    p = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return pl.read_parquet(out)


SLOW = pytest.mark.slow  # each case ~3 min on 2 busy cores (3 two-rank launches + a probe); M2S's path
# without ranks is covered by test_m2s_stages_chain_in_one_command


@pytest.mark.parametrize(
    "recipe,stage",
    [("hssl", 2), pytest.param("m2s", 2, marks=SLOW), pytest.param("hssl", 3, marks=SLOW),
     pytest.param("m2s", 3, marks=SLOW)],
)  # fmt: skip
def test_two_ranks_sigkill_resume_export_bench(demo, tmp_path, recipe, stage):
    steps, every = 30, 4
    common = (
        f"train.zero_stage={stage}",
        f"train.steps={steps}",
        f"train.ckpt_every={every}",
        "train.log_every=5",
    )
    ref = launch(command(recipe, demo, tmp_path, 2, "name=ref", *common))
    ref_hist = metrics(Path(ref["run_dir"]))
    assert [h["step"] for h in ref_hist] == list(range(1, steps + 1))

    run_dir = tmp_path / "runs" / "killed"
    proc = subprocess.Popen(
        command(recipe, demo, tmp_path, 2, "name=killed", *common),
        env=_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline, seen = time.time() + 240, 0
    while time.time() < deadline and proc.poll() is None:
        f = run_dir / "metrics.jsonl"
        seen = len(f.read_text().splitlines()) if f.exists() else 0
        if seen >= 10:
            break
        time.sleep(0.01)
    for pid in [proc.pid, *descendants(proc.pid)]:  # torchrun starts its ranks in their own sessions
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    assert 10 <= seen < steps, f"run not killed mid-way (saw {seen} steps, exit {proc.returncode})"

    out = launch(command(recipe, demo, tmp_path, 2, "name=killed", *common, resume=True))
    assert out["resumed_from"] is not None and 0 < out["resumed_from"] <= seen
    assert out["resumed_from"] % every == 0
    hist = metrics(run_dir)
    assert [h["step"] for h in hist] == list(range(1, steps + 1))
    for a, b in zip(hist, ref_hist):  # the queues, masks and data position came back with the checkpoint
        for key in [k for k in a if k.startswith("loss/")]:
            assert abs(a[key] - b[key]) <= 1e-6, (a["step"], key, a[key], b[key])
    assert sorted(s for _, s in runs_in(tmp_path / "mlflow.db")) == ["FINISHED", "FINISHED"]

    # the export rebuilds the recipe; weights equal the uninterrupted run's; the queues are not exported
    model, ref_model = load_pretrained(out["export_dir"]), load_pretrained(ref["export_dir"])
    assert type(model).__name__ == CLASS[recipe]
    info = json.loads((Path(out["export_dir"]) / "lmp.json").read_text())
    assert info["recipe"] == recipe and info["meta"]["k"] == 8
    a, b = model.state_dict(), ref_model.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)
    from safetensors import safe_open

    with safe_open(str(Path(out["export_dir"]) / "model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if ".queue." in "." + k]
    if recipe == "m2s":  # scene stage: the momentum encoder moved, the shot encoder stayed frozen
        from lmp_model.pretrain.checkpoint import seed_all

        seed_all(0)
        init = type(model)(model.cfg, model.dims)
        assert not torch.equal(a["scene_k.fc.weight"], init.state_dict()["scene_k.fc.weight"])
        assert torch.equal(a["shot_encoder.0.weight"], init.state_dict()["shot_encoder.0.weight"])

    res = bench(out["export_dir"], demo, tmp_path / "lvu.parquet")
    assert set(res["method"]) == {CLASS[recipe]} and set(res["features"]) == {FEATURE[recipe]}
    assert set(res["task"]) == {"genre", "view_count"}


def test_m2s_stages_chain_in_one_command(demo, tmp_path):
    """shot -> scene: the scene stage starts from the shot stage's export (strict load) and keeps E_shot."""
    cmd = [
        sys.executable, str(REPO / "experiments" / "pretrain_m2s.py"), str(CONFIGS / "tiny_m2s.yaml"),
        f"data.store={demo.pretrain_store}", f"train.out_dir={tmp_path / 'runs'}",
        f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}", "train.threads=1", "train.steps=8",
        "--stages", "shot,scene",
    ]  # fmt: skip
    p = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
    out = json.loads(p.stdout.strip().splitlines()[-1])
    shot, scene = out["stages"]
    assert (shot["stage"], shot["steps"], scene["stage"], scene["steps"]) == ("shot", 2, "scene", 6)
    assert "loss/shot/nce" in shot["final_losses"] and "loss/scene/moco" in scene["final_losses"]
    a = load_pretrained(shot["export_dir"]).state_dict()
    b = load_pretrained(out["export_dir"]).state_dict()
    assert a.keys() == b.keys()
    for k in [k for k in a if k.startswith(("shot_encoder.", "movie_encoder.", "output."))]:
        assert torch.equal(a[k], b[k]), k  # trained in stage 1 (or never), carried over, frozen in stage 2
    assert not torch.equal(a["scene_q.fc.weight"], b["scene_q.fc.weight"])
    # a finished stage is skipped when the pipeline runs again
    p = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and all(s["skipped"] for s in json.loads(p.stdout.splitlines()[-1])["stages"])


@pytest.mark.slow  # ~1.5 min on 2 cores: three lmp-pretrain runs
def test_m2s_paper_pipeline_trains_on_movie_pairs_and_mined_scene_pairs(demo, tmp_path):
    """shot -> movie (movie pairs labelled by metadata similarity) -> scene (MoCo on scene pairs mined with
    the movie stage's E_movie between similar movies), each stage from the previous export."""
    from lmp_data import FeatureStore
    from lmp_model.recipes import load_recipe_config
    from lmp_model.recipes.m2s_data import movie_similarity_of

    cmd = [
        sys.executable, str(REPO / "experiments" / "pretrain_m2s.py"), str(CONFIGS / "tiny_m2s.yaml"),
        f"data.store={demo.pretrain_store}", f"train.out_dir={tmp_path / 'runs'}",
        f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}", "train.threads=1", "train.steps=10",
        "m2s.scene.pairs=mined",
    ]  # fmt: skip
    p = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
    out = json.loads(p.stdout.strip().splitlines()[-1])
    shot, movie, scene = out["stages"]
    assert [(s["stage"], s["steps"]) for s in out["stages"]] == [("shot", 2), ("movie", 2), ("scene", 6)]
    assert "loss/movie/bce" in movie["final_losses"] and "loss/scene/moco" in scene["final_losses"]
    hist = metrics(Path(movie["run_dir"]))
    assert all(0 < h["loss_chance/movie/bce"] <= math.log(2) + 1e-6 for h in hist)
    a, b, c = (load_pretrained(s["export_dir"]).state_dict() for s in out["stages"])
    assert torch.equal(a["shot_encoder.0.weight"], c["shot_encoder.0.weight"])  # E_shot: stage 1's
    assert not torch.equal(a["movie_encoder.0.weight"], b["movie_encoder.0.weight"])  # trained in stage 2
    assert torch.equal(b["movie_encoder.0.weight"], c["movie_encoder.0.weight"])  # and kept in stage 3
    pairs = pl.read_parquet(Path(scene["run_dir"]) / "scene_pairs.parquet")
    assert pairs.height > 0 and (pairs["start_a"] >= 0).all()
    store = FeatureStore.open(demo.pretrain_store)
    ids = store.movies()["movie_id"].to_list()
    _, similar = movie_similarity_of(store.load_all(), ids, load_recipe_config("m2s").movie)
    for ma, mb in zip(pairs["movie_a"], pairs["movie_b"]):  # only between movies similar by metadata
        assert similar[ids.index(ma), ids.index(mb)], (ma, mb)


def test_init_from_and_recipe_errors_are_one_line(demo, tmp_path):
    base = command("hssl", demo, tmp_path, 1, "train.steps=2")
    bad = [
        ([*base[:3], str(CONFIGS / "tiny_m2s.yaml"), *base[4:], "train.init_from=" + str(tmp_path / "nope")],
         "train.init_from=" + str(tmp_path / "nope") + ": not an export folder"),
        ([*base, "recipe=nosuch"], "pretrain config recipe: expected one of ['hssl', 'lmp', 'm2s'], got 'nosuch'"),
        ([*base, "recipe=m2s", "m2s.scene.pairs=mined", "m2s.mining.scene_len=80"],
         "m2s.mining.scene_len: expected <= m2s.max_shots=64"),
    ]  # fmt: skip
    for cmd, msg in bad:
        p = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=120)
        last = p.stderr.strip().splitlines()[-1]
        assert p.returncode == 2 and last.startswith("lmp-pretrain: error:") and msg in last, p.stderr[-2000:]
        assert "Traceback" not in p.stderr
    # an export of another recipe is refused, naming both
    ok = launch(command("hssl", demo, tmp_path, 1, "name=h", "train.steps=2"))
    p = subprocess.run(
        command("m2s", demo, tmp_path, 1, "name=m", "train.steps=2", f"train.init_from={ok['export_dir']}"),
        env=_env(), cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 2, p.stderr[-2000:]
    assert "an export of recipe 'hssl', this run's recipe is 'm2s'" in p.stderr.strip().splitlines()[-1]
