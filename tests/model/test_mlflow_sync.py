"""`lmp-pretrain --sync-mlflow RUN_DIR` against SQLite (fast; the tracking-server version, with a server
killed mid-run, is tests/experiments/test_tracking_server.py): the run folder's journal (`mlflow.json`)
and `metrics.jsonl` are enough to upload what an unreachable store missed, once."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from lmp_model.pretrain import load_pretrain_config, run
from lmp_model.pretrain.cli import main
from lmp_model.pretrain.dist import free_port
from lmp_model.pretrain.sync import SyncError, sync_run

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "experiments" / "configs" / "pretrain" / "tiny.yaml"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_store import make_store  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("store") / "store")


def tiny(store: Path, tmp: Path, uri: str, *overrides: str):
    return load_pretrain_config(
        TINY,
        [
            f"data.store={store}",
            f"train.out_dir={tmp / 'runs'}",
            f"mlflow.tracking_uri={uri}",
            "train.threads=1",
            *overrides,
        ],
    )


def test_tracked_run_journal_and_sync_uploads_nothing(store, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = run(tiny(store, tmp_path, uri, "name=ok", "train.steps=3"))
    journal = json.loads((res.run_dir / "mlflow.json").read_text())
    assert journal["run_id"] == res.mlflow_run_id and journal["status"] == "FINISHED"
    assert journal["lost"] is None and journal["params"]["derived.total_steps"] == "3"
    out = sync_run(res.run_dir, uri)
    assert (out["created_run"], out["params"], out["metrics"], out["artifacts"]) == (False, 0, 0, [])


def test_unreachable_store_then_sync_creates_the_run_once(store, tmp_path, capsys):
    dead = f"http://127.0.0.1:{free_port()}"
    res = run(tiny(store, tmp_path, dead, "name=offline", "train.steps=5", "train.log_every=2"))
    assert res.mlflow_run_id is None
    journal = json.loads((res.run_dir / "mlflow.json").read_text())
    assert journal["run_id"] is None and journal["status"] == "FINISHED" and "unreachable" in journal["lost"]

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["--sync-mlflow", str(res.run_dir), "--tracking-uri", uri]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["created_run"] and out["status"] == "FINISHED" and out["steps"] == 3
    client = MlflowClient(uri)
    r = client.get_run(out["mlflow_run_id"])
    assert r.info.status == "FINISHED" and r.info.run_name == "offline"
    assert r.data.params["derived.total_steps"] == "5" and r.data.tags["store"] == str(store.resolve())
    # the steps training logs with log_every=2: 2, 4 and the last one
    assert sorted(m.step for m in client.get_metric_history(r.info.run_id, "loss/total")) == [2, 4, 5]
    assert {"config.yaml", "loss_curve.png", "export"} <= {
        a.path for a in client.list_artifacts(r.info.run_id)
    }
    assert "export/model.safetensors" in {a.path for a in client.list_artifacts(r.info.run_id, "export")}
    assert json.loads((res.run_dir / "mlflow.json").read_text())["run_id"] == r.info.run_id

    again = sync_run(res.run_dir, uri)  # the journal now names the run: nothing is created or sent twice
    assert again["mlflow_run_id"] == r.info.run_id and not again["created_run"]
    assert (again["params"], again["metrics"], again["artifacts"]) == (0, 0, [])
    assert len(client.search_runs([r.info.experiment_id])) == 1


def test_sync_errors_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(SyncError, match="mlflow.json not found"):
        sync_run(tmp_path)
    (tmp_path / "mlflow.json").write_text("{broken")
    assert main(["--sync-mlflow", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and err[0].startswith("lmp-pretrain: error: ")
        and str(tmp_path / "mlflow.json") in err[0]
    )
    (tmp_path / "mlflow.json").write_text(
        json.dumps({"experiment": "x", "tracking_uri": "http://127.0.0.1:1"})
    )
    assert main(["--sync-mlflow", str(tmp_path)]) == 2
    assert "http://127.0.0.1:1 unreachable" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--sync-mlflow", str(tmp_path), str(TINY)])  # no config with --sync-mlflow
