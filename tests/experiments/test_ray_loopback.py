"""Nobody let in (issue 12): the sweep's local Ray listens on 127.0.0.1 only.

A real local Ray (1 CPU, no dashboard) started by the sweep's `init_ray`, one task run on it; then every
listening TCP socket of the Ray processes (the driver's children, and any process whose command line names
the session folder) is read with psutil. Without the fix GCS, raylet and workers listen on `::` and the
runtime-env agent on the machine's external address.
"""

from __future__ import annotations

import sys
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "experiments"))

from _sweep.config import load_sweep_config  # noqa: E402
from _sweep.runner import init_ray  # noqa: E402

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def ray_listeners(session_dir: str) -> list[tuple[str, str, int]]:
    me = psutil.Process()
    procs = {p.pid: p for p in me.children(recursive=True)}
    procs[me.pid] = me
    for p in psutil.process_iter(["cmdline"]):
        if session_dir in " ".join(p.info["cmdline"] or []):
            procs[p.pid] = p
    out = []
    for p in procs.values():
        try:
            conns = p.net_connections(kind="tcp")
            name = p.name()
        except psutil.Error:
            continue
        out += [(name, c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    return sorted(out)


def test_local_sweep_ray_listens_on_loopback_only(monkeypatch):
    import ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    from ray._private import ray_constants

    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)  # as on any Linux machine
    assert not ray.is_initialized()
    cfg = load_sweep_config("smoke", ["ray.num_cpus=1"])
    assert init_ray(cfg)
    try:

        @ray.remote(num_cpus=1)
        def ping() -> int:
            return 1

        assert ray.get(ping.remote(), timeout=60) == 1  # a worker process is up
        session = ray._private.worker._global_node.get_session_dir_path()
        socks = ray_listeners(session)
        names = {n for n, _, _ in socks}
        assert {"gcs_server", "raylet"} <= names, socks
        outside = [s for s in socks if s[1] not in LOOPBACK]
        assert not outside, f"Ray listens beyond loopback: {outside}"
    finally:
        ray.shutdown()


PROBE = """
import json, sys
import psutil, ray
sys.path.insert(0, sys.argv[1])
from test_ray_loopback import ray_listeners
ray.init(logging_level="ERROR")  # RAY_ADDRESS from ray_sweep.sh
@ray.remote(num_cpus=1)
def ping():
    return 1
assert ray.get(ping.remote(), timeout=60) == 1
session = ray._private.worker._global_node.get_session_dir_path()
print("LISTENERS", json.dumps(ray_listeners(session)))
ray.shutdown()
"""


def test_ray_sweep_sh_single_node_head_listens_on_loopback_only(tmp_path):
    """slurm/ray_sweep.sh's head (`ray start --head --node-ip-address=127.0.0.1`) run as a plain script (one
    node, no srun needed); its 'sweep' is a probe that lists the listeners of every process of the session."""
    import json
    import os
    import subprocess

    repo = HERE.parents[1]
    script = tmp_path / "experiments" / "ablate_probe.py"
    script.parent.mkdir()
    script.write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SLURM_"))}
    env.update(LMP_ROOT=str(repo), SLURM_CPUS_PER_TASK="1", OMP_NUM_THREADS="1")
    p = subprocess.run(
        ["bash", str(repo / "slurm" / "ray_sweep.sh"), str(script), str(HERE)],
        env=env, cwd=repo, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    lines = [line for line in p.stdout.splitlines() if line.startswith("LISTENERS ")]
    assert p.returncode == 0 and lines, f"exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    socks = json.loads(lines[0][len("LISTENERS ") :])
    assert {"gcs_server", "raylet"} <= {n for n, _, _ in socks}, socks
    outside = [s for s in socks if s[1] not in LOOPBACK]
    assert not outside, f"the Ray head listens beyond loopback: {outside}"
