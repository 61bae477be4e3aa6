"""lmp_data.console: known noise silenced by logger and message (real warnings stay), bars only on a TTY."""

from __future__ import annotations

import io
import logging
import subprocess
import sys

import pytest

from lmp_data import console


def _remove_filters():
    for name, _ in console.KNOWN_NOISE:
        lg = logging.getLogger(name)
        for f in [f for f in lg.filters if isinstance(f, console._DropPrefixes)]:
            lg.removeFilter(f)


@pytest.fixture
def clean_filters():
    _remove_filters()  # an earlier in-process run (lmp-pretrain, lmp-bench) may have installed them
    yield
    _remove_filters()


def _emitted(name: str, msg: str) -> bool:
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    lg = logging.getLogger(name)
    h = Keep()
    lg.addHandler(h)
    try:
        lg.warning(msg)
    finally:
        lg.removeHandler(h)
    return bool(seen)


def test_known_noise_dropped_real_warnings_kept(clean_filters, monkeypatch):
    monkeypatch.setattr(console, "has_gpu_device", lambda: False)
    ds_noise = (
        "Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to detect it."
    )
    assert _emitted("DeepSpeed", ds_noise)
    assert console.quiet_known_warnings() and console.quiet_known_warnings()  # idempotent
    assert len(logging.getLogger("DeepSpeed").filters) == 1
    assert not _emitted("DeepSpeed", ds_noise)
    assert not _emitted("torch.utils.cpp_extension", "No CUDA runtime is found, using CUDA_HOME='/usr/local'")
    assert _emitted(
        "DeepSpeed", "Unable to find hostfile, will proceed with training with local resources only."
    )
    assert _emitted("torch.utils.cpp_extension", "Error checking compiler version for c++")


def test_known_noise_kept_on_a_gpu_machine(clean_filters, monkeypatch):
    monkeypatch.setattr(console, "has_gpu_device", lambda: True)  # there "no accelerator" means a problem
    assert not console.quiet_known_warnings()
    assert _emitted("DeepSpeed", "Setting accelerator to CPU. If you have GPU ...")


def test_bar_only_on_a_terminal():
    assert console.live_bar(io.StringIO(), total=3) is None
    assert console.fmt_duration(None) == "?" and console.fmt_duration(5) == "5 s"
    assert console.fmt_duration(185) == "3:05" and console.fmt_duration(3723) == "1:02:03"


@pytest.mark.slow  # ~15 s: imports DeepSpeed twice
@pytest.mark.skipif(console.has_gpu_device(), reason="the warnings are real on a machine with a GPU")
def test_deepspeed_and_torch_warnings_silenced_at_the_source():
    code = (
        "import sys\n"
        "if sys.argv[1] == 'quiet':\n"
        "    from lmp_data.console import quiet_known_warnings; quiet_known_warnings()\n"
        "from deepspeed.accelerator import get_accelerator\n"
        "get_accelerator()\n"
        "import torch.utils.cpp_extension\n"
    )
    out = {}
    for mode in ("loud", "quiet"):
        p = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        out[mode] = p.stdout + p.stderr
    assert "Setting accelerator to CPU" in out["loud"]  # the filters aim at the real message
    assert "Setting accelerator to CPU" not in out["quiet"] and "No CUDA runtime is found" not in out["quiet"]
