"""lmp_model.pretrain.preempt without SLURM: a signal only sets the flag; ranks agree on it."""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from lmp_model.pretrain import preempt

# spawned ranks unpickle `_rank` by this module's name (tests.slurm.test_preempt): the repo root must be
# importable in them whatever ran before in this pytest process
if str(Path(__file__).resolve().parents[2]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


@pytest.fixture(autouse=True)
def _clean():
    preempt.uninstall()
    yield
    preempt.uninstall()


def test_signal_sets_flag_and_marker(tmp_path, monkeypatch):
    marker = tmp_path / "stop"
    monkeypatch.setenv(preempt.MARKER_ENV, str(marker))
    flag = preempt.install_handler()
    assert not preempt.requested() and not flag.is_set()
    os.kill(os.getpid(), signal.SIGUSR1)  # would kill the process without the handler
    assert preempt.requested() and flag.is_set()
    assert preempt.reason() == "SIGUSR1"
    assert marker.is_file()
    os.kill(os.getpid(), signal.SIGTERM)  # a second signal is not escalated
    assert preempt.reason() == "SIGUSR1"
    assert preempt.requested(sync=True)  # no process group: the local flag


def test_uninstall_restores_handlers():
    before = signal.getsignal(signal.SIGTERM)
    preempt.install_handler(["USR2", "TERM"])
    assert signal.getsignal(signal.SIGTERM) is not before
    preempt.uninstall()
    assert signal.getsignal(signal.SIGTERM) == before
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL
    assert not preempt.requested()


def test_signals_from_env_and_bad_names(monkeypatch):
    monkeypatch.setenv(preempt.SIGNALS_ENV, "USR2")
    usr1_before = signal.getsignal(
        signal.SIGUSR1
    )  # not always SIG_DFL: Ray Tune, run earlier in-process, sets one
    preempt.install_handler()
    assert signal.getsignal(signal.SIGUSR2) is not signal.SIG_DFL
    assert signal.getsignal(signal.SIGUSR1) is usr1_before
    with pytest.raises(ValueError, match="unknown signal 'NOPE'"):
        preempt.install_handler(["NOPE"])


def test_preempted_exception_names_step_and_checkpoint():
    e = preempt.Preempted(15, "/runs/x/checkpoints/step00000015", "SIGUSR1")
    assert e.exit_code == preempt.PREEMPTED_EXIT_CODE == 75
    assert "step 15" in str(e) and "step00000015" in str(e) and "SIGUSR1" in str(e)


def _rank(rank: int, port: int, out) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        preempt.install_handler()
        before = preempt.requested(sync=True)
        if rank == 1:  # only rank 1 gets the signal
            os.kill(os.getpid(), signal.SIGUSR1)
        after = preempt.requested(sync=True)
        out.put((rank, before, after, preempt.reason()))
    finally:
        dist.destroy_process_group()


def test_sync_makes_every_rank_stop_at_the_same_step():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_rank, args=(r, port, out)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    got = sorted(out.get(timeout=5) for _ in procs)
    assert got == [(0, False, True, "another rank was signalled"), (1, False, True, "SIGUSR1")]
