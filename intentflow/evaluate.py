"""Scoring a classifier on labelled sentences: accuracy, macro-F1, per-outcome table, confusions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

from intentflow.inference import Classifier


@dataclass(frozen=True)
class LabelScore:
    label: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    macro_f1: float
    samples: int
    per_label: list[LabelScore]
    confused_pairs: list[tuple[str, str, int]]
    # Labels in the data the model does not know; their rows can only be wrong.
    unknown_labels: list[str] = field(default_factory=list)
    # In-scope accuracy had the model never answered unknown: what the out-of-scope threshold costs.
    accuracy_without_oos: float | None = None
    # Rows labelled out of scope, and the share of them the model answered unknown.
    oos_samples: int = 0
    oos_recall: float | None = None
    oos_threshold: float | None = None
    oos_similarity: float | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["confused_pairs"] = [{"true": t, "predicted": p, "count": c} for t, p, c in self.confused_pairs]
        return data


# Labels that mark a row as out of scope in evaluation data, besides the classifier's own unknown label
# (CLINC150 calls them "oos").
OOS_LABELS = ("oos", "out_of_scope")


def align_labels(labels: Sequence[str], known: Sequence[str], oos_labels: Sequence[str] = OOS_LABELS
                 ) -> tuple[list[str], list[str]]:
    """``labels`` named as the model names its outcomes, and the in-scope labels that match none.

    ``intentflow outcomes import`` turns a label into an outcome name (``AddToPlaylist`` -> ``addtoplaylist``,
    ``Order Status`` -> ``order_status``); data labelled the first way is scored against outcomes named the second.
    """
    from intentflow.importer import outcome_name

    outcomes = set(known)
    out_of_scope = set(oos_labels)
    mapped = [label if label in outcomes or label in out_of_scope or outcome_name(label) not in outcomes
              else outcome_name(label) for label in labels]
    unmatched = sorted({label for label in mapped if label not in outcomes and label not in out_of_scope})
    return mapped, unmatched


def evaluate_model(classifier: Classifier, texts: Sequence[str], labels: Sequence[str],
                   top_confusions: int = 10, oos_labels: Sequence[str] = OOS_LABELS) -> Evaluation:
    """Scores on the in-scope rows (accuracy counts an unknown answer as wrong) and out-of-scope recall.

    A row is out of scope when its label is the classifier's unknown label or one of ``oos_labels``.
    """
    threshold = getattr(classifier, "oos_threshold", None)
    similarity = getattr(classifier, "oos_similarity", None)
    unknown = getattr(classifier, "unknown_label", "unknown")
    refused = list(getattr(classifier, "out_of_scope", []) or [])
    if threshold is None and similarity is None and not refused:
        decided = top = [prediction.label for prediction in classifier.predict_batch(texts)]
    else:  # one pass of the network: the top outcome, and whether the out-of-scope rules refuse it
        index, _, refuse = classifier.answers(texts)
        top = [classifier.labels[column] for column in index.tolist()]
        decided = [unknown if no else label for label, no in zip(top, refuse.tolist(), strict=True)]
    # Rows of an outcome marked out of scope are things to refuse, like rows labelled oos.
    out_of_scope = {unknown, *oos_labels, *refused}
    inside = [position for position, label in enumerate(labels) if label not in out_of_scope]
    outside = [position for position, label in enumerate(labels) if label in out_of_scope]
    expected = [labels[position] for position in inside]
    evaluation = score(expected, [decided[position] for position in inside], top_confusions)
    known = set(classifier.labels)
    without = (sum(top[position] == labels[position] for position in inside) / len(inside)) if inside else None
    recall = sum(decided[position] == unknown for position in outside) / len(outside) if outside else None
    return replace(evaluation, unknown_labels=sorted({label for label in expected if label not in known}),
                   accuracy_without_oos=without, oos_samples=len(outside), oos_recall=recall,
                   oos_threshold=threshold, oos_similarity=similarity)


def score(expected: Sequence[str], predicted: Sequence[str], top_confusions: int = 10) -> Evaluation:
    """Metrics from expected and predicted labels; macro-F1 averages over the expected labels."""
    samples = len(expected)
    correct = sum(e == p for e, p in zip(expected, predicted, strict=True))
    support = Counter(expected)
    predicted_count = Counter(predicted)
    hits = Counter(e for e, p in zip(expected, predicted, strict=True) if e == p)
    per_label = []
    for label in sorted(support):
        precision = hits[label] / predicted_count[label] if predicted_count[label] else 0.0
        recall = hits[label] / support[label]
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label.append(LabelScore(label, precision, recall, f1, support[label]))
    confusions = Counter((e, p) for e, p in zip(expected, predicted, strict=True) if e != p)
    pairs = sorted(confusions.items(), key=lambda item: (-item[1], item[0]))[:top_confusions]
    return Evaluation(
        accuracy=correct / samples if samples else 0.0,
        macro_f1=sum(s.f1 for s in per_label) / len(per_label) if per_label else 0.0,
        samples=samples,
        per_label=per_label,
        confused_pairs=[(t, p, c) for (t, p), c in pairs],
    )
