"""Glue for the CLI's single steps: prepared data on disk -> a checkpoint on disk."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from intentflow.checkpoint import build_payload, held_out_path, save_checkpoint
from intentflow.config import TrainConfig
from intentflow.dataset import read_prepared
from intentflow.evaluate import evaluate_model
from intentflow.inference import Classifier
from intentflow.refit import HELD_OUT_ROLE, ServedModel, refit_model, refit_or_keep
from intentflow.split import Split
from intentflow.train import train_split
from intentflow.trained import EpochStats


def train_from_data(data_dir: str | Path, config: TrainConfig, checkpoint: str | Path,
                    on_epoch: Callable[[EpochStats, int], None] | None = None) -> dict[str, Any]:
    """Train on the prepared split; with ``config.refit``, serve the model refit on every row by the flow's rule
    (``intentflow.refit.refit_or_keep``), keeping the held-out model beside it (``held_out_path``)."""
    data = read_prepared(data_dir)
    split = Split(data.train, data.val, out_of_scope=tuple(data.manifest.get("out_of_scope") or ())
                  ).for_featurizer(config.featurizer)
    held_out = train_split(split, config, on_epoch=on_epoch)
    served = ServedModel(held_out, [row.original for row in split.train])
    if config.refit and split.val:
        accuracy = evaluate_model(Classifier.from_trained(held_out), [row.text for row in split.val],
                                  [row.label for row in split.val]).accuracy
        served = refit_or_keep(held_out, split, accuracy,
                               refit=lambda model, rows: refit_model(model, rows, on_epoch=on_epoch))

    def payload_of(trained: Any, learnt: list[str], extra: dict[str, Any]) -> dict[str, Any]:
        return build_payload(trained, outcome_hash=data.manifest.get("outcome_hash", ""),
                             prepare=data.manifest.get("prepare", {}), val_texts=[row.text for row in split.val],
                             val_labels=[row.label for row in split.val],
                             val_originals=[row.original for row in split.val], train_originals=learnt, extra=extra)

    record = {"refit": served.record} if served.record else {}
    payload = payload_of(served.trained, served.train_originals, {"training": record} if record else {})
    if not served.is_held_out:
        payload["keeps_held_out"] = True
        save_checkpoint(payload_of(held_out, [row.original for row in split.train],
                                   {"role": HELD_OUT_ROLE, "training": record}), held_out_path(checkpoint))
    save_checkpoint(payload, checkpoint)
    return payload
