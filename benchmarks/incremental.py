"""Incremental against full retraining after teaching 20 utterances: time, accuracy, and the taught utterances.

    python benchmarks/incremental.py --sample-seeds 1 2 3  # the bundled outcomes and CLINC150 10-shot
    python benchmarks/incremental.py --datasets sample     # the bundled outcomes only

For each data set: train production in full, teach 20 utterances with ``intentflow.teach``, then retrain both ways
on the same augmented rows and split, with the functions the retrain flow uses (``choose_mode``, then
``train_in_mode``: ``select_incremental_rows`` and ``continue_training``, or ``train_split``), each twice, since the
timings are noisy.

- sample: the bundled ``config/outcomes`` copied to a temporary folder, with 20 hand-written corrections to five
  outcomes. Accuracy is on the validation split (there is no other labelled set for these outcomes).
- clinc: CLINC150 (``--clinc``, default ``/work/shared/benchmarks/clinc150``), 10 training utterances per intent
  drawn with a fixed seed and written as outcome files; the 20 taught utterances are 5 other training utterances of
  each of 4 intents. Accuracy is on ``test.jsonl`` (30 per intent).

Settings are ``config/training.toml``'s ([prepare], [train], [incremental]), so the numbers are the flow's. Times
are of the training stage (augmentation and the split are shared by both modes), wall clock and, in brackets, this
process's CPU time, which other work on the machine disturbs less. ``--sample-seeds`` adds full retrains of the
bundled outcomes with other training seeds: how far accuracy moves by chance there, the yardstick for a difference.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Any

from common import ROOT, command, machine, stamp  # noqa: I001 - sets sys.path for intentflow

from intentflow.augment import augment_outcomes
from intentflow.checkpoint import build_payload
from intentflow.config import Settings, load_settings
from intentflow.evaluate import evaluate_model
from intentflow.fileio import write_json
from intentflow.gate import gate_candidate
from intentflow.incremental import OUTCOMES_KEY, choose_mode, outcome_record, train_in_mode
from intentflow.inference import Classifier, build_model
from intentflow.outcomes import NAME_PATTERN, Outcome, OutcomeSet, load_outcomes, normalise_text
from intentflow.split import Split, split_rows
from intentflow.teach import Correction, teach_utterances
from intentflow.train import train_split

CLINC = Path("/work/shared/benchmarks/clinc150")
SEED = 2025
SHOTS = 10
TAUGHT_INTENTS = 4
TAUGHT_PER_INTENT = 5

# Corrections a user of the bundled outcomes might make: new wordings, most with words production never saw.
SAMPLE_CORRECTIONS = {
    "book_ride": ["book me a cab to the airport", "grab me a car to the stadium", "i need a lift to the office",
                  "get a taxi for tonight at 9"],
    "set_timer": ["countdown 90 seconds", "tea steeping timer 4 minutes", "let me know when 30 minutes have passed",
                  "how long until the timer goes off"],
    "smart_home_lights": ["kill the lights in the den", "make it dimmer in here", "hallway lights to 80 percent",
                          "turn the patio lamp on"],
    "track_package": ["did my order ship yet", "wheres the parcel from ebay", "usps tracking for my return",
                      "when will the couch be delivered"],
    "weather_forecast": ["is it jacket weather", "how windy is it at the beach", "will it be sunny for the picnic",
                         "uv index today"],
}


@dataclass
class Case:
    """One data set: the outcome folder production was trained on, what is taught, and how to score."""

    name: str
    folder: Path
    corrections: list[Correction]
    test: tuple[list[str], list[str]] | None  # (texts, labels); None: score on the validation split


@dataclass
class Measurement:
    mode: str
    repeat: int | str
    seconds: float
    cpu_seconds: float
    epochs: int
    val_accuracy: float
    overall: float
    taught_outcomes: float
    taught_correct: int
    taught_in_train: int
    promoted: bool


def flow_config(settings: Settings) -> dict[str, Any]:
    return {"prepare": settings.prepare.model_dump(), "train": settings.train.model_dump()}


def prepare(folder: Path, settings: Settings) -> tuple[OutcomeSet, Split]:
    outcomes = load_outcomes(folder)
    augmented = augment_outcomes(outcomes, settings.prepare.augment_factor, settings.prepare.seed)
    split = split_rows(augmented.rows, settings.prepare.train_fraction, settings.prepare.min_val_per_label,
                       settings.prepare.seed, outcomes.teach_hints)
    return outcomes, split


def payload_of(trained: Any, outcomes: OutcomeSet, split: Split, settings: Settings, train_originals: list[str],
               training: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint payload the retrain flow builds."""
    return build_payload(trained, outcome_hash=outcomes.content_hash, prepare=settings.prepare.model_dump(),
                         val_texts=[row.text for row in split.val], val_labels=[row.label for row in split.val],
                         val_originals=[row.original for row in split.val], train_originals=train_originals,
                         extra={OUTCOMES_KEY: outcome_record(outcomes), "training": training})


def train_production(folder: Path, settings: Settings) -> dict[str, Any]:
    outcomes, split = prepare(folder, settings)
    trained = train_split(split, settings.train)
    return payload_of(trained, outcomes, split, settings, [row.original for row in split.train], {"mode": "full"})


def retrain(mode: str, outcomes: OutcomeSet, split: Split, production: dict[str, Any],
            settings: Settings) -> tuple[dict[str, Any], float, float]:
    """One retrain's training stage as the flow runs it in ``mode``; the wall and CPU seconds it took."""
    start, cpu_start = time.perf_counter(), time.process_time()
    chosen = choose_mode(mode, outcomes, flow_config(settings), production, split)
    done = train_in_mode(chosen, split, production, settings, "production")
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    payload = payload_of(done.trained, outcomes, split, settings, done.train_originals, done.record)
    return payload, seconds, cpu_seconds


@dataclass
class Scorer:
    """Scores a retrained model the same way for every mode: validation, the scored set, the taught utterances."""

    case: Case
    split: Split
    texts: list[str]
    labels: list[str]
    settings: Settings
    production: Classifier

    def __call__(self, mode: str, repeat: int | str, payload: dict[str, Any], seconds: float = 0.0,
                 cpu_seconds: float = 0.0) -> Measurement:
        classifier = Classifier(*build_model(payload), payload=payload)
        val_texts, val_labels = [row.text for row in self.split.val], [row.label for row in self.split.val]
        val = evaluate_model(classifier, val_texts, val_labels)
        overall = evaluate_model(classifier, self.texts, self.labels)
        taught_labels = {correction.label for correction in self.case.corrections}
        rows = [index for index, label in enumerate(self.labels) if label in taught_labels]
        taught = evaluate_model(classifier, [self.texts[i] for i in rows], [self.labels[i] for i in rows])
        corrections = self.case.corrections
        predicted = classifier.predict_batch([correction.text for correction in corrections])
        train_side = {normalise_text(row.original) for row in self.split.train}
        gate = gate_candidate(val.accuracy, payload["labels"], val_texts, val_labels, self.settings.gate,
                              self.production, "production", candidate=classifier,
                              val_originals=[row.original for row in self.split.val])
        return Measurement(
            mode, repeat, seconds, cpu_seconds, payload["metrics"]["epochs_run"], val.accuracy, overall.accuracy,
            taught.accuracy, sum(p.label == c.label for p, c in zip(predicted, corrections, strict=True)),
            sum(normalise_text(c.text) in train_side for c in corrections), gate.promote)


def measure(case: Case, settings: Settings, repeats: int,
            seeds: list[int]) -> tuple[list[Measurement], dict[str, Any]]:
    production = train_production(case.folder, settings)
    teach_utterances(case.folder, case.corrections)
    start = time.perf_counter()
    outcomes, split = prepare(case.folder, settings)
    prepared = time.perf_counter() - start
    auto = choose_mode("auto", outcomes, flow_config(settings), production, split)
    texts, labels = case.test or ([row.text for row in split.val], [row.label for row in split.val])
    score = Scorer(case, split, texts, labels, settings, Classifier(*build_model(production), payload=production))
    results = [score("production", "", production)]
    for repeat in range(1, repeats + 1):
        for mode in ("full", "incremental"):
            payload, seconds, cpu_seconds = retrain(mode, outcomes, split, production, settings)
            results.append(score(mode, repeat, payload, seconds, cpu_seconds))
    # How far a full retrain's accuracy moves with nothing but its training seed: the yardstick for "within 1 point".
    for seed in seeds:
        payload, seconds, cpu_seconds = retrain("full", outcomes, split, production,
                                                settings.with_overrides(train={"seed": seed}))
        results.append(score("full", f"seed {seed}", payload, seconds, cpu_seconds))
    facts = {"prepare_seconds": prepared, "auto": auto.mode, "reason": auto.reason, "train_rows": len(split.train),
             "scored_on": len(texts)}
    return results, facts


def sample_case(scratch: Path, split_seed: int | None = None) -> Case:
    name = "bundled outcomes (18)" + (f", split seed {split_seed}" if split_seed is not None else "")
    folder = Path(shutil.copytree(ROOT / "config" / "outcomes", scratch / f"sample-{split_seed}"))
    corrections = [Correction(text, label) for label, texts in SAMPLE_CORRECTIONS.items() for text in texts]
    return Case(name, folder, corrections, None)


def clinc_case(scratch: Path, clinc: Path) -> Case:
    """CLINC150 10-shot as outcome files written by intentflow; 20 other utterances of 4 intents to teach."""
    by_intent: dict[str, list[str]] = defaultdict(list)
    for line in (clinc / "train.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        by_intent[record["label"]].append(" ".join(record["text"].split()))
    rng = random.Random(SEED)
    taken: set[str] = set()
    shots: dict[str, list[str]] = {}
    rest: dict[str, list[str]] = {}
    for intent in sorted(by_intent):
        if not NAME_PATTERN.fullmatch(intent):
            raise SystemExit(f"CLINC intent {intent!r} is not a valid outcome name")
        pool = by_intent[intent][:]
        rng.shuffle(pool)
        unique = []
        for text in pool:
            # An utterance under two intents would be a conflict in the outcome files: first come, first kept.
            if normalise_text(text) not in taken:
                taken.add(normalise_text(text))
                unique.append(text)
        shots[intent], rest[intent] = unique[:SHOTS], unique[SHOTS:]
    folder = scratch / "clinc"
    for intent, examples in shots.items():
        write_json(folder / f"{intent}.json", Outcome(name=intent, examples=tuple(examples)).to_dict())
    corrections = [Correction(text, intent) for intent in sorted(rng.sample(sorted(rest), TAUGHT_INTENTS))
                   for text in rest[intent][:TAUGHT_PER_INTENT]]
    test = [json.loads(line) for line in (clinc / "test.jsonl").read_text(encoding="utf-8").splitlines()]
    return Case(f"CLINC150 {SHOTS}-shot ({len(shots)})", folder, corrections,
                ([row["text"] for row in test], [row["label"] for row in test]))


def table(rows: list[tuple[Case, list[Measurement], dict[str, Any]]]) -> str:
    lines = ["| data set | mode | run | train time (CPU) | epochs | speed-up (CPU) | val acc | overall acc "
             "| taught outcomes' acc | taught predicted right | gate |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for case, results, _facts in rows:
        full = {m.repeat: m for m in results if m.mode == "full"}
        for m in results:
            if m.mode == "production":
                lines.append(f"| {case.name} | production, before teaching | | | {m.epochs} | "
                             f"| {m.val_accuracy:.2%} | {m.overall:.2%} | {m.taught_outcomes:.2%} "
                             f"| {m.taught_correct}/{len(case.corrections)} | |")
                continue
            speed = (f"{full[m.repeat].seconds / m.seconds:.1f}x ({full[m.repeat].cpu_seconds / m.cpu_seconds:.1f}x)"
                     if m.mode == "incremental" else "")
            lines.append(f"| {case.name} | {m.mode} | {m.repeat} | {m.seconds:.1f} s ({m.cpu_seconds:.1f} s) "
                         f"| {m.epochs} | {speed} "
                         f"| {m.val_accuracy:.2%} | {m.overall:.2%} | {m.taught_outcomes:.2%} "
                         f"| {m.taught_correct}/{len(case.corrections)} ({m.taught_in_train} in training) "
                         f"| {'promote' if m.promoted else 'reject'} |")
    return "\n".join(lines)


def summary(rows: list[tuple[Case, list[Measurement], dict[str, Any]]]) -> str:
    """Per data set (the bundled outcomes over all split seeds): mean accuracy and speed of each mode."""
    groups: dict[str, list[tuple[int, list[Measurement]]]] = defaultdict(list)
    for case, results, _facts in rows:
        groups[case.name.split(", split seed")[0]].append((len(case.corrections), results))
    lines = ["| data set | runs | mode | mean train time | mean val acc | mean overall acc | taught predicted right "
             "| promoted |", "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, runs in groups.items():
        for mode in ("production", "full", "incremental"):
            # Each split's repeats, not the extra training seeds: those are the yardstick, shown in the table.
            picked = [(taught, m) for taught, results in runs for m in results
                      if m.mode == mode and not str(m.repeat).startswith("seed")]
            if not picked:
                continue
            chosen = [m for _taught, m in picked]
            taught = f"{sum(m.taught_correct for m in chosen)}/{sum(count for count, _m in picked)}"
            lines.append(f"| {name} | {len(chosen)} | {mode} | "
                         f"{'' if mode == 'production' else f'{mean(m.seconds for m in chosen):.1f} s'} "
                         f"| {mean(m.val_accuracy for m in chosen):.2%} | {mean(m.overall for m in chosen):.2%} "
                         f"| {taught} "
                         f"| {'' if mode == 'production' else sum(m.promoted for m in chosen)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", choices=["sample", "clinc"], default=["sample", "clinc"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--clinc", type=Path, default=CLINC)
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "training.toml")
    parser.add_argument("--sample-seeds", type=int, nargs="*", default=[],
                        help="bundled outcomes: also retrain in full with these training seeds (accuracy spread)")
    parser.add_argument("--split-seeds", type=int, nargs="*", default=[],
                        help="bundled outcomes: repeat everything (production, teaching, both retrains) with these "
                             "augmentation and split seeds instead of the config's, so each validates on other "
                             "originals; the summary gives the mean over them")
    args = parser.parse_args()
    # Incremental against full retraining of a bag-of-words model, whatever the file's featurizer.
    settings = load_settings(args.config).with_overrides(train={"featurizer": "bow"})
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for dataset in args.datasets:
            if dataset == "clinc":
                case = clinc_case(Path(scratch), args.clinc)
                rows.append((case, *measure(case, settings, args.repeats, [])))
                continue
            for split_seed in args.split_seeds or [None]:
                chosen = settings if split_seed is None else settings.with_overrides(prepare={"seed": split_seed})
                case = sample_case(Path(scratch), split_seed)
                rows.append((case, *measure(case, chosen, args.repeats, args.sample_seeds)))
    print(f"machine: {machine()}\ndate: {stamp()}\ncommand: {command()}\n")
    print(f"settings: {args.config.name}: prepare {settings.prepare.model_dump()}, incremental "
          f"{settings.incremental.model_dump()}; train as in the file (full: up to {settings.train.epochs} epochs, "
          f"patience {settings.train.patience})\n")
    print(table(rows))
    print()
    print()
    print(summary(rows))
    print()
    for case, _results, facts in rows:
        print(f"- {case.name}: auto mode chose {facts['auto']} ({facts['reason']}); {facts['train_rows']} training "
              f"rows; augment + split {facts['prepare_seconds']:.1f} s (the same in both modes, not in the train "
              f"time); overall accuracy on {facts['scored_on']} sentences")


if __name__ == "__main__":
    main()
