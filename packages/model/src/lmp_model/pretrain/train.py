"""`run(cfg)`: one LMP pretraining through a DeepSpeed engine, checkpointed, resumable, tracked in MLflow.

Per optimizer step every rank runs `accum` micro-batches (forward, backward; DeepSpeed reduces and
steps at the boundary). After each forward the loss terms are all-reduced (one small tensor), which
gives the logged means and lets every rank see a non-finite loss at once, so all ranks stop together
(no rank is left waiting in a collective). Checkpoints hold DeepSpeed's state (weights, AdamW, lr
schedule) plus client state: step, data position (micro-step), every rank's RNG states, the MLflow
run id and the loss history, so a resumed run continues the same loss curve and the same MLflow run.

This module is the set-up and the step loop; the parts it drives live beside it: `engine` (the DeepSpeed
engine, optimizer groups, lr schedule), `checkpoint.Checkpointer` (save, resume), `metrics.RunMetrics`
(loss history, metrics.jsonl, MLflow, the Description), `export.Exporter` (export/ and snapshots/),
`progress.StepProgress` (the console bar).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmp_model.model import LMPOutput
from lmp_model.pretrain import checkpoint as ckpt
from lmp_model.pretrain import preempt
from lmp_model.pretrain.config import PretrainConfig, config_to_yaml, validate
from lmp_model.pretrain.data import WindowStream, load_train_data, max_window_tokens
from lmp_model.pretrain.dist import DistContext, barrier, setup, teardown
from lmp_model.pretrain.engine import build_engine, to_device, use_bf16
from lmp_model.pretrain.export import SNAPSHOTS, Exporter
from lmp_model.pretrain.metrics import MLFLOW_JOURNAL, RunMetrics, step_record

log = logging.getLogger("lmp_model.pretrain")

LossHook = Callable[[int, Any], None]
"""Test hook: called as hook(step, LMPOutput) after each forward (may edit `terms` in place)."""


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/inf; names the step and the term. The last good checkpoint is kept."""

    def __init__(self, step: int, term: str, value: float, last_checkpoint: str | None):
        self.step, self.term, self.value, self.last_checkpoint = step, term, value, last_checkpoint
        super().__init__(
            f"non-finite loss at step {step}: term {term!r} = {value}; stopping. "
            f"Last good checkpoint: {last_checkpoint or 'none'}"
        )


@dataclass
class PretrainResult:
    run_dir: Path
    mlflow_run_id: str | None
    export_dir: Path | None
    final_losses: dict[str, float]
    steps: int
    resumed_from: int | None = None
    history: list[dict[str, float]] = field(default_factory=list)

    def summary(self) -> dict:
        """JSON-able summary (what `lmp-pretrain` prints and a submitit job returns)."""
        return {
            "run_dir": str(self.run_dir),
            "mlflow_run_id": self.mlflow_run_id,
            "export_dir": str(self.export_dir),
            "steps": self.steps,
            "resumed_from": self.resumed_from,
            "final_losses": self.final_losses,
        }


def missing_modalities_note(model: nn.Module, store: Any) -> str:
    """One line naming the modalities the model's store lacks and the loss terms dropped with them
    (empty when nothing is missing): a MAD import has no audio, so e.g. LMP drops intra/audio,
    inter/v2a, inter/a2v, the cross terms and window/audio."""
    missing = tuple(getattr(model, "missing", ()))
    if not missing:
        return ""
    dropped = tuple(getattr(model, "dropped_terms", ()))
    what = f"dropping loss terms {', '.join(dropped)}" if dropped else "no loss term needs it"
    return (
        f"store {store} has no {' and no '.join(missing)}: {what}; the model has no module for "
        f"{'/'.join(missing)}"
    )


@dataclass
class _Plan:
    """Batch sizes and length of a run: micro-batches per step and rank, windows per step, optimizer steps."""

    accum: int
    global_batch: int
    total_steps: int


class _Trainer:
    def __init__(self, cfg: PretrainConfig, ctx: DistContext, resume: bool, loss_hook: LossHook | None):
        self.cfg, self.ctx, self.loss_hook = cfg, ctx, loss_hook
        self.run_dir = cfg.run_dir.resolve()
        self.ckpt = ckpt.Checkpointer(self.run_dir / "checkpoints", cfg, ctx, resume)
        self.metrics = RunMetrics(cfg, ctx, self.run_dir)

    # ----------------------------------------------------------------------------------- set-up
    def fit(self) -> PretrainResult:
        cfg, ctx, t = self.cfg, self.ctx, self.cfg.train
        if t.threads:
            torch.set_num_threads(t.threads)
        resume_tag = self.ckpt.prepare()
        ckpt.seed_all(t.seed)  # identical model init on every rank
        data = load_train_data(cfg.data, t.seed, ctx.is_main, lambda: barrier(ctx), ctx.world, ctx.device)
        plan = self._plan(data)
        model, data = self._model(data, resume_tag)
        self.bf16 = use_bf16(t.bf16, ctx.device)
        self.engine = build_engine(cfg, ctx, model, plan.accum, plan.total_steps, self.bf16)
        self.data, self.exporter = data, Exporter(cfg, ctx, self.run_dir, data)
        start_step, run_id, resumed_from = 0, None, None
        if resume_tag is not None:
            start_step, run_id, self.metrics.history = self.ckpt.load(self.engine, resume_tag)
            resumed_from = start_step
        else:
            ckpt.seed_all(t.seed * 1000 + 17 + ctx.rank)  # masking/dropout differ across ranks
        derived = {
            "total_steps": plan.total_steps,
            "global_batch": plan.global_batch,
            "grad_accum": plan.accum,
            "world_size": ctx.world,
            "bf16": self.bf16,
            "windows_per_epoch": len(data.windows),
            "movies": len(data.movies),
        }
        self.metrics.start(run_id, data, derived, resume_tag, self.missing_note)
        if t.snapshot_every and resume_tag is None:
            self.exporter.snapshot(self.engine, 0, self.metrics.run_id)  # the initialisation: curve's start
        if ctx.is_main:
            ckpt.atomic_write(self.run_dir / "config.yaml", config_to_yaml(cfg))
            self.metrics.restart_file(start_step)
        log.info(
            "pretrain %s: rank %d/%d on %s, ZeRO-%d, %s, %d windows/epoch, micro %d x accum %d x %d ranks "
            "= %d windows/step, steps %d..%d",
            cfg.name, ctx.rank, ctx.world, ctx.device, t.zero_stage, "bf16" if self.bf16 else "fp32",
            len(data.windows), t.micro_batch, plan.accum, ctx.world, plan.global_batch, start_step,
            plan.total_steps,
        )  # fmt: skip
        export_dir = self._train(start_step, plan)
        return PretrainResult(
            self.run_dir, self.metrics.run_id, export_dir, self.metrics.final_losses(), plan.total_steps,
            resumed_from, list(self.metrics.history),
        )  # fmt: skip

    def _plan(self, data: Any) -> _Plan:
        """Gradient accumulation and run length from the config and the data; checks the batch sizes and
        that the longest window fits `model.max_tokens`."""
        cfg, world, t = self.cfg, self.ctx.world, self.cfg.train
        global_batch = t.global_batch or t.micro_batch * world
        if global_batch % (t.micro_batch * world):
            raise ValueError(
                f"train.global_batch={global_batch} is not a multiple of train.micro_batch * world size "
                f"= {t.micro_batch} * {world}"
            )
        accum = global_batch // (t.micro_batch * world)
        stream_probe = (len(data.windows) // world) // t.micro_batch
        total_steps = t.steps or max(1, int(t.epochs * stream_probe / accum))
        longest = max_window_tokens(data.windows) if cfg.recipe == "lmp" else None  # others: no token cap
        if longest is not None and longest > cfg.model.max_tokens:
            raise ValueError(
                f"store {data.store_path}: windows of data.k={cfg.data.k} shots hold up to {longest} language "
                f"tokens, more than model.max_tokens={cfg.model.max_tokens}: raise model.max_tokens"
            )
        return _Plan(accum, global_batch, total_steps)

    def _model(self, data: Any, resume_tag: str | None) -> tuple[nn.Module, Any]:
        """The recipe's model (from `train.init_from` on a fresh start) and the data it trains on."""
        from lmp_model.recipes import build_recipe

        cfg, ctx = self.cfg, self.ctx
        model = build_recipe(cfg.recipe, cfg.recipe_config, data.dims)
        self.missing_note = missing_modalities_note(model, data.store_path)
        if self.missing_note and ctx.is_main:
            log.info("%s", self.missing_note)  # once per run: what the store lacks and what falls with it
        if cfg.train.init_from and resume_tag is None:
            from lmp_model.recipes.init import init_from_export

            init_from_export(model, cfg.train.init_from, cfg.recipe, data.encoders)
        recipe_data = getattr(model, "train_data", None)  # a recipe stage that trains on other items than
        if callable(recipe_data):  # windows (M2S: movie pairs, mined scene pairs); an epoch keeps its length
            data = recipe_data(data, run_dir=self.run_dir, is_main=ctx.is_main, barrier=lambda: barrier(ctx),
                               resumed=resume_tag is not None)  # fmt: skip
        return model, data

    # ------------------------------------------------------------------------------------ loop
    def _train(self, start_step: int, plan: _Plan) -> Path:
        """The step loop and the export, with the window stream and the console bar; ends the MLflow run."""
        from lmp_model.pretrain.progress import StepProgress

        ctx, t = self.ctx, self.cfg.train
        stream = WindowStream(
            self.data.windows,
            ctx.rank,
            ctx.world,
            t.micro_batch,
            start=start_step * plan.accum,
            prefetch=self.cfg.data.prefetch,
        )
        status, error = "FAILED", None
        try:
            progress = StepProgress(plan.total_steps, start_step, enabled=ctx.is_main, name=self.cfg.name)
            try:
                for step in range(start_step + 1, plan.total_steps + 1):
                    self._step(step, stream, plan, progress)
            finally:
                progress.close()
            export_dir = self._finish(plan.total_steps)
            status = "FINISHED"
        except (KeyboardInterrupt, preempt.Preempted):
            status = "KILLED"  # a resumed run sets it RUNNING again
            raise
        except Exception as e:
            error = e
            raise
        finally:
            stream.close()
            self.metrics.end(status, error)
        return export_dir

    def _step(self, step: int, stream: WindowStream, plan: _Plan, progress: Any) -> None:
        """One optimizer step: its micro-batches, the record, checkpoint / snapshot / preemption."""
        t, engine = self.cfg.train, self.engine
        t0 = time.perf_counter()
        lr = float(engine.get_lr()[0])
        engine.train()
        names, sums, wait = self._micro_batches(step, stream, plan.accum)
        dt = time.perf_counter() - t0
        means = (sums / plan.accum).tolist()
        rec = step_record(step, names, means, lr, plan.global_batch, dt, wait)
        self.metrics.log_step(rec, plan.total_steps, progress)
        saved = (t.ckpt_every and step % t.ckpt_every == 0) or step == plan.total_steps
        if saved:
            self._save(step, stream.next_step)
        if t.snapshot_every and step % t.snapshot_every == 0:
            self.exporter.snapshot(engine, step, self.metrics.run_id)
        if step < plan.total_steps and preempt.requested(sync=True):  # SLURM's warning signal (cli.py)
            if not saved:
                self._save(step, stream.next_step)
            raise preempt.Preempted(step, self.ckpt.last_good, preempt.reason())

    def _micro_batches(
        self, step: int, stream: WindowStream, accum: int
    ) -> tuple[list[str], torch.Tensor, float]:
        """Forward and backward of `accum` micro-batches: the term names ["total", *terms], the sums over
        micro-batches of the rank-averaged [total, *terms, *chance levels], and the seconds spent waiting
        for data. A non-finite loss on any rank stops every rank (`NonFiniteLossError`)."""
        ctx, engine = self.ctx, self.engine
        names: list[str] | None = None
        sums: torch.Tensor | None = None
        wait = 0.0
        for _ in range(accum):
            tw = time.perf_counter()
            _, batch = next(stream)
            batch = to_device(batch, ctx.device, torch.bfloat16 if self.bf16 else None)
            wait += time.perf_counter() - tw
            loss, terms, chance = engine(batch)
            out = LMPOutput(loss, terms, chance)
            if self.loss_hook is not None:
                self.loss_hook(step, out)
            if names is None:
                names = ["total", *out.terms]
            vec = torch.stack(
                [out.loss.detach().float()]
                + [out.terms[n].detach().float() for n in names[1:]]
                + [out.chance[n].detach().float().to(out.loss.device) for n in names[1:]]
            )
            vec = vec.to(ctx.device)
            if ctx.world > 1:
                torch.distributed.all_reduce(vec)
                vec = vec / ctx.world
            bad = (~torch.isfinite(vec[: len(names)])).nonzero().flatten().tolist()
            if bad:
                i = next((j for j in bad if j > 0), bad[0])
                raise NonFiniteLossError(step, names[i], float(vec[i]), self.ckpt.last_good)
            engine.backward(out.loss)
            engine.step()
            sums = vec if sums is None else sums + vec
        assert sums is not None and names is not None
        return names, sums, wait

    def _save(self, step: int, micro_step: int) -> None:
        self.ckpt.save(self.engine, step, micro_step, self.metrics.run_id, self.metrics.history)

    def _finish(self, total_steps: int) -> Path:
        """The final export, then (rank 0) the plot and what goes to MLflow at the end."""
        metrics = self.metrics
        export_dir = self.exporter.final(
            self.engine, self.ckpt.ckpt_dir, total_steps, metrics.run_id, metrics.final_losses()
        )
        if self.ctx.is_main:
            metrics.finish(export_dir)
        barrier(self.ctx)
        return export_dir

    def abort(self, exc: BaseException) -> None:
        """A fatal error anywhere in `fit`: end the MLflow run (`RunMetrics.abort`). Never raises."""
        self.metrics.abort(exc, self.ckpt.resume, self.ckpt.ckpt_dir)


def run(cfg: PretrainConfig, *, resume: bool = False, loss_hook: LossHook | None = None) -> PretrainResult:
    """Pretrain LMP with `cfg` on this process's rank (world size from the launcher; 1 without one).

    `resume=True` continues from the latest complete checkpoint in `<out_dir>/<name>/checkpoints` (or
    starts fresh if there is none); without it an existing checkpoint is an error. Raises
    `NonFiniteLossError` on a NaN/inf loss. Safe to call repeatedly in one process.
    """
    validate(cfg)
    ctx = setup(cfg.train.device)
    try:
        trainer = _Trainer(cfg, ctx, resume, loss_hook)
        try:
            return trainer.fit()
        except BaseException as e:
            trainer.abort(e)
            raise
    finally:
        teardown(ctx)


__all__ = ["MLFLOW_JOURNAL", "SNAPSHOTS", "LossHook", "NonFiniteLossError", "PretrainResult", "run"]
