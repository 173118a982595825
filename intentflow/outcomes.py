"""Outcome definition files: load, validate, and hash what users edit in ``config/outcomes``."""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from intentflow.errors import IntentflowError, Problem, ValidationFailed, display_path, field_name, quote
from intentflow.jsonfiles import JsonProblem, parse_json

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
ALLOWED_KEYS = ("name", "description", "examples", "synonyms", "teach_hints", "out_of_scope")
REQUIRED_KEYS = ("name", "examples")
# Limits keep a runaway file from exhausting memory in augmentation; real outcomes are far smaller.
MAX_FILE_BYTES = 2_000_000
MAX_UTTERANCES = 5_000
MAX_TEXT_CHARS = 500
MAX_SYNONYM_PHRASES = 200
MAX_ALTERNATIVES = 50


@dataclass(frozen=True)
class Outcome:
    """One validated outcome definition."""

    name: str
    examples: tuple[str, ...]
    description: str = ""
    synonyms: dict[str, tuple[str, ...]] = field(default_factory=dict)
    teach_hints: tuple[str, ...] = ()
    source: Path | None = field(default=None, compare=False)
    # Its utterances are what the assistant must refuse: a prediction of it is answered with the unknown label.
    out_of_scope: bool = False

    @property
    def originals(self) -> tuple[str, ...]:
        """Human-written utterances: examples first, then what users taught."""
        return self.examples + self.teach_hints

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name}
        if self.description:
            data["description"] = self.description
        data["examples"] = list(self.examples)
        if self.synonyms:
            data["synonyms"] = {phrase: list(alts) for phrase, alts in self.synonyms.items()}
        if self.teach_hints:
            data["teach_hints"] = list(self.teach_hints)
        if self.out_of_scope:
            data["out_of_scope"] = True
        return data


@dataclass(frozen=True)
class OutcomeSet:
    """All outcomes of one folder, in name order, with the hash of their content."""

    folder: Path
    outcomes: tuple[Outcome, ...]
    warnings: tuple[str, ...] = ()

    @property
    def teach_hints(self) -> set[str]:
        """Every outcome's taught utterances, as written."""
        return {hint for outcome in self.outcomes for hint in outcome.teach_hints}

    @property
    def labels(self) -> list[str]:
        return [outcome.name for outcome in self.outcomes]

    @property
    def out_of_scope(self) -> tuple[str, ...]:
        """The outcomes marked ``"out_of_scope": true``: their examples are things to refuse."""
        return tuple(outcome.name for outcome in self.outcomes if outcome.out_of_scope)

    @property
    def content_hash(self) -> str:
        return content_hash(self.outcomes)

    def summary(self) -> dict[str, int]:
        return {
            "outcomes": len(self.outcomes),
            "originals": sum(len(outcome.originals) for outcome in self.outcomes),
            "examples": sum(len(outcome.examples) for outcome in self.outcomes),
            "teach_hints": sum(len(outcome.teach_hints) for outcome in self.outcomes),
            "synonyms": sum(len(outcome.synonyms) for outcome in self.outcomes),
        }


def normalise_text(text: str) -> str:
    """The form two utterances are compared in: case-folded, whitespace collapsed."""
    return " ".join(text.casefold().split())


def content_hash(outcomes: tuple[Outcome, ...] | list[Outcome]) -> str:
    """A hash of what the outcomes mean, not how their files are formatted."""
    canonical = json.dumps(
        [outcome.to_dict() for outcome in sorted(outcomes, key=lambda o: o.name)],
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def load_outcomes(folder: str | Path) -> OutcomeSet:
    """Read and validate every ``*.json`` outcome file in ``folder``.

    Raises ``ValidationFailed`` listing every problem found, not just the first.
    """
    folder = Path(folder)
    shown = display_path(folder)
    if not folder.exists():
        raise ValidationFailed(
            [Problem(shown, "", "the outcomes folder does not exist",
                     "create it with one <name>.json per outcome, or pass --outcomes DIR")]
        )
    if not folder.is_dir():
        raise ValidationFailed(
            [Problem(shown, "", "is not a folder", "pass the folder holding the outcome files")]
        )
    try:
        files = sorted(p for p in folder.iterdir() if p.suffix == ".json" and not p.name.startswith("."))
    except OSError as error:
        raise ValidationFailed([Problem(shown, "", f"cannot be listed ({error.strerror})",
                                        "check the folder's permissions")]) from None
    if not files:
        raise ValidationFailed(
            [Problem(shown, "", "holds no outcome files (*.json)",
                     "add at least one <name>.json outcome definition")]
        )
    problems: list[Problem] = []
    warnings: list[str] = []
    outcomes: list[Outcome] = []
    declared: dict[str, Path] = {}
    for path in files:
        outcome = _load_file(path, folder, problems, warnings, declared)
        if outcome is not None:
            outcomes.append(outcome)
    _check_across_files(outcomes, problems)
    if problems:
        raise ValidationFailed(problems)
    outcomes.sort(key=lambda o: o.name)
    return OutcomeSet(folder=folder, outcomes=tuple(outcomes), warnings=tuple(warnings))


def parse_outcome(data: Any, shown: str, stem: str | None = None) -> tuple[Outcome | None, list[Problem], list[str]]:
    """Validate one decoded outcome document; ``shown`` names it in messages."""
    problems: list[Problem] = []
    warnings: list[str] = []
    if not isinstance(data, dict):
        problems.append(Problem(shown, "(top level)", f"expected a JSON object, found {_type_name(data)}",
                                'write {"name": ..., "examples": [...]}'))
        return None, problems, warnings
    for key in data:
        if key not in ALLOWED_KEYS:
            close = difflib.get_close_matches(str(key), ALLOWED_KEYS, n=1)
            fix = f"did you mean '{close[0]}'?" if close else f"remove it; allowed keys: {', '.join(ALLOWED_KEYS)}"
            problems.append(Problem(shown, field_name(str(key)), "unknown key", fix))
    for key in REQUIRED_KEYS:
        if key not in data:
            problems.append(Problem(shown, key, "required key is missing", f"add \"{key}\""))

    name = data.get("name")
    if "name" in data:
        if not isinstance(name, str):
            problems.append(Problem(shown, "name", f"expected a string, found {_type_name(name)}",
                                    'give a name like "pay_bill"'))
            name = None
        elif not NAME_PATTERN.fullmatch(name):
            problems.append(Problem(
                shown, "name", f"{quote(name)} is not a valid outcome name",
                "use lowercase letters, digits and underscores, starting with a letter, at most 64 characters",
            ))
            name = None
        elif stem is not None and name != stem:
            # Setting the name to the stem is only a fix when the stem is a valid name itself.
            keep_file = f' or set "name": "{stem}"' if NAME_PATTERN.fullmatch(stem) else ""
            problems.append(Problem(shown, "name", f"'{name}' differs from the file name {quote(stem + '.json')}",
                                    f"rename the file to {name}.json{keep_file}"))

    description = data.get("description", "")
    if not isinstance(description, str):
        problems.append(Problem(shown, "description", f"expected a string, found {_type_name(description)}",
                                "write the description as one string, or remove it"))
        description = ""

    out_of_scope = data.get("out_of_scope", False)
    if not isinstance(out_of_scope, bool):
        problems.append(Problem(shown, "out_of_scope", f"expected true or false, found {_type_name(out_of_scope)}",
                                "write true (its examples are things to refuse) or remove the key"))
        out_of_scope = False

    examples = _string_list(data, "examples", shown, problems, required=True)
    teach_hints = _string_list(data, "teach_hints", shown, problems, required=False)
    synonyms = _synonyms(data.get("synonyms", {}), shown, problems)

    seen: dict[str, str] = {}
    for key, texts in (("examples", examples), ("teach_hints", teach_hints)):
        for index, text in enumerate(texts):
            norm = normalise_text(text)
            if norm in seen:
                problems.append(Problem(shown, f"{key}[{index}]", f"{quote(text)} repeats {seen[norm]}",
                                        "remove the repeated utterance"))
            else:
                seen[norm] = f"{key}[{index}]"

    originals = [normalise_text(t) for t in examples + teach_hints]
    for phrase in synonyms:
        pattern = phrase_pattern(phrase)
        if not any(pattern.search(text) for text in originals):
            warnings.append(f"{shown}: synonyms.{field_name(phrase)}: the phrase appears in no example or teach hint, "
                            "so it changes nothing")

    if problems or name is None:
        return None, problems, warnings
    return (
        Outcome(name=name, examples=tuple(examples), description=description, synonyms=synonyms,
                teach_hints=tuple(teach_hints), out_of_scope=out_of_scope),
        problems,
        warnings,
    )


def phrase_pattern(phrase: str) -> re.Pattern[str]:
    """Case-insensitive, word-bounded match of a phrase, tolerant of extra spaces inside it."""
    words = [re.escape(word) for word in phrase.split()]
    return re.compile(r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)", re.IGNORECASE)


def _load_file(path: Path, folder: Path, problems: list[Problem], warnings: list[str],
               declared: dict[str, Path]) -> Outcome | None:
    shown = display_path(path)
    if path.is_symlink():
        try:
            target = path.resolve(strict=True)
        except FileNotFoundError:
            problems.append(Problem(shown, "", "is a link to a file that does not exist",
                                    "replace the link with the JSON file itself"))
            return None
        except (OSError, RuntimeError):  # a loop of links: RuntimeError up to Python 3.12, OSError after
            problems.append(Problem(shown, "", "is a link that cannot be followed (it loops)",
                                    "replace the link with the JSON file itself"))
            return None
        if not target.is_relative_to(folder.resolve()):
            problems.append(Problem(shown, "", "is a link that leads outside the outcomes folder",
                                    "copy the file into the folder instead of linking to it"))
            return None
    raw = _read_bounded(path, shown, problems)
    if raw is None:
        return None
    try:
        # A byte-order mark, as some Windows editors write, is allowed and ignored.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        problems.append(Problem(shown, "", f"is not valid UTF-8 (byte {error.start})",
                                "save the file with UTF-8 encoding"))
        return None
    try:
        data = parse_json(text)
    except JsonProblem as error:
        problems.append(Problem(shown, error.where, error.message, error.fix))
        return None
    name = data.get("name") if isinstance(data, dict) else None
    if isinstance(name, str) and NAME_PATTERN.fullmatch(name):
        # Checked here, before the file-name check, so a copied file names the file that has the name already.
        if name in declared:
            problems.append(Problem(shown, "name", f"'{name}' is also the name in {display_path(declared[name])}",
                                    "give every outcome a unique name (and its file the same stem)"))
            return None
        declared[name] = path
    outcome, file_problems, file_warnings = parse_outcome(data, shown, stem=path.stem)
    problems.extend(file_problems)
    warnings.extend(file_warnings)
    if outcome is None:
        return None
    return replace(outcome, source=path)


def _read_bounded(path: Path, shown: str, problems: list[Problem]) -> bytes | None:
    """The file's bytes, if it is a regular file within the size limit; its size is checked before reading."""
    try:
        # Opened without blocking and checked through the open descriptor: a FIFO or device named *.json is
        # refused, never read, and a file swapped in after a check cannot slip past it.
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as error:
        problems.append(Problem(shown, "", f"cannot be read ({error.strerror})", "check the file's permissions"))
        return None
    info = os.fstat(descriptor)
    if not stat.S_ISREG(info.st_mode):
        os.close(descriptor)
        problems.append(Problem(shown, "", "is not a regular file", "replace it with a JSON file"))
        return None
    if info.st_size > MAX_FILE_BYTES:
        os.close(descriptor)
        problems.append(Problem(shown, "", f"is {info.st_size:,} bytes, over the limit of {MAX_FILE_BYTES:,}",
                                "keep an outcome to its representative utterances; split huge sets"))
        return None
    with os.fdopen(descriptor, "rb") as stream:
        try:
            raw = stream.read(MAX_FILE_BYTES + 1)
        except OSError as error:
            problems.append(Problem(shown, "", f"cannot be read ({error.strerror})", "check the file and the disk"))
            return None
    if len(raw) > MAX_FILE_BYTES:  # it grew after the check
        problems.append(Problem(shown, "", f"is over the limit of {MAX_FILE_BYTES:,} bytes",
                                "keep an outcome to its representative utterances; split huge sets"))
        return None
    return raw


def _check_across_files(outcomes: list[Outcome], problems: list[Problem]) -> None:
    owner: dict[str, tuple[Outcome, str]] = {}
    for outcome in outcomes:
        for key, texts in (("examples", outcome.examples), ("teach_hints", outcome.teach_hints)):
            for index, text in enumerate(texts):
                norm = normalise_text(text)
                if norm in owner and owner[norm][0].name != outcome.name:
                    other, other_field = owner[norm]
                    problems.append(Problem(
                        display_path(outcome.source or Path("?")), f"{key}[{index}]",
                        f"{quote(text)} conflicts with {display_path(other.source or Path('?'))} "
                        f"{other_field} (outcome '{other.name}')",
                        "keep the utterance under one outcome only",
                    ))
                else:
                    owner.setdefault(norm, (outcome, f"{key}[{index}]"))


def _string_list(data: dict, key: str, shown: str, problems: list[Problem], required: bool) -> list[str]:
    if key not in data:
        return []
    value = data[key]
    if not isinstance(value, list):
        problems.append(Problem(shown, key, f"expected a list of strings, found {_type_name(value)}",
                                f'write "{key}": ["an utterance", ...]'))
        return []
    if required and not value:
        problems.append(Problem(shown, key, "is empty", "add at least one example utterance"))
        return []
    if len(value) > MAX_UTTERANCES:
        problems.append(Problem(shown, key, f"has {len(value):,} entries, over the limit of {MAX_UTTERANCES:,}",
                                "keep the most representative utterances; augmentation makes the rest"))
        return []
    texts: list[str] = []
    for index, item in enumerate(value):
        where = f"{key}[{index}]"
        if not isinstance(item, str):
            problems.append(Problem(shown, where, f"expected a string, found {_type_name(item)}",
                                    "write the utterance as a quoted string"))
        elif not item.strip():
            problems.append(Problem(shown, where, "is blank", "write the utterance or remove the entry"))
        elif len(item) > MAX_TEXT_CHARS:
            problems.append(Problem(shown, where, f"is {len(item)} characters, over the limit of {MAX_TEXT_CHARS}",
                                    "shorten it to one utterance"))
        else:
            texts.append(" ".join(item.split()))
    return texts


def _synonyms(value: Any, shown: str, problems: list[Problem]) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict):
        problems.append(Problem(shown, "synonyms", f"expected an object, found {_type_name(value)}",
                                'write "synonyms": {"phrase": ["alternative", ...]}'))
        return {}
    if len(value) > MAX_SYNONYM_PHRASES:
        problems.append(Problem(shown, "synonyms", f"has {len(value)} phrases, over the limit of "
                                f"{MAX_SYNONYM_PHRASES}", "keep the phrases that matter"))
        return {}
    result: dict[str, tuple[str, ...]] = {}
    for phrase, alternatives in value.items():
        where = f"synonyms.{field_name(phrase)}"
        if not phrase.strip():
            problems.append(Problem(shown, "synonyms", "has a blank phrase", "remove the blank key"))
            continue
        if len(phrase) > MAX_TEXT_CHARS:
            problems.append(Problem(shown, where, f"the phrase is {len(phrase)} characters, over the limit of "
                                    f"{MAX_TEXT_CHARS}", "use a short phrase"))
            continue
        if not isinstance(alternatives, list) or not alternatives:
            problems.append(Problem(shown, where, f"expected a non-empty list of strings, found "
                                    f"{_type_name(alternatives)}", f'write "{phrase}": ["alternative", ...]'))
            continue
        if len(alternatives) > MAX_ALTERNATIVES:
            problems.append(Problem(shown, where, f"has {len(alternatives)} alternatives, over the limit of "
                                    f"{MAX_ALTERNATIVES}", "keep the common ones"))
            continue
        clean: list[str] = []
        for index, alternative in enumerate(alternatives):
            if not isinstance(alternative, str):
                problems.append(Problem(shown, f"{where}[{index}]", f"expected a string, found "
                                        f"{_type_name(alternative)}", "write the alternative as a quoted string"))
            elif not alternative.strip():
                problems.append(Problem(shown, f"{where}[{index}]", "is blank", "remove the blank alternative"))
            elif len(alternative) > MAX_TEXT_CHARS:
                problems.append(Problem(shown, f"{where}[{index}]", f"is {len(alternative)} characters, over the "
                                        f"limit of {MAX_TEXT_CHARS}", "use a short alternative wording"))
            elif normalise_text(alternative) == normalise_text(phrase):
                problems.append(Problem(shown, f"{where}[{index}]", "is the phrase itself",
                                        "remove it; list only other wordings"))
            else:
                clean.append(" ".join(alternative.split()))
        result[" ".join(phrase.split())] = tuple(clean)
    return result


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


__all__ = [
    "IntentflowError",
    "Outcome",
    "OutcomeSet",
    "content_hash",
    "load_outcomes",
    "normalise_text",
    "parse_outcome",
    "phrase_pattern",
]
