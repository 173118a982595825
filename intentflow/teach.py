"""Teaching: add utterances users corrected to their outcome's ``teach_hints``, all or nothing.

An application logs a correction as ``{"text": ..., "label": ...}`` when a user says a prediction was wrong.
``teach_utterances`` checks every correction against the outcome files and against each other before it writes
anything, then writes each changed file atomically (temp file + rename, so the outcome watcher sees one finished
file), and puts back the files it already wrote if a later write fails.
"""

from __future__ import annotations

import difflib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from intentflow.errors import IntentflowError, Problem, ValidationFailed, display_path
from intentflow.fileio import write_bytes, write_json
from intentflow.jsonfiles import MAX_LINE_BYTES, JsonProblem, jsonl_values
from intentflow.outcomes import MAX_TEXT_CHARS, NAME_PATTERN, OutcomeSet, load_outcomes, normalise_text, parse_outcome

logger = logging.getLogger(__name__)

# A corrections file bigger than this is not a batch of corrections; it is a data set (use it as outcome files).
MAX_CORRECTIONS = 10_000


@dataclass(frozen=True)
class Correction:
    """One utterance and the outcome it should have been, with where it came from (for messages)."""

    text: str
    label: str
    source: str = "command line"
    where: str = "text"


@dataclass(frozen=True)
class Taught:
    text: str
    label: str
    file: Path
    field: str  # e.g. "teach_hints[3]": where the utterance now is


@dataclass(frozen=True)
class TeachSummary:
    taught: tuple[Taught, ...]
    created: tuple[str, ...] = ()
    files: tuple[Path, ...] = field(default_factory=tuple)

    @property
    def outcomes(self) -> list[str]:
        return sorted({item.label for item in self.taught})


def read_corrections(path: str | Path) -> list[Correction]:
    """``{"text": ..., "label": ...}`` per line (other keys are ignored); every bad line is reported at once.

    Lines are read by ``jsonl_values``, as labelled data is: a line that is not UTF-8, nests too deeply, holds a
    number with thousands of digits, repeats a key or is too long is a problem naming the file and the line.
    """
    path = Path(path)
    shown = display_path(path)
    if not path.exists():
        raise ValidationFailed([Problem(shown, "", "the corrections file does not exist",
                                        'pass a JSONL file with one {"text": ..., "label": ...} per line')])
    if not path.is_file():
        raise ValidationFailed([Problem(shown, "", "is not a regular file",
                                        'pass a JSONL file with one {"text": ..., "label": ...} per line')])
    problems: list[Problem] = []
    corrections: list[Correction] = []
    try:
        with path.open("rb") as stream:
            for number, record in jsonl_values(stream, MAX_LINE_BYTES):
                where = f"line {number}"
                if len(corrections) >= MAX_CORRECTIONS:
                    problems.append(Problem(shown, where, f"more than {MAX_CORRECTIONS:,} corrections",
                                            "teach in smaller batches"))
                    break
                if isinstance(record, JsonProblem):
                    problems.append(Problem(shown, record.where, record.message, record.fix))
                    continue
                if not isinstance(record, dict):
                    problems.append(Problem(shown, where, "expected a JSON object",
                                            'write {"text": ..., "label": ...}'))
                    continue
                wrong = [key for key in ("text", "label") if not isinstance(record.get(key), str)]
                for key in wrong:
                    problems.append(Problem(shown, f"{where} {key}", "missing or not a string",
                                            f'give "{key}" a string value'))
                if not wrong:
                    corrections.append(Correction(record["text"], record["label"], shown, where))
    except OSError as error:
        raise ValidationFailed([Problem(shown, "", f"cannot be read ({error.strerror})",
                                        "check the file's permissions")]) from None
    if not problems and not corrections:
        problems.append(Problem(shown, "", "holds no corrections", 'write one {"text": ..., "label": ...} per line'))
    if problems:
        raise ValidationFailed(problems)
    return corrections


def teach_utterances(folder: str | Path, corrections: Sequence[Correction], create: bool = False) -> TeachSummary:
    """Append each correction's text to its outcome's ``teach_hints``: every file or none.

    Refused, with every problem listed and no file touched: a blank or over-long text, a text the outcome already
    has, a text another outcome has (naming that file and field), the same text twice in the batch, an unknown
    outcome without ``create``, and an outcome name that is not valid (so never a path outside ``folder``).
    With ``create``, an unknown outcome gets a new ``<name>.json`` whose examples are the taught utterances (an
    outcome needs at least one example).
    """
    folder = Path(folder)
    try:
        outcomes = load_outcomes(folder)
    except ValidationFailed as error:
        raise IntentflowError(f"nothing was taught: the outcome files have problems now (fix them first)\n{error}"
                              ) from None
    owners = _owners(outcomes)
    known = {outcome.name: outcome for outcome in outcomes.outcomes}
    problems: list[Problem] = []
    accepted: dict[str, list[Correction]] = {}
    in_batch: dict[str, Correction] = {}
    for correction in corrections:
        text = " ".join(correction.text.split())
        label = correction.label.strip()
        where = (correction.source, correction.where)
        if not text:
            problems.append(Problem(*where, "is blank", "write the utterance to teach"))
            continue
        if len(text) > MAX_TEXT_CHARS:
            problems.append(Problem(*where, f"is {len(text)} characters, over the limit of {MAX_TEXT_CHARS}",
                                    "teach one utterance at a time"))
            continue
        if label not in known:
            problem = _unknown_outcome(label, folder, create, known, correction)
            if problem is not None:
                problems.append(problem)
                continue
        norm = normalise_text(text)
        if norm in owners:
            owner, path, owner_field = owners[norm]
            if owner == label:
                problems.append(Problem(*where, f"'{text}' is already taught: {display_path(path)} {owner_field}",
                                        "nothing to do" if correction.source == "command line"
                                        else "remove the line: the outcome has it already"))
            else:
                problems.append(Problem(*where, f"'{text}' conflicts with {display_path(path)} {owner_field} "
                                        f"(outcome '{owner}')",
                                        f"keep the utterance under one outcome only: remove it from "
                                        f"{display_path(path)} first if '{label}' is right"))
            continue
        if norm in in_batch:
            first = in_batch[norm]
            said = "" if first.label.strip() == label else f", which teaches it as '{first.label.strip()}'"
            problems.append(Problem(*where, f"'{text}' {'conflicts with' if said else 'repeats'} {first.source} "
                                    f"{first.where}{said}", "keep one correction per utterance"))
            continue
        in_batch[norm] = correction
        accepted.setdefault(label, []).append(Correction(text, label, correction.source, correction.where))
    if problems:
        raise ValidationFailed(problems)
    if not accepted:
        raise IntentflowError("nothing to teach (fix: pass an utterance and --outcome, or --file)")

    plan = _plan(folder, known, accepted, problems)
    if problems:
        raise ValidationFailed(problems)
    _write_all(plan)
    taught = tuple(item for _path, _before, _document, items in plan for item in items)
    created = tuple(sorted(label for label in accepted if label not in known))
    for item in taught:
        logger.debug("taught %r to %s (%s %s)", item.text, item.label, display_path(item.file), item.field)
    return TeachSummary(taught=taught, created=created, files=tuple(path for path, *_rest in plan))


def _owners(outcomes: OutcomeSet) -> dict[str, tuple[str, Path, str]]:
    """Each normalised utterance -> (outcome, file, field) that has it."""
    owners: dict[str, tuple[str, Path, str]] = {}
    for outcome in outcomes.outcomes:
        path = outcome.source or outcomes.folder / f"{outcome.name}.json"
        for key, texts in (("examples", outcome.examples), ("teach_hints", outcome.teach_hints)):
            for index, text in enumerate(texts):
                owners.setdefault(normalise_text(text), (outcome.name, path, f"{key}[{index}]"))
    return owners


def _unknown_outcome(label: str, folder: Path, create: bool, known: dict[str, Any],
                     correction: Correction) -> Problem | None:
    where = "outcome" if correction.source == "command line" else f"{correction.where} label"
    if not NAME_PATTERN.fullmatch(label):
        # Also what keeps a name like "../x" or "a/b" from naming a file outside the outcomes folder.
        return Problem(correction.source, where, f"'{label}' is not a valid outcome name",
                       "use lowercase letters, digits and underscores, starting with a letter, at most 64 characters")
    if not create:
        close = difflib.get_close_matches(label, list(known), n=1)
        hint = f"did you mean '{close[0]}'? or " if close else ""
        return Problem(correction.source, where, f"'{label}' is not an outcome in {display_path(folder)}",
                       f"{hint}pass --create to make {display_path(folder / (label + '.json'))}")
    target = folder / f"{label}.json"
    if target.exists() or target.is_symlink():
        return Problem(display_path(target), "", "exists but is not a valid outcome file",
                       "fix or remove it, then teach again")
    return None


def _plan(folder: Path, known: dict[str, Any], accepted: dict[str, list[Correction]],
          problems: list[Problem]) -> list[tuple[Path, bytes | None, dict[str, Any], list[Taught]]]:
    """For each outcome to change: its file, its bytes now (None if new), its new document, what lands where."""
    plan = []
    for label in sorted(accepted):
        texts = [correction.text for correction in accepted[label]]
        if label in known:
            path = known[label].source or folder / f"{label}.json"
            if path.is_symlink():
                problems.append(Problem(display_path(path), "", "is a link; teach writes only regular files",
                                        "replace the link by the file it points to"))
                continue
            before = path.read_bytes()
            document = json.loads(before.decode("utf-8"))
            # Appended in place: the file's other keys keep their content and order.
            hints = list(document.get("teach_hints", []))
            fields = [f"teach_hints[{len(hints) + offset}]" for offset in range(len(texts))]
            document["teach_hints"] = hints + texts
        else:
            path, before = folder / f"{label}.json", None
            if path.resolve().parent != folder.resolve():
                problems.append(Problem(display_path(path), "", "is outside the outcomes folder",
                                        "use a plain outcome name"))
                continue
            document = {"name": label, "examples": texts}
            fields = [f"examples[{index}]" for index in range(len(texts))]
        # The same checks `intentflow validate` makes (e.g. the utterance limits), on the document as it will be.
        _outcome, file_problems, _warnings = parse_outcome(document, display_path(path), stem=label)
        problems.extend(file_problems)
        taught = [Taught(text, label, path, where) for text, where in zip(texts, fields, strict=True)]
        plan.append((path, before, document, taught))
    return plan


def _write_all(plan: list[tuple[Path, bytes | None, dict[str, Any], list[Taught]]]) -> None:
    written: list[tuple[Path, bytes | None]] = []
    try:
        for path, before, document, _taught in plan:
            # Someone may have saved the file since it was read: teaching must not overwrite their edit.
            now = path.read_bytes() if path.exists() else None
            if now != before:
                raise IntentflowError(f"{display_path(path)} changed while teaching (fix: run the command again)")
            write_json(path, document)
            written.append((path, before))
    except BaseException:
        for path, before in reversed(written):
            try:
                if before is None:
                    path.unlink(missing_ok=True)
                else:
                    write_bytes(path, before)
            except (OSError, IntentflowError):
                logger.error("could not restore %s after a failed teach; check it by hand", display_path(path))
        raise
