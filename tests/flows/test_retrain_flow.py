"""The retrain flow end to end under Prefect's test harness: what it publishes, and what the gate decides."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from prefect import task

from flows.retrain import (
    CHECKPOINT_ARTIFACT_KEY,
    REPORT_ARTIFACT_KEY,
    VERSIONS_ARTIFACT_KEY,
    RetrainParameters,
    retrain,
)
from intentflow.cli import main
from intentflow.errors import ValidationFailed
from intentflow.inference import Classifier
from intentflow.registry import Registry, open_registry
from tasks.refit import refit_model

from .flow_helpers import read_artifacts, table_rows

pytestmark = pytest.mark.usefixtures("harness")

VERSION_NAME = re.compile(r"^intent_model_v\d{4}-\d{2}(-\d+)?$")
VERSION_FILES = ("{name}.pt", "{name}.pt.metrics.json", "version.json", "report.md", "release_notes.md",
                 "evaluation.json")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_first_run_promotes_and_writes_a_complete_version(make_params: Callable[..., RetrainParameters]) -> None:
    params = make_params()
    state = retrain(params, return_state=True)

    assert state.is_completed(), state.message
    registry = Registry(params.registry)
    [version] = registry.versions()
    assert VERSION_NAME.match(version.name)
    assert state.message.startswith(f"promoted {version.name} to production")
    assert registry.production_name() == version.name
    assert registry.status(version) == "production"
    for pattern in VERSION_FILES:
        assert (version.path / pattern.format(name=version.name)).is_file(), pattern
    [event] = registry.history()
    assert event["action"] == "promote"
    assert event["version"] == version.name
    assert event["previous"] is None
    assert event["who"] and event["time"] and "meets the threshold" in event["why"]
    info = version.info
    assert info["gate"]["promote"] is True
    assert info["gate"]["threshold"] == 0.5
    assert info["val_accuracy"] >= 0.5
    assert sorted(info["labels"]) == ["check_weather", "play_music", "set_alarm"]
    assert info["run"]["flow_run_id"] == str(state.state_details.flow_run_id)
    # The resolved config is recorded, so the next run can tell it is up to date.
    assert info["config"]["train"]["hidden_size"] == 32
    assert info["config"]["prepare"]["augment_factor"] == 20
    report = (version.path / "report.md").read_text(encoding="utf-8")
    assert report.startswith(f"# {version.name}: promoted to production")
    assert "first version: 3 outcomes" in (version.path / "release_notes.md").read_text(encoding="utf-8")
    # Nothing half-written is left behind.
    assert not [path for path in Path(params.registry).iterdir() if path.name.startswith(".tmp-")]


def test_word_ngrams_asked_of_the_flow_reach_the_published_model(
        make_params: Callable[..., RetrainParameters]) -> None:
    from intentflow.inference import Classifier

    # Single words, against the default of word pairs.
    params = make_params(word_ngrams=1, refit=False)
    state = retrain(params, return_state=True)

    assert state.is_completed(), state.message
    registry = Registry(params.registry)
    [version] = registry.versions()
    assert version.info["config"]["train"]["word_ngrams"] == 1
    published = Classifier.load(version.path / f"{version.name}.pt")
    assert published.vocab.word_ngrams == 1
    assert published.vocab.features and not any(" " in feature for feature in published.vocab.features)
    with pytest.raises(ValueError, match="word_ngrams"):
        make_params(word_ngrams=0)


def test_training_parameters_of_the_flow_reach_its_settings() -> None:
    settings = RetrainParameters(finetune_lr=1e-4, finetune_epochs=3, hidden_size=64, linear_share=0.25,
                                 embedding_layers=[], embedding_heads=1).settings()

    assert (settings.train.finetune_lr, settings.train.finetune_epochs, settings.train.hidden_size) == (1e-4, 3, 64)
    assert settings.train.linear_share == 0.25 and settings.train.embedding_heads == 1
    assert settings.train.embedding_layers == []  # an empty list overrides the file's, unlike None
    with pytest.raises(ValidationFailed, match="embedding_layers"):
        RetrainParameters(embedding_layers=[4, 4]).settings()
    with pytest.raises(ValueError, match="linear_share"):
        RetrainParameters(linear_share=1.5)
    assert settings.train.lr == RetrainParameters().settings().train.lr  # not given: from config/training.toml
    with pytest.raises(ValueError, match="finetune_lr"):
        RetrainParameters(finetune_lr=0)


def test_unchanged_second_run_is_up_to_date(make_params: Callable[..., RetrainParameters]) -> None:
    params = make_params()
    assert retrain(params, return_state=True).is_completed()
    registry = Registry(params.registry)
    before = [version.name for version in registry.versions()]

    # The device is where a model trained, not what it is: it does not make a run out of date.
    state = retrain(make_params(device="auto"), return_state=True)

    assert state.is_completed(), state.message
    assert "up to date" in state.message
    assert before[0] in state.message
    assert [version.name for version in registry.versions()] == before
    assert len(registry.history()) == 1


def test_changed_outcomes_retrain(make_params: Callable[..., RetrainParameters], outcomes_folder: Path) -> None:
    params = make_params()
    assert retrain(params, return_state=True).is_completed()
    # Learnable from any three of its examples: each shares words with the others (the split holds one out).
    food = {"name": "order_food", "examples": ["order a pizza for dinner", "order some sushi delivered",
                                               "get a burger delivered for dinner", "order noodles for dinner"]}
    (outcomes_folder / "order_food.json").write_text(json.dumps(food), encoding="utf-8")

    # A tolerance for the tiny set (a sentence of 35 is 2.9 points): a new outcome may take a sentence of an old one.
    state = retrain(make_params(changed_paths=["order_food.json"], tolerance=0.1), return_state=True)

    assert state.is_completed(), state.message
    assert "up to date" not in state.message
    registry = Registry(params.registry)
    first, second = registry.versions()
    assert state.message.startswith(f"promoted {second.name}")
    assert registry.production_name() == second.name
    assert second.info["outcome_hash"] != first.info["outcome_hash"]
    assert second.info["run"]["changed_paths"] == ["order_food.json"]
    # Production knows fewer outcomes: both are compared on the validation sentences of the three they share.
    gate = second.info["gate"]
    assert gate["production_accuracy"] is not None and gate["not_compared"] is None
    val = torch.load(second.held_out_checkpoint, weights_only=True)["validation"]
    assert gate["compared_samples"] == sum(label != "order_food" for label in val["label"])
    notes = (second.path / "release_notes.md").read_text(encoding="utf-8")
    assert f"compared with production {first.name}" in notes
    assert "outcomes added: order_food" in notes
    assert [event["previous"] for event in registry.history()] == [None, first.name]


def test_an_added_example_is_compared_only_on_sentences_production_never_saw(
        make_params: Callable[..., RetrainParameters], outcomes_folder: Path) -> None:
    # Without refit, production has not trained on its validation originals, so some are left to compare on
    # whichever mode the second run takes.
    params = make_params(refit=False)
    assert retrain(params, return_state=True).is_completed()
    registry = Registry(params.registry)
    trained_on = set(torch.load(registry.production().checkpoint, weights_only=True)["train_originals"])
    path = next(iter(sorted(outcomes_folder.glob("*.json"))))
    definition = json.loads(path.read_text(encoding="utf-8"))
    definition["examples"].append("one more way to say it for this outcome")
    path.write_text(json.dumps(definition), encoding="utf-8")

    state = retrain(make_params(refit=False), return_state=True)

    assert state.is_completed(), state.message
    candidate = registry.versions()[-1]
    gate = candidate.info["gate"]
    payload = torch.load(candidate.checkpoint, weights_only=True)
    both = trained_on & set(payload["train_originals"])
    compared = [original for original in payload["validation"]["original"]
                if original not in trained_on or original in both]
    # Production is re-scored only on the candidate's validation sentences whose originals it never trained on,
    # or that the candidate trained on too (an incremental candidate starts from what production learnt).
    assert compared
    assert gate["compared_samples"] == len(compared), (gate, candidate.info["training"]["reason"])
    assert f"on the same {len(compared)} sentences" in gate["reason"]


def test_gate_rejection_keeps_production(make_params: Callable[..., RetrainParameters]) -> None:
    params = make_params()
    assert retrain(params, return_state=True).is_completed()
    registry = Registry(params.registry)
    production = registry.production()
    pointer = (Path(params.registry) / "production.json").read_bytes()
    checkpoint = digest(production.checkpoint)

    # No accuracy reaches a threshold above 1.0: the candidate is trained, gated and kept as rejected.
    state = retrain(make_params(threshold=1.5, force=True), return_state=True)

    assert state.is_failed()
    rejected = registry.versions()[-1]
    accuracy = rejected.info["val_accuracy"]
    assert state.message.startswith(f"gate rejected {rejected.name}")
    assert f"validation accuracy {accuracy:.4f} is below the threshold 1.5000" in state.message
    assert f"production {production.name} is unchanged" in state.message
    assert registry.status(rejected) == "rejected"
    assert rejected.info["gate"]["promote"] is False
    assert (rejected.path / "report.md").read_text(encoding="utf-8").startswith(f"# {rejected.name}: rejected")
    assert registry.production_name() == production.name
    assert (Path(params.registry) / "production.json").read_bytes() == pointer
    assert digest(registry.production().checkpoint) == checkpoint
    assert [event["action"] for event in registry.history()] == ["promote"]
    # A rejected candidate is not refit: there is nothing to publish.
    assert "refit" not in rejected.info["training"]
    assert torch.load(rejected.checkpoint, weights_only=True)["metrics"]["refit"] is None


def test_a_promoted_run_publishes_the_model_refit_on_every_row(make_params: Callable[..., RetrainParameters],
                                                                tmp_path: Path) -> None:
    refit = make_params()
    held_out = make_params(refit=False, registry=str(tmp_path / "held-out"))

    assert retrain(refit, return_state=True).is_completed()
    assert retrain(held_out, return_state=True).is_completed()

    version, plain = Registry(refit.registry).production(), Registry(held_out.registry).production()
    payload = torch.load(version.checkpoint, weights_only=True)
    plain_payload = torch.load(plain.checkpoint, weights_only=True)
    validation = set(payload["validation"]["original"])
    # Both runs split, trained and gated the same held-out model; only the refit one trained again.
    assert version.info["gate"] == {**plain.info["gate"], "production_version": None}
    assert version.info["val_accuracy"] == plain.info["val_accuracy"]
    assert payload["history"] == plain_payload["history"]
    record = version.info["training"]["refit"]
    assert record["published"] is True and record["epochs"] == plain.info["best_epoch"]
    assert record["originals"] == len(set(payload["train_originals"]))
    assert record["val_accuracy_trained_on"] >= version.info["val_accuracy"]
    assert payload["metrics"]["refit"]["rows"] == record["rows"]
    # It learnt the validation originals, and says so, so a later gate does not score it on them.
    assert validation <= set(payload["train_originals"])
    assert not validation & set(plain_payload["train_originals"])
    assert "refit" not in plain.info["training"] and plain_payload["metrics"]["refit"] is None
    assert not all(torch.equal(payload["state_dict"][name], value) for name, value in
                   plain_payload["state_dict"].items() if name in payload["state_dict"])
    notes = (version.path / "release_notes.md").read_text(encoding="utf-8")
    assert f"then refit on all {record['rows']} rows for {record['epochs']} epochs" in notes
    # The held-out model the gate judged is kept beside it, and is the plain run's model to the weight.
    judged = torch.load(version.held_out_checkpoint, weights_only=True)
    assert version.held_out_checkpoint != version.checkpoint and judged["role"] == "held_out"
    assert not validation & set(judged["train_originals"])
    assert all(torch.equal(judged["state_dict"][name], value) for name, value in plain_payload["state_dict"].items())
    assert plain.held_out_checkpoint == plain.checkpoint


def test_a_refit_that_scores_below_the_held_out_model_is_not_published(
        make_params: Callable[..., RetrainParameters], monkeypatch: pytest.MonkeyPatch) -> None:
    import flows.retrain
    from intentflow.trained import TrainedModel

    @task(name="refit_model")
    def broken_refit(held_out: TrainedModel, data: Any) -> TrainedModel:
        refitted = refit_model.fn(held_out, data)
        with torch.no_grad():
            refitted.model.output.weight.zero_()
            refitted.model.output.bias.copy_(torch.arange(len(refitted.labels), dtype=torch.float32))
        return refitted

    monkeypatch.setattr(flows.retrain, "refit_model", broken_refit)
    params = make_params()

    state = retrain(params, return_state=True)

    assert state.is_completed(), state.message
    version = Registry(params.registry).production()
    payload = torch.load(version.checkpoint, weights_only=True)
    record = version.info["training"]["refit"]
    assert record["published"] is False and record["val_accuracy_trained_on"] < version.info["val_accuracy"]
    assert payload["metrics"]["refit"] is None
    assert not set(payload["validation"]["original"]) & set(payload["train_originals"])
    notes = (version.path / "release_notes.md").read_text(encoding="utf-8")
    assert "the refit on all rows scored below the held-out model on its own rows" in notes


def test_threshold_beyond_its_limit_is_refused_before_training(tmp_path: Path, outcomes_folder: Path,
                                                         capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_LOGGING_EXTRA_LOGGERS", raising=False)  # the command sets it; undo that after
    # Thresholds up to 2 are allowed (above 1 is a dry run); beyond that the flow's parameters refuse it.
    with pytest.raises(ValueError, match="threshold"):
        RetrainParameters(outcomes=str(outcomes_folder), threshold=2.5)
    code = main(["retrain", "--outcomes", str(outcomes_folder), "--registry", str(tmp_path / "registry"),
                 "--threshold", "2.5", "--force"])
    assert code == 1
    assert "invalid retrain option" in capsys.readouterr().err
    assert not (tmp_path / "registry").exists()


def test_invalid_outcomes_fail_the_run_naming_the_problem(make_params: Callable[..., RetrainParameters],
                                                          tmp_path: Path) -> None:
    state = retrain(make_params(outcomes=str(tmp_path / "missing")), return_state=True)
    assert state.is_failed()
    assert "the outcomes folder does not exist" in state.message
    assert not Registry(tmp_path / "registry").versions()


def test_artifacts_hold_the_version_and_accuracy(make_params: Callable[..., RetrainParameters]) -> None:
    params = make_params()
    first = retrain(params, return_state=True)
    second = retrain(make_params(force=True), return_state=True)
    assert first.is_completed() and second.is_completed(), second.message
    registry = Registry(params.registry)
    older, newer = registry.versions()
    run_id = second.state_details.flow_run_id
    accuracy = newer.info["val_accuracy"]

    [report] = read_artifacts(run_id, REPORT_ARTIFACT_KEY)
    assert report.type == "markdown"
    assert report.data.startswith(f"# {newer.name}: promoted to production")
    assert f"candidate validation accuracy (held-out model): {accuracy:.4f}" in report.data
    assert f"{accuracy:.2%}" in report.data
    assert report.data == (newer.path / "report.md").read_text(encoding="utf-8")

    [table] = read_artifacts(run_id, VERSIONS_ARTIFACT_KEY)
    assert table.type == "table"
    rows = table_rows(table)
    assert [row["version"] for row in rows] == [newer.name, older.name]
    assert [row["status"] for row in rows] == ["production", "previous"]
    assert rows[0]["val_accuracy"] == round(accuracy, 4)

    [link] = read_artifacts(run_id, CHECKPOINT_ARTIFACT_KEY)
    # Prefect stores a link artifact as markdown: "[text](link)".
    assert link.data == f"[{newer.name} checkpoint]({newer.checkpoint.resolve().as_uri()})"

    # An up-to-date run publishes nothing new but still shows the versions.
    third = retrain(params, return_state=True)
    assert "up to date" in third.message
    [table] = read_artifacts(third.state_details.flow_run_id, VERSIONS_ARTIFACT_KEY)
    assert [row["version"] for row in table_rows(table)] == [newer.name, older.name]
    assert not read_artifacts(third.state_details.flow_run_id, REPORT_ARTIFACT_KEY)


def test_a_run_publishes_into_a_bucket_and_links_the_object(make_params: Callable[..., RetrainParameters],
                                                           object_store: Any) -> None:
    url = object_store.new_location("flow")
    state = retrain(make_params(registry=url), return_state=True)
    assert state.is_completed(), state.message
    registry = open_registry(url)
    [version] = registry.versions()
    assert registry.production_name() == version.name
    assert version.checkpoint == f"{url}/{version.name}/{version.name}.pt"
    assert Classifier.load(url).predict("will it rain tomorrow").label == "check_weather"
    [link] = read_artifacts(state.state_details.flow_run_id, CHECKPOINT_ARTIFACT_KEY)
    # The object's address on the store's endpoint (path style), which a browser can ask for.
    key = url.removeprefix("s3://")
    assert link.data == f"[{version.name} checkpoint]({object_store.endpoint}/{key}/{version.name}/{version.name}.pt)"
    assert version.checkpoint in link.description
    assert "up to date" in retrain(make_params(registry=url), return_state=True).message


def test_a_folder_registry_link_says_the_file_is_on_the_worker(make_params: Callable[..., RetrainParameters]) -> None:
    state = retrain(make_params(), return_state=True)
    [link] = read_artifacts(state.state_details.flow_run_id, CHECKPOINT_ARTIFACT_KEY)
    assert link.data.startswith("[") and "(file://" in link.data
    assert "a file on the worker" in link.description and "not reachable from other machines" in link.description


def test_rejected_run_artifacts_say_rejected(make_params: Callable[..., RetrainParameters]) -> None:
    assert retrain(make_params(), return_state=True).is_completed()
    state = retrain(make_params(threshold=1.0, epochs=1, lr=1e-6, force=True), return_state=True)
    assert state.is_failed()
    rejected = Registry(make_params().registry).versions()[-1]
    [report] = read_artifacts(state.state_details.flow_run_id, REPORT_ARTIFACT_KEY)
    assert report.data.startswith(f"# {rejected.name}: rejected")
    [table] = read_artifacts(state.state_details.flow_run_id, VERSIONS_ARTIFACT_KEY)
    assert [row["status"] for row in table_rows(table)] == ["rejected", "production"]


def test_rollback_restores_the_previous_version(registry_copy: Path) -> None:
    registry = Registry(registry_copy)
    first, second = registry.versions()
    assert registry.production_name() == second.name
    second_pointer = digest(second.checkpoint)

    event = registry.rollback(why="second model misroutes alarms")

    assert registry.production_name() == first.name
    assert event["action"] == "rollback"
    assert event["version"] == first.name
    assert event["previous"] == second.name
    assert event["why"] == "second model misroutes alarms"
    assert event["who"] and event["time"]
    assert registry.history()[-1] == event
    assert [entry["action"] for entry in registry.history()] == ["promote", "promote", "rollback"]
    assert registry.status(second) == "previous"
    # Versions are immutable: the rolled-back one is still there, unchanged.
    assert digest(second.checkpoint) == second_pointer


def test_rollback_and_versions_commands(registry_copy: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    registry = Registry(registry_copy)
    first, second = registry.versions()
    monkeypatch.setenv("INTENTFLOW_ACTOR", "on-call@example")

    assert main(["versions", "--registry", str(registry_copy)]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split()[:2] == ["version", "status"]
    assert listing[1].split()[:2] == [first.name, "previous"]
    assert listing[2].split()[:2] == [second.name, "production"]

    assert main(["rollback", "--registry", str(registry_copy), "--why", "bad release"]) == 0
    out = capsys.readouterr().out
    assert f"production is now {first.name} (was {second.name})" in out
    assert registry.production_name() == first.name
    event = registry.history()[-1]
    assert (event["action"], event["who"], event["why"]) == ("rollback", "on-call@example", "bad release")

    assert main(["versions", "--registry", str(registry_copy), "--json"]) == 0
    listed = {item["version"]: item["status"] for item in json.loads(capsys.readouterr().out)}
    assert listed == {first.name: "production", second.name: "previous"}

    # Rolling back to the version already serving is refused, naming it.
    assert main(["rollback", "--registry", str(registry_copy), "--to", first.name]) == 1
    assert f"{first.name} is already production" in capsys.readouterr().err


def test_rollback_refuses_a_rejected_version(registry_copy: Path, promoted_twice: dict[str, Any],
                                             tiny: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    params = RetrainParameters(outcomes=str(promoted_twice["outcomes"]), registry=str(registry_copy),
                               **{**tiny, "threshold": 1.0, "epochs": 1, "lr": 1e-6}, force=True)
    assert retrain(params, return_state=True).is_failed()
    registry = Registry(registry_copy)
    rejected = registry.versions()[-1]
    production = registry.production_name()
    assert main(["rollback", "--registry", str(registry_copy), "--to", rejected.name]) == 1
    assert "was rejected by the gate" in capsys.readouterr().err
    assert registry.production_name() == production


def test_predict_and_evaluate_accept_a_registry_folder(registry_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    registry = Registry(registry_copy)
    assert main(["predict", "--checkpoint", str(registry_copy), "--json", "will it rain tomorrow",
                 "wake me at seven"]) == 0
    predictions = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [item["label"] for item in predictions] == ["check_weather", "set_alarm"]

    # With --validation, evaluate scores the validation rows recorded in the checkpoint with the held-out model
    # the version was judged as (the refit production learnt them): the version's own held-out figure.
    assert main(["evaluate", "--checkpoint", str(registry_copy), "--validation", "--json"]) == 0
    evaluation = json.loads(capsys.readouterr().out)
    assert evaluation["accuracy"] == pytest.approx(registry.production().info["val_accuracy"])
    assert "scored with the held-out model it was judged as" in evaluation["data"]

    # The folder means production: after a rollback it serves the earlier version.
    registry.rollback()
    assert main(["evaluate", "--checkpoint", str(registry_copy), "--validation", "--json"]) == 0
    evaluation = json.loads(capsys.readouterr().out)
    assert evaluation["accuracy"] == pytest.approx(registry.versions()[0].info["val_accuracy"])


def test_predict_on_a_registry_without_production_explains(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "registry").mkdir()
    assert main(["predict", "--checkpoint", str(tmp_path / "registry"), "hello"]) == 1
    err = capsys.readouterr().err
    assert "no production version" in err
    assert "intentflow retrain --registry" in err



def test_retrain_command_reports_each_outcome(tmp_path: Path, outcomes_folder: Path, tiny: dict[str, Any],
                                              capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_LOGGING_EXTRA_LOGGERS", raising=False)  # the command sets it; undo that after
    registry = tmp_path / "registry"
    flags = ["retrain", "--outcomes", str(outcomes_folder), "--registry", str(registry), "--config", tiny["config"]]
    for name in ("featurizer", "augment_factor", "epochs", "hidden_size", "hidden_layers", "patience", "seed", "device",
                 "threshold"):
        flags += ["--" + name.replace("_", "-"), str(tiny[name])]

    assert main(flags) == 0
    assert capsys.readouterr().out.startswith("promoted intent_model_v")
    assert main(flags) == 0
    assert "up to date" in capsys.readouterr().out
    assert main([*flags, "--threshold", "1.0", "--epochs", "1", "--lr", "1e-6", "--force"]) == 1
    assert "gate rejected" in capsys.readouterr().err
    assert [Registry(registry).status(version) for version in Registry(registry).versions()] == [
        "production", "rejected"]


def test_published_model_answers_unknown_below_its_threshold(make_params: Callable[..., RetrainParameters],
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    # Gate threshold 0: an unknown answer on a validation sentence counts as wrong, and the tiny model is unsure.
    params = make_params(oos_threshold=0.6, unknown_label="no_match", threshold=0.0)
    assert retrain(params, return_state=True).is_completed()
    [version] = Registry(params.registry).versions()
    payload = torch.load(version.checkpoint, weights_only=True)
    threshold = payload["oos"]["threshold"]

    # A bag-of-words model: no example vectors, no similarity rule.
    assert payload["oos"] == {"threshold": 0.6, "label": "no_match", "setting": 0.6, "outcomes": [],
                              "similarity": None, "examples": None}
    assert f"out of scope: confidence below {threshold:.4f}" in (version.path / "report.md").read_text(
        encoding="utf-8")
    assert main(["predict", "--checkpoint", params.registry, "--json", "zzz qqq", "will it rain tomorrow"]) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [answer["label"] == "no_match" for answer in answers] == [answer["confidence"] < threshold
                                                                     for answer in answers]
    assert answers[0]["label"] == "no_match"


def test_the_run_graph_links_each_task_to_the_tasks_whose_results_it_took(
        make_params: Callable[..., RetrainParameters]) -> None:
    # The flow passes rows to tasks as Prefect's `opaque` (not walked into): the links must survive that.
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    state = retrain(make_params(), return_state=True)
    assert state.is_completed(), state.message
    wanted = {"augment_outcomes", "split_rows", "choose_mode", "train_split", "evaluate_model", "refit_model",
              "publish_version"}
    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as client:
        while True:  # task runs reach the server as events, a moment after the run
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
            by_name: dict[str, list[Any]] = {}
            for run in runs:
                by_name.setdefault(run.name.rsplit("-", 1)[0], []).append(run)
            if wanted <= set(by_name) or time.monotonic() > deadline:
                break
            time.sleep(0.5)

    def upstream(name: str, parameter: str) -> set[Any]:
        return {source.id for run in by_name[name] for source in run.task_inputs.get(parameter, [])}

    [augment], [split] = by_name["augment_outcomes"], by_name["split_rows"]
    [train] = by_name["train_split"]
    assert upstream("split_rows", "augmented") == {augment.id}
    assert upstream("train_split", "data") == {split.id}
    assert upstream("choose_mode", "split") == {split.id}
    assert upstream("refit_model", "held_out") == {train.id}
    assert split.id in upstream("refit_model", "data")
