"""Tracking of a pretraining run: the per-step record, the loss history, `metrics.jsonl`, the console line and
MLflow (params and tags, metrics, the loss plot, the Description with each loss term beside its chance level).

Every rank keeps the history (it goes into checkpoints); rank 0 writes the file and talks to MLflow. The
record of a step: `loss/<term>` (means over micro-batches and ranks), `loss_chance/<term>` (the term's chance
level ln(candidates); the name sorts after `loss/` so MLflow's alphabetical chart sections show the losses
first), `lr`, `perf/*`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from lmp_model.pretrain import checkpoint as ckpt
from lmp_model.pretrain import preempt
from lmp_model.pretrain.config import PretrainConfig, config_to_dict
from lmp_model.pretrain.dist import DistContext, broadcast
from lmp_model.pretrain.sync import JOURNAL as MLFLOW_JOURNAL
from lmp_model.pretrain.sync import METRICS

log = logging.getLogger("lmp_model.pretrain")


def step_record(
    step: int, names: list[str], means: list[float], lr: float, windows: int, dt: float, wait: float
) -> dict[str, float]:
    """One optimizer step's record from the means of [total, *terms, *chance levels of the terms]."""
    rec: dict[str, float] = {"step": step, **{f"loss/{n}": v for n, v in zip(names, means)}}
    rec |= {f"loss_chance/{n}": v for n, v in zip(names[1:], means[len(names) :])}
    rec |= {"lr": lr, "perf/windows_per_s": windows / dt, "perf/data_wait_frac": wait / dt}
    rec["perf/step_time_s"] = dt
    return rec


class RunMetrics:
    """The loss history of a run and where it goes (`metrics.jsonl`, MLflow, the console)."""

    def __init__(self, cfg: PretrainConfig, ctx: DistContext, run_dir: Path):
        self.cfg, self.ctx, self.run_dir = cfg, ctx, run_dir
        self.tracker: Any = None
        self.run_id: str | None = None
        self.history: list[dict[str, float]] = []

    def final_losses(self) -> dict[str, float]:
        """The `loss/*` values of the last step ({} before the first)."""
        return {k: v for k, v in (self.history[-1] if self.history else {}).items() if k.startswith("loss/")}

    # ----------------------------------------------------------------------------------- MLflow run
    def start(
        self,
        run_id: str | None,
        data: Any,
        derived: dict[str, Any],
        resume_tag: str | None,
        missing_note: str,
    ) -> None:
        """Open (rank 0) the MLflow run `run_id` (a resumed run) or a new one with the config and `derived`
        as params; `self.run_id` on every rank."""
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
                **({"missing_modalities": missing_note} if missing_note else {}),
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
                note=f"metrics are kept in {self.run_dir / METRICS}; upload what MLflow missed with: "
                f"lmp-pretrain --sync-mlflow {self.run_dir}",
            )
            if self.tracker.run_id != run_id or not self.tracker.active:  # a new run (or none yet)
                params = flatten(config_to_dict(cfg))
                params |= {f"derived.{k}": v for k, v in derived.items()}
                self.tracker.log_params(params)
            elif self.tracker.active:
                self.tracker.set_tags({"resumed_from": resume_tag})
            self.run_id = self.tracker.run_id
        self.run_id = broadcast(self.ctx, self.run_id)

    def end(self, status: str, exc: BaseException | None = None) -> None:
        """End the MLflow run (if one is open) as `status`, with `exc` as its error tag."""
        if self.tracker is None:
            return
        if exc is not None:
            self.tracker.set_tags({"error": f"{type(exc).__name__}: {exc}"[:5000]})
        self.tracker.end(status)

    def abort(self, exc: BaseException, resume: bool, ckpt_dir: Path) -> None:
        """A fatal error anywhere in a run: end the MLflow run as FAILED (KILLED when interrupted or
        preempted) with the error as a tag, also when the error came before or outside the training loop.
        If no run was opened yet (e.g. no checkpoint could be resumed), the run the checkpoints name is
        ended as FAILED. Never raises."""
        if not self.ctx.is_main or not self.cfg.mlflow.enabled:
            return
        status = "KILLED" if isinstance(exc, KeyboardInterrupt | preempt.Preempted) else "FAILED"
        try:
            tracker = self.tracker
            if tracker is None and resume:
                run_id = ckpt.last_run_id(ckpt_dir)
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

    # ------------------------------------------------------------------------------------- per step
    def restart_file(self, upto: int) -> None:
        """On (re)start (rank 0), the per-step log holds exactly the steps up to the checkpoint."""
        lines = [json.dumps(r) for r in self.history if r["step"] <= upto]
        ckpt.atomic_write(self.run_dir / METRICS, "".join(line + "\n" for line in lines))

    def log_step(self, rec: dict[str, float], total_steps: int, progress: Any) -> None:
        """Keep `rec`; on rank 0 append it to the file, move the progress bar, and every `train.log_every`
        steps (and the last) log it to MLflow and, without a live bar, as a console line."""
        self.history.append(rec)
        if not self.ctx.is_main:
            return
        with open(self.run_dir / METRICS, "a") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()
        progress.update(rec["step"], rec)
        step = int(rec["step"])
        if step % self.cfg.train.log_every == 0 or step == total_steps:
            metrics = {k: v for k, v in rec.items() if k != "step"}
            if self.tracker is not None:
                self.tracker.log_metrics(metrics, step)
            if not progress.live:  # a terminal: the bar shows step, ETA and loss
                log.info(
                    "step %d/%d loss %.4f lr %.3g %.1f windows/s data wait %.1f%%",
                    step, total_steps, rec["loss/total"], rec["lr"], rec["perf/windows_per_s"],
                    100 * rec["perf/data_wait_frac"],
                )  # fmt: skip

    # ---------------------------------------------------------------------------------------- end
    def finish(self, export_dir: Path) -> None:
        """Rank 0 at the end: the loss plot; to MLflow the config, the plot, the Description (each loss term
        beside its chance level, the plot inline) and, with `mlflow.log_weights`, the export."""
        png = self.plot()
        if self.tracker is None or not self.tracker.active:
            return
        self.tracker.log_artifact(self.run_dir / "config.yaml")
        if png is not None:
            self.tracker.log_artifact(png)
        from lmp_model.tracking import loss_note

        note = loss_note(self.history, self.run_id, png.name if png is not None else None)
        if note:
            self.tracker.set_note(note)
        if self.cfg.mlflow.log_weights:
            from lmp_model.export import EXPORT_ARTIFACT

            self.tracker.log_dir(export_dir, EXPORT_ARTIFACT)

    def plot(self) -> Path | None:
        """`<run dir>/loss_curve.png`: each loss term over the steps, its chance level dashed (same colour)."""
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
            if chance in self.history[0]:
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
