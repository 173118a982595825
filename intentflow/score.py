"""The nightly check of the model users get: production scored on the golden set and on its held-out split.

The playbook's "benchmark models nightly" means the user's own model. Production is scored where it cannot have
learnt the answers: its held-out model on the validation sentences it was judged on (recorded in its checkpoint),
and the model it serves on the golden set (``config/evaluation``), which no model trains on. Run every night, the
rows show drift: a golden set that grows with real traffic, or a production rolled back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from intentflow.evaluate import evaluate_model
from intentflow.gate import overall_accuracy
from intentflow.golden import load_golden
from intentflow.inference import Classifier
from intentflow.registry import open_registry


@dataclass(frozen=True)
class ProductionScore:
    time: str
    version: str | None
    # The held-out model on the validation sentences it never learnt, and how many there were.
    held_out_accuracy: float | None = None
    held_out_samples: int = 0
    # The served model on the golden set: in-scope accuracy, out-of-scope recall, overall; rows.
    golden_accuracy: float | None = None
    golden_oos_recall: float | None = None
    golden_overall: float | None = None
    golden_samples: int = 0
    note: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def score_production(registry_root: str | Path, golden_folder: str | Path,
                     unknown_label: str = "unknown") -> ProductionScore:
    """Score the registry's production version; a registry without one gives a row that says so."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    registry = open_registry(registry_root)
    version = registry.production()
    if version is None:
        return ProductionScore(now, None, note=f"no production version in {registry_root} yet")
    held_out = Classifier.load(version.held_out_checkpoint)
    recorded = held_out.payload.get("validation") or {}
    texts, labels = list(recorded.get("text", [])), list(recorded.get("label", []))
    held_out_accuracy = evaluate_model(held_out, texts, labels).accuracy if texts else None
    golden = load_golden(golden_folder, unknown_label=unknown_label)
    if golden is None:
        return ProductionScore(now, version.name, held_out_accuracy, len(texts),
                               note=f"no golden set in {golden_folder}")
    served = Classifier.load(version.checkpoint)
    evaluation = golden.evaluate(served)
    return ProductionScore(now, version.name, held_out_accuracy, len(texts), evaluation.accuracy,
                           evaluation.oos_recall, overall_accuracy(evaluation), len(golden.texts))
