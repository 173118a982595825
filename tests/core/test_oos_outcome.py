"""An outcome marked out of scope: its examples are things to refuse, its answers the unknown label, and the
out-of-scope threshold is calibrated with its validation rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from intentflow.calibration import calibrate_with_refusals
from intentflow.checkpoint import build_payload, load_checkpoint, save_checkpoint
from intentflow.config import PrepareConfig
from intentflow.dataset import prepare_data
from intentflow.errors import ValidationFailed
from intentflow.evaluate import evaluate_model
from intentflow.inference import Classifier
from intentflow.outcomes import load_outcomes
from intentflow.split import Split
from intentflow.train import train_split

from .helpers import TOY, tiny_train_config, write_outcome_folder

CHITCHAT = {"name": "chitchat", "out_of_scope": True,
            "examples": ["tell me a joke", "who made you", "what is the meaning of life", "are you a robot",
                         "sing me a lullaby", "do you like cats"]}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_outcome_folder(tmp_path / "outcomes", {**TOY, "chitchat": CHITCHAT})


def test_the_mark_is_read_hashed_and_checked(folder: Path, tmp_path: Path) -> None:
    outcomes = load_outcomes(folder)
    assert outcomes.out_of_scope == ("chitchat",)
    assert next(o for o in outcomes.outcomes if o.name == "chitchat").to_dict()["out_of_scope"] is True
    plain = load_outcomes(write_outcome_folder(tmp_path / "plain", {**TOY, "chitchat": {
        key: value for key, value in CHITCHAT.items() if key != "out_of_scope"}}))
    assert plain.out_of_scope == () and plain.content_hash != outcomes.content_hash
    (folder / "chitchat.json").write_text(json.dumps({**CHITCHAT, "out_of_scope": "yes"}), encoding="utf-8")
    with pytest.raises(ValidationFailed, match=r"chitchat.json: out_of_scope: expected true or false, found a "
                                               r"string \(fix: write true"):
        load_outcomes(folder)


def test_its_answers_are_the_unknown_label_and_evaluation_counts_them_as_refusals(folder: Path,
                                                                                  tmp_path: Path) -> None:
    outcomes = load_outcomes(folder)
    data = prepare_data(outcomes, PrepareConfig(augment_factor=12, min_val_per_label=2, seed=1))
    split = Split(data.train, data.val, out_of_scope=outcomes.out_of_scope)
    trained = train_split(split, tiny_train_config())
    classifier = Classifier.from_trained(trained)
    # The network learnt chitchat as an outcome; the classifier refuses it.
    assert "chitchat" in classifier.labels
    assert classifier.predict("tell me a joke").label == "unknown"
    assert classifier.predict_batch(["who made you", "play some jazz music"])[0].label == "unknown"
    assert classifier.predict_batch(["play some jazz music"])[0].label == "play_music"
    evaluation = evaluate_model(classifier, ["tell me a joke", "play some jazz music"], ["chitchat", "play_music"])
    assert evaluation.oos_samples == 1 and evaluation.oos_recall == 1.0 and evaluation.accuracy == 1.0
    # The mark travels with the checkpoint.
    payload = build_payload(trained, outcome_hash=outcomes.content_hash, prepare={}, val_texts=[], val_labels=[])
    reloaded = Classifier.load(save_checkpoint(payload, tmp_path / "model.pt"))
    assert load_checkpoint(tmp_path / "model.pt")["oos"]["outcomes"] == ["chitchat"]
    texts = ["tell me a joke", "wake me at seven", "are you a robot", "forecast for the weekend"]
    assert reloaded.predict_batch(texts) == classifier.predict_batch(texts)


def test_the_threshold_is_chosen_to_answer_the_most_validation_rows_right() -> None:
    # Label 2 is out of scope. Rows: in-scope right at 0.9 and 0.8, in-scope right at 0.45 (a threshold above it
    # loses it), out-of-scope predicted in scope at 0.4 and 0.42 (a threshold above 0.42 refuses them).
    probabilities = torch.tensor([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.45, 0.3, 0.25], [0.4, 0.3, 0.3],
                                  [0.42, 0.3, 0.28], [0.1, 0.1, 0.8]])
    targets = torch.tensor([0, 1, 0, 2, 2, 2])
    threshold = calibrate_with_refusals(probabilities, targets, [2])
    assert 0.41 < threshold <= 0.45
    right_at = lambda t: sum(  # noqa: E731
        (target == 2 and (p.argmax() == 2 or float(p.max()) < t))
        or (target != 2 and float(p.max()) >= t and p.argmax() == target)
        for p, target in zip(probabilities, targets.tolist(), strict=True))
    assert right_at(threshold) == 6 > right_at(0.0)


def test_an_embeddings_model_calibrates_its_threshold_with_the_out_of_scope_rows(
        folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import intentflow.calibration

    calls = []

    def recording(probabilities: torch.Tensor, targets: torch.Tensor, refuse: list[int]) -> float:
        calls.append((targets.tolist(), list(refuse)))
        return calibrate_with_refusals(probabilities, targets, refuse)

    monkeypatch.setattr(intentflow.calibration, "calibrate_with_refusals", recording)
    outcomes = load_outcomes(folder)
    data = prepare_data(outcomes, PrepareConfig(augment_factor=0, min_val_per_label=1, seed=1))
    split = Split(data.train, data.val, out_of_scope=outcomes.out_of_scope).for_featurizer("embeddings")
    trained = train_split(split, tiny_train_config(featurizer="embeddings", finetune_epochs=0, embedding_heads=1,
                                                   embedding_layers=[], oos_threshold="auto"))
    [(targets, refuse)] = calls
    assert refuse == [trained.labels.index("chitchat")] and refuse[0] in targets
    assert trained.oos_threshold is not None
