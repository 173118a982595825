"""Accuracy on every data set of ../shared/benchmarks, the project beside two simple references on the same examples.

    python benchmarks/accuracy.py                                   # every set below, seed 0
    python benchmarks/accuracy.py --sets hint3/sofmattress --featurizers embeddings

Sets: CLINC150 at k = 5 and 10 examples per intent and with all of them (test.jsonl plus oos_test.jsonl); each
HINT3 bot with all its training sentences (test.jsonl: real user queries, out of scope labelled ``oos``). For each:

- the project through its public commands (``run_fewshot`` of ``benchmarks/fewshot.py``: import, retrain with the
  defaults and the gate threshold at 0, evaluate), bag-of-words and embeddings;
- TF-IDF (word 1-2 and char_wb 2-5 grams, sublinear) + logistic regression (C = 20);
- the frozen default encoder (the bundled all-MiniLM-L6-v2's sentence vector) + logistic regression (C = 10);

the references trained on exactly the examples ``intentflow outcomes import`` writes for the seed. "In scope" is
accuracy on the in-scope rows with every row answered (the references never refuse, so this is the figure to
compare); "overall" counts an in-scope row right when its outcome is predicted and an out-of-scope one when it is
refused (the project's out-of-scope threshold in effect; the references refuse nothing). Prints the table headed by
the command, commit and machine, in benchmarks/RESULTS.md's columns but its "best platform overall", which comes
from ../shared/benchmarks/README.md; RESULTS keeps one current table, so the rows are pasted there by hand. Needs
scikit-learn (with the embeddings extra).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import ROOT, command, git_revision, machine, stamp  # noqa: I001 - sets sys.path for intentflow
from fewshot import run_fewshot

from intentflow.dataset import read_labelled
from intentflow.evaluate import OOS_LABELS, align_labels
from intentflow.importer import import_outcomes
from intentflow.outcomes import load_outcomes

DATA = ROOT.parent / "shared" / "benchmarks"
# (name, folder under DATA, examples per intent; None = all)
SETS = {
    "clinc150/k5": ("clinc150", 5),
    "clinc150/k10": ("clinc150", 10),
    "clinc150/all": ("clinc150", None),
    "hint3/sofmattress": ("hint3/sofmattress", None),
    "hint3/curekart": ("hint3/curekart", None),
    "hint3/powerplay11": ("hint3/powerplay11", None),
}


def examples(folder: Path, shots: int | None, seed: int) -> tuple[list[str], list[str], list[str]]:
    """The examples ``intentflow outcomes import`` writes for this seed, their outcome names, all outcome names."""
    with tempfile.TemporaryDirectory(prefix="intentflow-accuracy-") as temp:
        import_outcomes(folder / "train.jsonl", temp, per_label=shots, seed=seed)
        outcomes = load_outcomes(temp).outcomes
    pairs = [(example, outcome.name) for outcome in outcomes for example in outcome.examples]
    return [text for text, _ in pairs], [label for _, label in pairs], [outcome.name for outcome in outcomes]


def scored_rows(folder: Path, names: list[str]) -> tuple[list[str], list[str]]:
    texts, labels, _ = read_labelled(folder / "test.jsonl")
    if (folder / "oos_test.jsonl").is_file():
        oos_texts, oos_labels, _ = read_labelled(folder / "oos_test.jsonl")
        texts, labels = texts + oos_texts, labels + oos_labels
    labels, _ = align_labels(labels, names)
    return texts, labels


def reference_scores(predicted: list[str], labels: list[str]) -> tuple[float, float]:
    """(in-scope accuracy, overall accuracy) of a classifier that never refuses."""
    inside = [(p, t) for p, t in zip(predicted, labels, strict=True) if t not in OOS_LABELS]
    right = sum(p == t for p, t in inside)
    return right / len(inside), right / len(labels)


def tfidf_reference(train: tuple[list[str], list[str]], texts: list[str]) -> list[str]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    features = make_union(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                          TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True))
    model = make_pipeline(features, LogisticRegression(C=20, max_iter=5000))
    model.fit(*train)
    return list(model.predict(texts))


def frozen_encoder_reference(train: tuple[list[str], list[str]], texts: list[str]) -> list[str]:
    from sklearn.linear_model import LogisticRegression

    from intentflow.encoder import load_encoder

    encoder = load_encoder("", "cpu", serving=True)
    model = LogisticRegression(C=10, max_iter=5000)
    model.fit(encoder.encode(train[0]).numpy(), train[1])
    return list(model.predict(encoder.encode(texts).numpy()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    parser.add_argument("--featurizers", nargs="*", choices=["bow", "embeddings"], default=["bow", "embeddings"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=DATA, help="the benchmarks folder")
    args = parser.parse_args()

    lines = [f"`{command()}` at {git_revision()}, {stamp()}; {machine()}; seed {args.seed}", "",
             "| data set | k | TF-IDF + LR (C = 20) | frozen encoder + LR (C = 10) | bag-of-words | embeddings | "
             "embeddings overall (references') | out-of-scope recall | in scope with the rule | "
             "seconds (bow / embeddings) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name in args.sets:
        folder_name, shots = SETS[name]
        folder = args.data / folder_name
        train_texts, train_labels, names = examples(folder, shots, args.seed)
        texts, labels = scored_rows(folder, names)
        tfidf = reference_scores(tfidf_reference((train_texts, train_labels), texts), labels)
        frozen = reference_scores(frozen_encoder_reference((train_texts, train_labels), texts), labels)
        runs = {}
        for featurizer in args.featurizers:
            started = time.perf_counter()
            runs[featurizer] = run_fewshot(folder, featurizer, args.seed, shots)
            print(f"{name} {featurizer}: {runs[featurizer].to_dict()} ({time.perf_counter() - started:.0f} s)",
                  flush=True)
        bow, embeddings = runs.get("bow"), runs.get("embeddings")
        cell = lambda run: f"{run.accuracy_without_oos:.2%}" if run else "not run"  # noqa: E731
        overall = (f"{embeddings.overall:.2%} ({tfidf[1]:.2%} / {frozen[1]:.2%})" if embeddings else "not run")
        recall = (f"{embeddings.oos_recall:.2%}" if embeddings and embeddings.oos_recall is not None
                  and embeddings.refuses else "n/a")
        ruled = f"{embeddings.accuracy:.2%}" if embeddings else "not run"
        seconds = " / ".join(f"{run.seconds:.0f}" if run else "-" for run in (bow, embeddings))
        row = (f"| {name} | {shots or 'all'} | {tfidf[0]:.2%} | {frozen[0]:.2%} | {cell(bow)} | {cell(embeddings)} | "
               f"{overall} | {recall} | {ruled} | {seconds} |")
        print(row, flush=True)
        lines.append(row)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
