"""Publishing: write the candidate into the registry as a version and, if the gate agreed, make it production."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from intentflow.evaluate import Evaluation
from intentflow.gate import GateDecision, overall_accuracy
from intentflow.onnx_export import onnx_files
from intentflow.registry import Version, open_registry
from intentflow.report import run_report
from intentflow.storage import Location

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Publication:
    version: str
    checkpoint: Location
    promoted: bool
    production: str | None
    event: dict[str, Any] | None
    report: str


def publish_version(registry_root: Location, payload: dict[str, Any], evaluation: Evaluation,
                    decision: GateDecision, notes: str, run: dict[str, Any] | None = None,
                    onnx: bool = False, int8: bool = False, held_out: dict[str, Any] | None = None,
                    golden: Evaluation | None = None) -> Publication:
    """Every candidate becomes a version (rejected ones marked so); only an accepted one moves production.

    ``evaluation`` is the held-out model's on the validation set, ``golden`` the served model's on the golden set;
    ``held_out`` the held-out model's payload where the version serves another (kept as ``<version>.heldout.pt``).
    With ``onnx``, the version also holds ``<version>.onnx`` and its ``.onnx.json`` (see ``intentflow.onnx_export``);
    ``int8``: an embeddings model's encoder in it quantized.
    """
    registry = open_registry(registry_root)
    metrics = payload["metrics"]
    info = {
        "created_at": payload.get("created_at"),
        "val_accuracy": evaluation.accuracy,
        "macro_f1": evaluation.macro_f1,
        "val_samples": evaluation.samples,
        # The golden set (config/evaluation), scored with the served model, which never trained on it.
        "golden": _golden_info(golden),
        # Whether the served model learnt the validation rows (a refit); the figures above are then its held-out
        # model's, kept beside it.
        "keeps_held_out": held_out is not None,
        "outcome_hash": payload.get("outcome_hash"),
        "labels": payload["labels"],
        "best_epoch": metrics.get("best_epoch"),
        "epochs_run": metrics.get("epochs_run"),
        "device": metrics.get("device"),
        "config": {key: payload["config"].get(key) for key in ("prepare", "train")},
        "gate": decision.to_dict(),
        "run": run or {},
        # How it was trained: full or incremental, why, and (incremental) from which version.
        "training": payload.get("training") or {"mode": "full"},
    }
    with registry.lock():
        name = registry.next_name()
        report = run_report(name, evaluation, decision.to_dict(), notes, golden)
        files: dict[str, str | bytes] = {
            "evaluation.json": json.dumps({**evaluation.to_dict(), "golden": golden.to_dict() if golden else None},
                                          indent=2) + "\n",
            "report.md": report,
            "release_notes.md": notes + "\n",
        }
        if onnx:
            files.update(onnx_files(payload, name, int8))
        version: Version = registry.add_version(name, payload, info, files, held_out=held_out)
        event = None
        if decision.promote:
            event = registry.promote(version.name, why=decision.reason)
            logger.info("published %s to production", version.name)
        else:
            logger.warning("kept %s as rejected: %s", version.name, decision.reason)
        production = registry.production_name()
    return Publication(version.name, version.checkpoint, decision.promote, production, event, report)


def _golden_info(golden: Evaluation | None) -> dict[str, Any] | None:
    if golden is None:
        return None
    return {"accuracy": golden.accuracy, "samples": golden.samples, "oos_recall": golden.oos_recall,
            "oos_samples": golden.oos_samples, "overall": overall_accuracy(golden)}
