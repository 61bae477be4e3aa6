"""Nobody let in (issue 12): a single-node pretraining listens on loopback only, for the whole run.

torch's env:// rendezvous would start its TCPStore server on every interface (`::`); lmp_model.pretrain.dist
serves it on MASTER_ADDR's address instead. The listening sockets are read with psutil while the run trains.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psutil
import pytest

from lmp_model.pretrain import load_pretrain_config, run

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "experiments" / "configs" / "pretrain" / "tiny.yaml"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_store import make_store  # noqa: E402

WILDCARD = {"0.0.0.0", "::", ""}


def listeners(pid: int | None = None) -> set[tuple[str, int]]:
    conns = psutil.Process(pid).net_connections(kind="tcp")
    return {(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}


@pytest.mark.parametrize("master_addr", [None, "127.0.0.1"])
def test_single_node_pretraining_listens_on_loopback_only(tmp_path, monkeypatch, master_addr):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "GLOO_SOCKET_IFNAME"):
        monkeypatch.delenv(k, raising=False)
    if master_addr:
        monkeypatch.setenv("MASTER_ADDR", master_addr)
    store = make_store(tmp_path / "store", movies=3)
    cfg = load_pretrain_config(
        TINY,
        [
            f"data.store={store}",
            f"train.out_dir={tmp_path / 'runs'}",
            f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
            "train.threads=1",
            "train.steps=3",
            "train.ckpt_every=3",
        ],
    )
    seen: list[set[tuple[str, int]]] = []
    env: list[tuple[str | None, str | None]] = []

    def hook(step, out):  # every step: what this process listens on, mid-run
        seen.append(listeners())
        env.append((os.environ.get("MASTER_PORT"), os.environ.get("GLOO_SOCKET_IFNAME")))

    run(cfg, loss_hook=hook)
    assert len(seen) >= 3  # called per micro-batch
    port = int(env[0][0])
    for socks in seen:
        assert not [s for s in socks if s[0] in WILDCARD], f"listening on every interface: {sorted(socks)}"
        assert ("127.0.0.1", port) in socks, (
            f"the rendezvous store (port {port}) is not on 127.0.0.1: {socks}"
        )
        assert all(ip in ("127.0.0.1", "::1") for ip, _ in socks), sorted(socks)
    assert env[0][1] == "lo"  # gloo's pair sockets on loopback too
    assert "GLOO_SOCKET_IFNAME" not in os.environ and "MASTER_PORT" not in os.environ  # removed again


def test_rank0_store_refuses_an_address_this_machine_does_not_hold():
    from datetime import timedelta

    from lmp_model.pretrain.dist import free_port, rendezvous_store

    with pytest.raises(RuntimeError, match=r"MASTER_ADDR=192\.0\.2\.77 .*no interface"):
        rendezvous_store("192.0.2.77", free_port(), 0, 2, timedelta(seconds=5))


@pytest.mark.slow
def test_two_srun_style_ranks_listen_on_loopback_only(tmp_path):
    """2 ranks started as srun starts them (RANK/WORLD_SIZE/MASTER_ADDR=localhost, no torchrun agent): rank 0
    serves the store on 127.0.0.1 and no rank listens beyond loopback (~30 s)."""
    import subprocess
    import time

    from lmp_model.pretrain.dist import free_port

    store = make_store(tmp_path / "store", movies=3)
    port = free_port()
    args = [
        str(TINY),
        f"data.store={store}",
        f"train.out_dir={tmp_path / 'runs'}",
        f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "train.threads=1",
        "train.steps=20",
        "train.ckpt_every=20",
    ]
    base = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")
    }
    base.update(WORLD_SIZE="2", MASTER_ADDR="localhost", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    base.pop("GLOO_SOCKET_IFNAME", None)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "lmp_model.pretrain.cli", *args],
            env={**base, "RANK": str(r), "LOCAL_RANK": str(r)},
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in (0, 1)
    ]
    seen: dict[int, set[tuple[str, int]]] = {p.pid: set() for p in procs}
    deadline = time.monotonic() + 240
    try:
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            for p in procs:
                try:
                    seen[p.pid] |= listeners(p.pid)
                except psutil.Error:
                    pass
            time.sleep(0.3)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    outs = [p.communicate()[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    assert ("127.0.0.1", port) in seen[procs[0].pid], seen
    everything = set().union(*seen.values())
    assert everything and all(ip in ("127.0.0.1", "::1") for ip, _ in everything), sorted(everything)
    assert f"listening on 127.0.0.1 port {port}" in outs[0]
