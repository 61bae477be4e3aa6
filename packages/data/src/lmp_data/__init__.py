"""lmp_data: movies -> shots -> base features -> Zarr feature store -> shot windows.

The public names load lazily (PEP 562), so `import lmp_data` imports neither torch nor zarr.
Reading stores, windows and batches needs only the core dependencies; `lmp-data ingest` and `import-mad`
need the `lmp-data[ingest]` extra (the workspace installs it; tests/test_packaging.py checks the split).
Shared constants: `lmp_data.batch` (MODALITIES, DEFAULT_K, the batch keys); atomic writes:
`lmp_data.files.atomic_write`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "FeatureStore": "lmp_data.store",
    "InMemoryStore": "lmp_data.store",
    "StoreError": "lmp_data.validate",
    "ShotWindows": "lmp_data.windows",
    "WindowGather": "lmp_data.gather",
    "WindowsConfig": "lmp_data.windows",
    "collate_windows": "lmp_data.windows",
    "BATCH_KEYS": "lmp_data.batch",
}
__all__ = [
    "BATCH_KEYS",
    "FeatureStore",
    "InMemoryStore",
    "ShotWindows",
    "StoreError",
    "WindowGather",
    "WindowsConfig",
    "collate_windows",
]

if TYPE_CHECKING:
    from lmp_data.batch import BATCH_KEYS
    from lmp_data.gather import WindowGather
    from lmp_data.store import FeatureStore, InMemoryStore
    from lmp_data.validate import StoreError
    from lmp_data.windows import ShotWindows, WindowsConfig, collate_windows


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lmp_data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
