"""Augmentation: originals -> hundreds of unique, labelled paraphrases per outcome."""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass

from intentflow.features import tokenize
from intentflow.outcomes import Outcome, OutcomeSet, phrase_pattern

logger = logging.getLogger(__name__)

# Sampling stops after this many draws per requested sentence, so a small outcome whose
# variants run out ends quickly instead of looping; what was made is reported.
DRAWS_PER_SENTENCE = 25
MIN_MISSES = 500
MISSES_PER_ORIGINAL = 100
_TRAILING_PUNCTUATION = re.compile(r"[\s.!?]+$")
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


@dataclass(frozen=True)
class Row:
    """One labelled sentence and the original utterance it was derived from."""

    text: str
    label: str
    original: str
    synthetic: bool
    # A paraphrase with a word inserted from other originals of its outcome: those originals (any one of them
    # holds the word). The split keeps such a row only on the side of one of them, so no held-out original's
    # words reach training inside another's paraphrases. Empty: nothing borrowed.
    borrowed: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {"text": self.text, "label": self.label, "original": self.original, "synthetic": self.synthetic}


@dataclass(frozen=True)
class Augmented:
    """Every row made, and for each outcome how many synthetic sentences it got."""

    rows: tuple[Row, ...]
    made: dict[str, int]
    requested: int

    @property
    def shortfalls(self) -> dict[str, int]:
        return {label: made for label, made in self.made.items() if made < self.requested}


def augment_outcomes(outcomes: OutcomeSet, augment_factor: int, seed: int) -> Augmented:
    """Originals of every outcome plus up to ``augment_factor`` unique synthetic sentences each.

    Deterministic for a seed. A synthetic sentence reads, word for word, like no sentence derived from
    another original (of any outcome): otherwise the same features could sit on both sides of the split,
    or carry two labels.
    """
    owner: dict[tuple[str, ...], tuple[str, str]] = {}
    for outcome in outcomes.outcomes:
        for text in outcome.originals:
            owner.setdefault(word_key(text), (outcome.name, text))
    rows: list[Row] = []
    made: dict[str, int] = {}
    for outcome in outcomes.outcomes:
        rows.extend(Row(text, outcome.name, text, False) for text in outcome.originals)
        synthetic = _paraphrase(outcome, augment_factor, random.Random(f"{seed}:{outcome.name}"), owner)
        rows.extend(synthetic)
        made[outcome.name] = len(synthetic)
        if len(synthetic) < augment_factor:
            logger.warning("outcome %s: made %d unique synthetic sentences of %d asked; add examples or "
                           "synonyms for more variety", outcome.name, len(synthetic), augment_factor)
    return Augmented(rows=tuple(rows), made=made, requested=augment_factor)


def word_key(text: str) -> tuple[str, ...]:
    """The words a bag-of-words model sees, in order: casing and punctuation aside."""
    return tuple(tokenize(text))


def _paraphrase(outcome: Outcome, wanted: int, rng: random.Random,
                owner: dict[tuple[str, ...], tuple[str, str]]) -> list[Row]:
    if wanted <= 0:
        return []
    groups = _synonym_groups(outcome)
    originals = list(outcome.originals)
    synonym_words = {word.lower() for group in groups for phrase in group for word in _WORD.findall(phrase)}
    words_of = {text: {word.lower() for word in _WORD.findall(text)} for text in originals}
    sources: dict[str, list[str]] = {}
    for text in originals:
        for word in sorted(words_of[text]):
            sources.setdefault(word, []).append(text)
    # What an insertion may add to each original: a synonym, or a word of another original of the outcome.
    insertable = {text: sorted((synonym_words | set(sources)) - words_of[text]) for text in originals}
    # Casing and punctuation variants of an original are welcome; the original itself is already a row.
    seen: set[str] = set(originals)
    rows: list[Row] = []
    draws = misses = 0
    # Stop when variety runs out: after many draws in a row that found nothing new, or a hard cap.
    give_up = max(MIN_MISSES, MISSES_PER_ORIGINAL * len(originals))
    while len(rows) < wanted and draws < wanted * DRAWS_PER_SENTENCE and misses < give_up:
        # Round-robin over originals keeps every original's share even, which the split relies on.
        original = originals[draws % len(originals)]
        draws += 1
        misses += 1
        text, inserted = _variant(original, groups, insertable[original], rng)
        if text in seen:
            continue
        key = word_key(text)
        if owner.setdefault(key, (outcome.name, original)) != (outcome.name, original):
            continue
        seen.add(text)
        misses = 0
        borrowed = () if inserted is None or inserted in synonym_words else tuple(sources[inserted])
        rows.append(Row(text, outcome.name, original, True, borrowed))
    return rows


def _synonym_groups(outcome: Outcome) -> list[list[str]]:
    """Each phrase with its alternatives, as interchangeable wordings (either direction)."""
    return [[phrase, *alternatives] for phrase, alternatives in outcome.synonyms.items()]


def _variant(original: str, groups: list[list[str]], vocabulary: list[str],
             rng: random.Random) -> tuple[str, str | None]:
    """A paraphrase of ``original``, and the word it inserted from ``vocabulary`` (None: none)."""
    text = _substitute(original, groups, rng)
    inserted = None
    words = text.split()
    operation = rng.choices(("keep", "swap", "delete", "insert"), weights=(4, 2, 2, 2))[0]
    if operation == "swap" and len(words) >= 2:
        first, second = rng.sample(range(len(words)), 2)
        words[first], words[second] = words[second], words[first]
    elif operation == "delete" and len(words) >= 3:
        del words[rng.randrange(len(words))]
    elif operation == "insert" and vocabulary:
        inserted = rng.choice(vocabulary)
        words.insert(rng.randrange(len(words) + 1), inserted)
    text = " ".join(words)
    casing = rng.choices(("keep", "lower", "capitalise", "upper"), weights=(6, 3, 2, 1))[0]
    if casing == "lower":
        text = text.lower()
    elif casing == "capitalise":
        text = text[:1].upper() + text[1:]
    elif casing == "upper":
        text = text.upper()
    ending = rng.choices(("keep", "", ".", "?", "!"), weights=(5, 3, 2, 2, 1))[0]
    if ending != "keep":
        text = _TRAILING_PUNCTUATION.sub("", text) + ending
    return text, inserted


def _substitute(text: str, groups: list[list[str]], rng: random.Random) -> str:
    """Replace each synonym phrase found in ``text`` by a random wording of its group."""
    for group in groups:
        # Longest wordings first, so "electric bill" wins over "bill".
        for phrase in sorted(group, key=len, reverse=True):
            pattern = phrase_pattern(phrase)
            if pattern.search(text):
                text = pattern.sub(lambda _match, g=group: rng.choice(g), text)
                break
    return text
