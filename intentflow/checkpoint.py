"""Self-describing checkpoints: weights, the config that built them, vocabulary, labels, metrics.

Everything is plain tensors, strings, numbers, lists and dicts, so ``torch.load(path,
weights_only=True)`` reads it and a checkpoint can never run code when loaded.
"""

from __future__ import annotations

import pickle
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from intentflow import __version__
from intentflow.errors import IntentflowError, display_path
from intentflow.fileio import atomic_write, write_json
from intentflow.train import WORD_NGRAMS, TrainedModel

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
FORMAT = "intentflow-checkpoint"
FORMAT_VERSION = 1
REQUIRED = {"format": str, "format_version": int, "state_dict": dict, "config": dict, "vocab": list,
            "labels": list, "metrics": dict}


def build_payload(trained: TrainedModel, *, outcome_hash: str, prepare: dict[str, Any],
                  val_texts: list[str], val_labels: list[str], val_originals: list[str] | None = None,
                  train_originals: list[str] | None = None,
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    config = trained.config
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "state_dict": {name: value.detach().cpu() for name, value in trained.model.state_dict().items()},
        "config": {
            # The playbook's evaluate step rebuilds the architecture from these keys.
            "vocab_size": len(trained.vocab),
            "num_labels": len(trained.labels),
            "hidden_size": config.hidden_size,
            "hidden_layers": config.hidden_layers,
            "dropout": config.dropout,
            "word_ngrams": trained.vocab.word_ngrams,
            "train": config.model_dump(),
            "prepare": prepare,
        },
        "vocab": trained.vocab.features,
        "labels": list(trained.labels),
        "metrics": trained.metrics,
        "history": [stats.to_dict() for stats in trained.history],
        "outcome_hash": outcome_hash,
        "validation": {"text": list(val_texts), "label": list(val_labels),
                       "original": list(val_originals) if val_originals is not None else list(val_texts)},
        # What it learnt from, so a later gate can re-score it only on sentences it has not seen.
        "train_originals": sorted(set(train_originals or [])),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "intentflow_version": __version__,
        **(extra or {}),
    }


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """Write the checkpoint and ``PATH.metrics.json`` beside it, each atomically."""
    path = Path(path)
    atomic_write(path, lambda stream: torch.save(payload, stream))
    write_json(metrics_path(path), {**payload["metrics"], "outcome_hash": payload.get("outcome_hash"),
                                    "labels": payload["labels"], "checkpoint": path.name})
    return path


def metrics_path(path: Path) -> Path:
    return path.with_name(path.name + ".metrics.json")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and check a checkpoint; anything unexpected is refused with the file named."""
    path = Path(path)
    shown = display_path(path)
    if not path.is_file():
        raise IntentflowError(f"checkpoint {shown} does not exist (fix: train one with `intentflow train`, "
                              "or if it is a registry's production model, `intentflow rollback`)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        text = _ANSI.sub("", str(error))
        if "weights_only" not in text.lower() and "global" not in text.lower():
            raise IntentflowError(f"checkpoint {shown} is unreadable or corrupt (not a PyTorch file) "
                                  "(fix: `intentflow rollback` to the previous version, or retrain)") from None
        detail = next((line.strip() for line in text.splitlines() if "global" in line.lower()), "unsupported content")
        raise IntentflowError(f"checkpoint {shown} was refused: it holds objects that are not plain data "
                              f"({detail}); nothing in it was run (fix: use a checkpoint made by intentflow, "
                              "or `intentflow rollback` to the previous version)") from None
    except Exception as error:  # noqa: BLE001 - torch.load raises many types for a damaged file
        raise IntentflowError(f"checkpoint {shown} is unreadable or corrupt ({type(error).__name__}) "
                              "(fix: `intentflow rollback` to the previous version, or retrain)") from None
    _check_payload(payload, shown)
    return payload


def _check_payload(payload: Any, shown: str) -> None:
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise IntentflowError(f"checkpoint {shown} is not an intentflow checkpoint "
                              "(fix: pass a file written by `intentflow train` or a registry folder)")
    for key, kind in REQUIRED.items():
        if not isinstance(payload.get(key), kind):
            raise IntentflowError(f"checkpoint {shown} lacks a valid '{key}' entry "
                                  "(fix: `intentflow rollback` to the previous version, or retrain)")
    if payload["format_version"] > FORMAT_VERSION:
        raise IntentflowError(f"checkpoint {shown} has format version {payload['format_version']}, newer than "
                              f"this intentflow ({FORMAT_VERSION}) (fix: upgrade intentflow)")
    config = payload["config"]
    for key in ("vocab_size", "num_labels", "hidden_size", "hidden_layers"):
        if not isinstance(config.get(key), int):
            raise IntentflowError(f"checkpoint {shown}: config.{key} is missing or not a number "
                                  "(fix: retrain, or `intentflow rollback`)")
    if config["vocab_size"] != len(payload["vocab"]) + 1 or config["num_labels"] != len(payload["labels"]):
        raise IntentflowError(f"checkpoint {shown}: vocabulary or labels do not match its config "
                              "(fix: retrain, or `intentflow rollback`)")
    config.setdefault("word_ngrams", WORD_NGRAMS)

