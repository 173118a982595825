"""One rule picks the model a checkpoint serves, for ``intentflow train`` as for the flow (``intentflow.refit``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import intentflow.pipeline
import intentflow.refit
from intentflow.checkpoint import held_out_path
from intentflow.config import PrepareConfig
from intentflow.dataset import prepare_data, write_prepared
from intentflow.outcomes import load_outcomes
from intentflow.pipeline import train_from_data
from intentflow.refit import refit_model
from intentflow.trained import TrainedModel

from .helpers import TOY, tiny_train_config, write_outcome_folder


@pytest.fixture
def prepared(tmp_path: Path) -> Path:
    outcomes = load_outcomes(write_outcome_folder(tmp_path / "outcomes", TOY))
    return write_prepared(prepare_data(outcomes, PrepareConfig(augment_factor=12, min_val_per_label=2, seed=1)),
                          tmp_path / "data")


def test_train_serves_the_refit_and_keeps_the_held_out_model_beside_it(prepared: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.pt"
    payload = train_from_data(prepared, tiny_train_config(refit=True), checkpoint)
    judged = torch.load(held_out_path(checkpoint), weights_only=True)
    validation = set(payload["validation"]["original"])
    assert payload["training"]["refit"]["published"] is True and payload["keeps_held_out"] is True
    assert validation <= set(payload["train_originals"])
    assert judged["role"] == "held_out" and not validation & set(judged["train_originals"])
    assert payload["metrics"]["val_accuracy"] == judged["metrics"]["val_accuracy"]


def test_train_serves_the_held_out_model_when_the_refit_scores_below_it(prepared: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_refit(held_out: TrainedModel, split: object, **kwargs: object) -> TrainedModel:
        refitted = refit_model(held_out, split, **kwargs)
        with torch.no_grad():  # every answer the first label
            refitted.model.output.weight.zero_()
            refitted.model.output.bias.copy_(-torch.arange(len(refitted.labels), dtype=torch.float32))
        return refitted

    monkeypatch.setattr(intentflow.pipeline, "refit_model", broken_refit)
    checkpoint = tmp_path / "model.pt"
    payload = train_from_data(prepared, tiny_train_config(refit=True), checkpoint)
    assert payload["training"]["refit"]["published"] is False
    assert payload["metrics"]["refit"] is None
    assert not set(payload["validation"]["original"]) & set(payload["train_originals"])
    assert not held_out_path(checkpoint).exists()
    assert intentflow.refit.refit_or_keep.__module__ == "intentflow.refit"
