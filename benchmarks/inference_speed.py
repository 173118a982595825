"""Inference speed: one-sentence `predict` latency (p50, p99) and batch throughput, PyTorch and ONNX Runtime.

    python benchmarks/inference_speed.py [--checkpoint PATH] [--sentences 100000]

Without --checkpoint it trains the playbook's model (4 x 512) on the bundled outcomes for a few epochs
(speed does not depend on how well it is trained). Batch sentences are distinct (numbered), so no cache helps.
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


def throughput(predict_batch, texts: list[str]) -> float:
    predict_batch(texts[:5000])
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        predict_batch(texts)
        best = max(best, len(texts) / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--sentences", type=int, default=100_000)
    args = parser.parse_args()
    train, val = playbook_data()
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = args.checkpoint
        if checkpoint is None:
            trained = train_model([r.text for r in train], [r.label for r in train], [r.text for r in val],
                                  [r.label for r in val], TrainConfig(epochs=3, patience=0, device="cpu"))
            checkpoint = Path(scratch) / "model.pt"
            save_checkpoint(build_payload(trained, outcome_hash="", prepare={}, val_texts=[], val_labels=[]),
                            checkpoint)
        features = len(Classifier.load(checkpoint).vocab)
        texts = [row.text for row in val]
        batch = [f"{texts[number % len(texts)]} {number}" for number in range(args.sentences)]
        rows = []
        for precision in ("float32", "bfloat16"):
            classifier = Classifier.load(checkpoint, precision=precision)
            p50, p99 = latency(classifier.predict, texts)
            rows.append((f"PyTorch {precision}", p50, p99, throughput(classifier.predict_batch, batch)))
        try:
            from intentflow.onnx_export import OnnxClassifier, export_onnx

            onnx_path = export_onnx(checkpoint, Path(scratch) / "model.onnx")
            for threads in (1, None):
                onnx = OnnxClassifier.load(onnx_path, threads=threads)
                p50, p99 = latency(onnx.predict, texts)
                rows.append((f"ONNX Runtime, {threads or 'default'} thread(s)", p50, p99,
                             throughput(onnx.predict_batch, batch)))
        except Exception as error:  # noqa: BLE001 - the extra is optional; say why its rows are missing
            print(f"ONNX Runtime rows skipped: {error}")
    print(f"machine: {machine()}\ndate: {stamp()}\ncommand: {command()}")
    print(f"model: 4 x 512 MLP, {features} features, 18 outcomes; "
          f"batch of {args.sentences:,} distinct sentences")
    print("| path | predict p50 ms | predict p99 ms | batch sentences/s |\n| --- | ---: | ---: | ---: |")
    for name, p50, p99, rate in rows:
        print(f"| {name} | {p50:.3f} | {p99:.3f} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
