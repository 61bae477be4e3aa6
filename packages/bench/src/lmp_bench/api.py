"""In-process entry points (the CLI and the ablation sweeps call these): `evaluate_lvu`, `resolve_model`.

`evaluate_lvu(model, eval_store, labels_dir, ...)` runs the paper's LVU protocol: encode every clip of
the clip store with the frozen model, time-average, concatenate the chosen features, train one probe
per task and seed on the train split (best epoch on val), score on test. With `model=None` it gives
the two no-pretraining baselines of Table 1's first row: the base features alone (no model), and a
frozen, randomly initialised LMP (the paper trains that model from scratch on each task instead; a
frozen random encoder + the same probe is the cheap, protocol-consistent variant used here).
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
    encode_clips,
    parse_features,
)
from lmp_bench.lvu import TASKS
from lmp_bench.lvu_probe import probe_lvu
from lmp_bench.probe import ProbeConfig
from lmp_bench.results import LVUResult

log = logging.getLogger(__name__)

DEFAULT_K = 30  # the paper's window length, used when the model does not record its own


def open_store(store):
    """A `FeatureStore` from a path (or the store itself)."""
    from lmp_data import FeatureStore

    return store if hasattr(store, "load_all") else FeatureStore.open(store)


def resolve_model(model: Any) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(LMP, info) from an LMP, an export folder, "runs:/<id>[/path]" or a bare run id.

    info: `source` (what was given), `pretrain_run_id` (the MLflow run that produced the weights, when
    known) and `k` (the pretraining window length from the export's pretrain.yaml, when known).
    """
    if isinstance(model, torch.nn.Module):
        meta = getattr(model, "pretrained_meta", None) or {}
        return model, {
            "source": "in-memory",
            "pretrain_run_id": meta.get("mlflow_run_id"),
            "k": meta.get("k"),
        }
    from lmp_model.export import PRETRAIN_FILE, load_pretrained, resolve_pretrained

    folder = resolve_pretrained(str(model))
    m = load_pretrained(folder)
    meta = getattr(m, "pretrained_meta", None) or {}
    info = {"source": str(model), "pretrain_run_id": meta.get("mlflow_run_id"), "k": meta.get("k")}
    s = str(model)
    if info["pretrain_run_id"] is None and len(s) == 32 and all(c in "0123456789abcdef" for c in s):
        info["pretrain_run_id"] = s
    yaml = Path(folder) / PRETRAIN_FILE
    if info["k"] is None and yaml.is_file():
        from omegaconf import OmegaConf

        k = OmegaConf.select(OmegaConf.load(yaml), "data.k", default=None)
        info["k"] = int(k) if k is not None else None
    return m, info


def random_model(store, model_config=None, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised, frozen LMP for `store`'s dims (Table 1's no-pretraining row)."""
    from lmp_model.config import ModelConfig
    from lmp_model.model import LMP

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        m = LMP(model_config or ModelConfig(), dict(open_store(store).dims))
    return m.eval()


def _probe_cfg(probe: str | ProbeConfig | None) -> ProbeConfig:
    if isinstance(probe, ProbeConfig):
        return probe
    if probe is None:
        return ProbeConfig()
    if probe not in ("linear", "mlp"):
        raise ValueError(f"probe must be 'linear', 'mlp' or a ProbeConfig, got {probe!r}")
    return ProbeConfig(head=probe)


def _tasks(labels_dir: str | Path, tasks) -> list[str]:
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
) -> LVUResult:
    """The LVU protocol; see the module docstring. Returns per-task per-seed scores (`LVUResult`).

    model: an LMP, an export folder, an MLflow run ("runs:/<id>" or the id), or None (baselines).
    eval_store: clip store (path or `FeatureStore`); labels_dir: LVU-format `{task}/{split}.csv`.
    features: "v_ctx+a_ctx+v_cross_a" or a list; tasks: names, "a,b", or None (all present).
    seeds: a count (0..n-1) or explicit seeds; probe: "linear", "mlp" or a `ProbeConfig`.
    k / stride: eval window length (default: the model's pretraining k if recorded, else 30; capped
    at the model's max_shots) and stride (default k). model_config: the architecture of the random
    baseline (default `ModelConfig()`). strict: labelled clips missing from the store are an error.
    """
    names = parse_features(features)
    store = open_store(eval_store)
    task_list = _tasks(labels_dir, tasks)
    pcfg = _probe_cfg(probe)
    common = dict(labels_dir=labels_dir, tasks=task_list, seeds=seeds, probe=pcfg, strict=strict)
    if model is None:
        base_names = tuple(n for n in names if n in BASE_FEATURES) or BASE_FEATURES
        results = [_run(base_features(store), base_names, method="no pretraining: base features", **common)]
        rnd = random_model(store, model_config)
        kk = _window_k(rnd, k, None)
        feats = encode_clips(rnd, store, k=kk, stride=stride, batch_size=batch_size, threads=threads)
        results.append(_run(feats, names, method="no pretraining: random init", **common))
        return LVUResult.concat(results)
    lmp, info = resolve_model(model)
    from lmp_model.export import check_store_encoders

    check_store_encoders(lmp, store.encoders)
    kk = _window_k(lmp, k, info.get("k"))
    if all(n in BASE_FEATURES for n in names):
        feats = base_features(store)
    else:
        feats = encode_clips(lmp, store, k=kk, stride=stride, batch_size=batch_size, threads=threads)
    return _run(feats, names, method=method or "LMP", **common)


def _window_k(model, k: int | None, recorded: int | None) -> int:
    max_shots = int(getattr(getattr(model, "cfg", None), "max_shots", 10**9))
    if k is not None:
        return int(k)
    return int(min(recorded or DEFAULT_K, max_shots))


def features_matrix(
    model: Any, eval_store, features: str = DEFAULT_FEATURES, **kw
) -> tuple[list[str], np.ndarray]:
    """(clip ids, [n_clips, D]) of the chosen features, for users who probe with their own code."""
    store = open_store(eval_store)
    names = parse_features(features)
    if model is None or all(n in BASE_FEATURES for n in names):
        f = base_features(store)
    else:
        lmp, info = resolve_model(model)
        f = encode_clips(lmp, store, k=_window_k(lmp, kw.pop("k", None), info.get("k")), **kw)
    return f.clip_ids, f.combine(names)
