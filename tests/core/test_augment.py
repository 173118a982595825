"""Augmentation: deterministic, unique, bounded, substitutes synonyms, never gives a text two labels."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from intentflow.augment import augment_outcomes
from intentflow.outcomes import Outcome, OutcomeSet, normalise_text

from .helpers import BUNDLED_OUTCOMES, REPO


def outcome_set(*outcomes: Outcome) -> OutcomeSet:
    return OutcomeSet(folder=Path("."), outcomes=tuple(sorted(outcomes, key=lambda o: o.name)))


def rows_digest(rows) -> str:
    return hashlib.sha256(json.dumps([row.to_dict() for row in rows]).encode()).hexdigest()


def test_same_seed_same_rows_different_seed_different_rows(bundled_outcomes):
    first = augment_outcomes(bundled_outcomes, 30, seed=7)
    again = augment_outcomes(bundled_outcomes, 30, seed=7)
    other = augment_outcomes(bundled_outcomes, 30, seed=8)

    assert first.rows == again.rows
    assert {r.text for r in first.rows if r.synthetic} != {r.text for r in other.rows if r.synthetic}
    # Originals do not depend on the seed.
    assert [r for r in first.rows if not r.synthetic] == [r for r in other.rows if not r.synthetic]


@pytest.mark.slow  # starts another interpreter
def test_same_seed_same_rows_in_another_interpreter(bundled_outcomes):
    """String hashing is randomised per process; the rows must not depend on it."""
    script = ("import hashlib, json; from intentflow.outcomes import load_outcomes; "
              "from intentflow.augment import augment_outcomes; "
              f"rows = augment_outcomes(load_outcomes({str(BUNDLED_OUTCOMES)!r}), 30, seed=7).rows; "
              "print(hashlib.sha256(json.dumps([r.to_dict() for r in rows]).encode()).hexdigest())")
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(REPO)}
        result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                                timeout=120, check=True)
        digests.add(result.stdout.strip())

    assert digests == {rows_digest(augment_outcomes(bundled_outcomes, 30, seed=7).rows)}


def test_rows_are_unique_bounded_and_traceable(bundled_outcomes):
    factor = 40
    augmented = augment_outcomes(bundled_outcomes, factor, seed=3)

    by_label = defaultdict(list)
    for row in augmented.rows:
        by_label[row.label].append(row)
    assert sorted(by_label) == bundled_outcomes.labels
    for outcome in bundled_outcomes.outcomes:
        rows = by_label[outcome.name]
        texts = [row.text for row in rows]
        assert len(texts) == len(set(texts)), f"{outcome.name} repeats a text"
        originals = [row for row in rows if not row.synthetic]
        synthetic = [row for row in rows if row.synthetic]
        assert [row.text for row in originals] == list(outcome.originals)
        assert all(row.original == row.text for row in originals)
        assert len(synthetic) <= factor
        assert len(synthetic) == augmented.made[outcome.name]
        # Every synthetic row names the original it came from.
        assert {row.original for row in synthetic} <= set(outcome.originals)
    assert augmented.requested == factor


def test_bundled_outcomes_get_every_sentence_asked_for(bundled_outcomes):
    augmented = augment_outcomes(bundled_outcomes, 100, seed=2025)

    assert augmented.shortfalls == {}
    assert set(augmented.made.values()) == {100}


def test_zero_factor_gives_only_originals(bundled_outcomes):
    augmented = augment_outcomes(bundled_outcomes, 0, seed=1)

    assert not any(row.synthetic for row in augmented.rows)
    assert len(augmented.rows) == bundled_outcomes.summary()["originals"]
    assert augmented.shortfalls == {}


def test_tiny_outcome_with_huge_factor_ends_quickly_and_reports_a_shortfall():
    tiny = Outcome(name="greet", examples=("hello there",))
    started = time.perf_counter()

    augmented = augment_outcomes(outcome_set(tiny), 10_000, seed=1)

    elapsed = time.perf_counter() - started
    synthetic = [row for row in augmented.rows if row.synthetic]
    assert elapsed < 15, f"took {elapsed:.1f}s"
    assert 0 < len(synthetic) < 10_000
    assert augmented.shortfalls == {"greet": len(synthetic)}
    assert len({row.text for row in synthetic}) == len(synthetic)


def test_synonyms_are_substituted():
    bill = Outcome(name="pay_bill", examples=("pay the electric bill now", "settle my electric bill"),
                   synonyms={"electric bill": ("power bill", "energy invoice")})

    augmented = augment_outcomes(outcome_set(bill), 60, seed=5)

    synthetic = [normalise_text(row.text) for row in augmented.rows if row.synthetic]
    assert any("power bill" in text for text in synthetic)
    assert any("energy invoice" in text for text in synthetic)


def test_no_text_carries_two_labels_on_the_bundled_outcomes(bundled_outcomes):
    augmented = augment_outcomes(bundled_outcomes, 150, seed=11)

    labels_of = defaultdict(set)
    for row in augmented.rows:
        labels_of[normalise_text(row.text)].add(row.label)
    assert {text: labels for text, labels in labels_of.items() if len(labels) > 1} == {}


def test_no_text_carries_two_labels_when_outcomes_share_every_word():
    """Swapping, deleting and inserting words of one outcome can spell the other's utterances."""
    lights_on = Outcome(name="lights_on", examples=("turn the lights on", "lights on now", "on with the lights"))
    lights_off = Outcome(name="lights_off", examples=("turn the lights off", "lights off now", "off with the lights"),
                         synonyms={"off": ("on",)})
    started = time.perf_counter()

    augmented = augment_outcomes(outcome_set(lights_on, lights_off), 300, seed=4)

    assert time.perf_counter() - started < 15
    labels_of = defaultdict(set)
    for row in augmented.rows:
        labels_of[normalise_text(row.text)].add(row.label)
    assert {text: labels for text, labels in labels_of.items() if len(labels) > 1} == {}
    # Colliding paraphrases are dropped, not whole outcomes.
    counts = Counter(row.label for row in augmented.rows if row.synthetic)
    assert counts["lights_on"] > 0 and counts["lights_off"] > 0
