"""The DeepSpeed engine of a pretraining run: the module it trains, AdamW groups, its config, the lr schedule.

`build_engine` wraps the recipe's model in `TrainStep` (forward -> (loss, terms, chance) tensors, so ZeRO-3's
hooks see the outputs), makes the engine and installs the weights-only checkpoint loader on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from lmp_model.pretrain import checkpoint as ckpt
from lmp_model.pretrain.config import PretrainConfig
from lmp_model.pretrain.dist import DistContext


class TrainStep(nn.Module):
    """The engine's module: LMP's training forward returning (loss, terms) instead of a dataclass, so
    DeepSpeed (ZeRO-3's hooks) sees the output tensors."""

    PREFIX = "lmp."
    """State-dict prefix of the recipe's weights inside the engine's module (stripped on export)."""

    def __init__(self, lmp: nn.Module):
        super().__init__()
        self.lmp = lmp

    def forward(
        self, batch: dict[str, Any]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        out = self.lmp(batch)
        return out.loss, out.terms, out.chance


def strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The recipe's own weights of an engine state dict (keys without `TrainStep.PREFIX`)."""
    n = len(TrainStep.PREFIX)
    return {k[n:]: v for k, v in state.items() if k.startswith(TrainStep.PREFIX)}


def to_device(batch: dict[str, Any], device: torch.device, dtype: torch.dtype | None) -> dict[str, Any]:
    """Batch tensors onto the engine's device; floating features in the engine's dtype (bf16 engines
    hold bf16 weights and DeepSpeed does not cast inputs)."""
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
            if dtype is not None and v.is_floating_point():
                v = v.to(dtype)
        out[k] = v
    return out


def use_bf16(setting: str, device: torch.device) -> bool:
    """`train.bf16` (auto|true|false) resolved: auto is bf16 on a GPU that supports it."""
    s = str(setting).lower()
    if s == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return s == "true"


def param_groups(model: nn.Module, weight_decay: float, decay_all: bool) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases, norms, embeddings and [MASK] vectors (unless decay_all)."""
    if decay_all:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    no_decay: set[int] = set()
    for mod in model.modules():
        if isinstance(mod, nn.Embedding | nn.LayerNorm):
            no_decay.update(id(p) for p in mod.parameters(recurse=False))
    decay, rest = [], []
    for p in model.parameters():
        if p.requires_grad:
            (rest if p.ndim < 2 or id(p) in no_decay else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def deepspeed_config(cfg: PretrainConfig, accum: int, world: int, bf16: bool) -> dict[str, Any]:
    """DeepSpeed's config from `cfg.train`, with `train.deepspeed` deep-merged over it (OmegaConf merge:
    nested dicts merge key by key, any other value replaces)."""
    t = cfg.train
    base = {
        "train_micro_batch_size_per_gpu": t.micro_batch,
        "gradient_accumulation_steps": accum,
        "train_batch_size": t.micro_batch * accum * world,
        "gradient_clipping": t.grad_clip,
        "zero_optimization": {"stage": t.zero_stage},
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": t.lr,
                "betas": list(t.betas),
                "eps": t.eps,
                "weight_decay": t.weight_decay,
                "torch_adam": True,  # no fused-Adam compile (STACK.md)
            },
        },
        "bf16": {"enabled": bf16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    merged = OmegaConf.to_container(OmegaConf.merge(base, t.deepspeed), resolve=False)
    assert isinstance(merged, dict)
    return merged  # type: ignore[return-value]


def cosine_schedule(cfg: PretrainConfig, total_steps: int) -> Callable[[Any], Any]:
    """Linear warm-up then cosine annealing to `min_lr_ratio * lr` (transformers' schedule)."""
    from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup

    t = cfg.train

    def make(optimizer: Any) -> Any:
        return get_cosine_with_min_lr_schedule_with_warmup(
            optimizer, t.warmup_steps, total_steps, min_lr_rate=t.min_lr_ratio
        )

    return make


def build_engine(
    cfg: PretrainConfig, ctx: DistContext, model: nn.Module, accum: int, total_steps: int, bf16: bool
) -> Any:
    """The engine training `model` on `ctx.device` (it steps the lr schedule itself); it resumes with
    `ckpt.safe_load`."""
    import deepspeed

    t = cfg.train
    groups = [g for g in param_groups(model, t.weight_decay, t.decay_norm_and_bias) if g["params"]]
    engine, _, _, _ = deepspeed.initialize(
        model=TrainStep(model).to(ctx.device),
        model_parameters=groups,
        config=deepspeed_config(cfg, accum, ctx.world, bf16),
        lr_scheduler=cosine_schedule(cfg, total_steps),
    )
    return ckpt.weights_only_engine(engine)  # resume never unpickles code (weights_only)
