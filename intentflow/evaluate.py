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

    def to_dict(self) -> dict:
        data = asdict(self)
        data["confused_pairs"] = [{"true": t, "predicted": p, "count": c} for t, p, c in self.confused_pairs]
        return data


def evaluate_model(classifier: Classifier, texts: Sequence[str], labels: Sequence[str],
                   top_confusions: int = 10) -> Evaluation:
    predicted = [prediction.label for prediction in classifier.predict_batch(texts)]
    evaluation = score(labels, predicted, top_confusions)
    known = set(classifier.labels)
    return replace(evaluation, unknown_labels=sorted({label for label in labels if label not in known}))


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
