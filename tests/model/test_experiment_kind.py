"""MLflow experiments made by lmp open in the UI's model-training view (mlflow.experimentKind), and a
sweep's parent run shows its results table as the run Description (mlflow.note.content)."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from lmp_model.tracking import EXPERIMENT_KIND_TAG, TRAINING_KIND, ensure_experiment


def test_new_and_existing_experiments_are_tagged_as_model_training(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp_id = ensure_experiment(client, "fresh", uri)
    assert client.get_experiment(exp_id).tags[EXPERIMENT_KIND_TAG] == TRAINING_KIND
    old = client.create_experiment("made-before")  # e.g. by an older lmp: no kind yet
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(old).tags
    assert ensure_experiment(client, "made-before", uri) == old
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == TRAINING_KIND
    chosen = client.create_experiment("user-kind", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    ensure_experiment(client, "user-kind", uri)  # a kind the user set is left alone
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"
