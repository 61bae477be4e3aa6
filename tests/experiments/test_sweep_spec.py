"""The typed hand-offs of a sweep (no Ray): a table's rows as `TrialSpec`s with work functions, the sweep's
`SweepContext` through sweep.json and back, and what Ray ships to its workers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

EXP = Path(__file__).resolve().parents[2] / "experiments"
sys.path.insert(0, str(EXP))

import ablate_features  # noqa: E402
import ablate_losses  # noqa: E402
import ablate_seq_len  # noqa: E402
import compare_recipes  # noqa: E402
from _sweep import work  # noqa: E402
from _sweep.config import SweepProbeConfig, load_sweep_config, repo_path  # noqa: E402
from _sweep.runner import worker_modules  # noqa: E402
from _sweep.spec import SweepContext, TrialSpec  # noqa: E402


def test_table_rows_are_typed_specs_with_work_functions():
    cfg = load_sweep_config("smoke")
    stages, _ = ablate_losses.build(cfg, ["none-scratch", "no-inter"])
    specs = stages[0].specs
    assert [s.key for s in specs] == ["none-scratch-s0", "no-inter-s0"]
    scratch, no_inter = specs
    assert scratch.work is work.probe_only and scratch.no_pretrain == "scratch" and scratch.order == 2
    assert no_inter.work is work.pretrain_and_probe and scratch.pretrain is None
    record = json.loads(json.dumps(no_inter.to_dict()))  # what Tune shows and the trial's spec.json holds
    assert record["work"] == "_sweep.work:pretrain_and_probe" and record["variant"] == "w/o L_inter"
    assert record["pretrain"] == "ablate_losses:without('inter')"


def _trial_config(table, slug: str, overrides=()):
    """The typed pretraining config a table's row (seed 0) runs with, as `work.trial_config` builds it."""
    from types import SimpleNamespace

    cfg = load_sweep_config("smoke")
    (spec,) = table.build(cfg, [slug])[0][0].specs
    sweep = SimpleNamespace(
        pretrain_config=str(repo_path(cfg.pretrain_config)),
        pretrain_overrides=list(cfg.pretrain_overrides),
        data={"store": "/the/store"},
    )
    return work.trial_config(SimpleNamespace(spec=spec, sweep=sweep), overrides)


def test_row_recipes_are_functions_of_the_typed_config():
    """Each row's recipe reaches the trial's config (Table 2's k did not, once), on top of the sweep's."""
    c = _trial_config(ablate_losses, "no-inter", ["train.seed=3"])
    assert (c.model.loss.intra, c.model.loss.inter, c.model.loss.cross) == (1.0, 0.0, 1.0)
    assert c.train.seed == 3 and c.data.store == "/the/store"
    assert _trial_config(ablate_losses, "full").model.loss.inter == 1.0
    k60 = _trial_config(ablate_seq_len, "k60")
    assert (k60.data.k, k60.model.max_shots, k60.model.max_tokens) == (60, 64, 480)


def test_recipe_rows_equal_their_former_dotlist_overrides():
    """compare_recipes' HSSL / M2S rows as typed functions give the very configs the dotlists gave."""
    from lmp_model.pretrain import config_to_dict, load_pretrain_config

    cfg = load_sweep_config("smoke")
    path = str(repo_path(cfg.pretrain_config))
    base = load_pretrain_config(path, [*cfg.pretrain_overrides, "data.store=/the/store"])
    e = base.model.encoder
    enc = [
        f"d={e.d}",
        f"layers={e.layers}",
        f"heads={e.heads}",
        f"ff_mult={e.ff_mult}",
        f"dropout={e.dropout}",
    ]
    before = {
        "hssl": ["recipe=hssl", "hssl.modalities=[video,audio]", f"hssl.max_shots={base.model.max_shots}"]
        + [f"hssl.encoder.{x}" for x in enc],
        "m2s": [
            "recipe=m2s",
            "m2s.scene.pairs=mined",
            "data.views=1",
            f"m2s.max_shots={base.model.max_shots}",
        ]
        + [f"m2s.scene.encoder.{x}" for x in enc],
    }
    for recipe, dotlist in before.items():
        old = load_pretrain_config(path, [*cfg.pretrain_overrides, *dotlist, "data.store=/the/store"])
        assert config_to_dict(_trial_config(compare_recipes, recipe)) == config_to_dict(old), recipe
    with pytest.raises(ValueError, match="'hssl' or 'm2s'"):
        compare_recipes.as_recipe("lmp", base)


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


def test_resume_hint_names_the_table_script():
    from _sweep.cli import _script

    assert _script(ablate_losses.build) == "experiments/ablate_losses.py"
    assert _script(compare_recipes.build) == "experiments/compare_recipes.py"  # not ablate_recipes.py


def test_trials_interrupted_before_reporting_are_unfinished_not_a_crash():
    """Ctrl-C on a sweep with running trials: Tune's results of those have no metrics, hence no config."""
    from types import SimpleNamespace

    from _sweep.runner import _seen

    def result(key, metrics=None, error=None):
        config = {"trial": {"key": key}} if metrics else None  # ray.air.Result.config reads the metrics
        return SimpleNamespace(config=config, metrics=metrics, error=error, path=f"/s/tune/trials/{key}")

    grid = [
        result("a-s0", {"child_run_id": "r", "content": 1.0, "config": {}}),
        result("b-s0"),  # running when interrupted
        result("c-s0", error=RuntimeError("boom")),  # failed before reporting
    ]
    seen = _seen(grid)
    assert seen["a-s0"]["status"] == "ok" and seen["b-s0"]["status"] == "unfinished"
    assert seen["c-s0"] == {"status": "failed", "error": "RuntimeError: boom"}
