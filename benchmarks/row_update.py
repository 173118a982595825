"""Seconds per epoch with the first layer learning by AdamW over every row, or by Adam on the rows a batch uses.

    python benchmarks/row_update.py [--epochs 2] [--seed 0] [--data ../shared/benchmarks/clinc150]

Two data sets, each trained with both updates for a fixed number of epochs (no early stopping), the project's
default network otherwise: CLINC150's 10 shots per intent (seed as in fewshot.py) augmented x500 as the flow does,
with single words or word pairs (pairs from the shots only), all with character n-grams; and the bundled outcomes
prepared with the playbook's settings. Prints the vocabulary, the bag entries a batch holds, seconds per epoch of
each update, and which one the trainer picks (intentflow.train.ROWS_ONLY_ABOVE).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from bow_variants import DATA, draw_shots, read_jsonl
from common import ROOT, command, machine, playbook_data, stamp  # noqa: I001 - sets sys.path for intentflow

import intentflow.train as training
from intentflow.augment import augment_outcomes
from intentflow.config import load_settings
from intentflow.model import IntentMLP
from intentflow.outcomes import Outcome, OutcomeSet


def clinc_rows(data: Path, seed: int) -> tuple[list, list[str], list[str]]:
    shots = draw_shots(read_jsonl(data / "train.jsonl"), seed)
    outcomes = OutcomeSet(folder=Path("."), outcomes=tuple(
        Outcome(name=intent, examples=tuple(texts)) for intent, texts in shots.items()))
    val = read_jsonl(data / "val.jsonl")
    return list(augment_outcomes(outcomes, 500, seed).rows), [r["text"] for r in val], [r["label"] for r in val]


def seconds_per_epoch(rows: list, val_texts: list[str], val_labels: list[str], word_ngrams: int, epochs: int,
                      rows_only: bool) -> tuple[float, int]:
    training.ROWS_ONLY_ABOVE = 0.0 if rows_only else float("inf")
    config = load_settings(ROOT / "config" / "training.toml").train.model_copy(update={
        "epochs": epochs, "patience": 0, "oos_threshold": "off", "word_ngrams": word_ngrams, "device": "cpu"})
    started = time.perf_counter()
    trained = training.train_model([row.text for row in rows], [row.label for row in rows], val_texts, val_labels,
                                   config, pair_texts=[row.text for row in rows if not row.synthetic])
    return (time.perf_counter() - started) / epochs, len(trained.vocab) - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    threshold = training.ROWS_ONLY_ABOVE
    settings = load_settings(ROOT / "config" / "training.toml")
    print(f"machine: {machine()}\ndate: {stamp()}\ncommand: {command()}\n")
    print("| data | rows | features | bag entries a batch | AdamW s/epoch | row-only Adam s/epoch | trainer picks |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    clinc, val_texts, val_labels = clinc_rows(args.data, args.seed)
    train, val = playbook_data()
    cases = [(f"CLINC150 10-shot seed {args.seed} x500, words", clinc, val_texts, val_labels, 1),
             (f"CLINC150 10-shot seed {args.seed} x500, words + pairs", clinc, val_texts, val_labels, 2),
             ("bundled outcomes x500, words + pairs", train, [r.text for r in val], [r.label for r in val], 2)]
    for name, rows, texts, labels, word_ngrams in cases:
        dense, features = seconds_per_epoch(rows, texts, labels, word_ngrams, args.epochs, rows_only=False)
        lazy, _ = seconds_per_epoch(rows, texts, labels, word_ngrams, args.epochs, rows_only=True)
        training.ROWS_ONLY_ABOVE = threshold
        vocab = training.build_vocabulary([row.text for row in rows], word_ngrams=word_ngrams,
                                          char_ngrams=settings.train.char_ngrams,
                                          pair_texts=[row.text for row in rows if not row.synthetic])
        bags = training._Bags(*vocab.encode_flat([row.text for row in rows]))
        entries = bags.entries_per_row() * settings.train.batch_size
        network = IntentMLP(len(vocab), 2, settings.train.hidden_size, 1, 0.0)
        picks = ("row-only Adam" if training._update_rows_only(network, torch.device("cpu"), bags,
                                                               settings.train.batch_size) else "AdamW")
        print(f"| {name} | {len(rows)} | {features} | {entries:.0f} | {dense:.2f} | {lazy:.2f} | {picks} |",
              flush=True)


if __name__ == "__main__":
    main()
