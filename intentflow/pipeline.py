"""Glue for the CLI's single steps: prepared data on disk -> a checkpoint on disk."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from intentflow.checkpoint import build_payload, save_checkpoint
from intentflow.config import TrainConfig
from intentflow.dataset import read_prepared
from intentflow.split import rows_for_featurizer
from intentflow.train import EpochStats, train_model


def train_from_data(data_dir: str | Path, config: TrainConfig, checkpoint: str | Path,
                    on_epoch: Callable[[EpochStats, int], None] | None = None) -> dict[str, Any]:
    data = read_prepared(data_dir)
    train_rows = rows_for_featurizer(data.train, config.featurizer)
    val_rows = rows_for_featurizer(data.val, config.featurizer)
    val_texts = [row.text for row in val_rows]
    val_labels = [row.label for row in val_rows]
    trained = train_model([row.text for row in train_rows], [row.label for row in train_rows],
                          val_texts, val_labels, config, on_epoch=on_epoch,
                          val_is_original=[not row.synthetic for row in val_rows])
    payload = build_payload(trained, outcome_hash=data.manifest.get("outcome_hash", ""),
                            prepare=data.manifest.get("prepare", {}), val_texts=val_texts, val_labels=val_labels,
                            val_originals=[row.original for row in val_rows],
                            train_originals=[row.original for row in train_rows])
    save_checkpoint(payload, checkpoint)
    return payload
