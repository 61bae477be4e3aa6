"""The typed hand-offs of a sweep (no Ray): a table's rows as `TrialSpec`s with work functions, the sweep's
`SweepContext` through sweep.json and back, and what Ray ships to its workers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

EXP = Path(__file__).resolve().parents[2] / "experiments"
sys.path.insert(0, str(EXP))

import ablate_features  # noqa: E402
import ablate_losses  # noqa: E402
from _sweep import work  # noqa: E402
from _sweep.config import SweepProbeConfig, load_sweep_config  # noqa: E402
from _sweep.runner import worker_modules  # noqa: E402
from _sweep.spec import SweepContext, TrialSpec  # noqa: E402


def test_table_rows_are_typed_specs_with_work_functions():
    cfg = load_sweep_config("smoke")
    stages, _ = ablate_losses.build(cfg, ["none-scratch", "no-inter"])
    specs = stages[0].specs
    assert [s.key for s in specs] == ["none-scratch-s0", "no-inter-s0"]
    scratch, no_inter = specs
    assert scratch.work is work.probe_only and scratch.no_pretrain == "scratch" and scratch.order == 2
    assert no_inter.work is work.pretrain_and_probe and no_inter.pretrain_overrides == ["model.loss.inter=0"]
    record = json.loads(json.dumps(no_inter.to_dict()))  # what Tune shows and the trial's spec.json holds
    assert record["work"] == "_sweep.work:pretrain_and_probe" and record["variant"] == "w/o L_inter"


def test_later_stage_specs_are_built_from_earlier_rows():
    cfg = load_sweep_config("smoke")
    stages, _ = ablate_features.build(cfg, None)
    assert [s.work for s in stages[0].specs] == [work.pretrain_only]
    probes = stages[1].specs({"pretrain": [{"status": "ok", "outputs": {"export_dir": "/x/export"}}]})
    assert len(probes) == len(cfg.feature_sets) and {p.from_export for p in probes} == {"/x/export"}
    assert probes[0].features == ["v_base"] and all(p.work is work.probe_only for p in probes)


def test_sweep_context_round_trips_through_sweep_json():
    ctx = SweepContext(
        sweep_dir="/s",
        tracking_uri="sqlite:///m.db",
        experiment_id="1",
        parent_run_id="p",
        cpus_per_trial=2.0,
        pretrain_overrides=["train.steps=3"],
        probe=SweepProbeConfig(tasks=["genre"], seed_offset=7, curve_every=4),
        data={"store": "/a", "eval_store": "/b", "labels": "/c"},
    )
    back = SweepContext.from_dict(json.loads(json.dumps(ctx.to_dict())))
    assert back == ctx and isinstance(back.probe, SweepProbeConfig) and back.threads == 2
    # a sweep.json written before a field was dropped still resumes
    old = {**ctx.to_dict(), "inject_failures": [], "probe": {**ctx.to_dict()["probe"], "gone": 1}}
    assert SweepContext.from_dict(old) == ctx


def test_ray_workers_get_the_sweep_package_and_the_scripts_modules():
    mods = [Path(m) for m in worker_modules()]
    assert EXP / "_sweep" in mods and EXP / "pretrain_m2s.py" in mods  # compare_recipes' M2S trial imports it
    assert all(m.exists() for m in mods)


def test_trial_spec_names_any_callable():
    spec = TrialSpec(key="k", variant="v", seed=0, work=len)
    assert spec.to_dict()["work"] == "builtins:len"
