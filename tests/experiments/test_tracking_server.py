"""MLflow on PostgreSQL (`scripts/tracking_server.sh`) as a cluster uses it, all real processes:

- the smoke sweep (2 concurrent Ray trials) and a 2-rank (gloo) pretraining find the server through
  `MLFLOW_TRACKING_URI` alone, and every run, metric step and artifact arrives;
- 8 concurrent writer processes (bounded: 8 x 50 steps of 2 requests, 5 min) lose nothing;
- the server dies mid-run: training finishes, warns once, keeps the metrics in `metrics.jsonl`, and
  `lmp-pretrain --sync-mlflow RUN_DIR` uploads the rest once the server is back (and a run that never
  reached the server is created by the sync).

Each test starts PostgreSQL + MLflow in a private folder (a /tmp folder PostgreSQL's user can enter when
the tests run as root) on a free port and stops both at the end. Slow: 9.5 min on 2 cores beside other
jobs (load 6-8; 243 s sweep + 2 ranks, 110 s writers, 197 s server gone + sync), measured 2026-12-01.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "tracking_server.sh"
PY = REPO / ".venv" / "bin" / "python"
TINY = REPO / "experiments" / "configs" / "pretrain" / "tiny.yaml"
sys.path.insert(0, str(REPO / "tests" / "model"))
from synthetic_store import make_store  # noqa: E402

from lmp_model.pretrain.dist import free_port  # noqa: E402


@dataclass
class Server:
    """One tracking_server.sh data folder and port."""

    dir: Path
    port: int

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _script(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(SCRIPT), *args, "--dir", str(self.dir)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )

    def start(self) -> None:
        p = self._script("start", "--port", str(self.port), "--workers", "2")
        assert p.returncode == 0, p.stderr[-3000:]
        assert p.stdout.strip() == f"export MLFLOW_TRACKING_URI={self.uri}", p.stdout

    def stop(self) -> None:
        self._script("stop", timeout=120)

    def kill_mlflow(self) -> None:
        """SIGKILL the MLflow server's process group (PostgreSQL stays): the server dies, no goodbye."""
        state = dict(line.split("=", 1) for line in (self.dir / "server.state").read_text().splitlines())
        os.killpg(int(state["PGID"]), signal.SIGKILL)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                os.killpg(int(state["PGID"]), 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        raise AssertionError("the MLflow process group outlived SIGKILL")


def _private_dir() -> Path:
    """A /tmp folder for PostgreSQL: pytest's tmp folders are 0700, closed to user `postgres` under root."""
    d = Path(tempfile.mkdtemp(prefix="lmp-trk-", dir="/tmp"))
    if os.geteuid() == 0:
        d.chmod(0o711)
    return d


@pytest.fixture
def make_server():
    made: list[tuple[Server, Path]] = []

    def make() -> Server:
        base = _private_dir()
        server = Server(base / "tracking", free_port())
        made.append((server, base))
        server.start()
        return server

    yield make
    for server, base in made:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def _env(uri: str) -> dict[str, str]:
    drop = ("RAY_ADDRESS", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT", "MASTER_ADDR")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("PYTHONPYCACHEPREFIX", str(Path.home() / ".cache" / "lmp-pycache"))
    env |= {"MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1"}
    return env


def _pretrain_cmd(store: Path, out: Path, name: str, nproc: int, *overrides: str) -> list[str]:
    """lmp-pretrain without any mlflow.tracking_uri: the environment variable must be enough."""
    args = [str(TINY), f"data.store={store}", f"train.out_dir={out}", f"name={name}", "train.threads=1"]
    if nproc == 1:
        return [str(PY), "-m", "lmp_model.pretrain.cli", *args, *overrides]
    launcher = [str(PY), "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc)]
    launcher += ["--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    return [*launcher, "-m", "lmp_model.pretrain.cli", *args, *overrides]


def _summary(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith('{"run_dir"')]
    assert len(lines) == 1, stdout[-3000:]
    return json.loads(lines[0])


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _assert_run_complete(client: MlflowClient, run_id: str, run_dir: Path, steps: int) -> None:
    """The run is FINISHED and holds every metric of metrics.jsonl at every step once, its params and
    its artifacts (config, loss curve, exported weights)."""
    recs = _metrics(run_dir)
    assert [r["step"] for r in recs] == list(range(1, steps + 1))
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["derived.total_steps"] == str(steps)
    for key in (k for k in recs[0] if k != "step"):
        hist = client.get_metric_history(run_id, key)
        assert sorted(m.step for m in hist) == list(range(1, steps + 1)), key
        by_step = {m.step: m.value for m in hist}
        assert all(by_step[r["step"]] == pytest.approx(r[key], rel=1e-6, abs=1e-9) for r in recs), key
    assert {"config.yaml", "loss_curve.png", "export"} <= {a.path for a in client.list_artifacts(run_id)}
    export = {a.path for a in client.list_artifacts(run_id, "export")}
    assert {"export/model.safetensors", "export/lmp.json"} <= export, export


def test_sweep_and_two_ranks_tracked_on_server(make_server, tmp_path):
    server = make_server()
    env = _env(server.uri)
    client = MlflowClient(server.uri)

    # the smoke sweep, two pretraining rows as 2 concurrent trials (ray.num_cpus=2, 1 CPU per trial)
    t0 = time.time()
    sweep = subprocess.run(
        [
            str(PY),
            str(REPO / "experiments" / "ablate_losses.py"),
            "--scale",
            "smoke",
            "--only",
            "full,no-intra",
        ]
        + ["--experiment", "srv-sweep", f"out_dir={tmp_path / 'sweeps'}", "ray.num_cpus=2", "ray.verbose=0"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert sweep.returncode == 0, f"{sweep.stdout[-3000:]}\n{sweep.stderr[-5000:]}"
    print(f"sweep {time.time() - t0:.0f} s")
    exp = client.get_experiment_by_name("srv-sweep")
    assert exp.artifact_location.startswith("mlflow-artifacts:"), exp.artifact_location  # via the server
    parents = client.search_runs([exp.experiment_id], filter_string="tags.`lmp.table` = 'losses'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0].info.run_id
    assert {"results/table.md", "results/table.parquet"} <= {
        a.path for a in client.list_artifacts(parent, "results")
    }
    children = client.search_runs([exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted((r.data.tags["lmp.trial"], r.info.status) for r in children) == [
        ("full-s0", "FINISHED"),
        ("no-intra-s0", "FINISHED"),
    ]
    starts = sorted((r.info.start_time, r.info.end_time) for r in children)
    assert starts[1][0] < starts[0][1], "the two trials did not run concurrently"
    for child in children:
        rid = child.info.run_id
        steps = int(child.data.params["derived.total_steps"])
        assert sorted(m.step for m in client.get_metric_history(rid, "loss/total")) == list(
            range(1, steps + 1)
        )
        assert {"probe/content", "probe/metadata", "probe/user"} <= set(child.data.metrics)
        export = {a.path for a in client.list_artifacts(rid, "export")}
        assert "export/model.safetensors" in export, export
    stored = list((server.dir / "artifacts").rglob("model.safetensors"))
    assert len(stored) == 2, stored  # the server stored them, under its --artifacts-destination

    # a 2-rank (gloo) pretraining: one run, every step, its artifacts
    t0 = time.time()
    store = make_store(tmp_path / "store")
    p = subprocess.run(
        _pretrain_cmd(store, tmp_path / "runs", "two", 2, "train.steps=8", "train.zero_stage=2"),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert p.returncode == 0, f"{p.stdout[-3000:]}\n{p.stderr[-6000:]}"
    print(f"2 ranks {time.time() - t0:.0f} s")
    out = _summary(p.stdout)
    _assert_run_complete(client, out["mlflow_run_id"], Path(out["run_dir"]), 8)
    runs = client.search_runs([client.get_experiment_by_name("lmp-pretrain-tiny").experiment_id])
    assert [r.info.run_id for r in runs] == [out["mlflow_run_id"]]  # rank 1 opened none
    assert runs[0].data.params["derived.world_size"] == "2"


WRITER = textwrap.dedent(
    """
    import os, sys, time
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient
    from lmp_model.tracking import ensure_experiment

    uri, exp, i, steps, folder = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    c = MlflowClient(uri)
    rid = c.create_run(ensure_experiment(c, exp, uri), run_name=f"w{i}", tags={"writer": str(i)}).info.run_id
    c.log_batch(rid, params=[Param(f"p{k}", f"{i}-{k}") for k in range(20)])
    for s in range(steps):
        ts = int(time.time() * 1000)
        c.log_batch(rid, metrics=[Metric(f"m{k}", i * 1000 + s + k / 10, ts, s) for k in range(5)])
        c.log_metric(rid, "single", float(s), step=s)
    path = os.path.join(folder, f"w{i}.txt")
    with open(path, "w") as f:
        f.write(f"writer {i}\\n" * 1000)
    c.log_artifact(rid, path)
    c.set_terminated(rid, "FINISHED")
    print(rid)
    """
)


def test_eight_concurrent_writers_lose_nothing(make_server, tmp_path):
    server = make_server()
    writers, steps, limit = 8, 50, 300.0
    env = {
        **_env(server.uri),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    }  # a dropped request must show, not hide
    t0 = time.time()
    procs = [
        subprocess.Popen(
            [str(PY), "-c", WRITER, server.uri, "hammer", str(i), str(steps), str(tmp_path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(writers)
    ]
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=max(1.0, limit - (time.time() - t0)))
            assert p.returncode == 0, err[-3000:]
            outs.append(out.strip().splitlines()[-1])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    print(f"{writers} writers x {steps} steps: {time.time() - t0:.0f} s")

    client = MlflowClient(server.uri)
    exps = [e for e in client.search_experiments() if e.name == "hammer"]
    assert len(exps) == 1  # 8 processes raced to create it; one exists
    runs = client.search_runs([exps[0].experiment_id], max_results=100)
    assert sorted(r.info.run_id for r in runs) == sorted(outs)
    for r in runs:
        i = int(r.data.tags["writer"])
        assert r.info.status == "FINISHED"
        assert r.data.params == {f"p{k}": f"{i}-{k}" for k in range(20)}
        for k in range(5):
            hist = client.get_metric_history(r.info.run_id, f"m{k}")
            assert sorted((m.step, m.value) for m in hist) == [
                (s, pytest.approx(i * 1000 + s + k / 10)) for s in range(steps)
            ]
        assert sorted(m.step for m in client.get_metric_history(r.info.run_id, "single")) == list(
            range(steps)
        )
        local = client.download_artifacts(r.info.run_id, f"w{i}.txt", str(tmp_path / f"dl{i}"))
        assert Path(local).read_text() == f"writer {i}\n" * 1000


def _wait_for_steps(run_dir: Path, n: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    path = run_dir / "metrics.jsonl"
    while time.time() < deadline:
        assert proc.poll() is None, "training ended before the server was killed"
        if path.is_file() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"no {n} steps in {path} after {timeout} s")


def _sync(run_dir: Path, uri: str) -> dict:
    p = subprocess.run(
        [str(PY), "-m", "lmp_model.pretrain.cli", "--sync-mlflow", str(run_dir)],
        env=_env(uri),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads([line for line in p.stdout.splitlines() if line.startswith("{")][-1])


def test_server_goes_away_mid_run_then_sync(make_server, tmp_path):
    server = make_server()
    client = MlflowClient(server.uri)
    store = make_store(tmp_path / "store")
    out, steps = tmp_path / "runs", 150
    log = (tmp_path / "gone.out").open("w"), (tmp_path / "gone.err").open("w")
    proc = subprocess.Popen(
        _pretrain_cmd(store, out, "gone", 1, f"train.steps={steps}"),
        cwd=REPO,
        env=_env(server.uri),
        stdout=log[0],
        stderr=log[1],
    )
    try:
        _wait_for_steps(out / "gone", 5, proc)
        server.kill_mlflow()
        assert proc.wait(timeout=400) == 0, (tmp_path / "gone.err").read_text()[-5000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log[0].close()
        log[1].close()
    run_dir = out / "gone"
    err = (tmp_path / "gone.err").read_text()
    summary = _summary((tmp_path / "gone.out").read_text())
    assert summary["steps"] == steps
    warnings = [line for line in err.splitlines() if "training continues without MLflow tracking" in line]
    assert len(warnings) == 1, err[-5000:]  # once, naming where the metrics are and how to upload them
    assert f"lmp-pretrain --sync-mlflow {run_dir}" in warnings[0] and "metrics.jsonl" in warnings[0]
    assert "Retrying" not in err  # urllib3's per-retry lines are folded into that one warning
    assert [r["step"] for r in _metrics(run_dir)] == list(range(1, steps + 1))
    journal = json.loads((run_dir / "mlflow.json").read_text())
    assert (
        journal["status"] == "FINISHED" and journal["lost"] and journal["run_id"] == summary["mlflow_run_id"]
    )

    # while the server is down, a second run cannot even open its MLflow run
    p = subprocess.run(
        _pretrain_cmd(store, out, "never", 1, "train.steps=6"),
        cwd=REPO,
        env=_env(server.uri),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-5000:]
    assert _summary(p.stdout)["mlflow_run_id"] is None
    assert sum("training continues without MLflow tracking" in line for line in p.stderr.splitlines()) == 1

    server.start()  # the same PostgreSQL data: the first run is there, with what arrived before the kill
    rid = summary["mlflow_run_id"]
    before = client.get_metric_history(rid, "loss/total")
    assert 1 <= len(before) < steps and client.get_run(rid).info.status == "RUNNING"

    synced = _sync(run_dir, server.uri)
    assert synced["mlflow_run_id"] == rid and not synced["created_run"]
    assert synced["steps"] == steps - len(before) and synced["status"] == "FINISHED"
    _assert_run_complete(client, rid, run_dir, steps)
    again = _sync(run_dir, server.uri)  # nothing left to upload
    assert (again["metrics"], again["params"], again["artifacts"]) == (0, 0, [])

    never = _sync(out / "never", server.uri)  # the run that never reached the server is created
    assert never["created_run"]
    _assert_run_complete(client, never["mlflow_run_id"], out / "never", 6)
    assert client.get_run(never["mlflow_run_id"]).data.tags["lmp.synced_from"] == str(out / "never")
