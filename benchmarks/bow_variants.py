"""Bag-of-words variants on CLINC150 10-shot, scored on val.jsonl: where the few-shot bow gap is (issue 5).

    python benchmarks/bow_variants.py                       # every variant, seed 0
    python benchmarks/bow_variants.py --seeds 0 1 --variants unigrams chars

An exploration, not the product: it trains with ``intentflow.train.train_model`` directly (config/training.toml's
[train], no OOS threshold) on k utterances per intent, and scores the best epoch on val.jsonl. The ``chars``
variants set ``char_ngrams = 5`` (character n-grams of 2-5 characters inside "<word>", as fastText makes them);
``word pairs`` set ``word_ngrams = 2``; the others ``word_ngrams = 1``.

- ``hold out``: one utterance per intent validates (early stopping), as the flow's split does; the others train.
- ``refit``: every utterance trains, for a fixed number of epochs (about the held-out run's best epoch).
- ``augment N``: the training utterances augmented as the flow does (no synonyms in CLINC150, so the paraphrases
  are word drops, insertions and swaps).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from common import command, machine, stamp  # noqa: I001 - sets sys.path for intentflow

import intentflow.train as training
from intentflow.augment import augment_outcomes
from intentflow.config import load_settings
from intentflow.outcomes import Outcome, OutcomeSet

DATA = Path("/work/shared/benchmarks/clinc150")
SHOTS = 10
CHARS = 5

VARIANTS: dict[str, dict[str, Any]] = {
    "unigrams": {},
    "unigrams + word pairs": {"word_ngrams": 2},
    "unigrams + chars": {"char_ngrams": CHARS},
    "unigrams + word pairs + chars": {"word_ngrams": 2, "char_ngrams": CHARS},
    "unigrams, augment 50": {"augment": 50},
    "unigrams, augment 500 (the flow's default)": {"augment": 500},
    "unigrams, refit 20 epochs": {"refit": 20},
    "unigrams + chars, refit 10 epochs": {"char_ngrams": CHARS, "refit": 10},
}


def read_jsonl(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def draw_shots(train: list[dict[str, str]], seed: int) -> dict[str, list[str]]:
    by_intent: dict[str, set[str]] = defaultdict(set)
    for record in train:
        by_intent[record["label"]].add(record["text"])
    rng = random.Random(seed)
    return {intent: rng.sample(sorted(texts), SHOTS) for intent, texts in sorted(by_intent.items())}


def run(variant: dict[str, Any], seed: int, train: list[dict[str, str]], val: list[dict[str, str]]) -> dict[str, Any]:
    shots = draw_shots(train, seed)
    settings = load_settings(Path(__file__).resolve().parents[1] / "config" / "training.toml")
    refit = variant.get("refit")
    config = settings.train.model_copy(update={"featurizer": "bow", "oos_threshold": "off",
                                               "char_ngrams": variant.get("char_ngrams", 0),
                                               "word_ngrams": variant.get("word_ngrams", 1),
                                               **({"epochs": refit} if refit else {})})
    # One utterance per intent held out to validate, unless refitting on all of them.
    held = [] if refit else [(texts[0], intent) for intent, texts in shots.items()]
    kept = [(text, intent) for intent, texts in shots.items() for text in texts if (text, intent) not in held]
    texts, labels = [text for text, _ in kept], [intent for _, intent in kept]
    val_texts, val_labels = [text for text, _ in held], [intent for _, intent in held]
    if variant.get("augment"):
        outcomes = OutcomeSet(folder=Path("."), outcomes=tuple(
            Outcome(name=intent, examples=tuple(t for t, label in zip(texts, labels, strict=True) if label == intent))
            for intent in shots))
        rows = augment_outcomes(outcomes, variant["augment"], seed).rows
        texts, labels = [row.text for row in rows], [row.label for row in rows]
    started = time.perf_counter()
    model = training.train_model(texts, labels, val_texts, val_labels, config)
    seconds = time.perf_counter() - started
    with torch.no_grad():
        predicted = model.model(*model.vocab.encode([record["text"] for record in val])).argmax(dim=1)
    accuracy = sum(model.labels[index] == record["label"]
                   for index, record in zip(predicted.tolist(), val, strict=True)) / len(val)
    return {"accuracy": accuracy, "seconds": seconds, "features": len(model.vocab) - 1, "best_epoch": model.best_epoch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS),
                        help=f"any of: {', '.join(VARIANTS)} (a unique prefix will do)")
    args = parser.parse_args()
    train, val = read_jsonl(args.data / "train.jsonl"), read_jsonl(args.data / "val.jsonl")
    chosen = [next(name for name in VARIANTS if name.startswith(prefix)) for prefix in args.variants]
    print(f"machine: {machine()}\ndate: {stamp()}\ncommand: {command()}\n")
    print("| variant | seed | val accuracy | features | best epoch | train s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in chosen:
        for seed in args.seeds:
            result = run(VARIANTS[name], seed, train, val)
            print(f"| {name} | {seed} | {result['accuracy']:.2%} | {result['features']} | {result['best_epoch']} "
                  f"| {result['seconds']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
