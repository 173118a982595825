"""Dataset preparation (outcomes -> train/val JSONL + manifest) and labelled-file reading."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from intentflow.augment import Augmented, Row, augment_outcomes
from intentflow.config import PrepareConfig
from intentflow.errors import IntentflowError, Problem, ValidationFailed, display_path
from intentflow.fileio import write_json, write_jsonl
from intentflow.jsonfiles import MAX_LINE_BYTES, JsonProblem, jsonl_values, parse_json
from intentflow.outcomes import OutcomeSet
from intentflow.split import Split, split_rows

logger = logging.getLogger(__name__)

TRAIN_FILE = "train.jsonl"
VAL_FILE = "val.jsonl"
MANIFEST_FILE = "manifest.json"
MAX_LABELLED_ROWS = 2_000_000


@dataclass(frozen=True)
class PreparedData:
    train: tuple[Row, ...]
    val: tuple[Row, ...]
    manifest: dict[str, Any]


def build_manifest(outcomes: OutcomeSet, config: PrepareConfig, augmented: Augmented, split: Split) -> dict[str, Any]:
    """What a prepared data set is made of: counts per label, seed, and the outcome-content hash."""
    return {
        "outcome_hash": outcomes.content_hash,
        "outcomes_folder": str(outcomes.folder),
        "prepare": config.model_dump(),
        "rows": {"train": len(split.train), "val": len(split.val)},
        "labels": {
            label: {**counts, "synthetic_made": augmented.made.get(label, 0)}
            for label, counts in split.per_label.items()
        },
        "shortfalls": augmented.shortfalls,
        "leaky_labels": list(split.leaky_labels),
        "out_of_scope": list(outcomes.out_of_scope),
    }


def prepare_data(outcomes: OutcomeSet, config: PrepareConfig) -> PreparedData:
    """Augment and split in memory; ``write_prepared`` puts the result on disk."""
    augmented = augment_outcomes(outcomes, config.augment_factor, config.seed)
    split = split_rows(augmented.rows, config.train_fraction, config.min_val_per_label, config.seed,
                       outcomes.teach_hints, outcomes.out_of_scope)
    return PreparedData(split.train, split.val, build_manifest(outcomes, config, augmented, split))


def write_prepared(data: PreparedData, out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    write_jsonl(out_dir / TRAIN_FILE, (row.to_dict() for row in data.train))
    write_jsonl(out_dir / VAL_FILE, (row.to_dict() for row in data.val))
    write_json(out_dir / MANIFEST_FILE, data.manifest)
    return out_dir


def read_prepared(data_dir: str | Path) -> PreparedData:
    """Read what ``prepare`` wrote; every row is checked, and a missing file says how to make it."""
    data_dir = Path(data_dir)
    for name in (TRAIN_FILE, VAL_FILE, MANIFEST_FILE):
        if not (data_dir / name).is_file():
            raise IntentflowError(f"{display_path(data_dir / name)} does not exist "
                                  f"(fix: run `intentflow prepare --out {display_path(data_dir)}` first)")
    manifest_path = data_dir / MANIFEST_FILE
    try:
        manifest = parse_json(manifest_path.read_text(encoding="utf-8"))
    except (JsonProblem, UnicodeDecodeError) as error:
        raise IntentflowError(f"{display_path(manifest_path)} is not valid JSON: {error} "
                              "(fix: run `intentflow prepare` again)") from None
    if not isinstance(manifest, dict):
        raise IntentflowError(f"{display_path(manifest_path)} is not a JSON object "
                              "(fix: run `intentflow prepare` again)")
    train = _rows(data_dir / TRAIN_FILE)
    val = _rows(data_dir / VAL_FILE)
    return PreparedData(tuple(train), tuple(val), manifest)


def _rows(path: Path) -> list[Row]:
    texts, labels, records = read_labelled(path, extra_fields=True)
    return [
        Row(text, label, str(record.get("original", text)), bool(record.get("synthetic", False)))
        for text, label, record in zip(texts, labels, records, strict=True)
    ]


def read_labelled(path: str | Path, extra_fields: bool = False,
                  line_numbers: list[int] | None = None) -> tuple[list[str], list[str], list[dict]]:
    """Read ``{"text": ..., "label": ...}`` per line; every bad line is reported with its number. ``line_numbers``,
    when given, receives the file line of each row returned (blank lines are skipped)."""
    path = Path(path)
    shown = display_path(path)
    if not path.exists():
        raise ValidationFailed([Problem(shown, "", "the file does not exist", "pass an existing JSONL file")])
    if not path.is_file():
        raise ValidationFailed([Problem(shown, "", "is not a regular file", "pass a JSONL file")])
    problems: list[Problem] = []
    texts: list[str] = []
    labels: list[str] = []
    records: list[dict] = []
    try:
        with path.open("rb") as stream:
            for number, value in jsonl_values(stream, MAX_LINE_BYTES):
                if len(texts) >= MAX_LABELLED_ROWS:
                    problems.append(Problem(shown, f"line {number}", f"more than {MAX_LABELLED_ROWS:,} rows",
                                            "split the file"))
                    break
                record = _record(value, shown, number, problems)
                if record is not None:
                    texts.append(" ".join(record["text"].split()))
                    labels.append(record["label"])
                    if line_numbers is not None:
                        line_numbers.append(number)
                    if extra_fields:
                        records.append(record)
                if len(problems) >= 50:
                    break
    except OSError as error:
        raise ValidationFailed([Problem(shown, "", f"cannot be read ({error.strerror})",
                                        "check the file's permissions")]) from None
    if not problems and not texts:
        problems.append(Problem(shown, "", "holds no rows", 'write one {"text": ..., "label": ...} per line'))
    if problems:
        raise ValidationFailed(problems)
    return texts, labels, records


def _record(record: Any, shown: str, number: int, problems: list[Problem]) -> dict | None:
    where = f"line {number}"
    if isinstance(record, JsonProblem):
        problems.append(Problem(shown, record.where, record.message, record.fix))
        return None
    if not isinstance(record, dict):
        problems.append(Problem(shown, where, "expected a JSON object", 'write {"text": ..., "label": ...}'))
        return None
    for key in ("text", "label"):
        value = record.get(key)
        if not isinstance(value, str) or not value.strip():
            problems.append(Problem(shown, f"{where} {key}", "missing, blank or not a string",
                                    f'give "{key}" a non-blank string'))
            return None
    return record
