"""The teach loop with an embeddings model: a taught sentence continues production (its heads on its frozen,
fine-tuned encoder) instead of fine-tuning again, judged on sentences neither model learnt."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from flows.retrain import RetrainParameters, retrain
from intentflow.inference import Classifier
from intentflow.outcomes import normalise_text
from intentflow.registry import Registry
from intentflow.teach import Correction, teach_utterances

from .flow_helpers import TINY, write_outcomes

pytestmark = pytest.mark.usefixtures("harness")

SETTINGS = "[prepare]\nmin_val_per_label = 3\n\n[incremental]\nepochs = 30\nlr = 0.01\n"
EMBEDDINGS = {"featurizer": "embeddings", "finetune_epochs": 1, "embedding_heads": 2, "embedding_layers": [],
              "hidden_size": 32, "lr": 0.01}


@pytest.mark.slow  # fine-tunes an encoder, then teaches
def test_a_taught_sentence_continues_an_embeddings_production(tmp_path: Path) -> None:
    config = tmp_path / "training.toml"
    config.write_text(SETTINGS, encoding="utf-8")
    outcomes = write_outcomes(tmp_path / "outcomes")
    params = {**TINY, **EMBEDDINGS, "config": str(config), "outcomes": str(outcomes),
              "registry": str(tmp_path / "registry")}
    assert retrain(RetrainParameters(**params), return_state=True).is_completed()
    registry = Registry(tmp_path / "registry")
    production = registry.production()
    before = Classifier.load(production.checkpoint)
    taught = "blorp the zxq vimmel"
    target = next(label for label in ("play_music", "set_alarm") if label != before.predict(taught).label)
    teach_utterances(outcomes, [Correction(taught, target)])

    state = retrain(RetrainParameters(**params, changed_paths=[f"{target}.json"]), return_state=True)

    assert state.is_completed(), state.message
    version = registry.production()
    assert version.name != production.name
    training = version.info["training"]
    assert training["mode"] == "incremental", training["reason"]
    assert Classifier.load(version.checkpoint).predict(taught).label == target
    # Judged on validation sentences neither held-out model learnt; the served model continued production's.
    gate = version.info["gate"]
    assert gate["production_accuracy"] is not None and gate["compared_samples"] > 0
    judged = torch.load(version.held_out_checkpoint, weights_only=True)
    validation = {normalise_text(text) for text in judged["validation"]["original"]}
    assert not validation & {normalise_text(text) for text in judged["train_originals"]}
    served = torch.load(version.checkpoint, weights_only=True)
    before_state = torch.load(production.checkpoint, weights_only=True)["encoder_state"]
    assert all(torch.equal(served["encoder_state"][name], value) for name, value in before_state.items())
    shutil.rmtree(tmp_path / "registry")
