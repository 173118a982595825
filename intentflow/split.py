"""Split without leakage: every sentence derived from one original lands on the same side."""

from __future__ import annotations

import hashlib
import logging
import math
import random
from collections import Counter, defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field, replace

from intentflow.augment import Row

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    train: tuple[Row, ...]
    val: tuple[Row, ...]
    # Outcomes with a single original, split row by row: their validation sentences are paraphrases
    # of training sentences, so their validation accuracy is optimistic.
    leaky_labels: tuple[str, ...] = ()
    per_label: dict[str, dict[str, int]] = field(default_factory=dict)
    # Outcomes whose examples are things to refuse (``"out_of_scope": true``); see ``intentflow.outcomes``.
    out_of_scope: tuple[str, ...] = ()

    def for_featurizer(self, featurizer: str) -> Split:
        """The rows a model with this featurizer trains and validates on (see ``rows_for_featurizer``)."""
        if featurizer == "bow":
            return self
        return replace(self, train=rows_for_featurizer(self.train, featurizer),
                       val=rows_for_featurizer(self.val, featurizer))


def rows_for_featurizer(rows: tuple[Row, ...] | list[Row], featurizer: str) -> tuple[Row, ...]:
    """All rows for bag-of-words; the originals alone for sentence embeddings.

    Paraphrases teach a bag-of-words model each word in many contexts. A sentence encoder already places a
    paraphrase near its original, so for it they would only add the augmenter's noise (swapped and inserted
    words) and minutes of encoding hundreds of sentences per outcome.
    """
    if featurizer == "bow":
        return tuple(rows)
    return tuple(row for row in rows if not row.synthetic)


def split_rows(rows: tuple[Row, ...] | list[Row], train_fraction: float, min_val_per_label: int,
               seed: int, keep_in_training: Collection[str] = (), out_of_scope: Collection[str] = ()) -> Split:
    """Assign whole groups (an original and its paraphrases) to train or validation, per label.

    Originals in ``keep_in_training`` (the outcomes' teach hints) always train: a correction a user taught is a
    sentence the next model must get right, so it is never held out to validate on.
    """
    pinned = set(keep_in_training)
    by_label: dict[str, dict[str, list[Row]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        by_label[row.label][row.original].append(row)
    train: list[Row] = []
    val: list[Row] = []
    leaky: list[str] = []
    per_label: dict[str, dict[str, int]] = {}
    for label in sorted(by_label):
        groups = by_label[label]
        rng = random.Random(f"{seed}:split:{label}")
        # Taught sentences always train, so they do not grow the share held out: teaching then moves no example
        # production trained on into validation, which would rule out continuing production (incremental.py).
        total = sum(len(group) for original, group in groups.items() if original not in pinned)
        target = max(min_val_per_label, round((1.0 - train_fraction) * total))
        if len(groups) >= 2:
            label_train, label_val = _split_groups(groups, target, min_val_per_label, seed, pinned)
        else:
            leaky.append(label)
            label_train, label_val = _split_single_group(next(iter(groups.values())), target, rng)
            logger.warning("outcome %s has a single original: its validation rows are paraphrases of "
                           "training rows (leaky); add more examples for an honest score", label)
        train.extend(label_train)
        val.extend(label_val)
        per_label[label] = {
            "train": len(label_train),
            "val": len(label_val),
            "train_originals": sum(not row.synthetic for row in label_train),
            "val_originals": sum(not row.synthetic for row in label_val),
        }
    return Split(train=tuple(train), val=tuple(val), leaky_labels=tuple(leaky), per_label=per_label,
                 out_of_scope=tuple(out_of_scope))


def _split_groups(groups: dict[str, list[Row]], target: int, min_val: int, seed: int,
                  pinned: set[str]) -> tuple[list[Row], list[Row]]:
    # A stable order per original, not a shuffle: adding an example moves no other original across the split,
    # so production rarely trained on what the candidate validates on (and the gate excludes it when it did).
    originals = sorted((original for original in groups if original not in pinned),
                       key=lambda original: hashlib.sha256(f"{seed}:{original}".encode()).hexdigest())
    # Try every count of validation groups (at least one group left for training) and keep the one whose
    # size is nearest the target while meeting the minimum, if any count can.
    # Sizes count the rows that stay on their side (see ``_own_side``): with the first ``count`` originals held out,
    # a row of one of them stays once an original it borrowed from is among them too.
    rank = {original: position + 1 for position, original in enumerate(originals)}
    staying_from = Counter(
        max(rank[row.original], min((rank.get(source, math.inf) for source in row.borrowed), default=0))
        for original in originals for row in groups[original])
    best_count, best_key = (1 if originals else 0), None
    size = 0
    for count in range(1, min(len(originals), len(groups) - 1) + 1):
        size += staying_from[count]
        key = (size < min_val, abs(size - target))
        if best_key is None or key < best_key:
            best_count, best_key = count, key
    val_originals = set(originals[:best_count])
    train = [row for original in sorted(groups) if original not in val_originals for row in groups[original]]
    val = [row for original in sorted(groups) if original in val_originals for row in groups[original]]
    return _own_side(train), _own_side(val)


def _own_side(rows: list[Row]) -> list[Row]:
    """``rows`` less the paraphrases that borrowed a word only the other side's originals hold.

    Kept, a training paraphrase would carry a held-out original's words into training, and validation would reward
    memorising them (docs/decisions.md#validation-without-leakage-and-the-gates-threshold); a validation paraphrase
    would be scored on words training taught.
    """
    side = {row.original for row in rows}
    return [row for row in rows if not row.borrowed or any(original in side for original in row.borrowed)]


def _split_single_group(group: list[Row], target: int, rng: random.Random) -> tuple[list[Row], list[Row]]:
    originals = [row for row in group if not row.synthetic]
    synthetic = [row for row in group if row.synthetic]
    rng.shuffle(synthetic)
    count = min(target, max(len(synthetic) - 1, 0))
    return originals + synthetic[count:], synthetic[:count]
