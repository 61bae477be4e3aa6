"""`run(cfg)`: one LMP pretraining through a DeepSpeed engine, checkpointed, resumable, tracked in MLflow.

Per optimizer step every rank runs `accum` micro-batches (forward, backward; DeepSpeed reduces and
steps at the boundary). After each forward the loss terms are all-reduced (one small tensor), which
gives the logged means and lets every rank see a non-finite loss at once, so all ranks stop together
(no rank is left waiting in a collective). Checkpoints hold DeepSpeed's state (weights, AdamW, lr
schedule) plus client state: step, data position (micro-step), every rank's RNG states, the MLflow
run id and the loss history, so a resumed run continues the same loss curve and the same MLflow run.
"""

from __future__ import annotations

import json
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
from lmp_model.pretrain.config import PretrainConfig, config_to_dict, config_to_yaml, validate
from lmp_model.pretrain.data import WindowStream, load_train_data, max_window_tokens
from lmp_model.pretrain.dist import DistContext, setup, teardown

log = logging.getLogger("lmp_model.pretrain")

MLFLOW_JOURNAL = "mlflow.json"
"""Run-folder file: the MLflow run's identity, params, tags and end status (`lmp_model.tracking.Tracker`)."""

SNAPSHOTS = "snapshots"
"""Run-folder subfolder of the weights-only snapshots (`train.snapshot_every`): `step_<N>/`."""

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


class _TrainStep(nn.Module):
    """The engine's module: LMP's training forward returning (loss, terms) instead of a dataclass, so
    DeepSpeed (ZeRO-3's hooks) sees the output tensors."""

    PREFIX = "lmp."

    def __init__(self, lmp: nn.Module):
        super().__init__()
        self.lmp = lmp

    def forward(
        self, batch: dict[str, Any]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        out = self.lmp(batch)
        return out.loss, out.terms, out.chance


def _to_device(batch: dict[str, Any], device: torch.device, dtype: torch.dtype | None) -> dict[str, Any]:
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


def _bf16(setting: str, device: torch.device) -> bool:
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
    return _deep_merge(base, t.deepspeed)


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def cosine_schedule(cfg: PretrainConfig, total_steps: int) -> Callable[[Any], Any]:
    """Linear warm-up then cosine annealing to `min_lr_ratio * lr` (transformers' schedule)."""
    from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup

    t = cfg.train

    def make(optimizer: Any) -> Any:
        return get_cosine_with_min_lr_schedule_with_warmup(
            optimizer, t.warmup_steps, total_steps, min_lr_rate=t.min_lr_ratio
        )

    return make


class _Trainer:
    def __init__(self, cfg: PretrainConfig, ctx: DistContext, resume: bool, loss_hook: LossHook | None):
        self.cfg, self.ctx, self.resume, self.loss_hook = cfg, ctx, resume, loss_hook
        self.run_dir = cfg.run_dir.resolve()
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.tracker: Any = None
        self.history: list[dict[str, float]] = []
        self.last_good: str | None = None

    # -------------------------------------------------------------------------------- collectives
    def barrier(self) -> None:
        if self.ctx.world > 1:
            torch.distributed.barrier()

    def broadcast(self, obj: Any) -> Any:
        if self.ctx.world == 1:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather(self, obj: Any) -> list[Any]:
        if self.ctx.world == 1:
            return [obj]
        out: list[Any] = [None] * self.ctx.world
        torch.distributed.all_gather_object(out, obj)
        return out

    # ----------------------------------------------------------------------------------- set-up
    def fit(self) -> PretrainResult:
        import deepspeed

        from lmp_model.recipes import build_recipe

        cfg, ctx, t = self.cfg, self.ctx, self.cfg.train
        if t.threads:
            torch.set_num_threads(t.threads)
        resume_tag = self._prepare_run_dir()
        ckpt.seed_all(t.seed)  # identical model init on every rank
        data = load_train_data(cfg.data, t.seed, ctx.is_main, self.barrier, ctx.world, ctx.device)
        global_batch = t.global_batch or t.micro_batch * ctx.world
        if global_batch % (t.micro_batch * ctx.world):
            raise ValueError(
                f"train.global_batch={global_batch} is not a multiple of train.micro_batch * world size "
                f"= {t.micro_batch} * {ctx.world}"
            )
        accum = global_batch // (t.micro_batch * ctx.world)
        stream_probe = (len(data.windows) // ctx.world) // t.micro_batch
        total_steps = t.steps or max(1, int(t.epochs * stream_probe / accum))
        longest = max_window_tokens(data.windows) if cfg.recipe == "lmp" else None  # others: no token cap
        if longest is not None and longest > cfg.model.max_tokens:
            raise ValueError(
                f"store {data.store_path}: windows of data.k={cfg.data.k} shots hold up to {longest} language "
                f"tokens, more than model.max_tokens={cfg.model.max_tokens}: raise model.max_tokens"
            )
        model = build_recipe(cfg.recipe, cfg.recipe_config, data.dims)
        self.missing_note = missing_modalities_note(model, data.store_path)
        if self.missing_note and ctx.is_main:
            log.info("%s", self.missing_note)  # once per run: what the store lacks and what falls with it
        if t.init_from and resume_tag is None:
            from lmp_model.recipes.init import init_from_export

            init_from_export(model, t.init_from, cfg.recipe, data.encoders)
        recipe_data = getattr(model, "train_data", None)  # a recipe stage that trains on other items than
        if callable(recipe_data):  # windows (M2S: movie pairs, mined scene pairs); an epoch keeps its length
            data = recipe_data(data, run_dir=self.run_dir, is_main=ctx.is_main, barrier=self.barrier,
                               resumed=resume_tag is not None)  # fmt: skip
        bf16 = self.bf16 = _bf16(t.bf16, ctx.device)
        groups = [g for g in param_groups(model, t.weight_decay, t.decay_norm_and_bias) if g["params"]]
        engine, _, _, scheduler = deepspeed.initialize(
            model=_TrainStep(model).to(ctx.device),
            model_parameters=groups,
            config=deepspeed_config(cfg, accum, ctx.world, bf16),
            lr_scheduler=cosine_schedule(cfg, total_steps),
        )
        self.engine = ckpt.weights_only_engine(engine)  # resume never unpickles code (weights_only)
        self.data = data
        start_step, run_id, resumed_from = 0, None, None
        if resume_tag is not None:
            start_step, run_id = self._load(resume_tag)
            resumed_from = start_step
        else:
            ckpt.seed_all(t.seed * 1000 + 17 + ctx.rank)  # masking/dropout differ across ranks
        self._start_tracking(run_id, data, total_steps, global_batch, accum, bf16, resume_tag)
        if t.snapshot_every and resume_tag is None:
            self._snapshot(0)  # the random initialisation: the curve's starting point
        if ctx.is_main:
            ckpt.atomic_write(self.run_dir / "config.yaml", config_to_yaml(cfg))
            self._rewrite_metrics_file(start_step)
        log.info(
            "pretrain %s: rank %d/%d on %s, ZeRO-%d, %s, %d windows/epoch, micro %d x accum %d x %d ranks "
            "= %d windows/step, steps %d..%d",
            cfg.name, ctx.rank, ctx.world, ctx.device, t.zero_stage, "bf16" if bf16 else "fp32",
            len(data.windows), t.micro_batch, accum, ctx.world, global_batch, start_step, total_steps,
        )  # fmt: skip
        stream = WindowStream(
            data.windows,
            ctx.rank,
            ctx.world,
            t.micro_batch,
            start=start_step * accum,
            prefetch=cfg.data.prefetch,
        )
        status = "FAILED"
        try:
            self._loop(engine, scheduler, stream, start_step, total_steps, accum, global_batch)
            export_dir = self._finish(engine, data, total_steps, accum)
            status = "FINISHED"
        except (KeyboardInterrupt, preempt.Preempted):
            status = "KILLED"  # a resumed run sets it RUNNING again
            raise
        except Exception as e:
            if self.tracker is not None:
                self.tracker.set_tags({"error": f"{type(e).__name__}: {e}"[:5000]})
            raise
        finally:
            stream.close()
            if self.tracker is not None:
                self.tracker.end(status)
        final = {k: v for k, v in (self.history[-1] if self.history else {}).items() if k.startswith("loss/")}
        return PretrainResult(
            self.run_dir, self.run_id, export_dir, final, total_steps, resumed_from, list(self.history)
        )

    def _prepare_run_dir(self) -> str | None:
        """Create the run folder; the checkpoint tag to resume from (None: fresh start)."""
        tag = None
        if self.ctx.is_main:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            removed = ckpt.remove_incomplete(self.ckpt_dir)
            if removed:
                log.warning("removed incomplete checkpoints %s in %s", removed, self.ckpt_dir)
            try:  # resume: the newest intact checkpoint (corrupt newer ones are named and moved aside)
                tag = ckpt.resume_tag(self.ckpt_dir) if self.resume else ckpt.latest_tag(self.ckpt_dir)
            except ckpt.CheckpointError as e:
                tag = f"?{e}"
            if tag is not None and not self.resume:
                tag = f"!{tag}"
        tag = self.broadcast(tag)
        if tag is not None and tag.startswith("?"):
            raise ckpt.CheckpointError(tag[1:])
        if tag is not None and tag.startswith("!"):
            raise FileExistsError(
                f"{self.ckpt_dir} already holds checkpoint {tag[1:]}: pass --resume (resume=True) to continue "
                f"it, or choose another `name` / `train.out_dir`"
            )
        return tag

    def _load(self, tag: str) -> tuple[int, str | None]:
        path, client = self.engine.load_checkpoint(str(self.ckpt_dir), tag=tag)
        if path is None or client is None:
            raise RuntimeError(f"checkpoint {self.ckpt_dir / tag}: DeepSpeed could not load it")
        if client["world"] != self.ctx.world:
            raise ValueError(
                f"checkpoint {self.ckpt_dir / tag} was written by {client['world']} ranks, this run has "
                f"{self.ctx.world}: resume with the same world size"
            )
        ckpt.set_rng_state(client["rng"][self.ctx.rank])
        sched = (
            self.engine.lr_scheduler
        )  # lr of the next step from the current schedule (steps may have grown)
        for group, base, lam in zip(sched.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas):
            group["lr"] = base * lam(sched.last_epoch)
        self.history = list(client.get("history", []))
        self.last_good = str(self.ckpt_dir / tag)
        log.info("resumed from %s (step %d)", self.ckpt_dir / tag, client["step"])
        return int(client["step"]), client.get("mlflow_run_id")

    def _start_tracking(self, run_id, data, total_steps, global_batch, accum, bf16, resume_tag) -> None:
        from lmp_model.tracking import Tracker, flatten, git_commit

        cfg, m = self.cfg, self.cfg.mlflow
        self.run_id = None
        if self.ctx.is_main and m.enabled:
            tags = {
                "git_commit": git_commit(),
                "mlflow.source.git.commit": git_commit(),
                "store": str(data.store_path.resolve()),
                "encoders": json.dumps({k: v.get("name") for k, v in data.encoders.items()}),
                "world_size": str(self.ctx.world),
                "zero_stage": str(cfg.train.zero_stage),
                **({"missing_modalities": self.missing_note} if self.missing_note else {}),
                **m.tags,
            }
            self.tracker = Tracker(
                m.experiment,
                m.run_name or cfg.name,
                tracking_uri=m.tracking_uri or None,
                parent_run_id=m.parent_run_id or None,
                run_id=run_id,
                tags=tags,
                journal=self.run_dir / MLFLOW_JOURNAL,  # what --sync-mlflow uploads if the server goes away
                note=f"metrics are kept in {self.run_dir / 'metrics.jsonl'}; upload what MLflow missed with: "
                f"lmp-pretrain --sync-mlflow {self.run_dir}",
            )
            if self.tracker.run_id != run_id or not self.tracker.active:  # a new run (or none yet)
                params = flatten(config_to_dict(cfg))
                params |= {
                    "derived.total_steps": total_steps,
                    "derived.global_batch": global_batch,
                    "derived.grad_accum": accum,
                    "derived.world_size": self.ctx.world,
                    "derived.bf16": bf16,
                    "derived.windows_per_epoch": len(data.windows),
                    "derived.movies": len(data.movies),
                }
                self.tracker.log_params(params)
            elif self.tracker.active:
                self.tracker.set_tags({"resumed_from": resume_tag})
            self.run_id = self.tracker.run_id
        self.run_id = self.broadcast(self.run_id)

    # ------------------------------------------------------------------------------------ loop
    def _loop(self, engine, scheduler, stream, start_step, total_steps, accum, global_batch) -> None:
        """The optimizer steps; on a terminal a live bar on rank 0 (`progress.StepProgress`)."""
        from lmp_model.pretrain.progress import StepProgress

        self.progress = StepProgress(total_steps, start_step, enabled=self.ctx.is_main, name=self.cfg.name)
        try:
            self._steps(engine, scheduler, stream, start_step, total_steps, accum, global_batch)
        finally:
            self.progress.close()

    def _steps(self, engine, scheduler, stream, start_step, total_steps, accum, global_batch) -> None:
        t, ctx = self.cfg.train, self.ctx
        names: list[str] | None = None
        for step in range(start_step + 1, total_steps + 1):
            t0 = time.perf_counter()
            wait = 0.0
            sums: torch.Tensor | None = None
            lr = float(engine.get_lr()[0])
            engine.train()
            for _ in range(accum):
                tw = time.perf_counter()
                _, batch = next(stream)
                batch = _to_device(batch, ctx.device, torch.bfloat16 if self.bf16 else None)
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
                    raise NonFiniteLossError(step, names[i], float(vec[i]), self.last_good)
                engine.backward(out.loss)
                engine.step()
                sums = vec if sums is None else sums + vec
            dt = time.perf_counter() - t0
            assert sums is not None and names is not None
            means = (sums / accum).tolist()
            rec = {"step": step, **{f"loss/{n}": v for n, v in zip(names, means)}}
            # each term's chance level ln(candidates), averaged over micro-batches and ranks; named loss_chance/
            # so that MLflow (alphabetical chart sections) shows the losses first
            rec |= {f"loss_chance/{n}": v for n, v in zip(names[1:], means[len(names) :])}
            rec |= {"lr": lr, "perf/windows_per_s": global_batch / dt, "perf/data_wait_frac": wait / dt}
            rec["perf/step_time_s"] = dt
            self.history.append(rec)
            if ctx.is_main:
                self._append_metrics(rec)
                self.progress.update(step, rec)
                if step % t.log_every == 0 or step == total_steps:
                    metrics = {k: v for k, v in rec.items() if k != "step"}
                    if self.tracker is not None:
                        self.tracker.log_metrics(metrics, step)
                    if not self.progress.live:  # a terminal: the bar shows step, ETA and loss
                        log.info(
                            "step %d/%d loss %.4f lr %.3g %.1f windows/s data wait %.1f%%",
                            step, total_steps, rec["loss/total"], lr, rec["perf/windows_per_s"],
                            100 * rec["perf/data_wait_frac"],
                        )  # fmt: skip
            saved = (t.ckpt_every and step % t.ckpt_every == 0) or step == total_steps
            if saved:
                self._save(step, stream.next_step)
            if t.snapshot_every and step % t.snapshot_every == 0:
                self._snapshot(step)
            if step < total_steps and preempt.requested(sync=True):  # SLURM's warning signal (cli.py)
                if not saved:
                    self._save(step, stream.next_step)
                raise preempt.Preempted(step, self.last_good, preempt.reason())

    # ------------------------------------------------------------------------------ checkpoints
    def _save(self, step: int, micro_step: int) -> None:
        tag = ckpt.tag_for(step)
        client = {
            "step": step,
            "micro_step": micro_step,
            "world": self.ctx.world,
            "rng": self.all_gather(ckpt.rng_state()),
            "mlflow_run_id": self.run_id,
            "history": self.history,
            "config": config_to_dict(self.cfg),
        }
        self.engine.save_checkpoint(str(self.ckpt_dir), tag=tag, client_state=client, save_latest=False)
        self.barrier()
        if self.ctx.is_main:
            (self.ckpt_dir / tag / "pretrain.yaml").write_text(config_to_yaml(self.cfg))
            info = {"step": step, "micro_step": micro_step, "world": self.ctx.world, "time": time.time()}
            info["mlflow_run_id"] = self.run_id  # ends the run as FAILED if no checkpoint is intact
            ckpt.mark_complete(self.ckpt_dir, tag, info, self.cfg.train.keep_last)
        self.barrier()
        self.last_good = str(self.ckpt_dir / tag)

    def abort(self, exc: BaseException) -> None:
        """A fatal error anywhere in `fit`: end the MLflow run as FAILED (KILLED when interrupted or
        preempted) with the error as a tag, also when the error came before or outside the training loop.
        If no run was opened yet (e.g. no checkpoint could be resumed), the run the checkpoints name is
        ended as FAILED. Never raises."""
        if not self.ctx.is_main or not self.cfg.mlflow.enabled:
            return
        status = "KILLED" if isinstance(exc, KeyboardInterrupt | preempt.Preempted) else "FAILED"
        try:
            tracker = self.tracker
            if tracker is None and self.resume:
                run_id = ckpt.last_run_id(self.ckpt_dir)
                if run_id is None:
                    return
                from lmp_model.tracking import Tracker

                m = self.cfg.mlflow
                tracker = Tracker(m.experiment, tracking_uri=m.tracking_uri or None, run_id=run_id)
                if tracker.run_id != run_id:  # not found: do not leave a stray new run behind
                    tracker.end("FAILED")
                    return
            if tracker is not None and tracker.active:
                if status == "FAILED":
                    tracker.set_tags({"error": f"{type(exc).__name__}: {exc}"[:5000]})
                tracker.end(status)
        except Exception as e:  # noqa: BLE001 - the original error is what the caller must see
            log.warning("could not end the MLflow run as %s: %s", status, e)

    # ---------------------------------------------------------------------------------- metrics
    def _append_metrics(self, rec: dict[str, float]) -> None:
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()

    def _rewrite_metrics_file(self, upto: int) -> None:
        """On (re)start, the per-step log holds exactly the steps up to the checkpoint."""
        lines = [json.dumps(r) for r in self.history if r["step"] <= upto]
        ckpt.atomic_write(self.run_dir / "metrics.jsonl", "".join(line + "\n" for line in lines))

    # -------------------------------------------------------------------------------- snapshots
    def _snapshot(self, step: int) -> Path | None:
        """Weights-only export of the current model to `<run dir>/snapshots/step_<step>/` (rank 0).

        Collective under ZeRO-3 (every rank gathers its partitions); a state_dict write otherwise.
        """

        engine, data = self.engine, self.data
        if self.cfg.train.zero_stage == 3:  # partitioned weights: gather them onto rank 0
            state = engine._zero3_consolidated_16bit_state_dict()
        else:  # ZeRO 0-2 keep whole weights on every rank
            state = engine.module.state_dict() if self.ctx.is_main else None
        out = None
        if self.ctx.is_main:
            assert state is not None
            prefix = _TrainStep.PREFIX
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            meta = {
                "step": step,
                "steps": step,
                "k": self.cfg.data.k,
                "store": str(data.store_path.resolve()),
                "mlflow_run_id": self.run_id,
                "snapshot": True,
            }
            out = self._save_weights(self.run_dir / SNAPSHOTS / f"step_{step}", state, data, meta)
        self.barrier()
        return out

    # ---------------------------------------------------------------------------------- export
    def _save_weights(self, out: Path, state: dict[str, torch.Tensor], data, meta: dict[str, Any]) -> Path:
        """A weights folder (final export or snapshot) with this run's model config, dims, encoders, YAML."""
        from lmp_model.export import save_pretrained

        return save_pretrained(
            out,
            state,
            cfg=self.cfg.recipe_config,
            dims=data.dims,
            encoders=data.encoders,
            pretrain_yaml=config_to_yaml(self.cfg),
            meta=meta,
        )

    def _consolidated_state(self, engine, total_steps: int) -> dict[str, torch.Tensor] | None:
        """fp32 weights on rank 0: from the module (ZeRO-0) or merged from the final ZeRO checkpoint."""
        if not self.ctx.is_main:
            return None
        if self.cfg.train.zero_stage == 0:
            state = engine.module.state_dict()
        else:
            from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

            state = get_fp32_state_dict_from_zero_checkpoint(
                str(self.ckpt_dir), tag=ckpt.tag_for(total_steps)
            )
        prefix = _TrainStep.PREFIX
        return {k[len(prefix) :]: v.detach().float().cpu() for k, v in state.items() if k.startswith(prefix)}

    def _finish(self, engine, data, total_steps: int, accum: int) -> Path:

        export_dir = self.run_dir / "export"
        state = self._consolidated_state(engine, total_steps)
        if self.ctx.is_main:
            assert state is not None
            meta = {
                "steps": total_steps,
                "store": str(data.store_path.resolve()),
                "mlflow_run_id": self.run_id,
                "final_losses": {k: v for k, v in self.history[-1].items() if k.startswith("loss/")}
                if self.history
                else {},
            }
            self._save_weights(export_dir, state, data, meta)
            png = self._plot()
            if self.tracker is not None and self.tracker.active:
                self.tracker.log_artifact(self.run_dir / "config.yaml")
                if png is not None:
                    self.tracker.log_artifact(png)
                from lmp_model.tracking import loss_note

                # the run page's Description: each loss term beside its chance level, the plot inline
                note = loss_note(self.history, self.run_id, png.name if png is not None else None)
                if note:
                    self.tracker.set_note(note)
                if self.cfg.mlflow.log_weights:
                    from lmp_model.export import EXPORT_ARTIFACT

                    self.tracker.log_dir(export_dir, EXPORT_ARTIFACT)
        self.barrier()
        return export_dir

    def _plot(self) -> Path | None:
        if not self.history:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps = [r["step"] for r in self.history]
        fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
        for key in [k for k in self.history[0] if k.startswith("loss/") and k != "loss/total"]:
            (line,) = ax.plot(steps, [r[key] for r in self.history], label=key[5:], lw=1.2)
            chance = "loss_chance/" + key[5:]
            if chance in self.history[0]:  # each term's chance level, dashed in its colour
                ax.plot(steps, [r.get(chance, float("nan")) for r in self.history], ls="--", lw=0.8,
                        color=line.get_color())  # fmt: skip
        ax.set_xlabel("step")
        ax.set_ylabel("loss per term (dashed: chance level ln(candidates))")
        ax.set_title(f"LMP pretraining: {self.cfg.name}")
        ax.legend(fontsize=7, ncol=2)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        out = self.run_dir / "loss_curve.png"
        fig.savefig(out)
        plt.close(fig)
        return out


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


__all__ = ["NonFiniteLossError", "PretrainResult", "run"]
