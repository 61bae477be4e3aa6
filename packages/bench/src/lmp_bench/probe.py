"""Probes on precomputed, frozen features: one linear layer (the paper's protocol) or an MLP head.

Features are standardised with the training split's mean and std; the probe is trained with AdamW
on large mini-batches (the whole split when it is smaller than `batch_size`) and the epoch with the
best validation score is kept (accuracy for classification, MSE for regression). Three problem kinds:

- "classification": x [N, D], y [N] class ids, cross-entropy, `n_out` = declared class count;
- "regression": x [N, D], y [N] floats, MSE, one output;
- "choice": x [N, C, D] (one row per candidate), y [N] index of the right candidate; the head scores
  each candidate with one output and a softmax over the C candidates (next shot selection).

A seed fixes the initialisation and the mini-batch order, so different seeds give different probes.
Training runs on one intra-op thread (`threads`): the matrices are tiny, and on a shared 2-core
machine two spinning threads were measured ~80x slower than one (13 s vs 0.15 s for a 600x64 probe).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from lmp_bench import metrics

Kind = Literal["classification", "regression", "choice"]


@dataclass
class ProbeConfig:
    """Probe head and its optimisation (defaults tuned for LVU-sized splits on 2 CPU cores)."""

    head: Literal["linear", "mlp"] = "linear"  # the paper trains a single linear layer
    hidden: int = 512  # MLP hidden width
    dropout: float = 0.1  # MLP only
    epochs: int = 100
    lr: float = 1e-2
    weight_decay: float = 1e-3
    batch_size: int = 512  # <= 0: full batch
    min_steps_per_epoch: int = 8  # small splits get smaller batches so an epoch is >= this many steps
    standardize: bool = True
    threads: int = 1  # torch intra-op threads while training (restored afterwards); <= 0: leave as is


@dataclass
class Probe:
    """A trained head plus the standardisation it was trained with."""

    model: nn.Module
    kind: Kind
    mean: torch.Tensor
    std: torch.Tensor
    best_epoch: int
    val_score: float

    @torch.no_grad()
    def scores(self, x) -> torch.Tensor:
        """Logits [N, C] (classification, choice) or predictions [N] (regression)."""
        self.model.eval()
        out = self.model((_t(x) - self.mean) / self.std)
        return out.squeeze(-1) if self.kind in ("regression", "choice") else out

    def predict(self, x) -> np.ndarray:
        s = self.scores(x)
        return (s if self.kind == "regression" else s.argmax(-1)).numpy()


def _t(x) -> torch.Tensor:
    return x.float() if isinstance(x, torch.Tensor) else torch.as_tensor(np.array(x, dtype=np.float32))


def make_head(d_in: int, n_out: int, cfg: ProbeConfig) -> nn.Module:
    if cfg.head == "linear":
        return nn.Linear(d_in, n_out)
    if cfg.head == "mlp":
        return nn.Sequential(
            nn.Linear(d_in, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, n_out)
        )
    raise ValueError(f"probe head must be 'linear' or 'mlp', got {cfg.head!r}")


def score(kind: Kind, pred: np.ndarray, y) -> float:
    """Default selection score, higher is better: accuracy, or minus the MSE."""
    return -metrics.mse(pred, y) if kind == "regression" else metrics.accuracy(pred, y)


@contextlib.contextmanager
def torch_threads(n: int):
    """Temporarily set torch's intra-op thread count (n <= 0: unchanged)."""
    old = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def fit_probe(
    x_train,
    y_train,
    x_val,
    y_val,
    kind: Kind,
    n_out: int,
    cfg: ProbeConfig | None = None,
    seed: int = 0,
    select: Callable[[np.ndarray, np.ndarray], float] | None = None,
) -> Probe:
    """Train one probe and keep the epoch whose `select(val_pred, y_val)` is highest."""
    cfg = cfg or ProbeConfig()
    with torch_threads(cfg.threads), torch.enable_grad():  # callers may be under no_grad (encoding)
        return _fit(x_train, y_train, x_val, y_val, kind, n_out, cfg, seed, select)


def _fit(x_train, y_train, x_val, y_val, kind, n_out, cfg, seed, select) -> Probe:
    xt, xv = _t(x_train), _t(x_val)
    if xt.shape[0] == 0:
        raise ValueError("no training samples for the probe")
    if not torch.isfinite(xt).all():
        raise ValueError("training features contain NaN or inf")
    flat = xt.reshape(-1, xt.shape[-1])
    mean = flat.mean(0) if cfg.standardize else torch.zeros(flat.shape[-1])
    std = flat.std(0, unbiased=False).clamp_min(1e-6) if cfg.standardize else torch.ones(flat.shape[-1])
    xt, xv = (xt - mean) / std, (xv - mean) / std
    yv = np.asarray(y_val)
    if kind == "regression":
        yt = _t(y_train).reshape(-1)
        loss_fn: Callable = nn.functional.mse_loss
    else:
        yt = torch.as_tensor(np.array(y_train), dtype=torch.long)
        loss_fn = nn.functional.cross_entropy
    out_dim = 1 if kind in ("regression", "choice") else n_out
    select = select or (lambda p, y: score(kind, p, y))

    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_head(xt.shape[-1], out_dim, cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = xt.shape[0]
    bs = n if cfg.batch_size <= 0 else min(cfg.batch_size, n)
    bs = max(1, min(bs, -(-n // max(1, cfg.min_steps_per_epoch))))
    best = (-float("inf"), -1, None)
    probe = Probe(model, kind, mean, std, -1, float("nan"))
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, bs):
            idx = order[i : i + bs]
            out = model(xt[idx])
            out = out.squeeze(-1) if out_dim == 1 else out
            loss = loss_fn(out, yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            out = model(xv)
            out = out.squeeze(-1) if out_dim == 1 else out
            pred = (out if kind == "regression" else out.argmax(-1)).numpy()
        s = select(pred, yv)
        if best[2] is None or s > best[0]:
            best = (s, epoch, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[2])
    probe.best_epoch, probe.val_score = best[1], float(best[0])
    return probe
