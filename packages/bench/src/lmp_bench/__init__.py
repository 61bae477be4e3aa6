"""lmp_bench: LVU linear probes, transfer tasks and result tables for LMP features (paper section 4).

The public names load lazily (PEP 562), so `import lmp_bench` imports neither torch nor the model.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "evaluate_lvu": "lmp_bench.api",
    "features_matrix": "lmp_bench.api",
    "resolve_model": "lmp_bench.api",
    "evaluate_transfer": "lmp_bench.transfer",
    "TransferResult": "lmp_bench.transfer",
    "LVUResult": "lmp_bench.results",
    "ProbeConfig": "lmp_bench.probe",
    "TaskSpec": "lmp_bench.lvu",
    "TASKS": "lmp_bench.lvu",
    "load_task": "lmp_bench.lvu",
    "encode_clips": "lmp_bench.features",
    "FEATURES": "lmp_bench.features",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lmp_bench' has no attribute {name!r}")
