"""In-process entry points (the CLI and the ablation sweeps call these): `evaluate_lvu`, `resolve_model`.

`evaluate_lvu(model, eval_store, labels_dir, ...)` runs the paper's LVU protocol: encode every clip of
the clip store with the frozen model, time-average, concatenate the chosen features, train one probe
per task and seed on the train split (best epoch on val), score on test. With `model=None` it gives
the no-pretraining baselines of Table 1 (`no_pretrain`, labelled rows, `NO_PRETRAIN`):

- "base": the base features alone (v_base + a_base, no model; v_base alone for a store without audio);
- "random_init": the architecture at its random initialisation, frozen, probed like a pretrained model;
- "scratch": the paper's row, the architecture trained from scratch on each task (`lmp_bench.scratch`).

`random_model` is the one way the no-pretraining models are built (the sweeps use it too).

Eval window length k: the caller's `k`, else the model's pretraining k (`pretrained_meta["k"]`, which
`lmp_model.export` records and `load_pretrained` restores; in-memory models built by `random_model`
carry theirs), else 30 with a warning (old exports that record none).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmp_bench.features import (
    BASE_FEATURES,
    DEFAULT_FEATURES,
    ClipFeatures,
    base_features,
    check_model_features,
    check_store_features,
    encode_clips,
    model_default_features,
    model_features,
    model_label,
    parse_features,
    store_base_features,
)
from lmp_bench.lvu import TASKS
from lmp_bench.lvu_probe import probe_lvu
from lmp_bench.probe import ProbeConfig
from lmp_bench.progress import current, seeds_of
from lmp_bench.results import LVUResult
from lmp_data.batch import DEFAULT_K

NO_PRETRAIN = {
    "base": "no pretraining: base features",
    "random_init": "no pretraining: frozen random init",
    "scratch": "no pretraining: scratch (supervised)",
}
"""The no-pretraining baselines (`evaluate_lvu(None, no_pretrain=...)`) and their row labels."""

log = logging.getLogger(__name__)


def open_store(store):
    """A `FeatureStore` from a path (or the store itself)."""
    from lmp_data import FeatureStore

    return store if hasattr(store, "load_all") else FeatureStore.open(store)


def resolve_model(model: Any) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(model, info) from a model, an export folder, "runs:/<id>[/path]" or a bare run id (any recipe:
    LMP, HSSL, M2S; `lmp_model.export.load_pretrained`).

    info: `source` (what was given), `pretrain_run_id` (the MLflow run that produced the weights, when
    known) and `k` (the pretraining window length the export records, when known).
    """
    if isinstance(model, torch.nn.Module):
        meta = getattr(model, "pretrained_meta", None) or {}
        return model, {
            "source": "in-memory",
            "pretrain_run_id": meta.get("mlflow_run_id"),
            "k": meta.get("k"),
        }
    from lmp_model.export import load_pretrained, resolve_pretrained

    folder = resolve_pretrained(str(model))
    m = load_pretrained(folder)
    meta = getattr(m, "pretrained_meta", None) or {}
    info = {"source": str(model), "pretrain_run_id": meta.get("mlflow_run_id"), "k": meta.get("k")}
    s = str(model)
    if info["pretrain_run_id"] is None and len(s) == 32 and all(c in "0123456789abcdef" for c in s):
        info["pretrain_run_id"] = s
    return m, info


def random_model(store, model_config=None, seed: int = 0, k: int | None = None) -> torch.nn.Module:
    """The architecture (`model_config`, default `ModelConfig()`) at its seeded random initialisation,
    for `store`'s dims, in eval mode: the model of the "random_init" and "scratch" baselines.

    It carries `.encoders` (the store's, so encoder checks pass) and `.pretrained_meta` with `k` (the
    window length it is meant to be probed with; default 30 capped at max_shots) and `init_seed`.
    """
    from lmp_model.config import ModelConfig
    from lmp_model.model import LMP

    st = open_store(store)
    cfg = model_config or ModelConfig()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        m = LMP(cfg, dict(st.dims))
    m.encoders = getattr(st, "encoders", None)
    kk = int(k) if k is not None else min(DEFAULT_K, int(cfg.max_shots))
    m.pretrained_meta = {"k": kk, "init_seed": int(seed), "pretrained": False}
    return m.eval()


def _probe_cfg(probe: str | ProbeConfig | None) -> ProbeConfig:
    if isinstance(probe, ProbeConfig):
        return probe
    if probe is None:
        return ProbeConfig()
    if probe not in ("linear", "mlp"):
        raise ValueError(f"probe must be 'linear', 'mlp' or a ProbeConfig, got {probe!r}")
    return ProbeConfig(head=probe)


def lvu_tasks(labels_dir: str | Path, tasks) -> list[str]:
    """Requested tasks; None: every LVU task with a folder under `labels_dir`."""
    from lmp_bench.lvu import parse_tasks

    if tasks is not None:
        return parse_tasks(tasks)
    found = [t for t in TASKS if (Path(labels_dir) / t).is_dir()]
    if not found:
        raise FileNotFoundError(f"no LVU task folders ({', '.join(TASKS)}) under {labels_dir}")
    return found


def _run(
    feats: ClipFeatures, names: tuple[str, ...], labels_dir, tasks, seeds, probe, method, strict
) -> LVUResult:
    res = probe_lvu(
        feats.clip_ids,
        feats.combine(names),
        labels_dir,
        tasks=tasks,
        seeds=seeds,
        probe=probe,
        method=method,
        features="+".join(names),
        strict=strict,
    )
    res.failed = dict(feats.failed)
    return res


def evaluate_lvu(
    model: Any,
    eval_store,
    labels_dir: str | os.PathLike,
    features: str | Sequence[str] = DEFAULT_FEATURES,
    tasks: str | Sequence[str] | None = None,
    seeds: int | Sequence[int] = 3,
    probe: str | ProbeConfig | None = "linear",
    *,
    k: int | None = None,
    stride: int | None = None,
    batch_size: int = 64,
    threads: int = 1,
    strict: bool = False,
    model_config=None,
    method: str | None = None,
    no_pretrain: str | Sequence[str] = ("base", "random_init"),
    init_seed: int | None = None,
    scratch=None,
) -> LVUResult:
    """The LVU protocol; see the module docstring. Returns per-task per-seed scores (`LVUResult`).

    model: an LMP, an export folder, an MLflow run ("runs:/<id>" or the id), or None (baselines).
    eval_store: clip store (path or `FeatureStore`); labels_dir: LVU-format `{task}/{split}.csv`.
    features: "v_ctx+a_ctx+v_cross_a" or a list; tasks: names, "a,b", or None (all present).
    seeds: a count (0..n-1) or explicit seeds; probe: "linear", "mlp" or a `ProbeConfig`.
    k / stride: eval window length (default: the model's pretraining k if recorded, else 30; capped
    at the model's max_shots) and stride (default k). strict: labelled clips missing from the store are
    an error. method: the row label (default the recipe's: "LMP", "HSSL", "M2S"; no-pretraining rows:
    `NO_PRETRAIN`). A model of another recipe than LMP probes its own features; left at the LMP default,
    `features` becomes the recipe's default (HSSL v_ctx, M2S v_scene: `lmp_model.recipes.RECIPES`).

    With model=None: `no_pretrain` names the baselines ("base", "random_init", "scratch", or several;
    default the two cheap ones), `model_config` their architecture (default `ModelConfig()`),
    `init_seed` the seed of its random initialisation (None: 0 for "random_init", each probe seed for
    "scratch"), `scratch` a `lmp_bench.scratch.ScratchConfig`. The "scratch" result carries the
    per-epoch `history`.
    """
    names = parse_features(features)
    store = open_store(eval_store)
    task_list = lvu_tasks(labels_dir, tasks)
    pcfg = _probe_cfg(probe)
    common = dict(labels_dir=labels_dir, tasks=task_list, seeds=seeds, probe=pcfg, strict=strict)
    if model is None:
        return _no_pretrain(
            store, labels_dir, features, names, task_list, seeds, pcfg, common, no_pretrain, method,
            model_config, init_seed, scratch, k=k, stride=stride, batch_size=batch_size, threads=threads,
            strict=strict,
        )  # fmt: skip
    return _pretrained(
        model, store, features, names, task_list, seeds, common, method,
        k=k, stride=stride, batch_size=batch_size, threads=threads,
    )  # fmt: skip


def _no_pretrain(
    store, labels_dir, features, names, task_list, seeds, pcfg, common, no_pretrain, method, model_config,
    init_seed, scratch, *, k, stride, batch_size, threads, strict,
) -> LVUResult:  # fmt: skip
    """`evaluate_lvu` with model=None: the `no_pretrain` baselines, one labelled row each."""
    modes = [no_pretrain] if isinstance(no_pretrain, str) else list(no_pretrain)
    bad = [m for m in modes if m not in NO_PRETRAIN]
    if bad or not modes:
        raise ValueError(f"no_pretrain: expected some of {list(NO_PRETRAIN)}, got {modes}")
    current().plan(len(modes) * len(task_list) * seeds_of(seeds))  # one probe per row, task and seed
    results = []
    for mode in modes:
        label = method if (method and len(modes) == 1) else NO_PRETRAIN[mode]
        if mode == "base":
            base_names = tuple(n for n in names if n in BASE_FEATURES)
            check_store_features(store, base_names)
            base_names = base_names or store_base_features(store)
            results.append(_run(base_features(store), base_names, method=label, **common))
        elif mode == "random_init":
            rnd = random_model(store, model_config, seed=init_seed or 0, k=k)
            rnd_names = _model_names(rnd, features, names)
            feats = encode_clips(
                rnd, store, k=_window_k(rnd, k, None), stride=stride, batch_size=batch_size,
                threads=threads, features=rnd_names,
            )  # fmt: skip
            results.append(_run(feats, rnd_names, method=label, **common))
        else:
            results.append(
                _scratch(
                    store, labels_dir, features, names, task_list, seeds, pcfg, model_config, init_seed,
                    scratch, label, k=k, stride=stride, threads=threads, strict=strict,
                )
            )  # fmt: skip
    return LVUResult.concat(results)


def _scratch(
    store, labels_dir, features, names, task_list, seeds, pcfg, model_config, init_seed, scratch, label,
    *, k, stride, threads, strict,
) -> LVUResult:  # fmt: skip
    """The "scratch" row: the architecture trained from scratch per task (`lmp_bench.scratch`)."""
    from lmp_bench.scratch import ScratchConfig, scratch_lvu

    kk = k if k is not None else min(DEFAULT_K, int(getattr(model_config, "max_shots", DEFAULT_K)))
    scratch_names = _model_names(random_model(store, model_config, k=kk), features, names)
    return scratch_lvu(
        store,
        labels_dir,
        scratch_names,
        model_config,
        task_list,
        seeds,
        pcfg,
        scratch or ScratchConfig(threads=threads),
        k=kk,
        stride=stride,
        init_seed=init_seed,
        strict=strict,
        method=label,
    )


def _pretrained(
    model, store, features, names, task_list, seeds, common, method, *, k, stride, batch_size, threads
) -> LVUResult:
    """`evaluate_lvu` of a model (any recipe): its features of the clips, encoded frozen, probed."""
    current().plan(len(task_list) * seeds_of(seeds))
    lmp, info = resolve_model(model)
    from lmp_model.export import check_store_encoders

    check_store_encoders(lmp, store.encoders)
    names = _model_names(lmp, features, names)
    kk = _window_k(lmp, k, info.get("k"))
    if all(n in BASE_FEATURES for n in names):
        check_store_features(store, names)
        feats = base_features(store)
    else:
        feats = encode_clips(
            lmp, store, k=kk, stride=stride, batch_size=batch_size, threads=threads, features=names
        )
    return _run(feats, names, method=method or model_label(lmp), **common)


def _model_names(model, features, names: tuple[str, ...]) -> tuple[str, ...]:
    """The features to probe `model` with: `names`, except that the untouched LMP default becomes the
    model's own default when the model lacks one of them (another recipe); checked against the model."""
    if features == DEFAULT_FEATURES and any(n not in model_features(model) for n in names):
        own = parse_features(model_default_features(model))
        log.info("%s model: probing its default features %s", model_label(model), "+".join(own))
        names = own
    check_model_features(model, names)
    return names


def _window_k(model, k: int | None, recorded: int | None = None) -> int:
    """The eval window length: `k` if given, else the model's recorded pretraining k, else 30 (warned)."""
    if k is not None:
        return int(k)
    meta = getattr(model, "pretrained_meta", None) or {}
    rec = recorded if recorded is not None else meta.get("k")
    max_shots = int(getattr(getattr(model, "cfg", None), "max_shots", 10**9))
    if rec is None:
        log.warning(
            "the model records no pretraining window length k (an old export?); probing with k=%d", DEFAULT_K
        )
        rec = DEFAULT_K
    return int(min(int(rec), max_shots))


def features_matrix(
    model: Any, eval_store, features: str = DEFAULT_FEATURES, **kw
) -> tuple[list[str], np.ndarray]:
    """(clip ids, [n_clips, D]) of the chosen features, for users who probe with their own code."""
    store = open_store(eval_store)
    names = parse_features(features)
    if model is None or all(n in BASE_FEATURES for n in names):
        check_store_features(store, names)
        f = base_features(store)
    else:
        lmp, info = resolve_model(model)
        names = _model_names(lmp, features, names)
        kk = _window_k(lmp, kw.pop("k", None), info.get("k"))
        f = encode_clips(lmp, store, k=kk, features=names, **kw)
    return f.clip_ids, f.combine(names)
