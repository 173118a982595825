"""Inference speed: one-sentence `predict` latency (p50, p99) and batch throughput, PyTorch and ONNX Runtime.

    python benchmarks/inference_speed.py [--checkpoint PATH] [--sentences 100000]

Without --checkpoint it trains two models on the bundled outcomes for a few epochs (speed does not depend on how
well they are trained): `TrainConfig()`'s defaults (one hidden layer of 512; words, word pairs and character
n-grams of 2-5) and the playbook's network (4 x 512, single words only). Batch sentences are distinct: each
timed pass numbers its sentences afresh, so every sentence holds a word (its number) that no earlier call saw and
no cache of sentences or words has.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import command, machine, playbook_data, stamp  # noqa: I001 - sets sys.path for intentflow

from intentflow.checkpoint import build_payload, save_checkpoint
from intentflow.config import TrainConfig
from intentflow.inference import Classifier
from intentflow.train import train_model


def latency(predict, texts: list[str], calls: int = 5000) -> tuple[float, float]:
    for text in texts[:500]:
        predict(text)
    samples = []
    for number in range(calls):
        text = texts[number % len(texts)]
        start = time.perf_counter()
        predict(text)
        samples.append(time.perf_counter() - start)
    cuts = statistics.quantiles(samples, n=100)
    return cuts[49] * 1e3, cuts[98] * 1e3


def throughput(predict_batch, texts: list[str], sentences: int) -> float:
    """Best of 3 timed passes; each pass numbers its sentences with numbers not used before."""
    numbered = iter(range(10**9))
    fresh = lambda count: [f"{texts[n % len(texts)]} {next(numbered)}" for n in range(count)]  # noqa: E731
    predict_batch(fresh(5000))
    best = 0.0
    for _ in range(3):
        batch = fresh(sentences)
        start = time.perf_counter()
        predict_batch(batch)
        best = max(best, sentences / (time.perf_counter() - start))
    return best


def measure(checkpoint: Path, texts: list[str], sentences: int, scratch: Path) -> list[tuple]:
    rows = []
    for precision in ("float32", "bfloat16"):
        classifier = Classifier.load(checkpoint, precision=precision)
        p50, p99 = latency(classifier.predict, texts)
        rows.append((f"PyTorch {precision}", p50, p99, throughput(classifier.predict_batch, texts, sentences)))
    try:
        from intentflow.onnx_export import OnnxClassifier, export_onnx

        onnx_path = export_onnx(checkpoint, scratch / f"{checkpoint.stem}.onnx")
        for threads in (1, None):
            onnx = OnnxClassifier.load(onnx_path, threads=threads)
            p50, p99 = latency(onnx.predict, texts)
            rows.append((f"ONNX Runtime, {threads or 'default'} thread(s)", p50, p99,
                         throughput(onnx.predict_batch, texts, sentences)))
    except Exception as error:  # noqa: BLE001 - the extra is optional; say why its rows are missing
        print(f"ONNX Runtime rows skipped: {error}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--sentences", type=int, default=100_000)
    args = parser.parse_args()
    train, val = playbook_data()
    texts = [row.text for row in val]
    tables = []
    with tempfile.TemporaryDirectory() as scratch:
        models = {"given checkpoint": args.checkpoint} if args.checkpoint else {}
        if not models:
            for name, config in (("defaults (1 x 512, words, pairs, character n-grams)", TrainConfig(featurizer="bow")),
                                 ("the playbook's network (4 x 512, words only)",
                                  TrainConfig(featurizer="bow", hidden_layers=4, word_ngrams=1, char_ngrams=0))):
                trained = train_model([r.text for r in train], [r.label for r in train], [r.text for r in val],
                                      [r.label for r in val],
                                      config.model_copy(update={"epochs": 3, "patience": 0, "device": "cpu"}))
                models[name] = Path(scratch) / f"model{len(models)}.pt"
                save_checkpoint(build_payload(trained, outcome_hash="", prepare={}, val_texts=[], val_labels=[]),
                                models[name])
        for name, checkpoint in models.items():
            loaded = Classifier.load(checkpoint)
            tables.append((name, len(loaded.vocab), len(loaded.labels),
                           measure(checkpoint, texts, args.sentences, Path(scratch))))
    print(f"machine: {machine()}\ndate: {stamp()}\ncommand: {command()}")
    for name, features, labels, rows in tables:
        print(f"\nmodel: {name}, {features} features, {labels} outcomes; "
              f"batches of {args.sentences:,} distinct sentences")
        print("| path | predict p50 ms | predict p99 ms | batch sentences/s |\n| --- | ---: | ---: | ---: |")
        for path, p50, p99, rate in rows:
            print(f"| {path} | {p50:.3f} | {p99:.3f} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
