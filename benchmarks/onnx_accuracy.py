"""CLINC150 10-shot test accuracy of an embeddings model served three ways: PyTorch, ONNX Runtime float32 and ONNX
Runtime int8 (`export-onnx --int8`), and how far ONNX Runtime's answers are from PyTorch's.

    python benchmarks/onnx_accuracy.py                          # seeds 0 1 2: import, retrain, export, score
    python benchmarks/onnx_accuracy.py --work DIR --seeds 0     # keep (or reuse) DIR/seed0/registry

Each seed follows benchmarks/fewshot.py's protocol (`intentflow outcomes import --per-label 10`, `intentflow retrain
--featurizer embeddings --threshold 0`), then exports production and scores test.jsonl (accuracy of the top label,
as the README's table, and with the out-of-scope threshold) and oos_test.jsonl (share refused) with each runtime.
A seed whose DIR/seedN/registry already holds a production version is not retrained.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
from common import command, git_revision, machine, stamp  # noqa: I001 - sets sys.path for intentflow
from fewshot import DEFAULT_DATA, SEEDS, SHOTS, train_fewshot

from intentflow.inference import Classifier
from intentflow.onnx_export import export_onnx
from intentflow.onnx_serving import OnnxClassifier

RUNTIMES = ("PyTorch", "ONNX Runtime float32", "ONNX Runtime int8")


def read(path: Path) -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [row["text"] for row in rows], [row["label"] for row in rows]


def score(registry: Path, data: Path, scratch: Path) -> dict[str, dict[str, float]]:
    texts, labels = read(data / "test.jsonl")
    oos_texts, _ = read(data / "oos_test.jsonl")
    reference = Classifier.load(registry)
    classifiers = {RUNTIMES[0]: reference,
                   RUNTIMES[1]: OnnxClassifier.load(export_onnx(registry, scratch / "fp32.onnx")),
                   RUNTIMES[2]: OnnxClassifier.load(export_onnx(registry, scratch / "int8.onnx", int8=True))}
    unknown = reference.unknown_label
    results, probabilities = {}, {}
    for name, classifier in classifiers.items():
        found = classifier.probabilities(texts + oos_texts)
        probabilities[name] = found.numpy() if hasattr(found, "numpy") else found
        top = [classifier.labels[index] for index in probabilities[name][:len(texts)].argmax(axis=1)]
        answers = [answer.label for answer in classifier.predict_batch(texts + oos_texts)]
        results[name] = {
            "accuracy": float(np.mean([t == label for t, label in zip(top, labels, strict=True)])),
            "with_oos": float(np.mean([a == label for a, label in zip(answers[:len(texts)], labels, strict=True)])),
            "oos_recall": float(np.mean([a == unknown for a in answers[len(texts):]])),
        }
    for name in RUNTIMES[1:]:
        ours, theirs = probabilities[name], probabilities[RUNTIMES[0]]
        results[name]["labels_differ"] = int((ours.argmax(axis=1) != theirs.argmax(axis=1)).sum())
        results[name]["max_probability_difference"] = float(np.abs(ours - theirs).max())
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CLINC150 folder")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--work", type=Path, default=None, help="keep each seed's outcomes and registry here")
    parser.add_argument("--retrain-arg", action="append", default=[], dest="retrain_args",
                        help="an argument for intentflow retrain (repeat for each), e.g. --retrain-arg=--no-refit")
    args = parser.parse_args()
    started = stamp()
    runs = {}
    with tempfile.TemporaryDirectory(prefix="intentflow-onnx-accuracy-") as temp:
        work = args.work or Path(temp)
        for seed in args.seeds:
            folder = work / f"seed{seed}"
            if not (folder / "registry" / "production.json").is_file():
                folder.mkdir(parents=True, exist_ok=True)
                train_fewshot(args.data, "embeddings", seed, SHOTS, folder, args.retrain_args)
            scratch = Path(temp) / f"export{seed}"
            scratch.mkdir()
            runs[seed] = score(folder / "registry", args.data, scratch)
            print(json.dumps({"seed": seed, **runs[seed]}), flush=True)
    print(f"\n`{command()}` at {git_revision()}, {started} to {stamp()}; {machine()}\n")
    print("| runtime | seed | accuracy | with OOS threshold | OOS recall | labels unlike PyTorch's | max probability "
          "difference |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for seed, results in runs.items():
        for name, result in results.items():
            differ = (f"{result['labels_differ']} | {result['max_probability_difference']:.1e}"
                      if "labels_differ" in result else "- | -")
            print(f"| {name} | {seed} | {result['accuracy']:.2%} | {result['with_oos']:.2%} | "
                  f"{result['oos_recall']:.2%} | {differ} |")
    print("\n| runtime | accuracy mean | change against PyTorch (points) |\n| --- | ---: | ---: |")
    for name in RUNTIMES:
        mean = statistics.mean(results[name]["accuracy"] for results in runs.values())
        base = statistics.mean(results[RUNTIMES[0]]["accuracy"] for results in runs.values())
        print(f"| {name} | {mean:.2%} | {100 * (mean - base):+.2f} |")


if __name__ == "__main__":
    main()
