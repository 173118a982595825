"""The golden set: labelled real utterances (``config/evaluation/*.jsonl``, beside
``config/outcomes``) that no model ever trains on.

Each line is ``{"text": ..., "label": ...}``; the label is an outcome's name or an out-of-scope label (``oos``,
``out_of_scope`` or the model's unknown label): a sentence the assistant must refuse. Validation refuses a sentence
that is also an outcome's example or teach hint, so the set stays unseen; ``intentflow teach`` writes only to the
outcome files. The gate holds the served model to it (``intentflow.gate``); ``intentflow evaluate`` scores it.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from intentflow.dataset import read_labelled
from intentflow.errors import Problem, ValidationFailed, display_path, quote
from intentflow.evaluate import OOS_LABELS, Evaluation, evaluate_model
from intentflow.inference import Classifier
from intentflow.outcomes import OutcomeSet, normalise_text

# Where the golden set lives unless named: the folder ``evaluation`` beside the outcomes folder (config/evaluation
# beside config/outcomes), so each set of outcomes carries its own.
GOLDEN_FOLDER_NAME = "evaluation"


def golden_folder(outcomes: str | Path, given: str | Path | None = None) -> Path:
    """``given``, or the ``evaluation`` folder beside ``outcomes``."""
    return Path(given) if given else Path(outcomes).parent / GOLDEN_FOLDER_NAME


@dataclass(frozen=True)
class GoldenSet:
    texts: tuple[str, ...]
    labels: tuple[str, ...]
    # The file each row came from, and its line there.
    files: tuple[str, ...] = ()
    lines: tuple[int, ...] = ()
    folder: str = ""
    oos_labels: tuple[str, ...] = field(default=OOS_LABELS)

    def evaluate(self, classifier: Classifier) -> Evaluation:
        return evaluate_model(classifier, list(self.texts), list(self.labels), oos_labels=self.oos_labels)

    def restricted_to(self, outcomes: Collection[str]) -> GoldenSet:
        """The rows of ``outcomes`` and the out-of-scope rows."""
        keep = [index for index, label in enumerate(self.labels) if label in outcomes or label in self.oos_labels]
        pick = lambda values: tuple(values[i] for i in keep) if values else ()  # noqa: E731
        return GoldenSet(pick(self.texts), pick(self.labels), pick(self.files), pick(self.lines), self.folder,
                         self.oos_labels)

    def to_dict(self) -> dict[str, object]:
        return {"folder": self.folder, "rows": len(self.texts),
                "out_of_scope": sum(label in self.oos_labels for label in self.labels)}


def load_golden(folder: str | Path, outcomes: OutcomeSet | None = None,
                unknown_label: str = "unknown") -> GoldenSet | None:
    """The ``*.jsonl`` files of ``folder`` as one golden set, or None when the folder is absent or holds none.

    With ``outcomes``, every label must name one of them or be out of scope, and no sentence may be an outcome's
    example or teach hint; every problem is reported at once (``ValidationFailed``), naming both files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    paths = sorted(path for path in folder.iterdir() if path.suffix == ".jsonl" and not path.name.startswith("."))
    if not paths:
        return None
    oos_labels = tuple(dict.fromkeys([*OOS_LABELS, unknown_label]))
    texts: list[str] = []
    labels: list[str] = []
    files: list[str] = []
    lines: list[int] = []
    problems: list[Problem] = []
    for path in paths:
        try:
            file_texts, file_labels, _ = read_labelled(path, line_numbers=lines)
        except ValidationFailed as error:
            problems += error.problems
            continue
        texts += file_texts
        labels += file_labels
        files += [display_path(path)] * len(file_texts)
    if outcomes is not None and not problems:
        problems = _check_against(outcomes, texts, labels, files, lines, oos_labels)
    if problems:
        raise ValidationFailed(problems)
    return GoldenSet(tuple(texts), tuple(labels), tuple(files), tuple(lines), display_path(folder), oos_labels)


def _check_against(outcomes: OutcomeSet, texts: list[str], labels: list[str], files: list[str], lines: list[int],
                   oos_labels: tuple[str, ...]) -> list[Problem]:
    where: dict[str, tuple[str, str]] = {}
    for outcome in outcomes.outcomes:
        source = display_path(outcome.source) if outcome.source is not None else f"{outcome.name}.json"
        for key, items in (("examples", outcome.examples), ("teach_hints", outcome.teach_hints)):
            for index, text in enumerate(items):
                where.setdefault(normalise_text(text), (source, f"{key}[{index}]"))
    known = set(outcomes.labels)
    problems = []
    seen: dict[tuple[str, str], int] = {}
    for index, (text, label) in enumerate(zip(texts, labels, strict=True)):
        line = f"line {lines[index]}"
        if label not in known and label not in oos_labels:
            problems.append(Problem(files[index], f"{line}: label", f"{quote(label)} is neither an outcome nor an "
                                    f"out-of-scope label", f"use one of the outcome names or {oos_labels[0]!r}"))
        key = normalise_text(text)
        if key in where:
            source, field_path = where[key]
            problems.append(Problem(files[index], f"{line}: text", f"{quote(text)} is also {source} {field_path}; "
                                    "a golden sentence must be one no model trains on",
                                    f"remove it from {files[index]} or from {source}"))
        if (key, files[index]) in seen:
            problems.append(Problem(files[index], f"{line}: text", f"{quote(text)} repeats line "
                                    f"{seen[(key, files[index])]}", "remove the repeated line"))
        seen.setdefault((key, files[index]), lines[index])
    return problems
