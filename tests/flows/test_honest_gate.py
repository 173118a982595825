"""Every figure the gate uses is measured on sentences the judged model never learnt, after a refit and after a teach
run; the regression check runs after a refit production; the golden set holds the served model to the threshold."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from flows.retrain import RetrainParameters, retrain
from intentflow.cli import main
from intentflow.evaluate import evaluate_model
from intentflow.inference import Classifier
from intentflow.outcomes import normalise_text
from intentflow.registry import Registry
from intentflow.teach import Correction, teach_utterances

from .flow_helpers import REPO, TINY, write_outcomes

pytestmark = pytest.mark.usefixtures("harness")

# One validation original per outcome (see tests/flows/test_incremental_flow.py), and incremental runs long enough
# to learn a taught sentence.
SETTINGS = "[prepare]\nmin_val_per_label = 3\n\n[incremental]\nepochs = 30\nlr = 0.01\n"


def originals(payload: dict[str, Any]) -> set[str]:
    return {normalise_text(text) for text in payload["train_originals"]}


@pytest.fixture(scope="module")
def refit_production(tmp_path_factory: pytest.TempPathFactory, harness: None) -> dict[str, Path]:
    """The bundled outcomes trained in full with refit (the default), built once; copied by each test."""
    root = tmp_path_factory.mktemp("honest")
    config = root / "training.toml"
    config.write_text(SETTINGS, encoding="utf-8")
    outcomes = Path(shutil.copytree(REPO / "config" / "outcomes", root / "outcomes"))
    state = retrain(RetrainParameters(**{**TINY, "config": str(config)}, outcomes=str(outcomes),
                                      registry=str(root / "registry")), return_state=True)
    assert state.is_completed(), state.message
    return {"outcomes": outcomes, "registry": root / "registry", "config": config}


@pytest.fixture
def copied(tmp_path: Path, refit_production: dict[str, Path]) -> dict[str, Any]:
    outcomes = Path(shutil.copytree(refit_production["outcomes"], tmp_path / "outcomes"))
    registry = Path(shutil.copytree(refit_production["registry"], tmp_path / "registry"))
    base = {**TINY, "config": str(refit_production["config"]), "outcomes": str(outcomes), "registry": str(registry)}
    return {"outcomes": outcomes, "registry": Registry(registry), "params": base}


def test_a_refit_production_keeps_the_held_out_model_it_was_judged_as(copied: dict[str, Any]) -> None:
    version = copied["registry"].production()
    served = torch.load(version.checkpoint, weights_only=True)
    judged = torch.load(version.held_out_checkpoint, weights_only=True)
    validation = {normalise_text(text) for text in served["validation"]["original"]}
    assert version.info["keeps_held_out"] is True and served["keeps_held_out"] is True
    assert validation <= originals(served)  # the served model learnt them
    assert not validation & originals(judged)  # the judged one never did, and its figure is the version's
    accuracy = evaluate_model(Classifier.load(version.held_out_checkpoint), served["validation"]["text"],
                              served["validation"]["label"]).accuracy
    assert accuracy == pytest.approx(version.info["val_accuracy"])
    assert served["metrics"]["val_accuracy"] == pytest.approx(version.info["val_accuracy"])
    assert version.info["val_accuracy"] < 0.95


def test_a_teach_run_after_a_refit_reports_held_out_accuracy_and_runs_the_regression_check(
        copied: dict[str, Any]) -> None:
    registry = copied["registry"]
    production = registry.production()
    # A sentence whose paraphrases leave the split as it was (some move a held-out original into training, and auto
    # then retrains in full: see choose_mode).
    taught = "ping me when 20 mins are up"
    teach_utterances(copied["outcomes"], [Correction(taught, "set_timer")])

    state = retrain(RetrainParameters(**copied["params"], changed_paths=["set_timer.json"]), return_state=True)

    version = registry.versions()[-1]
    training = version.info["training"]
    attempt = training.get("incremental_attempt")
    # The triggered run continued from production: published as such, or rejected and retrained in full.
    assert training["mode"] == "incremental" or attempt is not None, training
    if attempt is not None:
        assert attempt["val_accuracy"] < 0.95
    judged = torch.load(version.held_out_checkpoint, weights_only=True)
    validation = {normalise_text(text) for text in judged["validation"]["original"]}
    assert not validation & originals(judged), "the judged model learnt a validation original"
    # Far from the 1.0 a model that had learnt its validation rows scored.
    assert 0.3 < version.info["val_accuracy"] < 0.95
    gate = version.info["gate"]
    assert gate["production_version"] == production.name
    assert gate["production_accuracy"] is not None and gate["compared_samples"] > 0, gate["not_compared"]
    # ...on sentences production's judged model never learnt either.
    production_judged = torch.load(production.held_out_checkpoint, weights_only=True)
    assert not validation & originals(production_judged)
    notes = (version.path / "release_notes.md").read_text(encoding="utf-8")
    assert "validation sentences neither model learnt" in notes
    if training["mode"] == "incremental":
        # Production serves a refit: its served model was continued on the taught sentence too, and is served;
        # the held-out model continued from production's held-out one is what was judged, kept beside it.
        assert state.is_completed(), state.message
        assert training["refit"]["mode"] == "incremental" and training["refit"]["published"] is True
        assert version.held_out_checkpoint != version.checkpoint
        served = torch.load(version.checkpoint, weights_only=True)
        assert normalise_text(taught) in originals(served) and validation <= originals(served)
        assert normalise_text(taught) in originals(judged)


def test_after_a_refit_a_clearly_worse_candidate_is_rejected_by_the_regression_check(
        copied: dict[str, Any]) -> None:
    registry = copied["registry"]
    production = registry.production()
    pointer = (registry.root / "production.json").read_bytes()

    state = retrain(RetrainParameters(**{**copied["params"], "threshold": 0.0, "lr": 1e-6, "epochs": 1},
                                      force=True, mode="full"), return_state=True)

    assert state.is_failed() and state.name == "Rejected"
    rejected = registry.versions()[-1]
    gate = rejected.info["gate"]
    assert gate["promote"] is False and gate["production_accuracy"] is not None
    assert f"is worse than production {production.name} re-scored on the same" in gate["reason"]
    assert "below the threshold" not in gate["reason"]
    assert registry.production_name() == production.name
    assert (registry.root / "production.json").read_bytes() == pointer


GOLDEN = [
    {"text": "is there going to be rain later", "label": "check_weather"},
    {"text": "how warm will it get today", "label": "check_weather"},
    {"text": "play something upbeat", "label": "play_music"},
    {"text": "put my rock playlist on", "label": "play_music"},
    {"text": "alarm for half past six please", "label": "set_alarm"},
    {"text": "wake me tomorrow at five", "label": "set_alarm"},
    {"text": "what is the capital of peru", "label": "oos"},
]


def write_golden(folder: Path, rows: list[dict[str, str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "golden.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_the_golden_set_beside_the_outcomes_is_scored_and_reported(tmp_path: Path) -> None:
    outcomes = write_outcomes(tmp_path / "config" / "outcomes")
    golden = write_golden(tmp_path / "config" / "evaluation", GOLDEN)
    before = golden.read_bytes()
    params = RetrainParameters(**{**TINY, "outcomes": str(outcomes), "registry": str(tmp_path / "registry")})

    state = retrain(params, return_state=True)

    assert state.is_completed(), state.message
    version = Registry(tmp_path / "registry").production()
    served = Classifier.load(version.checkpoint)
    expected = evaluate_model(served, [row["text"] for row in GOLDEN], [row["label"] for row in GOLDEN])
    assert version.info["golden"]["accuracy"] == pytest.approx(expected.accuracy)
    assert version.info["golden"]["samples"] == 6 and version.info["golden"]["oos_samples"] == 1
    assert version.info["gate"]["golden_accuracy"] == pytest.approx(expected.accuracy)
    report = (version.path / "report.md").read_text(encoding="utf-8")
    assert "## Golden set" in report and "golden set (served model): in-scope accuracy" in report
    # Teaching writes to the outcome files only.
    teach_utterances(outcomes, [Correction("tunes for the gym", "play_music")])
    assert golden.read_bytes() == before


def test_a_golden_set_the_model_fails_rejects_it(tmp_path: Path) -> None:
    outcomes = write_outcomes(tmp_path / "outcomes")
    # Every label moved to the next outcome: the model answers the true one, which the golden set calls wrong.
    shifted = {"check_weather": "play_music", "play_music": "set_alarm", "set_alarm": "check_weather"}
    write_golden(tmp_path / "evaluation", [{**row, "label": shifted.get(row["label"], row["label"])}
                                          for row in GOLDEN])
    params = RetrainParameters(**{**TINY, "outcomes": str(outcomes), "registry": str(tmp_path / "registry")})

    state = retrain(params, return_state=True)

    assert state.is_failed() and state.name == "Rejected"
    [version] = Registry(tmp_path / "registry").versions()
    assert "golden-set accuracy" in version.info["gate"]["reason"]
    assert "below the threshold" in version.info["gate"]["reason"]
    assert Registry(tmp_path / "registry").production_name() is None


def test_a_sentence_in_an_outcome_file_and_the_golden_set_is_a_validation_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outcomes = write_outcomes(tmp_path / "outcomes")
    repeated = {"text": "Will it rain  tomorrow", "label": "check_weather"}
    golden = write_golden(tmp_path / "evaluation", [*GOLDEN, repeated])
    params = RetrainParameters(**{**TINY, "outcomes": str(outcomes), "registry": str(tmp_path / "registry")})

    state = retrain(params, return_state=True)

    assert state.is_failed()
    assert f"{golden}: line 8: text: 'Will it rain tomorrow' is also" in state.message
    assert f"{outcomes / 'check_weather.json'} examples[1]" in state.message
    assert not (tmp_path / "registry").exists()
    assert main(["validate", "--outcomes", str(outcomes)]) == 1
    assert "a golden sentence must be one no model trains on" in capsys.readouterr().err


def test_the_nightly_check_scores_production_where_it_learnt_nothing(copied: dict[str, Any],
                                                                      tmp_path: Path) -> None:
    from flows.nightly import NIGHTLY_ARTIFACT_KEY, nightly_score
    from intentflow.score import score_production

    registry = copied["registry"]
    version = registry.production()
    assert score_production(tmp_path / "empty", tmp_path / "none").note.startswith("no production version")
    without = score_production(registry.root, tmp_path / "none")
    # The held-out model on the validation sentences it never learnt: the version's own figure, night after night.
    assert without.version == version.name
    assert without.held_out_accuracy == pytest.approx(version.info["val_accuracy"])
    assert without.golden_accuracy is None and without.note.startswith("no golden set")
    scored = score_production(registry.root, REPO / "config" / "evaluation")
    served = Classifier.load(version.checkpoint)
    rows = [json.loads(line) for line in (REPO / "config/evaluation/bundled.jsonl").read_text().splitlines()]
    expected = evaluate_model(served, [row["text"] for row in rows], [row["label"] for row in rows])
    assert scored.golden_accuracy == pytest.approx(expected.accuracy) and scored.golden_samples == len(rows)
    # Two nights, one artifact key: the table holds both rows, newest first.
    first = nightly_score(str(registry.root), str(REPO / "config" / "evaluation"))
    second = nightly_score(str(registry.root), str(REPO / "config" / "evaluation"))
    from prefect.artifacts import Artifact

    table = Artifact.get(NIGHTLY_ARTIFACT_KEY).data
    rows = json.loads(table) if isinstance(table, str) else table
    assert [row["time"] for row in rows[:2]] == [second["time"], first["time"]]
