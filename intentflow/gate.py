"""The deployment gate: promote a candidate only when it is good enough and no worse than production.

Every figure here is measured on sentences the judged model never learnt. A version is judged through its held-out
model (trained without the validation originals); the model it serves may have learnt them since (a refit), so
the held-out split compares held-out models, and the golden set, which no model ever trains on, compares the
served ones. ``gate_candidate`` is the one rule, for the flow and the benchmarks alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from intentflow.config import GateConfig
from intentflow.evaluate import Evaluation, evaluate_model
from intentflow.golden import GoldenSet
from intentflow.inference import Classifier
from intentflow.outcomes import normalise_text


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    candidate_accuracy: float
    threshold: float
    tolerance: float
    # Production's held-out model re-scored on the candidate's validation sentences neither model trained on;
    # None when not compared (``not_compared`` says why).
    production_accuracy: float | None
    production_version: str | None
    reason: str
    # The candidate on those same sentences, and how many there were.
    candidate_compared_accuracy: float | None = None
    compared_samples: int | None = None
    not_compared: str | None = None
    # The golden set (config/evaluation), scored with the models each version serves: the candidate's in-scope
    # accuracy (held to the threshold), out-of-scope recall, and overall accuracy (in-scope right and out-of-scope
    # refused) beside production's on the same rows (held to the tolerance).
    golden_samples: int | None = None
    golden_accuracy: float | None = None
    golden_oos_recall: float | None = None
    golden_overall: float | None = None
    golden_production_overall: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def overall_accuracy(evaluation: Evaluation) -> float:
    """In-scope rows answered right and out-of-scope rows refused, over all rows (HINT3's overall accuracy)."""
    rows = evaluation.samples + evaluation.oos_samples
    right = evaluation.accuracy * evaluation.samples + (evaluation.oos_recall or 0.0) * evaluation.oos_samples
    return right / rows if rows else 0.0


def gate_candidate(candidate_accuracy: float, candidate_labels: list[str], val_texts: list[str],
                   val_labels: list[str], config: GateConfig, production: Classifier | None = None,
                   production_version: str | None = None, *, candidate: Classifier | None = None,
                   val_originals: list[str] | None = None, candidate_trained_on: Sequence[str] | None = None,
                   golden: GoldenSet | None = None, candidate_served: Classifier | None = None,
                   production_served: Classifier | None = None) -> GateDecision:
    """Decide on promotion.

    ``candidate_accuracy`` is the candidate's held-out model on the validation sentences, which it never trained
    on. ``production`` is production's held-out model (its payload's ``train_originals`` say what it learnt). They
    are compared on the validation sentences of outcomes both know whose originals (``val_originals``) neither
    learnt (``candidate_trained_on``: an incremental candidate learnt production's), with ``candidate`` re-scored
    there when rows were left out. With a ``golden`` set, ``candidate_served`` must meet the threshold on its
    in-scope rows and score overall no worse than ``production_served`` by more than the tolerance.
    """
    compared = _compare_held_out(candidate_accuracy, candidate_labels, val_texts, val_labels, production,
                                 production_version, candidate, val_originals, candidate_trained_on)
    production_accuracy, compared_accuracy, compared_samples, not_compared = compared
    golden_scores = _golden_scores(golden, candidate_served or candidate, production_served)
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
    if golden_scores is not None:
        samples, accuracy, recall, overall, production_overall = golden_scores
        if samples and accuracy < config.threshold:
            promote = False
            reasons.append(f"golden-set accuracy {accuracy:.4f} is below the threshold {config.threshold:.4f}")
        if production_overall is not None and overall < production_overall - config.tolerance:
            promote = False
            reasons.append(f"golden-set overall accuracy {overall:.4f} is worse than production {production_version}"
                           f" ({production_overall:.4f}) by more than the tolerance {config.tolerance:.4f}")
    if promote:
        versus = (f", production {production_version} scores {production_accuracy:.4f} against "
                  f"{compared_accuracy:.4f} on the same {compared_samples} sentences"
                  if production_accuracy is not None else "")
        golden_line = ""
        if golden_scores is not None:
            golden_line = f"; golden set: {golden_scores[1]:.4f} in scope, {golden_scores[3]:.4f} overall"
            if golden_scores[4] is not None:
                golden_line += f" against production's {golden_scores[4]:.4f}"
        reasons.append(f"validation accuracy {candidate_accuracy:.4f} meets the threshold "
                       f"{config.threshold:.4f}{versus}{golden_line}")
    samples, accuracy, recall, overall, production_overall = golden_scores or (None,) * 5
    return GateDecision(promote, candidate_accuracy, config.threshold, config.tolerance, production_accuracy,
                        production_version if production is not None else None, "; ".join(reasons),
                        compared_accuracy, compared_samples, not_compared, samples, accuracy, recall, overall,
                        production_overall)


def _compare_held_out(candidate_accuracy: float, candidate_labels: list[str], val_texts: list[str],
                      val_labels: list[str], production: Classifier | None, production_version: str | None,
                      candidate: Classifier | None, val_originals: list[str] | None,
                      candidate_trained_on: Sequence[str] | None
                      ) -> tuple[float | None, float | None, int | None, str | None]:
    """(production's accuracy, the candidate's, rows) on the sentences neither learnt, or why there are none."""
    if production is None:
        return None, None, None, "there is no production model to compare with"
    shared = set(production.labels) & set(candidate_labels)
    if not shared:
        return None, None, None, f"production {production_version} shares no outcome with the candidate"
    if not val_texts:
        return None, None, None, "the candidate has no validation sentences"
    payload = getattr(production, "payload", {}) or {}
    learnt = {normalise_text(text) for text in [*payload.get("train_originals", []), *(candidate_trained_on or [])]}
    originals = val_originals if val_originals is not None else val_texts
    keep = [index for index in range(len(val_texts))
            if val_labels[index] in shared and normalise_text(originals[index]) not in learnt]
    if not keep:
        held_out = payload.get("role") == "held_out"
        why = ("was refit on them and keeps no held-out model (it was published before versions kept one)"
               if (payload.get("metrics") or {}).get("refit") and not held_out else "trained on all of them")
        return None, None, None, (f"production {production_version} {why}: no validation sentence of a shared "
                                  "outcome is new to both models")
    texts = [val_texts[index] for index in keep]
    labels = [val_labels[index] for index in keep]
    production_accuracy = evaluate_model(production, texts, labels).accuracy
    compared = (candidate_accuracy if len(keep) == len(val_texts) or candidate is None
                else evaluate_model(candidate, texts, labels).accuracy)
    return production_accuracy, compared, len(keep), None


def _golden_scores(golden: GoldenSet | None, candidate: Classifier | None, production: Classifier | None
                   ) -> tuple[int, float, float | None, float, float | None] | None:
    """(in-scope rows, in-scope accuracy, out-of-scope recall, overall, production's overall) of the golden set."""
    if golden is None or candidate is None or not golden.texts:
        return None
    evaluation = golden.evaluate(candidate)
    production_overall = None
    if production is not None:
        # Rows of outcomes production does not know are left out of both sides of the comparison.
        shared = golden.restricted_to(set(production.labels) & set(candidate.labels))
        if shared.texts:
            production_overall = overall_accuracy(shared.evaluate(production))
            if len(shared.texts) != len(golden.texts):
                return (evaluation.samples, evaluation.accuracy, evaluation.oos_recall,
                        overall_accuracy(shared.evaluate(candidate)), production_overall)
    return (evaluation.samples, evaluation.accuracy, evaluation.oos_recall, overall_accuracy(evaluation),
            production_overall)
