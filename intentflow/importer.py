"""Import labelled utterances (JSONL or CSV) as outcome definition files, one per label."""

from __future__ import annotations

import random
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from intentflow.errors import IntentflowError, Problem, ValidationFailed, display_path
from intentflow.fileio import write_json
from intentflow.jsonfiles import MAX_LINE_BYTES, JsonProblem, jsonl_values
from intentflow.outcomes import MAX_TEXT_CHARS, MAX_UTTERANCES, NAME_PATTERN, normalise_text

_NOT_NAME = re.compile(r"[^a-z0-9]+")
MAX_REPORTED = 50


@dataclass
class ImportSummary:
    written: list[Path] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)  # outcome name -> label as it was in the file
    examples: int = 0
    skipped: list[str] = field(default_factory=list)
    # Rows dropped because their label already had the same sentence (compared as validation compares them:
    # case and spaces aside).
    duplicates: int = 0
    # Sentences found under two or more labels: (text, labels in file order); kept under the first only with
    # ``on_conflict="first"``.
    conflicts: list[tuple[str, list[str]]] = field(default_factory=list)


CONFLICT_POLICIES = ("drop", "first")


def outcome_name(label: str) -> str:
    """A label as a valid outcome name: lower case, runs of other characters as one underscore."""
    ascii_label = unicodedata.normalize("NFKD", label).encode("ascii", "ignore").decode("ascii")
    name = _NOT_NAME.sub("_", ascii_label.casefold()).strip("_")
    if name and not name[0].isalpha():
        name = f"intent_{name}"
    return name[:64].rstrip("_")


def import_outcomes(source: str | Path, out_dir: str | Path, per_label: int | None = None, seed: int = 0,
                    text_column: str = "text", label_column: str = "label", overwrite: bool = False,
                    on_conflict: str = "drop") -> ImportSummary:
    """Write ``<name>.json`` per label with up to ``per_label`` examples, chosen reproducibly for ``seed``.

    A sentence repeated under one label (case and spaces aside, as validation compares) is written once, and the
    repeats counted; a sentence under two labels is reported, and kept under neither (``on_conflict="drop"``) or
    under the first label that has it (``"first"``).
    """
    if on_conflict not in CONFLICT_POLICIES:
        raise IntentflowError(f"on_conflict {on_conflict!r} is not one of {', '.join(CONFLICT_POLICIES)}")
    source, out_dir = Path(source), Path(out_dir)
    problems: list[Problem] = []
    rows = _read_rows(source, text_column, label_column, problems)
    shown = display_path(source)
    summary = ImportSummary()
    by_name: dict[str, dict[str, str]] = defaultdict(dict)  # outcome -> normalised text -> text as first written
    raw_of: dict[str, str] = {}
    owners: dict[str, list[str]] = {}  # normalised text -> outcomes it was found under, in file order
    for number, text, label in rows:
        name = outcome_name(label)
        if not NAME_PATTERN.fullmatch(name or ""):
            problems.append(Problem(shown, f"line {number} {label_column}", f"label {label!r} gives no valid "
                                    "outcome name", "use a label with letters, e.g. 'book_flight'"))
            continue
        if raw_of.setdefault(name, label) != label:
            problems.append(Problem(shown, f"line {number} {label_column}", f"labels {raw_of[name]!r} and {label!r} "
                                    f"both become outcome '{name}'", "rename one of the labels in the file"))
            continue
        text = " ".join(text.split())
        if len(text) > MAX_TEXT_CHARS:
            summary.skipped.append(f"line {number}: longer than {MAX_TEXT_CHARS} characters")
            continue
        norm = normalise_text(text)
        found = owners.setdefault(norm, [])
        if name not in found:
            found.append(name)
        if norm in by_name[name]:
            summary.duplicates += 1
            continue
        by_name[name][norm] = text
    for norm, names in owners.items():
        if len(names) < 2:
            continue
        summary.conflicts.append((by_name[names[0]][norm], [raw_of[name] for name in names]))
        for name in names[1:] if on_conflict == "first" else names:
            del by_name[name][norm]
    if problems:
        shown_problems = problems[:MAX_REPORTED]
        if len(problems) > MAX_REPORTED:
            shown_problems.append(Problem(shown, "", f"{len(problems) - MAX_REPORTED} more problems not shown",
                                          "fix the ones above and run again"))
        raise ValidationFailed(shown_problems)
    by_name = {name: texts for name, texts in by_name.items() if texts}
    targets = {name: out_dir / f"{name}.json" for name in by_name}
    existing = sorted(display_path(path) for path in targets.values() if path.exists())
    if existing and not overwrite:
        raise IntentflowError(f"would overwrite {len(existing)} outcome file(s): {', '.join(existing[:5])}"
                              f"{' ...' if len(existing) > 5 else ''} (fix: pass --overwrite, or another --out)")
    for name in sorted(by_name):
        texts = sorted(by_name[name].values())
        random.Random(f"{seed}:{name}").shuffle(texts)
        chosen = texts[: min(per_label or len(texts), MAX_UTTERANCES)]
        definition = {"name": name, "description": f"imported from {source.name}, label '{raw_of[name]}'",
                      "examples": chosen}
        summary.written.append(write_json(targets[name], definition))
        summary.labels[name] = raw_of[name]
        summary.examples += len(chosen)
    return summary


def _read_rows(source: Path, text_column: str, label_column: str,
               problems: list[Problem]) -> list[tuple[int, str, str]]:
    """Rows that are well formed; what is wrong with the others goes into ``problems``."""
    shown = display_path(source)
    if not source.exists():
        raise ValidationFailed([Problem(shown, "", "the file does not exist", "pass an existing JSONL or CSV file")])
    if not source.is_file():
        raise ValidationFailed([Problem(shown, "", "is not a regular file", "pass a JSONL or CSV file")])
    if source.suffix.lower() == ".csv":
        return _read_csv(source, shown, text_column, label_column, problems)
    rows: list[tuple[int, str, str]] = []
    try:
        with source.open("rb") as stream:
            for number, record in jsonl_values(stream, MAX_LINE_BYTES):
                if isinstance(record, JsonProblem):
                    problems.append(Problem(shown, record.where, record.message, record.fix))
                    continue
                row = _row(record, number, shown, text_column, label_column, problems)
                if row:
                    rows.append(row)
                if len(problems) >= MAX_REPORTED:
                    break
    except OSError as error:
        raise ValidationFailed([Problem(shown, "", f"cannot be read ({error.strerror})",
                                        "check the file's permissions")]) from None
    if not problems and not rows:
        raise ValidationFailed([Problem(shown, "", "holds no rows", f'write one {{"{text_column}": ..., '
                                        f'"{label_column}": ...}} per line')])
    return rows


def _read_csv(source: Path, shown: str, text_column: str, label_column: str,
              problems: list[Problem]) -> list[tuple[int, str, str]]:
    import pandas as pd

    try:
        frame = pd.read_csv(source, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise ValidationFailed([Problem(shown, "", f"is not readable CSV: {str(error).splitlines()[0]}",
                                        "save it as UTF-8 CSV with a header row")]) from None
    missing = [column for column in (text_column, label_column) if column not in frame.columns]
    if missing:
        raise ValidationFailed([Problem(shown, f"column {column}", "is missing from the header",
                                        f"name the columns with --text-column/--label-column "
                                        f"(found: {', '.join(map(str, frame.columns))})") for column in missing])
    rows = []
    for offset, (text, label) in enumerate(zip(frame[text_column], frame[label_column], strict=True)):
        row = _row({text_column: text, label_column: label}, offset + 2, shown, text_column, label_column, problems)
        if row:
            rows.append(row)
    if not rows and not problems:
        raise ValidationFailed([Problem(shown, "", "holds no rows", "add rows under the header")])
    return rows


def _row(record: object, number: int, shown: str, text_column: str, label_column: str,
         problems: list[Problem]) -> tuple[int, str, str] | None:
    if not isinstance(record, dict):
        problems.append(Problem(shown, f"line {number}", "expected a JSON object",
                                f'write {{"{text_column}": ..., "{label_column}": ...}}'))
        return None
    values = []
    for column in (text_column, label_column):
        value = record.get(column)
        if not isinstance(value, str) or not value.strip():
            problems.append(Problem(shown, f"line {number} {column}", "missing, blank or not a string",
                                    f'give "{column}" a non-blank string'))
            return None
        values.append(value.strip())
    return number, values[0], values[1]
