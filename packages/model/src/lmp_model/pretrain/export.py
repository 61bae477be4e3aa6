"""Weights out of a pretraining run, in `lmp_model.export`'s format (`load_pretrained` reads them).

`<run dir>/export/`: the final model (fp32, consolidated from ZeRO's partitions), meta `steps` and
`final_losses`. `<run dir>/snapshots/step_<N>/`: weights-only snapshots every `train.snapshot_every` steps
and at step 0 (the initialisation), meta `step`, for the probe-over-training curve (`lmp-bench curve`).
Each folder also holds the run's model config, feature dims, encoders and pretrain YAML.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lmp_model.pretrain import checkpoint as ckpt
from lmp_model.pretrain.config import PretrainConfig, config_to_yaml
from lmp_model.pretrain.dist import DistContext, barrier
from lmp_model.pretrain.engine import strip_prefix

EXPORT = "export"
"""Run-folder subfolder of the final export."""

SNAPSHOTS = "snapshots"
"""Run-folder subfolder of the weights-only snapshots (`train.snapshot_every`): `step_<N>/`."""


class Exporter:
    """Writes the export and snapshots of one run (`cfg`, trained on `data`) into `run_dir` (on rank 0)."""

    def __init__(self, cfg: PretrainConfig, ctx: DistContext, run_dir: Path, data: Any):
        self.cfg, self.ctx, self.run_dir, self.data = cfg, ctx, run_dir, data

    def save_weights(self, out: Path, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
        """A weights folder (final export or snapshot) with this run's model config, dims, encoders, YAML."""
        from lmp_model.export import save_pretrained

        return save_pretrained(
            out,
            state,
            cfg=self.cfg.recipe_config,
            dims=self.data.dims,
            encoders=self.data.encoders,
            pretrain_yaml=config_to_yaml(self.cfg),
            meta=meta,
        )

    def snapshot(self, engine: Any, step: int, run_id: str | None) -> Path | None:
        """Weights-only export of the current model to `<run dir>/snapshots/step_<step>/` (rank 0).

        Collective under ZeRO-3 (every rank gathers its partitions); a state_dict write otherwise.
        """
        if self.cfg.train.zero_stage == 3:  # partitioned weights: gather them onto rank 0
            state = engine._zero3_consolidated_16bit_state_dict()
        else:  # ZeRO 0-2 keep whole weights on every rank
            state = engine.module.state_dict() if self.ctx.is_main else None
        out = None
        if self.ctx.is_main:
            assert state is not None
            meta = {
                "step": step,
                "steps": step,
                "k": self.cfg.data.k,
                "store": str(self.data.store_path.resolve()),
                "mlflow_run_id": run_id,
                "snapshot": True,
            }
            out = self.save_weights(self.run_dir / SNAPSHOTS / f"step_{step}", strip_prefix(state), meta)
        barrier(self.ctx)
        return out

    def consolidated_state(
        self, engine: Any, ckpt_dir: Path, total_steps: int
    ) -> dict[str, torch.Tensor] | None:
        """fp32 weights on rank 0 (None elsewhere): from the module (ZeRO-0) or merged from the final ZeRO
        checkpoint."""
        if not self.ctx.is_main:
            return None
        if self.cfg.train.zero_stage == 0:
            state = engine.module.state_dict()
        else:
            from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

            state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag=ckpt.tag_for(total_steps))
        return {k: v.detach().float().cpu() for k, v in strip_prefix(state).items()}

    def final(
        self,
        engine: Any,
        ckpt_dir: Path,
        total_steps: int,
        run_id: str | None,
        final_losses: dict[str, float],
    ) -> Path:
        """The final export `<run dir>/export/` (written by rank 0; no barrier); its path on every rank."""
        export_dir = self.run_dir / EXPORT
        state = self.consolidated_state(engine, ckpt_dir, total_steps)
        if self.ctx.is_main:
            assert state is not None
            meta = {
                "steps": total_steps,
                "store": str(self.data.store_path.resolve()),
                "mlflow_run_id": run_id,
                "final_losses": final_losses,
            }
            self.save_weights(export_dir, state, meta)
        return export_dir
