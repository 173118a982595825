"""Incremental retraining in the flow: teaching leads to an incremental run that learns the taught utterances,
a new outcome to a full one, the mode parameter forces either, and the monthly scheduled run is always full."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flows.retrain import SCHEDULED_TAG, RetrainParameters, retrain
from intentflow.inference import Classifier
from intentflow.registry import Registry
from intentflow.teach import Correction, teach_utterances

from .flow_helpers import TINY, write_outcomes

pytestmark = pytest.mark.usefixtures("harness")

# Corrections the tiny production gets wrong, with words it never saw.
TAUGHT = {"noise please": "play_music", "something to dance to this morning": "play_music"}
# On three outcomes of five originals, one validation original each (min 10 rows would take two, and adding an
# utterance would then move an original production trained on into validation: see choose_mode). Incremental runs
# get enough steps to learn on a few dozen rows.
SETTINGS = "[prepare]\nmin_val_per_label = 3\n\n[incremental]\nepochs = 30\nlr = 0.01\n"


@pytest.fixture(scope="module")
def first_version(tmp_path_factory: pytest.TempPathFactory, harness: None) -> dict[str, Path]:
    """Production trained in full on the three toy outcomes, built once; copied by each test."""
    root = tmp_path_factory.mktemp("incremental")
    config = root / "training.toml"
    config.write_text(SETTINGS, encoding="utf-8")
    outcomes = write_outcomes(root / "outcomes")
    state = retrain(RetrainParameters(**{**TINY, "config": str(config)}, outcomes=str(outcomes),
                                      registry=str(root / "registry")), return_state=True)
    assert state.is_completed(), state.message
    return {"outcomes": outcomes, "registry": root / "registry", "config": config}


@pytest.fixture
def run(tmp_path: Path, first_version: dict[str, Path]) -> Callable[..., Any]:
    """``run(**changes)``: a retrain on this test's copy of the outcomes and registry (``run.outcomes``)."""
    outcomes = Path(shutil.copytree(first_version["outcomes"], tmp_path / "outcomes"))
    registry = Path(shutil.copytree(first_version["registry"], tmp_path / "registry"))

    def retrain_once(**changes: Any) -> Any:
        params = RetrainParameters(**{**TINY, "config": str(first_version["config"]), "outcomes": str(outcomes),
                                      "registry": str(registry), **changes})
        return retrain(params, return_state=True)

    retrain_once.outcomes = outcomes  # type: ignore[attr-defined]
    retrain_once.registry = Registry(registry)  # type: ignore[attr-defined]
    return retrain_once


def teach(run: Any) -> None:
    teach_utterances(run.outcomes, [Correction(text, label) for text, label in TAUGHT.items()])


def test_a_run_after_teaching_is_incremental_and_learns_the_taught_utterances(run: Any) -> None:
    registry = run.registry
    first = registry.production()
    before = Classifier.load(first.checkpoint)
    assert [before.predict(text).label for text in TAUGHT] != list(TAUGHT.values())
    teach(run)

    state = run(changed_paths=["play_music.json"])

    assert state.is_completed(), state.message
    version = registry.production()
    assert version.name != first.name
    training = version.info["training"]
    assert training["mode"] == "incremental"
    assert training["base_version"] == first.name
    assert training["reason"].startswith("only examples or teach hints were added (2 new originals")
    assert training["new_rows"] > 0 and training["replay_rows"] > 0
    # The new rows' loss weight: their share of all training rows, recorded with both stages' settings.
    assert 0 < training["new_share"] <= training["new_rows"] / (training["new_rows"] + training["replay_rows"])
    assert {"new_feature_epochs", "epochs", "lr"} <= set(training["incremental"])
    assert first.info["training"]["mode"] == "full"
    for name in ("release_notes.md", "report.md"):
        assert "- training mode: incremental (only examples or teach hints were added" in \
            (version.path / name).read_text(encoding="utf-8")
    after = Classifier.load(version.checkpoint)
    # Both taught utterances trained on, and now predicted right.
    assert set(TAUGHT) <= set(after.payload["train_originals"])
    assert [after.predict(text).label for text in TAUGHT] == list(TAUGHT.values())
    # No accuracy lost elsewhere: the gate compared it with production on the sentences production never saw,
    # and every original example production labelled right is still right.
    gate = version.info["gate"]
    assert gate["production_accuracy"] is not None
    assert gate["candidate_compared_accuracy"] >= gate["production_accuracy"]
    examples = {text: outcome["name"] for outcome in after.payload["outcomes"] for text in outcome["examples"]}
    right_before = {text for text, label in examples.items() if before.predict(text).label == label}
    assert {text for text in right_before if after.predict(text).label != examples[text]} == set()
    # What it learnt includes what production learnt, so the next gate does not score it on those sentences.
    assert set(before.payload["train_originals"]) <= set(after.payload["train_originals"])

    # The monthly run retrains in full, even with nothing changed since: it consolidates the incremental step.
    from prefect import tags

    with tags(SCHEDULED_TAG):
        scheduled = run()
    assert "up to date" not in (scheduled.message or "")
    latest = registry.versions()[-1]
    assert latest.name != version.name
    # (The gate decides on it as on any candidate; the tiny network's full retrain may well lose.)
    assert latest.info["training"]["mode"] == "full"
    assert latest.info["training"]["scheduled"] is True
    assert latest.info["training"]["reason"].startswith("scheduled run")


def test_an_incremental_candidate_the_gate_rejects_is_replaced_by_a_full_retrain(run: Any, tmp_path: Path) -> None:
    # A learning rate that wrecks the network, so the incremental candidate cannot pass the gate.
    wrecking = tmp_path / "training.toml"
    wrecking.write_text(SETTINGS.replace("lr = 0.01", "lr = 1.0\nnew_feature_epochs = 0"), encoding="utf-8")
    versions = len(run.registry.versions())
    teach(run)

    run(config=str(wrecking))

    # One version published, trained in full; the rejected incremental attempt is recorded in it, not published.
    assert len(run.registry.versions()) == versions + 1
    training = run.registry.versions()[-1].info["training"]
    assert (training["mode"], training["requested"]) == ("full", "auto")
    assert training["reason"].startswith("the incremental candidate was rejected (")
    assert training["reason"].endswith("), so this run retrained in full")
    attempt = training["incremental_attempt"]
    # Production was refit on the validation rows, and the candidate started from its weights: the gate compares
    # both on all of them, and the wrecked candidate has forgotten some.
    assert f"validation accuracy {attempt['val_accuracy']:.4f} is worse than production " in attempt["gate"]
    assert attempt["val_accuracy"] < 1.0 and attempt["new_rows"] > 0
    assert attempt["gate"] in training["reason"]
    notes = (run.registry.versions()[-1].path / "release_notes.md").read_text(encoding="utf-8")
    assert "- training mode: full (the incremental candidate was rejected" in notes


def test_a_run_after_adding_an_outcome_is_full(run: Any) -> None:
    write_outcomes(run.outcomes, {"order_food": {"name": "order_food", "examples": [
        "order a pizza", "get me some sushi delivered", "i want a burger and fries", "deliver noodles for dinner"]}})

    state = run()

    assert state.is_completed(), state.message
    training = run.registry.production().info["training"]
    assert training["mode"] == "full"
    assert training["reason"] == "the outcome set changed (added: order_food; removed: none)"
    notes = (run.registry.production().path / "release_notes.md").read_text(encoding="utf-8")
    assert "- training mode: full (the outcome set changed" in notes


def test_the_mode_parameter_forces_either(run: Any) -> None:
    teach(run)

    state = run(mode="incremental")

    assert state.is_completed(), state.message
    training = run.registry.production().info["training"]
    assert (training["mode"], training["requested"]) == ("incremental", "incremental")
    assert training["reason"] == "incremental asked for (mode incremental); 2 originals new to training"

    # Production is up to date, but trained incrementally: mode full retrains it in full without force.
    run(mode="full")
    # Whatever the gate says of it (the tiny network's full retrains vary), it was trained in full.
    training = run.registry.versions()[-1].info["training"]
    assert (training["mode"], training["requested"]) == ("full", "full")
    assert training["reason"] == "full retrain asked for (mode full)"

    # An outcome production does not know cannot be trained incrementally: the run fails and says why.
    write_outcomes(run.outcomes, {"order_food": {"name": "order_food", "examples": ["order a pizza", "get sushi"]}})
    versions = len(run.registry.versions())
    state = run(mode="incremental")
    assert state.is_failed()
    assert "cannot train incrementally: the outcome set changed (added: order_food" in state.message
    assert len(run.registry.versions()) == versions


def test_a_scheduled_run_after_teaching_is_full(run: Any) -> None:
    from prefect import tags

    teach(run)

    with tags(SCHEDULED_TAG):
        run()

    training = run.registry.versions()[-1].info["training"]
    assert training["mode"] == "full" and training["scheduled"] is True


def test_the_mode_is_a_typed_parameter() -> None:
    assert RetrainParameters().mode == "auto"
    with pytest.raises(ValueError, match="mode"):
        RetrainParameters(mode="partial")
    assert json.loads(RetrainParameters(mode="full").model_dump_json())["mode"] == "full"
