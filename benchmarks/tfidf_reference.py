"""The bag-of-words reference of ../shared/benchmarks/README.md on this project's draws of CLINC150 shots.

    python benchmarks/tfidf_reference.py [--seeds 0 1 2] [--shots 10] [--c 1 100] [--score-on test]

TF-IDF of word 1-2-grams and of character 2-5-grams (sublinear term frequency, the two vectorisers' rows each of
unit norm, side by side) with scikit-learn's logistic regression, trained on the same k examples per intent that
``intentflow outcomes import --per-label K --seed S`` picks, so it compares with ``benchmarks/fewshot.py``'s
bag-of-words runs seed by seed. The data README's 83.2% is this method on a draw of its own. Needs scikit-learn
(installed with the ``embeddings`` and ``dev`` extras).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import command, machine, stamp  # noqa: I001 - sets sys.path for intentflow
from fewshot import DEFAULT_DATA

from intentflow.dataset import read_labelled
from intentflow.importer import import_outcomes, outcome_name
from intentflow.outcomes import load_outcomes


def reference_accuracy(train_texts: list[str], train_labels: list[str], texts: list[str], labels: list[str],
                       c: float) -> float:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    features = make_union(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                          TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True))
    model = make_pipeline(features, LogisticRegression(C=c, max_iter=5000))
    model.fit(train_texts, train_labels)
    predicted = model.predict(texts)
    return sum(p == t for p, t in zip(predicted, labels, strict=True)) / len(labels)


def shots_of(data: Path, shots: int, seed: int) -> tuple[list[str], list[str]]:
    """The examples ``intentflow outcomes import`` writes for this seed, and their outcome names."""
    with tempfile.TemporaryDirectory(prefix="intentflow-tfidf-") as temp:
        import_outcomes(data / "train.jsonl", temp, per_label=shots, seed=seed)
        outcomes = load_outcomes(temp).outcomes
        pairs = [(example, outcome.name) for outcome in outcomes for example in outcome.examples]
    return [text for text, _ in pairs], [label for _, label in pairs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--c", type=float, nargs="+", default=[1.0, 100.0], help="inverse regularisation strengths")
    parser.add_argument("--score-on", choices=["test", "val"], default="test")
    args = parser.parse_args()

    texts, raw_labels, _ = read_labelled(args.data / f"{args.score_on}.jsonl")
    labels = [outcome_name(label) for label in raw_labels]
    print(f"machine: {machine()}\ndate: {stamp()}\ncommand: {command()}\n")
    print(f"| C | {' | '.join(f'seed {seed}' for seed in args.seeds)} | mean | seconds a run |")
    print(f"| ---: |{' ---: |' * (len(args.seeds) + 2)}")
    draws = {seed: shots_of(args.data, args.shots, seed) for seed in args.seeds}
    for c in args.c:
        scores, seconds = [], []
        for seed in args.seeds:
            started = time.perf_counter()
            scores.append(reference_accuracy(*draws[seed], texts, labels, c))
            seconds.append(time.perf_counter() - started)
        print(f"| {c:g} | {' | '.join(f'{score:.2%}' for score in scores)} | {statistics.mean(scores):.2%} | "
              f"{statistics.mean(seconds):.1f} |")


if __name__ == "__main__":
    main()
