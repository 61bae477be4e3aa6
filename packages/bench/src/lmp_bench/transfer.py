"""Transfer tasks of the paper's section 4.3 on a clip store (formats: docs/bench.md, the demo's README).

Inputs under `labels_dir` (the demo writes them; bring real data in the same formats):
- `shot_attributes.parquet`: clip_id, shot_index, split and one integer column per attribute (AVE-style);
- `descriptions.npz`: clip_id [n], offsets [n+1], tokens [T, Dl] (+ optional split [n]).
The clip split comes from `shot_attributes.parquet`, else from the store manifest's `split` column.

Any pretraining recipe (`lmp_model.recipes`: LMP, HSSL, M2S) is read through the feature interface
`lmp-bench lvu` uses (`lmp_bench.features.model_features`: the recipe declares which named features its
`encode` returns); `model="base"` reads the base features straight from the store (no model), `None` is
the frozen random-init LMP. Per-shot features (`features`, default: the model's own, as for LVU; LMP
`v_ctx+a_ctx`):
- AVE attributes: each shot's feature (eval windows over its clip) -> one linear layer per attribute;
  average per-class accuracy on test (Table 6), and the average over attributes.
- Shot sequence ordering: 3 consecutive shots shown in the order `PERMUTATIONS[label]` (label drawn
  uniformly, `samples_per_clip` per clip, seeded), encoded as one 3-shot window; the 3 shot features
  are concatenated; 6-way linear layer; accuracy (Table 7).
- Next shot selection: a 9-shot run, shots 0-3 the context, shots 4-8 the candidates (true: shot 4);
  each candidate is encoded after the context as a 5-shot window, [mean context ; candidate] is scored
  by one linear layer with a softmax over the 5 candidates; accuracy (Table 7).
- Zero-shot retrieval over the test clips needs features in one joint space (`RETRIEVAL_FEATURES`):
  scene = clip-mean v_ctx, soundtrack = clip-mean a_ctx (scene->soundtrack and back), description =
  mean l_ctx of its tokens encoded alone -> scene; cosine similarity; R@1/5/10, median and mean rank
  (Tables 8, 9). A model without them (HSSL, M2S, base features) gets the task in `skipped` with the
  reason ("n/a"), not an error.
Features that do not read language (`lmp_bench.features.needs_text`) are encoded without the language
tokens (same values, the language branch costs nothing).

This module runs the tasks (`evaluate_transfer`) and holds their result (`TransferResult`); the label
files, the model side and per-shot features are in `lmp_bench.transfer_shots`, the tasks in
`lmp_bench.transfer_tasks` (their public names are re-exported here).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch

from lmp_bench.api import _probe_cfg, _window_k, open_store, random_model, resolve_model
from lmp_bench.features import FEATURES
from lmp_bench.probe import ProbeConfig, torch_threads
from lmp_bench.progress import current
from lmp_bench.results import write_parquet_atomic
from lmp_bench.transfer_shots import (  # noqa: F401  (re-exported: the public names of lmp_bench.transfer)
    DEFAULT_SHOT_FEATURES,
    RETRIEVAL_FEATURES,
    SPLITS,
    BaseFeatures,
    TransferFormatError,
    _columns,
    _widths,
    clip_splits,
    encode_sequences,
    provided_features,
    read_shot_attributes,
    retrieval_unavailable,
    shot_features,
    shots_batch,
    transfer_features,
)
from lmp_bench.transfer_tasks import PERMUTATIONS, _ave, _next_shot, _ordering, _retrieval  # noqa: F401
from lmp_data.batch import DEFAULT_K

log = logging.getLogger(__name__)

TRANSFER_TASKS = ("ave", "ordering", "next_shot", "retrieval")
SHOT_FEATURES = tuple(f for f in FEATURES if f != "l_ctx")
RETRIEVAL_TASKS = (
    "retrieval/scene->soundtrack",
    "retrieval/soundtrack->scene",
    "retrieval/description->scene",
)


@dataclass
class TransferResult:
    """One row per (task, metric, seed); zero-shot retrieval has seed -1."""

    rows: pl.DataFrame
    skipped: dict[str, str] = field(default_factory=dict)

    def summary(self) -> pl.DataFrame:
        return self.rows.group_by("task", "metric", maintain_order=True).agg(
            mean=pl.col("value").mean(), std=pl.col("value").std(ddof=1).fill_null(0.0), n=pl.len()
        )

    def metrics(self) -> dict[str, float]:
        out = {}
        for r in self.summary().iter_rows(named=True):
            out[f"transfer/{r['task']}/{r['metric']}"] = r["mean"]
            out[f"transfer/{r['task']}/{r['metric']}.std"] = r["std"]
        return out

    def format(self) -> str:
        lines = [
            "Transfer tasks (accuracy / per-class accuracy in %, R@K in %, ranks; mean ± std over seeds)"
        ]
        for r in self.summary().iter_rows(named=True):
            pct = not r["metric"].endswith("rank")
            m, s = (100 * r["mean"], 100 * r["std"]) if pct else (r["mean"], r["std"])
            lines.append(f"  {r['task']:<28} {r['metric']:<24} {m:8.2f} ± {s:.2f}")
        for t, why in self.skipped.items():
            lines.append(f"  {t}: skipped ({why})")
        return "\n".join(lines)

    def write_parquet(self, path: str | Path) -> Path:
        return write_parquet_atomic(self.rows, path)


def evaluate_transfer(
    model,
    eval_store,
    labels_dir: str | Path,
    tasks: str | Sequence[str] | None = None,
    seeds: int | Sequence[int] = 3,
    probe: str | ProbeConfig | None = "linear",
    features: str | Sequence[str] | None = None,
    *,
    k: int | None = None,
    batch_size: int = 64,
    threads: int = 1,
    model_config=None,
    init_seed: int = 0,
    samples_per_clip: int = 4,
    sample_seed: int = 0,
) -> TransferResult:
    """Run the transfer tasks (all, or `tasks`); see the module docstring.

    model: a model of any recipe / export folder / MLflow run, None (a frozen random-init LMP of
    `model_config`, seeded `init_seed`) or "base" (the store's base features, no model). features: the
    per-shot features of AVE, ordering and next shot (not l_ctx); None: the model's own (LMP v_ctx+a_ctx,
    HSSL v_ctx, M2S v_scene, base v_base+a_base). Retrieval reads v_ctx, a_ctx and l_ctx; a model without
    them has the retrieval tasks in `skipped` ("n/a: ..."). k: eval window length (default the model's
    pretraining k, else lmp_data's DEFAULT_K = 30). samples_per_clip / sample_seed: how many ordering / next-shot samples are
    drawn per clip, and their seed.
    """
    wanted = _wanted_tasks(tasks)
    root = Path(labels_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"transfer labels folder not found: {root}")
    store = open_store(eval_store)
    lmp, info = _transfer_model(model, store, model_config, init_seed, k)
    names = transfer_features(lmp, features)
    kk = _window_k(lmp, k, info.get("k"))
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    pcfg = _probe_cfg(probe)
    attr_path, attrs_df, attrs, splits, wanted_clips, mem = _transfer_clips(store, root)
    rng = np.random.default_rng(sample_seed)
    rows: list[dict] = []
    skipped, do_ave, do_retrieval = _plan_tasks(lmp, wanted, attr_path, attrs_df, attrs, seed_list)
    _run_tasks(
        lmp, mem, root, wanted, names, kk, splits, wanted_clips, attrs_df, attrs, pcfg, seed_list, rng,
        do_ave, do_retrieval, rows, skipped, threads=threads, batch_size=batch_size,
        samples_per_clip=samples_per_clip,
    )  # fmt: skip
    for t, why in skipped.items():
        log.warning("transfer %s skipped: %s", t, why)
    schema = {"task": pl.String, "metric": pl.String, "seed": pl.Int64, "value": pl.Float64}
    return TransferResult(pl.DataFrame(rows, schema=schema), skipped)


def _wanted_tasks(tasks: str | Sequence[str] | None) -> list[str]:
    """The requested transfer tasks (None: all), checked against `TRANSFER_TASKS`."""
    if tasks is None:
        wanted = list(TRANSFER_TASKS)
    else:
        wanted = [t.strip() for t in tasks.split(",")] if isinstance(tasks, str) else list(tasks)
    bad = [t for t in wanted if t not in TRANSFER_TASKS]
    if bad:
        raise ValueError(f"unknown transfer task(s) {bad}; expected {TRANSFER_TASKS}")
    return wanted


def _transfer_model(model, store, model_config, init_seed: int, k: int | None):
    """(model, info): the store's base features ("base"), a frozen random-init LMP (None), else the
    resolved model, checked against the store's encoders."""
    if isinstance(model, str) and model == "base" and not Path(model).exists():
        lmp, info = BaseFeatures(k or DEFAULT_K, audio="audio" in store.dims), {}
    elif model is None:
        lmp, info = random_model(store, model_config, seed=init_seed, k=k), {}
    else:
        lmp, info = resolve_model(model)
        from lmp_model.export import check_store_encoders

        check_store_encoders(lmp, store.encoders)
    return lmp, info


def _transfer_clips(store, root: Path):
    """(attr_path, attribute table or None, attribute names, clip splits, their clips, those clips loaded)."""
    attr_path = root / "shot_attributes.parquet"
    attrs_df, attrs = read_shot_attributes(attr_path) if attr_path.exists() else (None, [])
    splits = clip_splits(store, attrs_df)
    wanted_clips = [c for sp in SPLITS for c in splits[sp]]
    absent = sorted(set(wanted_clips) - set(store.movies()["movie_id"].to_list()))
    if absent:
        raise TransferFormatError(
            f"{attr_path}: {len(absent)} clips not in the store {store.path}: {absent[:5]}"
        )
    mem = store.load_all(wanted_clips)
    return attr_path, attrs_df, attrs, splits, wanted_clips, mem


def _plan_tasks(lmp, wanted, attr_path, attrs_df, attrs, seed_list) -> tuple[dict[str, str], bool, bool]:
    """(skipped tasks and why, do AVE, do retrieval); plans the progress (one probe per attribute /
    task and seed)."""
    skipped: dict[str, str] = {}
    if "ave" in wanted and attrs_df is None:
        skipped["ave"] = f"no {attr_path}"
    no_retrieval = retrieval_unavailable(lmp) if "retrieval" in wanted else None
    if no_retrieval:
        skipped.update(dict.fromkeys(RETRIEVAL_TASKS, no_retrieval))
    do_ave = "ave" in wanted and attrs_df is not None
    do_retrieval = "retrieval" in wanted and not no_retrieval
    n_probed = (len(attrs) if do_ave else 0) + ("ordering" in wanted) + ("next_shot" in wanted)
    current().plan(n_probed * len(seed_list))  # retrieval is zero-shot: no probes
    return skipped, do_ave, do_retrieval


def _run_tasks(
    lmp, mem, root, wanted, names, kk, splits, wanted_clips, attrs_df, attrs, pcfg, seed_list, rng,
    do_ave, do_retrieval, rows, skipped, *, threads, batch_size, samples_per_clip,
) -> None:  # fmt: skip
    """Run the wanted tasks with the model in eval mode (restored after), adding to `rows` / `skipped`."""
    was_training = lmp.training
    lmp.eval()
    try:
        with torch_threads(threads), torch.no_grad():
            if do_ave or do_retrieval:  # one pass over the clips' eval windows serves both
                ret = (RETRIEVAL_FEATURES["scene"], RETRIEVAL_FEATURES["soundtrack"]) if do_retrieval else ()
                both = tuple(names) + tuple(n for n in ret if n not in names)
                clips = wanted_clips if do_ave else splits["test"]
                per_shot = shot_features(lmp, mem, clips, both, kk, batch_size)
                widths = _widths(lmp, mem, both)
                if do_ave:
                    cols = _columns(both, widths, names)
                    feats = {c: f[:, cols] for c, f in per_shot.items()}
                    rows += _ave(feats, attrs_df, attrs, pcfg, seed_list)
            if "ordering" in wanted:
                rows += _ordering(lmp, mem, splits, names, pcfg, seed_list, batch_size, samples_per_clip, rng)
            if "next_shot" in wanted:
                rows += _next_shot(
                    lmp, mem, splits, names, pcfg, seed_list, batch_size, samples_per_clip, rng
                )
            if do_retrieval:
                test = splits["test"]
                cv, ca = (_columns(both, widths, [n]) for n in ret)
                scene = {c: per_shot[c][:, cv] for c in test}
                r, sk = _retrieval(lmp, mem, root, test, scene, {c: per_shot[c][:, ca] for c in test})
                rows += r
                skipped.update(sk)
    finally:
        lmp.train(was_training)
