"""A retrain with an outcome marked out of scope publishes a model that refuses its sentences, scored as refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.retrain import RetrainParameters, retrain
from intentflow.inference import Classifier
from intentflow.registry import Registry

from .flow_helpers import OUTCOMES, TINY, write_outcomes

pytestmark = pytest.mark.usefixtures("harness")

CHITCHAT = {"name": "chitchat", "out_of_scope": True,
            "examples": ["tell me a joke", "who made you", "what is the meaning of life", "are you a robot",
                         "sing me a lullaby"]}


def test_the_published_model_refuses_an_out_of_scope_outcome(tmp_path: Path) -> None:
    outcomes = write_outcomes(tmp_path / "outcomes", {**OUTCOMES, "chitchat": CHITCHAT})
    state = retrain(RetrainParameters(**{**TINY, "outcomes": str(outcomes), "registry": str(tmp_path / "registry")}),
                    return_state=True)

    assert state.is_completed(), state.message
    version = Registry(tmp_path / "registry").production()
    classifier = Classifier.load(version.checkpoint)
    assert classifier.out_of_scope == ["chitchat"]
    assert classifier.predict("tell me a joke").label == "unknown"
    assert classifier.predict("play some jazz music").label == "play_music"
    evaluation = (version.path / "evaluation.json").read_text(encoding="utf-8")
    # chitchat's validation rows are scored as sentences to refuse, not as an outcome.
    assert '"oos_samples": 0' not in evaluation and '"label": "chitchat"' not in evaluation
