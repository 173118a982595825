"""Builders and constants shared by the core tests (fixtures live in conftest.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from intentflow.config import TrainConfig
from intentflow.dataset import PreparedData
from intentflow.outcomes import OutcomeSet
from intentflow.trained import TrainedModel

REPO = Path(__file__).resolve().parents[2]
BUNDLED_OUTCOMES = REPO / "config" / "outcomes"
BUNDLED_SETTINGS = REPO / "config" / "training.toml"

# Three outcomes whose words barely overlap, so a tiny network can learn them exactly.
TOY: dict[str, dict[str, Any]] = {
    "check_weather": {
        "name": "check_weather",
        "examples": ["what is the weather today", "will it rain tomorrow", "is it sunny outside",
                     "forecast for the weekend"],
        "synonyms": {"weather": ["forecast", "conditions"]},
    },
    "play_music": {
        "name": "play_music",
        "examples": ["play some jazz music", "put on my playlist", "start that song again", "play rock tunes loudly"],
        "synonyms": {"play": ["put on", "start"]},
    },
    "set_alarm": {
        "name": "set_alarm",
        "examples": ["wake me at seven", "set an alarm for six", "alarm at noon please", "wake me up early"],
    },
}

OutcomeFolderBuilder = Callable[..., Path]


def write_outcome_folder(folder: Path, files: dict[str, Any]) -> Path:
    """Write ``{file name or stem: content}``; dicts/lists become JSON, str and bytes are written as is."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        target = folder / (name if name.endswith(".json") else name + ".json")
        if isinstance(content, bytes):
            target.write_bytes(content)
        elif isinstance(content, str):
            target.write_text(content, encoding="utf-8")
        else:
            target.write_text(json.dumps(content, indent=2), encoding="utf-8")
    return folder


def tiny_train_config(**changes: Any) -> TrainConfig:
    """A network small enough to train in well under a second on a CPU."""
    values: dict[str, Any] = {"epochs": 60, "hidden_size": 32, "hidden_layers": 1, "dropout": 0.0, "lr": 0.01,
                              "batch_size": 16, "patience": 0, "seed": 3, "device": "cpu",
                              # Tests of out-of-scope detection turn it on; elsewhere a label is always a label.
                              "oos_threshold": "off", "label_smoothing": 0.0, "featurizer": "bow",
                              # Single words only: the toy sets are built word by word; the word-pair and
                              # character n-gram tests set these.
                              "word_ngrams": 1, "char_ngrams": 0}
    return TrainConfig(**{**values, **changes})


@dataclass(frozen=True)
class ToyModel:
    outcomes: OutcomeSet
    data: PreparedData
    trained: TrainedModel
