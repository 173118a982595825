"""Fixtures for the core tests: toy outcome folders and one small trained model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from intentflow.config import PrepareConfig
from intentflow.dataset import prepare_data
from intentflow.outcomes import OutcomeSet, load_outcomes
from intentflow.train import train_model

from .helpers import (
    BUNDLED_OUTCOMES,
    REPO,
    TOY,
    OutcomeFolderBuilder,
    ToyModel,
    tiny_train_config,
    write_outcome_folder,
)


@pytest.fixture(autouse=True)
def run_from_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages show paths relative to the working folder when they can; starting every test in the
    repository root keeps temporary paths absolute in them, wherever pytest was started."""
    monkeypatch.chdir(REPO)


@pytest.fixture
def make_outcomes(tmp_path: Path) -> OutcomeFolderBuilder:
    """``make_outcomes({"pay_bill": {...}}, folder="outcomes")`` writes a folder of outcome files."""

    def make(files: dict[str, Any], folder: str = "outcomes") -> Path:
        return write_outcome_folder(tmp_path / folder, files)

    return make


@pytest.fixture
def toy_definitions() -> dict[str, dict[str, Any]]:
    return json.loads(json.dumps(TOY))


@pytest.fixture
def toy_folder(make_outcomes: OutcomeFolderBuilder, toy_definitions: dict[str, dict[str, Any]]) -> Path:
    return make_outcomes(toy_definitions)


@pytest.fixture(scope="session")
def bundled_outcomes() -> OutcomeSet:
    return load_outcomes(BUNDLED_OUTCOMES)


@pytest.fixture(scope="package")
def toy_model(tmp_path_factory: pytest.TempPathFactory) -> ToyModel:
    """The toy outcomes prepared and trained once for the checkpoint and inference tests."""
    outcomes = load_outcomes(write_outcome_folder(tmp_path_factory.mktemp("toy") / "outcomes", TOY))
    data = prepare_data(outcomes, PrepareConfig(augment_factor=12, min_val_per_label=2, seed=1))
    trained = train_model([row.text for row in data.train], [row.label for row in data.train],
                          [row.text for row in data.val], [row.label for row in data.val], tiny_train_config())
    return ToyModel(outcomes, data, trained)
