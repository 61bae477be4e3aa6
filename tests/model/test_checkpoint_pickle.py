"""Nobody let in (issue 12): `--resume` never runs code from a checkpoint.

DeepSpeed unpickles checkpoints with `torch.load(weights_only=False)`; lmp-pretrain's engines load with
`weights_only=True` and an allow-list of exactly what its checkpoints hold. A checkpoint file replaced by a
pickle that would create a marker file when unpickled is refused, naming the file; the marker never
appears. Resuming real checkpoints (ZeRO 0 and 2) still works through the allow-list.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from lmp_model.pretrain import checkpoint as ckpt
from lmp_model.pretrain import load_pretrain_config, run

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "experiments" / "configs" / "pretrain" / "tiny.yaml"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_store import make_store  # noqa: E402


class Payload:
    """Unpickling this calls open(marker, "w"): code from the checkpoint ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("store") / "store", movies=3)


def cfg(store: Path, out: Path, *overrides: str):
    return load_pretrain_config(
        TINY,
        [
            f"data.store={store}",
            f"train.out_dir={out / 'runs'}",
            f"mlflow.tracking_uri=sqlite:///{out / 'mlflow.db'}",
            "train.threads=1",
            "train.ckpt_every=2",
            *overrides,
        ],
    )


@pytest.fixture(scope="module")
def written(store, tmp_path_factory) -> Path:
    """A run folder holding one real checkpoint (step 2, ZeRO 0)."""
    out = tmp_path_factory.mktemp("written")
    run(cfg(store, out, "train.steps=2"))
    return out


@pytest.mark.parametrize("stage", [0, 2])
def test_resume_loads_real_checkpoints_weights_only(store, tmp_path, stage):
    out = tmp_path
    run(cfg(store, out, "train.steps=2", f"train.zero_stage={stage}"))
    ckpt_dir = out / "runs" / "tiny" / "checkpoints"
    for f in sorted(ckpt_dir.rglob("*.pt")):  # what the allow-list covers, and nothing else is needed
        assert not set(torch.serialization.get_unsafe_globals_in_checkpoint(str(f))) - {
            f"{g.__module__}.{g.__qualname__}" for g in ckpt.checkpoint_globals()
        }, f
    res = run(cfg(store, out, "train.steps=4", f"train.zero_stage={stage}"), resume=True)
    assert res.resumed_from == 2 and res.steps == 4


@pytest.mark.parametrize("manifest", ["rewritten", "kept"])
def test_crafted_checkpoint_never_runs_code(store, written, tmp_path, manifest):
    out = tmp_path / "out"
    shutil.copytree(written, out)
    ckpt_dir = out / "runs" / "tiny" / "checkpoints"
    tag = ckpt.latest_tag(ckpt_dir)
    victim = ckpt_dir / tag / "mp_rank_00_model_states.pt"
    marker = tmp_path / "PWNED"
    real = torch.load(victim, weights_only=False)  # the test's own file: keep its shape, add the payload
    real["payload"] = Payload(marker)
    torch.save(real, victim)
    if manifest == "rewritten":  # an attacker who also rewrites the marker: the hashes match again
        info = json.loads((ckpt_dir / tag / ckpt.COMPLETE).read_text())
        info.pop("files")
        ckpt.mark_complete(ckpt_dir, tag, info, keep_last=0)
        assert ckpt.verify(ckpt_dir, tag) is None
    with pytest.raises(ckpt.CheckpointError) as err:
        run(cfg(store, out, "train.steps=4"), resume=True)
    assert not marker.exists(), "unpickling the checkpoint ran code"
    assert "mp_rank_00_model_states.pt" in str(err.value), err.value
    if manifest == "rewritten":
        assert "io.open" in str(err.value)  # what the payload called, never run
