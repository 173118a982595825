"""The deployment gate: promote a candidate only when it is good enough and no worse than production."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from intentflow.config import GateConfig
from intentflow.evaluate import evaluate_model
from intentflow.inference import Classifier


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    candidate_accuracy: float
    threshold: float
    tolerance: float
    # Production re-scored on the candidate's validation set; None when there is no comparable production.
    production_accuracy: float | None
    production_version: str | None
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def gate_candidate(candidate_accuracy: float, candidate_labels: list[str], val_texts: list[str],
                   val_labels: list[str], config: GateConfig, production: Classifier | None = None,
                   production_version: str | None = None) -> GateDecision:
    """Decide on promotion. Production is compared only when it knows the same label set."""
    production_accuracy = None
    if production is not None and set(production.labels) == set(candidate_labels) and val_texts:
        production_accuracy = evaluate_model(production, val_texts, val_labels).accuracy
    reasons = []
    promote = True
    if candidate_accuracy < config.threshold:
        promote = False
        reasons.append(f"validation accuracy {candidate_accuracy:.4f} is below the threshold {config.threshold:.4f}")
    if production_accuracy is not None and candidate_accuracy < production_accuracy - config.tolerance:
        promote = False
        reasons.append(f"validation accuracy {candidate_accuracy:.4f} is worse than production {production_version} "
                       f"re-scored on the same validation set ({production_accuracy:.4f}) by more than the "
                       f"tolerance {config.tolerance:.4f}")
    if promote:
        versus = (f", production {production_version} scores {production_accuracy:.4f} on the same set"
                  if production_accuracy is not None else "")
        reasons.append(f"validation accuracy {candidate_accuracy:.4f} meets the threshold "
                       f"{config.threshold:.4f}{versus}")
    return GateDecision(promote, candidate_accuracy, config.threshold, config.tolerance, production_accuracy,
                        production_version if production is not None else None, "; ".join(reasons))
