"""Glue for the CLI's single steps: prepared data on disk -> a checkpoint on disk."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from intentflow.checkpoint import build_payload, save_checkpoint
from intentflow.config import TrainConfig
from intentflow.dataset import read_prepared
from intentflow.split import Split
from intentflow.train import EpochStats, refit_model, train_split


def train_from_data(data_dir: str | Path, config: TrainConfig, checkpoint: str | Path,
                    on_epoch: Callable[[EpochStats, int], None] | None = None) -> dict[str, Any]:
    """Train on the prepared split; with ``config.refit``, train again on every row for the chosen epoch count."""
    data = read_prepared(data_dir)
    split = Split(data.train, data.val).for_featurizer(config.featurizer)
    trained = train_split(split, config, on_epoch=on_epoch)
    learnt = split.train
    if config.refit and split.val:
        trained, learnt = refit_model(trained, split, on_epoch=on_epoch), [*split.train, *split.val]
    payload = build_payload(trained, outcome_hash=data.manifest.get("outcome_hash", ""),
                            prepare=data.manifest.get("prepare", {}), val_texts=[row.text for row in split.val],
                            val_labels=[row.label for row in split.val],
                            val_originals=[row.original for row in split.val],
                            train_originals=[row.original for row in learnt])
    save_checkpoint(payload, checkpoint)
    return payload
