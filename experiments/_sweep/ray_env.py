"""Ray for a sweep (`runner.run_sweep`): connect to a given cluster, or start a local Ray on 127.0.0.1 only.

Also what Ray ships to its workers (`worker_modules`: the `_sweep` package and the scripts beside it).
"""

from __future__ import annotations

import os

from .config import REPO_ROOT, SweepConfig

EXPERIMENTS_DIR = REPO_ROOT / "experiments"


# Ray 2.60 binds GCS, raylet, object manager and worker gRPC servers to 127.0.0.1 only when the node IP is
# exactly "127.0.0.1", and to every interface otherwise; but on Linux it replaces a node IP of 127.0.0.1
# (ray.init(_node_ip_address=...), `ray start --node-ip-address`) by the machine's reachable address
# (services.resolve_ip_for_localhost) unless its "cluster" mode is off. Off, the node IP stays loopback
# and nothing listens beyond it; a node started that way cannot take other nodes (single-node only).
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def loopback_only_ray() -> None:
    """Make the next local Ray of this process (and the processes it starts) listen on 127.0.0.1 only."""
    os.environ.update(LOOPBACK_ENV)
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # read at import time: the driver may have imported ray already


def worker_modules() -> list[str]:
    """What Ray ships to its workers (runtime_env `py_modules`): the `_sweep` package and the scripts'
    modules beside it (a recipe's work may import one, e.g. compare_recipes -> pretrain_m2s)."""
    return [str(EXPERIMENTS_DIR / "_sweep"), *(str(p) for p in sorted(EXPERIMENTS_DIR.glob("*.py")))]


def init_ray(cfg: SweepConfig) -> bool:
    """Connect to `ray.address` / $RAY_ADDRESS, else start a local Ray that listens on 127.0.0.1 only.
    True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    runtime_env = {
        "py_modules": worker_modules(),
        "env_vars": {"HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")},
    }
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
    else:
        loopback_only_ray()
        ray.init(
            address="local",
            num_cpus=cfg.ray.num_cpus or os.cpu_count(),
            num_gpus=None,
            include_dashboard=False,
            runtime_env=runtime_env,
            _node_ip_address="127.0.0.1",
        )
    return True
