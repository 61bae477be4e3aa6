"""Atomic file writes: the one helper every package uses (lmp_data is the lowest package).

A reader sees the old file or the new one, never half of one: the data goes to a temporary file beside
the target (`.tmp-<name>.<random>`, the prefix the store and checkpoint cleanups treat as a leftover),
is fsync'd, then renamed over the target.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, data: str | bytes | Callable[[Path], object]) -> Path:
    """Write `data` to `path` atomically and durably; returns `path`.

    data: text (written as UTF-8), bytes, or a function that writes the temporary path it is given
    (e.g. `frame.write_parquet`). The parent folder must exist. On any error the temporary file is
    removed and `path` is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}.{uuid.uuid4().hex[:8]}")
    try:
        if callable(data):
            data(tmp)
        else:
            tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
