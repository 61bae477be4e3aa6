"""torch.distributed set-up and tear-down for one pretraining run.

World size comes from the launcher: RANK / WORLD_SIZE / LOCAL_RANK (torchrun, `deepspeed`), else
SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID (srun), else a single process. Missing rendezvous
variables are filled in (a single process gets a free port from binding port 0, so concurrent Ray
trials never collide) and removed again at the end, together with the process group and DeepSpeed's
cached groups, so a second run in the same process starts clean.

Nobody let in: torch's env:// rendezvous starts its TCPStore server on every interface (`::`, whatever
MASTER_ADDR says). So rank 0 binds the store's socket itself, on the address MASTER_ADDR resolves to
(127.0.0.1 for a single process, or whenever MASTER_ADDR is loopback), hands it to `TCPStore` as
`master_listen_fd`, and the process group is made on that store; it logs the address and interface it
listens on. With a loopback MASTER_ADDR gloo's pair sockets are kept on `lo` too (GLOO_SOCKET_IFNAME, if
unset). Under torchrun the ranks only connect to the store torchrun's agent runs (its listener is
torch's own and binds every interface: see slurm/README.md).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import subprocess
from dataclasses import dataclass, field
from typing import Any

import torch

ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

log = logging.getLogger("lmp_model.pretrain")


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1 (bind port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_command(args: list[str], nproc: int = 1) -> list[str]:
    """The argv of `lmp-pretrain ARGS` on this machine: one process, or `nproc` ranks under torchrun's
    launcher on loopback (a free port). No shell string: each argument stays one argv entry."""
    import sys

    if nproc <= 1:
        return [sys.executable, "-m", "lmp_model.pretrain.cli", *args]
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc_per_node",
        str(nproc),
    ]
    launcher += ["--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    return [*launcher, "-m", "lmp_model.pretrain.cli", *args]


def _slurm_master_addr() -> str:
    nodes = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST") or ""
    if not nodes:
        return "127.0.0.1"
    try:
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodes], capture_output=True, text=True, timeout=30, check=True
        ).stdout.split()
        return out[0] if out else "127.0.0.1"
    except (OSError, subprocess.SubprocessError):
        return nodes.split(",")[0]


def launcher_env() -> dict[str, str]:
    """The rendezvous variables this process lacks, derived from SLURM or for a single process."""
    env = os.environ
    add: dict[str, str] = {}
    if "RANK" not in env and "SLURM_PROCID" in env:
        add["RANK"] = env["SLURM_PROCID"]
        add["WORLD_SIZE"] = env.get("SLURM_NTASKS", "1")
        add["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
        if "MASTER_ADDR" not in env:
            add["MASTER_ADDR"] = _slurm_master_addr()
        if "MASTER_PORT" not in env:  # every task of a job derives the same port from the job id
            add["MASTER_PORT"] = str(15000 + int(env.get("SLURM_JOB_ID", "0")) % 20000)
        return add
    defaults = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    for k, v in defaults.items():
        if k not in env:
            add[k] = v
    if "MASTER_PORT" not in env:
        world = int(add.get("WORLD_SIZE", env.get("WORLD_SIZE", "1")))
        if world > 1:
            raise RuntimeError("WORLD_SIZE > 1 but MASTER_PORT is not set: start the ranks with a launcher")
        add["MASTER_PORT"] = str(free_port())
    return add


def _is_loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


def _loopback_master(env) -> bool:
    """A single process, or MASTER_ADDR resolves to a loopback address."""
    if env.get("WORLD_SIZE", "1") == "1":
        return True
    try:
        return _is_loopback(_resolve(env.get("MASTER_ADDR", ""), 0)[1])
    except (OSError, ValueError):
        return False


def _resolve(host: str, port: int) -> tuple[int, str]:
    """(address family, numeric address) MASTER_ADDR resolves to (IPv4 first)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    infos.sort(key=lambda i: i[0] != socket.AF_INET)
    return infos[0][0], str(infos[0][4][0])


def interface_of(addr: str) -> str | None:
    """The name of this machine's interface that holds `addr` (None: no local interface has it)."""
    import psutil

    for name, addrs in psutil.net_if_addrs().items():
        if any(a.address.split("%")[0] == addr for a in addrs):
            return name
    return None


def rendezvous_store(master_addr: str, port: int, rank: int, world: int, timeout) -> torch.distributed.Store:
    """The TCPStore of the rendezvous: rank 0 serves it on MASTER_ADDR's address only (127.0.0.1 for a
    single process), the other ranks connect to it."""
    from torch.distributed import TCPStore

    if world == 1:
        master_addr = "127.0.0.1"
    if rank != 0:
        return TCPStore(master_addr, port, world, False, timeout)
    family, addr = _resolve(master_addr, port)
    iface = interface_of(addr)
    if iface is None and not _is_loopback(addr):
        raise RuntimeError(
            f"MASTER_ADDR={master_addr} resolves to {addr}, which no interface of this machine (rank 0) holds: "
            "set MASTER_ADDR to rank 0's address on the allocation's network"
        )
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((addr, port))
        sock.listen(max(128, world))
        fd = sock.detach()
    except BaseException:
        sock.close()
        raise
    log.info(
        "rendezvous store (TCPStore) listening on %s port %d (interface %s) only", addr, port, iface or "lo"
    )
    return TCPStore(addr, port, world, True, timeout, wait_for_workers=False, master_listen_fd=fd)


@dataclass
class DistContext:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    backend: str
    owns_group: bool
    added_env: dict[str, str] = field(default_factory=dict)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str = "auto") -> DistContext:
    """Initialise torch.distributed through DeepSpeed (gloo on CPU, NCCL on GPU) unless it already is
    (e.g. Ray Train made the group); returns ranks and device."""
    import deepspeed
    import deepspeed.comm as dscomm
    import torch.distributed as dist

    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but CUDA is not available")
    backend = "nccl" if use_cuda else "gloo"
    added = launcher_env()
    if not use_cuda and "GLOO_SOCKET_IFNAME" not in os.environ and _loopback_master({**os.environ, **added}):
        added["GLOO_SOCKET_IFNAME"] = "lo"  # gloo's pair sockets on loopback, not the hostname's address
    os.environ.update(added)
    owns = not dist.is_initialized()
    try:
        if owns and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
            from datetime import timedelta

            env = os.environ
            rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
            timeout = timedelta(minutes=30)
            store = rendezvous_store(env["MASTER_ADDR"], int(env["MASTER_PORT"]), rank, world, timeout)
            dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False)
    except Exception:
        if owns and dist.is_initialized():
            dist.destroy_process_group()
        for k in added:
            os.environ.pop(k, None)
        raise
    rank, world = dscomm.get_rank(), dscomm.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    return DistContext(rank, world, local_rank, dev, backend, owns, added)


def teardown(ctx: DistContext | None) -> None:
    """Destroy the process group we created, DeepSpeed's cached groups, and the env we added."""
    if ctx is None:
        return
    import deepspeed.comm as dscomm
    import deepspeed.comm.comm as dscomm_mod
    import torch.distributed as dist

    try:
        if ctx.owns_group and dist.is_initialized():
            dscomm.destroy_process_group()  # also releases deepspeed.utils.groups' references
        dscomm_mod.cdb = None
    finally:
        for k in ctx.added_env:
            os.environ.pop(k, None)


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (nothing to wait for in a single process)."""
    if ctx.world > 1:
        torch.distributed.barrier()


def broadcast(ctx: DistContext, obj: Any) -> Any:
    """Rank 0's `obj` on every rank (a picklable object)."""
    if ctx.world == 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(ctx: DistContext, obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank."""
    if ctx.world == 1:
        return [obj]
    out: list[Any] = [None] * ctx.world
    torch.distributed.all_gather_object(out, obj)
    return out
