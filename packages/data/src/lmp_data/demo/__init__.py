"""The demo benchmark: a seeded, feature-level stand-in for MAD (pretraining) + LVU (evaluation).

`make_demo(out_dir, seed=0, size="default", **overrides) -> DemoPaths` builds (or reuses) it; the
generative model is documented in `lmp_data.demo.generate` and docs/demo_benchmark.md.
"""

from .build import DemoError, DemoPaths, make_demo, store_checksum
from .config import DEMO_DIR, PRESETS, SIZES, DemoConfig, demo_folder
from .generate import Demo, generate
from .labels import N_CLASSES, TASKS

__all__ = [
    "DEMO_DIR",
    "N_CLASSES",
    "PRESETS",
    "SIZES",
    "TASKS",
    "Demo",
    "DemoConfig",
    "DemoError",
    "DemoPaths",
    "generate",
    "demo_folder",
    "make_demo",
    "store_checksum",
]
