"""The paper's "no pretraining" row: the LMP architecture trained from scratch on each LVU task.

For each task and seed: the architecture (a `ModelConfig`, in the sweeps the pretraining config's) at
its random initialisation, a linear head on the time-averaged chosen features, trained end to end on
the task's train split with the epoch chosen on val and scored on test. Same clip encoding as the
probe protocol (`lmp_bench.features.clip_windows`: eval windows of k shots, each shot counted once,
time-averaged per clip, the same `pool_windows`), same metrics and the same `LVUResult` rows, so the
row enters the tables like any other.

Recipe (`ScratchConfig`):

- epoch 0 is the head alone: a linear probe (`fit_probe`, the probe config of the other rows) on the
  frozen random-init features, which also fixes the input standardisation (train mean / std of those
  features) used for the rest of the training. Epoch 0 is therefore the "frozen random init" row of
  the same seed; the end-to-end epochs start from it (linear-probe-then-fine-tune, so a few epochs of a
  small body learning rate do not start from a random head);
- epochs 1..E train body and head together: AdamW, lr `lr` (1e-4) for the body and the probe's lr
  for the head, weight decay, gradient clipping, mini-batches of `batch_clips` clips (all windows of a
  clip in the same batch, so its time average is exact), cross-entropy or MSE as the probe;
- after every epoch the val split is scored (accuracy, or minus the MSE) and the best epoch (the first
  argmax, epoch 0 included) is kept and scored on test.

Cost and the choice of `epochs`, measured on the shared 2-core machine while other sessions kept it
busy (load average 5-7), one thread, default demo (~300/60/100 labelled clips per task, ~35 shots
each; k = 30 -> ~510/100/170 windows), model/demo.yaml (d = 128, 2 layers), features
v_ctx+a_ctx+v_cross_a (encoded without the language branch, `features.TEXT_FREE`): forward + backward
~29 ms per window (~50-100 ms with the language branch), so one end-to-end epoch (train, then val)
took 7.7-19 s; the head-only epoch 0 2-7 s, after the frozen features, which are encoded once per
initialisation seed for all tasks (loading the store + that encoding: ~28 s once). `epochs = 2`:
21 s per task-seed measured on scene (load 3-5), 25-45 s under heavier load, so ~3-4 min for 9 tasks
and one seed; on genre / view_count the val score peaked at
epoch 1 or stayed at epoch 0, and later epochs mostly overfit (train loss 0.73 -> 0.08 by epoch 3).
Raise `ScratchConfig.epochs` on real data and hardware (`lmp-bench lvu --model scratch
--scratch-epochs N`, sweep `probe.scratch.epochs=N`).
Features that need language (l_ctx, v_cross_l, l_shot) work too, ~2.5x slower.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from torch import nn

from lmp_bench.features import (
    _load,
    clip_windows,
    encode_clips,
    needs_text,
    parse_features,
    pool_windows,
    time_average,
)
from lmp_bench.lvu import parse_tasks, task_spec
from lmp_bench.lvu_probe import result_row, task_splits, task_summary
from lmp_bench.probe import ProbeConfig, fit_probe, score, torch_threads
from lmp_bench.progress import current
from lmp_bench.results import RUN_SCHEMA, LVUResult
from lmp_data.batch import DEFAULT_K

log = logging.getLogger(__name__)

METHOD = "no pretraining: scratch (supervised)"
HISTORY_SCHEMA = {
    "method": pl.String,
    "task": pl.String,
    "seed": pl.Int64,
    "epoch": pl.Int64,
    "train_loss": pl.Float64,
    "val_score": pl.Float64,
    "seconds": pl.Float64,
}


@dataclass
class ScratchConfig:
    """End-to-end training of the architecture on one task (see the module docstring)."""

    epochs: int = 2  # end-to-end epochs after the head-only epoch 0 (measured budget, module docstring)
    lr: float = 1e-4  # body (projections, transformers)
    head_lr: float | None = None  # None: the probe's lr (ProbeConfig.lr)
    weight_decay: float = 0.01
    batch_clips: int = 16  # clips per optimizer step (all their windows)
    eval_batch: int = 64  # windows per batch when scoring val / test
    grad_clip: float = 1.0  # max gradient norm; 0: off
    threads: int = 1  # torch intra-op threads (<= 0: unchanged)


def scratch_lvu(
    store,
    labels_dir,
    features: str | Sequence[str],
    model_config=None,
    tasks: str | Sequence[str] | None = None,
    seeds: int | Sequence[int] = 3,
    probe: ProbeConfig | None = None,
    cfg: ScratchConfig | None = None,
    *,
    k: int = DEFAULT_K,
    stride: int | None = None,
    init_seed: int | None = None,
    strict: bool = False,
    method: str = METHOD,
) -> LVUResult:
    """Train the architecture from scratch per task and seed; `LVUResult` with a per-epoch `history`.

    `seeds` are the probe seeds (head initialisation, mini-batch order); the body's random
    initialisation uses `init_seed`, or the probe seed when None. `store` is a `FeatureStore`.
    """
    names = parse_features(features)
    cfg = cfg or ScratchConfig()
    probe = probe or ProbeConfig()
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise ValueError("at least one seed is needed")
    all_ids = store.movies()["movie_id"].to_list()
    mem, ids, failed = _load(store, all_ids)
    if not ids:
        raise ValueError("scratch: no readable clips in the store")
    text = needs_text(names)
    rows, hist, missing, skipped = _scratch_tasks(
        store, mem, ids, labels_dir, tasks, names, text, model_config, seed_list, probe, cfg,
        k=k, stride=stride, init_seed=init_seed, strict=strict, method=method,
    )  # fmt: skip
    out = LVUResult(pl.DataFrame(rows, schema=RUN_SCHEMA), missing, skipped)
    out.failed = dict(failed)
    out.history = pl.DataFrame(hist, schema=HISTORY_SCHEMA)
    return out


def _scratch_tasks(
    store, mem, ids, labels_dir, tasks, names, text, model_config, seed_list, probe, cfg,
    *, k, stride, init_seed, strict, method,
):  # fmt: skip
    """(result rows, history rows, missing, skipped) of every task and seed: the random-init body of
    each init seed (cached, with its frozen features) trained end to end by `_train_one`."""
    from lmp_bench.api import random_model

    init_models: dict[int, torch.nn.Module] = {}
    rows, hist, missing, skipped = [], [], {}, {}
    progress = current()
    with torch_threads(cfg.threads):
        for task in parse_tasks(tasks):
            label = f"{task} ({method})"
            progress.start_task(label)
            split, missing[task], why = task_splits(labels_dir, task, set(ids), strict)
            if why:
                skipped[task] = why
                progress.probes_done(len(seed_list))
                progress.task_done(label, f"skipped: {why}")
                continue
            spec = task_spec(task)
            order = [c for s in ("train", "val", "test") for c in split[s]["clip_id"].to_list()]
            cw = clip_windows(mem, order, k, stride)
            n_tr, n_va = split["train"].height, split["val"].height
            rows_of = {"train": np.arange(n_tr), "val": np.arange(n_tr, n_tr + n_va)}
            rows_of["test"] = np.arange(n_tr + n_va, len(order))
            ys = {s: df["label"].to_numpy() for s, df in split.items()}
            for seed in seed_list:
                iseed = seed if init_seed is None else int(init_seed)
                if iseed not in init_models:
                    init_models[iseed] = random_model(store, model_config, seed=iseed, k=k)
                init = init_models[iseed]
                # the frozen random-init features of every clip: computed once per init seed (cached)
                f0 = encode_clips(init, store, k=k, stride=stride, features=names)
                row0 = {c: i for i, c in enumerate(f0.clip_ids)}
                x0 = f0.combine(names)
                x0s = {s: x0[[row0[c] for c in split[s]["clip_id"]]] for s in split}
                t0 = time.perf_counter()
                res, h = _train_one(init, cw, rows_of, x0s, ys, spec, names, text, probe, cfg, seed)
                log.info(
                    "scratch %s seed %d: %.1f s, best epoch %d", task, seed, time.perf_counter() - t0, res[1]
                )
                pred, best_epoch, val_score = res
                row = result_row(task, seed, pred, ys["test"], val_score, best_epoch, split)
                rows.append(row | {"method": method, "features": "+".join(names)})
                hist += [r | {"method": method, "task": task, "seed": int(seed)} for r in h]
                progress.probes_done()
            progress.task_done(label, task_summary(rows[-len(seed_list) :]))
    return rows, hist, missing, skipped


def _forward(body, head, cw, idx_rows, names, text, mean, std, max_tokens) -> torch.Tensor:
    """Head outputs for the clips at `idx_rows` (all their windows in one batch)."""
    local = {int(r): i for i, r in enumerate(idx_rows)}
    win = cw.windows_of(idx_rows)
    batch, shot_w, rows, _ = cw.batch(win, max_tokens, text=text)
    out = body.encode(batch)
    feats = time_average(pool_windows(out, shot_w, [local[int(r)] for r in rows], len(idx_rows), names))
    x = torch.cat([feats[n] for n in names], dim=1)
    return head((x - mean) / std)


@torch.no_grad()
def _predict(body, head, cw, rows, names, text, mean, std, max_tokens, kind, eval_batch) -> np.ndarray:
    body.eval()
    head.eval()
    outs = []
    # group clips so a batch holds about `eval_batch` windows
    per_clip = np.bincount(cw.win_row, minlength=int(cw.win_row.max()) + 1)
    lo = 0
    while lo < len(rows):
        hi, n = lo, 0
        while hi < len(rows) and (hi == lo or n + per_clip[rows[hi]] <= eval_batch):
            n += per_clip[rows[hi]]
            hi += 1
        outs.append(_forward(body, head, cw, rows[lo:hi], names, text, mean, std, max_tokens))
        lo = hi
    out = torch.cat(outs)
    return (out.squeeze(-1) if kind == "regression" else out.argmax(-1)).numpy()


def _train_one(init, cw, rows_of, x0s, ys, spec, names, text, probe, cfg, seed):
    """((test predictions, best epoch, its val score), per-epoch history) for one task and seed."""
    kind = spec.kind
    t_start = time.perf_counter()
    # epoch 0: the head alone on the frozen random-init features (also fixes the standardisation)
    p0 = fit_probe(x0s["train"], ys["train"], x0s["val"], ys["val"], kind, spec.n_classes, probe, seed)
    mean, std = p0.mean, p0.std
    with torch.no_grad():
        out0 = p0.model((torch.as_tensor(x0s["train"]) - mean) / std)
    loss_fn = nn.functional.mse_loss if kind == "regression" else nn.functional.cross_entropy
    y_tr = torch.as_tensor(np.array(ys["train"]), dtype=torch.float32 if kind == "regression" else torch.long)
    loss0 = float(loss_fn(out0.squeeze(-1) if kind == "regression" else out0, y_tr))
    history = [
        {"epoch": 0, "train_loss": loss0, "val_score": p0.val_score, "seconds": time.perf_counter() - t_start}
    ]
    best = (p0.val_score, 0, None)
    if cfg.epochs > 0:
        best, body, head, max_tokens = _fine_tune(
            init, p0, best, cw, rows_of, ys, y_tr, loss_fn, kind, names, text, mean, std, probe, cfg, seed,
            history,
        )  # fmt: skip
    if best[1] == 0:
        pred = p0.predict(x0s["test"])
    else:
        body.load_state_dict(best[2][0])
        head.load_state_dict(best[2][1])
        pred = _predict(
            body, head, cw, rows_of["test"], names, text, mean, std, max_tokens, kind, cfg.eval_batch
        )
    return (pred, best[1], float(best[0])), history


def _fine_tune(
    init, p0, best, cw, rows_of, ys, y_tr, loss_fn, kind, names, text, mean, std, probe, cfg, seed, history
):
    """Epochs 1..E: body and head (from the epoch-0 probe) trained together, val scored after each
    epoch (appended to `history`); (best (val score, epoch, weights), body, head, max_tokens)."""
    body = copy.deepcopy(init).train()
    for prm in body.parameters():
        prm.requires_grad_(True)
    head = copy.deepcopy(p0.model)  # p0 stays the epoch-0 model
    max_tokens = getattr(getattr(body, "cfg", None), "max_tokens", None)
    opt = torch.optim.AdamW(
        [
            {"params": [q for q in body.parameters() if q.requires_grad], "lr": cfg.lr},
            {"params": list(head.parameters()), "lr": cfg.head_lr or probe.lr},
        ],
        weight_decay=cfg.weight_decay,
    )
    gen = torch.Generator().manual_seed(int(seed))
    train_rows = rows_of["train"]
    params = [q for g in opt.param_groups for q in g["params"]]
    with torch.enable_grad():
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            body.train()
            head.train()
            perm = train_rows[torch.randperm(len(train_rows), generator=gen).numpy()]
            losses, weights = _train_epoch(
                body, head, opt, params, perm, cw, y_tr, loss_fn, kind, names, text, mean, std, max_tokens, cfg
            )  # fmt: skip
            pred_val = _predict(
                body, head, cw, rows_of["val"], names, text, mean, std, max_tokens, kind, cfg.eval_batch
            )
            s = score(kind, pred_val, ys["val"])
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": float(np.average(losses, weights=weights)),
                    "val_score": float(s),
                    "seconds": time.perf_counter() - t0,
                }
            )
            if s > best[0]:
                best = (s, epoch, (copy.deepcopy(body.state_dict()), copy.deepcopy(head.state_dict())))
    return best, body, head, max_tokens


def _train_epoch(
    body, head, opt, params, perm, cw, y_tr, loss_fn, kind, names, text, mean, std, max_tokens, cfg
):
    """One pass over the train clips in the order `perm`, `cfg.batch_clips` clips per optimizer step;
    (losses, batch sizes)."""
    losses, weights = [], []
    for lo in range(0, len(perm), cfg.batch_clips):
        idx = perm[lo : lo + cfg.batch_clips]
        out = _forward(body, head, cw, idx, names, text, mean, std, max_tokens)
        y = y_tr[idx]
        loss = loss_fn(out.squeeze(-1) if kind == "regression" else out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        losses.append(float(loss.detach()))
        weights.append(len(idx))
    return losses, weights
