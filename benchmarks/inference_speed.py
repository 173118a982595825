"""Inference speed: one-sentence `predict` latency (p50, p99) and batch throughput, PyTorch and ONNX Runtime, for the
default embeddings model and the default bag-of-words model, on the same machine in one run.

    python benchmarks/inference_speed.py [--checkpoint PATH ...] [--threads 2]

Without --checkpoint it trains both on the bundled outcomes with `TrainConfig()`'s defaults, briefly (speed does not
depend on how well they are trained): the embeddings model is all-MiniLM-L6-v2 with layer 4's mean beside the
sentence vector and five merged heads, its encoder not fine-tuned (fine-tuning changes its weights, not its cost);
the bag-of-words model one hidden layer of 512 over words, word pairs and character n-grams. Sentences are
CLINC150's test sentences (../shared/benchmarks/clinc150, else the bundled outcomes' validation rows). Batch
sentences are distinct: each timed pass numbers its sentences afresh, so no cache of sentences or words has seen
them. ONNX Runtime runs the float32 export and, for embeddings, the int8 one (`export-onnx --int8`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import ROOT, command, git_revision, machine, playbook_data, stamp  # noqa: I001 - sets sys.path

from intentflow.checkpoint import build_payload, load_checkpoint, save_checkpoint
from intentflow.config import TrainConfig
from intentflow.inference import Classifier
from intentflow.train import train_model

CLINC_TEST = ROOT.parent / "shared" / "benchmarks" / "clinc150" / "test.jsonl"
# Per model kind: single predict calls timed, and sentences per timed batch (an embeddings model is ~1,000x slower).
CALLS = {"bow": 5000, "embeddings": 1000}
SENTENCES = {"bow": 100_000, "embeddings": 2000}


def latency(predict, texts: list[str], calls: int) -> tuple[float, float]:
    for text in texts[:min(500, calls // 2)]:
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
    predict_batch(fresh(min(5000, sentences)))
    best = 0.0
    for _ in range(3):
        batch = fresh(sentences)
        start = time.perf_counter()
        predict_batch(batch)
        best = max(best, sentences / (time.perf_counter() - start))
    return best


def measure(checkpoint: Path, kind: str, texts: list[str], threads: int, scratch: Path) -> list[tuple]:
    calls, sentences = CALLS[kind], SENTENCES[kind]
    rows = []
    precisions = ("float32", "bfloat16") if kind == "bow" else ("float32",)  # bfloat16 touches the head only
    for precision in precisions:
        classifier = Classifier.load(checkpoint, precision=precision)
        p50, p99 = latency(classifier.predict, texts, calls)
        rows.append((f"PyTorch {precision}", p50, p99, throughput(classifier.predict_batch, texts, sentences)))
    try:
        from intentflow.onnx_export import export_onnx
        from intentflow.onnx_serving import OnnxClassifier

        for int8 in (False, True) if kind == "embeddings" else (False,):
            path = export_onnx(checkpoint, scratch / f"{checkpoint.stem}{'-int8' if int8 else ''}.onnx", int8=int8)
            onnx = OnnxClassifier.load(path, threads=threads)
            p50, p99 = latency(onnx.predict, texts, calls)
            rows.append((f"ONNX Runtime {'int8' if int8 else 'float32'}, {threads} threads", p50, p99,
                         throughput(onnx.predict_batch, texts, sentences)))
    except Exception as error:  # noqa: BLE001 - the extra is optional; say why its rows are missing
        print(f"ONNX Runtime rows skipped: {error}")
    return rows


def train_defaults(folder: Path) -> dict[str, Path]:
    train, val = playbook_data()
    models = {}
    for kind, changes in (("embeddings", {"finetune_epochs": 0, "epochs": 5}), ("bow", {"epochs": 3})):
        config = TrainConfig(featurizer=kind).model_copy(update={"patience": 0, "device": "cpu", **changes})
        rows = train if kind == "bow" else [row for row in train if not row.synthetic]
        trained = train_model([r.text for r in rows], [r.label for r in rows], [r.text for r in val],
                              [r.label for r in val], config)
        models[kind] = save_checkpoint(build_payload(trained, outcome_hash="", prepare={}, val_texts=[],
                                                     val_labels=[]), folder / f"{kind}.pt")
    return models


def sentences() -> list[str]:
    if CLINC_TEST.is_file():
        return [json.loads(line)["text"] for line in CLINC_TEST.read_text(encoding="utf-8").splitlines()
                if line.strip()]
    return [row.text for row in playbook_data()[1]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, action="append", default=[],
                        help="a checkpoint to measure instead of the two trained defaults (repeat for more)")
    parser.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads")
    parser.add_argument("--embeddings-calls", type=int, default=CALLS["embeddings"])
    parser.add_argument("--embeddings-sentences", type=int, default=SENTENCES["embeddings"])
    args = parser.parse_args()
    CALLS["embeddings"], SENTENCES["embeddings"] = args.embeddings_calls, args.embeddings_sentences
    torch.set_num_threads(args.threads)
    texts = sentences()
    started, load = stamp(), os.getloadavg()
    tables = []
    with tempfile.TemporaryDirectory() as scratch:
        models = {path.name: path for path in args.checkpoint} or train_defaults(Path(scratch))
        for name, checkpoint in models.items():
            kind = load_checkpoint(checkpoint)["config"].get("featurizer", "bow")
            loaded = Classifier.load(checkpoint)
            size = f"{len(loaded.vocab):,} features" if kind == "bow" else f"encoder {loaded.encoder.name}"
            tables.append((f"{name} ({kind}, {size}, {len(loaded.labels)} outcomes)",
                           measure(checkpoint, kind, texts, args.threads, Path(scratch))))
    print(f"machine: {machine()}\ncommit: {git_revision()}\ndate: {started} to {stamp()}\ncommand: {command()}\n"
          f"load average (1, 5, 15 min) at the start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, at the end "
          f"{' '.join(f'{value:.2f}' for value in os.getloadavg())}\nsentences: "
          f"{'CLINC150 test.jsonl' if CLINC_TEST.is_file() else 'the bundled validation rows'}")
    print("\n| model | runtime | predict p50 ms | predict p99 ms | batch sentences/s |\n"
          "| --- | --- | ---: | ---: | ---: |")
    for name, rows in tables:
        for runtime, p50, p99, rate in rows:
            print(f"| {name} | {runtime} | {p50:.3f} | {p99:.3f} | {rate:,.0f} |")
    print("\nlatency: " + ", ".join(f"{kind} {calls:,} single predict calls" for kind, calls in CALLS.items())
          + "; batches: " + ", ".join(f"{kind} {count:,} distinct sentences, best of 3"
                                       for kind, count in SENTENCES.items()))


if __name__ == "__main__":
    main()
