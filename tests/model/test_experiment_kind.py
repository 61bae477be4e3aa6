"""MLflow experiments made by lmp carry the model-training kind (mlflow.experimentKind), and a pretraining
run's Description (mlflow.note.content) puts each loss term beside its chance level."""

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


def test_pretraining_description_puts_each_loss_term_beside_its_chance_level():
    from lmp_model.tracking import loss_note

    history = [
        {"step": 1, "loss/total": 9.0, "loss/intra/video": 3.0, "loss_chance/intra/video": 2.7726},
        {"step": 2, "loss/total": 7.5, "loss/intra/video": 1.3863, "loss_chance/intra/video": 2.7726},
    ]
    note = loss_note(history, "RUN", "loss_curve.png")
    assert note.startswith("**Loss per term beside its chance level** (step 1 -> 2;")
    assert "| intra/video | 3.0000 | 1.3863 | 2.7726 | 0.50 |" in note  # the last loss is half of chance
    assert "| total | 9.0000 | 7.5000 | — | — |" in note
    assert "![loss per term, dashed: its chance level](get-artifact?path=loss_curve.png&run_uuid=RUN)" in note
    assert loss_note([]) == ""
