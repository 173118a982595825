"""The deployment gate: promote a candidate only when it is good enough and no worse than production."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from intentflow.config import GateConfig
from intentflow.evaluate import evaluate_model
from intentflow.inference import Classifier
from intentflow.outcomes import normalise_text


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    candidate_accuracy: float
    threshold: float
    tolerance: float
    # Production re-scored on the candidate's validation sentences it never trained on; None when not compared.
    production_accuracy: float | None
    production_version: str | None
    reason: str
    # The candidate on those same sentences, and how many there were.
    candidate_compared_accuracy: float | None = None
    compared_samples: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def gate_candidate(candidate_accuracy: float, candidate_labels: list[str], val_texts: list[str],
                   val_labels: list[str], config: GateConfig, production: Classifier | None = None,
                   production_version: str | None = None, *, candidate: Classifier | None = None,
                   val_originals: list[str] | None = None,
                   candidate_trained_on: list[str] | None = None) -> GateDecision:
    """Decide on promotion.

    Production is compared only when it knows the same label set, and only on validation sentences derived
    from originals (``val_originals``) it did not train on, with the candidate scored on the same ones. Originals
    the candidate trained on too (``candidate_trained_on``: an incremental candidate inherits production's) stay
    in: both were trained on them, so the comparison asks whether the candidate forgot them.
    """
    production_accuracy = compared_accuracy = compared_samples = None
    if production is not None and set(production.labels) == set(candidate_labels) and val_texts:
        trained_on = {normalise_text(text) for text in getattr(production, "payload", {}).get("train_originals", [])}
        trained_on -= {normalise_text(text) for text in candidate_trained_on or []}
        keep = [index for index in range(len(val_texts))
                if val_originals is None or normalise_text(val_originals[index]) not in trained_on]
        if keep:
            texts = [val_texts[index] for index in keep]
            labels = [val_labels[index] for index in keep]
            production_accuracy = evaluate_model(production, texts, labels).accuracy
            compared_accuracy = (candidate_accuracy if len(keep) == len(val_texts) or candidate is None
                                 else evaluate_model(candidate, texts, labels).accuracy)
            compared_samples = len(keep)
    reasons = []
    promote = True
    if candidate_accuracy < config.threshold:
        promote = False
        reasons.append(f"validation accuracy {candidate_accuracy:.4f} is below the threshold {config.threshold:.4f}")
    if production_accuracy is not None and compared_accuracy < production_accuracy - config.tolerance:
        promote = False
        reasons.append(f"validation accuracy {compared_accuracy:.4f} is worse than production {production_version} "
                       f"re-scored on the same {compared_samples} validation sentences ({production_accuracy:.4f}) "
                       f"by more than the tolerance {config.tolerance:.4f}")
    if promote:
        versus = (f", production {production_version} scores {production_accuracy:.4f} against "
                  f"{compared_accuracy:.4f} on the same {compared_samples} sentences"
                  if production_accuracy is not None else "")
        reasons.append(f"validation accuracy {candidate_accuracy:.4f} meets the threshold "
                       f"{config.threshold:.4f}{versus}")
    return GateDecision(promote, candidate_accuracy, config.threshold, config.tolerance, production_accuracy,
                        production_version if production is not None else None, "; ".join(reasons),
                        compared_accuracy, compared_samples)
