"""The bad-outcome corpus: what each broken outcome folder must be reported as.

Small cases are committed under ``tests/data/bad_outcomes/<case>/``. Cases that cannot sensibly be committed (50 MB,
100,000 examples, bytes that are not UTF-8, links, a FIFO, a missing folder) are made by ``build_corpus`` at test
time. Every case must fail validation with a message naming the file (or folder), the field when there is one, and
what is wrong.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .flow_helpers import REPO

COMMITTED = REPO / "tests" / "data" / "bad_outcomes"
HUGE_FILE_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True)
class Expect:
    file: str  # the file (or folder) the message names
    field: str  # the field it names; "" for a problem with the whole file or folder
    message: str  # how the problem's message starts
    also: str = ""  # anything else the report must say

    def rendered(self) -> str:
        return f"{self.file}: {self.field}: {self.message}" if self.field else f"{self.file}: {self.message}"

    def missing_from(self, report: str) -> str | None:
        """What ``report`` fails to say, or None. The file must start a path component, not end another name."""
        if not re.search(r"(?:^|[/\s])" + re.escape(self.rendered()), report, re.MULTILINE):
            return f"expected {self.rendered()!r}"
        if self.also and self.also not in report:
            return f"expected {self.also!r}"
        return None


def _bill(field: str, message: str, also: str = "") -> Expect:
    return Expect("pay_bill.json", field, message, also)


# One entry per folder under tests/data/bad_outcomes; a test checks the two never drift apart.
COMMITTED_CASES: dict[str, Expect] = {
    "invalid_json_trailing_comma": _bill("line 3 column 30", "invalid JSON: Expecting value"),
    "truncated_json": _bill("line 1 column 35", "invalid JSON: Unterminated string"),
    "empty_file": _bill("line 1 column 1", "invalid JSON: Expecting value"),
    "whitespace_only_file": _bill("line 3 column 1", "invalid JSON: Expecting value"),
    "top_level_array": _bill("(top level)", "expected a JSON object, found a list"),
    "top_level_null": _bill("(top level)", "expected a JSON object, found null"),
    "top_level_string": _bill("(top level)", "expected a JSON object, found a string"),
    "name_not_a_string": _bill("name", "expected a string, found a number"),
    "name_null": _bill("name", "expected a string, found null"),
    "name_with_dot_dot": _bill("name", "'../../etc/passwd' is not a valid outcome name"),
    "name_with_slash": _bill("name", "'pay/bill' is not a valid outcome name"),
    "name_upper_case": _bill("name", "'Pay_Bill' is not a valid outcome name"),
    "name_too_long": _bill("name", f"'{'p' * 65}' is not a valid outcome name"),
    "stem_differs_from_name": _bill("name", "'pay_bills' differs from the file name 'pay_bill.json'"),
    "file_name_with_dot_dot": Expect("pay..bill.json", "name",
                                     "'pay_bill' differs from the file name 'pay..bill.json'"),
    "duplicate_names": Expect("pay_bill_copy.json", "name", "'pay_bill' is also the name in", also="pay_bill.json"),
    "conflicting_utterances": _bill("examples[1]", "'check the bill' conflicts with",
                                    also="check_weather.json examples[1]"),
    "missing_name": _bill("name", "required key is missing"),
    "missing_examples": _bill("examples", "required key is missing"),
    "misspelt_key": _bill("exampels", "unknown key (fix: did you mean 'examples'?)"),
    "unknown_key": _bill("colour", "unknown key"),
    "blank_key": _bill('""', "unknown key"),
    "examples_a_string": _bill("examples", "expected a list of strings, found a string"),
    "examples_null": _bill("examples", "expected a list of strings, found null"),
    "examples_empty": _bill("examples", "is empty"),
    "numbers_as_examples": _bill("examples[0]", "expected a string, found a number"),
    "nested_list_example": _bill("examples[0]", "expected a string, found a list"),
    "object_as_example": _bill("examples[0]", "expected a string, found an object"),
    "true_as_example": _bill("examples[1]", "expected a string, found true/false"),
    "nan_as_example": _bill("examples[0]", "expected a string, found a number"),
    "blank_example": _bill("examples[1]", "is blank"),
    "blank_teach_hint": _bill("teach_hints[0]", "is blank"),
    "repeated_example": _bill("examples[1]", "'PAY my Bill' repeats examples[0]"),
    "teach_hint_repeats_example": _bill("teach_hints[0]", "'pay my bill' repeats examples[0]"),
    "description_a_number": _bill("description", "expected a string, found a number"),
    "synonyms_a_list": _bill("synonyms", "expected an object, found a list"),
    "synonym_alternatives_a_string": _bill("synonyms.bill", "expected a non-empty list of strings, found a string"),
    "synonym_alternatives_empty": _bill("synonyms.bill", "expected a non-empty list of strings, found a list"),
    "synonym_alternative_blank": _bill("synonyms.bill[0]", "is blank"),
    "synonym_alternative_null": _bill("synonyms.bill[0]", "expected a string, found null"),
    "synonym_alternative_is_the_phrase": _bill("synonyms.bill[0]", "is the phrase itself"),
    "synonym_blank_phrase": _bill("synonyms", "has a blank phrase"),
    # Python's parser would keep the last of two equal keys in silence; only one can count, so it is an error.
    "duplicate_keys": _bill("examples", "is given twice in one object"),
    "duplicate_synonym_phrase": _bill("synonyms.bill", "is given twice in one object"),
    "unpaired_surrogate_escape": _bill("examples[1]", "holds an unpaired surrogate escape"),
    "unpaired_surrogate_in_a_key": _bill("\\udc80", "holds an unpaired surrogate escape"),
    "utterance_too_long": _bill("examples[0]", "is 608 characters, over the limit of 500"),
    "only_hidden_and_other_files": Expect("only_hidden_and_other_files", "", "holds no outcome files (*.json)"),
}

_NOT_UTF8 = b'{"name": "pay_bill", "examples": ["caf\xe9 bill"]}'


def _write(folder: Path, name: str | bytes, content: str | bytes | dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / os.fsdecode(name)
    if isinstance(content, dict):
        content = json.dumps(content)
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def _huge_file(folder: Path) -> None:
    # Sparse: 50 MB by its size, on disk almost nothing. Reading it would still cost 50 MB of memory and more.
    with open(_write(folder, "pay_bill.json", '{"name": "pay_bill", "examples": ["'), "r+b") as stream:
        stream.truncate(HUGE_FILE_BYTES - 3)
        stream.seek(0, os.SEEK_END)
        stream.write(b'"]}')


def _link(folder: Path, name: str, target: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).symlink_to(target)


def _links_outside(folder: Path) -> None:
    _write(folder.parent / "outside_the_folder", "pay_bill.json", {"name": "pay_bill", "examples": ["pay my bill"]})
    _link(folder, "pay_bill.json", "../outside_the_folder/pay_bill.json")


def _loop(folder: Path) -> None:
    _link(folder, "a.json", "b.json")
    _link(folder, "b.json", "a.json")


def _fifo(folder: Path) -> None:
    folder.mkdir(parents=True)
    os.mkfifo(folder / "pay_bill.json")


GENERATED_CASES: dict[str, tuple[Callable[[Path], object], Expect]] = {
    "not_utf8": (lambda folder: _write(folder, "pay_bill.json", _NOT_UTF8),
                 _bill("", f"is not valid UTF-8 (byte {_NOT_UTF8.index(0xE9)})")),
    "utf16_file": (lambda folder: _write(folder, "pay_bill.json", '{"name": "pay_bill"}'.encode("utf-16")),
                   _bill("", "is not valid UTF-8 (byte 0)")),
    # Linux file names are bytes; this one decodes to a lone surrogate, which messages must escape.
    "file_name_not_utf8": (lambda folder: _write(folder, b"pay\xffbill.json", {"name": "pay_bill", "examples": ["x"]}),
                           Expect("pay\\udcffbill.json", "name", "'pay_bill' differs from the file name")),
    "file_of_50_mb": (_huge_file, _bill("", f"is {HUGE_FILE_BYTES:,} bytes, over the limit of 2,000,000")),
    "examples_100000": (lambda folder: _write(folder, "pay_bill.json", {
        "name": "pay_bill", "examples": [f"u{index}" for index in range(100_000)]}),
        _bill("examples", "has 100,000 entries, over the limit of 5,000")),
    "synonym_phrases_201": (lambda folder: _write(folder, "pay_bill.json", {
        "name": "pay_bill", "examples": ["pay my bill"], "synonyms": {f"p{i}": [f"a{i}"] for i in range(201)}}),
        _bill("synonyms", "has 201 phrases, over the limit of 200")),
    "synonym_alternatives_51": (lambda folder: _write(folder, "pay_bill.json", {
        "name": "pay_bill", "examples": ["pay my bill"], "synonyms": {"bill": [f"a{i}" for i in range(51)]}}),
        _bill("synonyms.bill", "has 51 alternatives, over the limit of 50")),
    "problems_5000": (lambda folder: _write(folder, "pay_bill.json", {"name": "pay_bill", "examples": [1] * 5000}),
                      _bill("examples[0]", "expected a string, found a number", also="and 4,900 more")),
    "nested_100000_deep": (lambda folder: _write(folder, "pay_bill.json",
                                                  '{"examples": ' + "[" * 100_000 + "]" * 100_000 + "}"),
                           _bill("", "invalid JSON: nested too deeply")),
    "number_of_5000_digits": (lambda folder: _write(folder, "pay_bill.json", '{"name": ' + "7" * 5000 + "}"),
                              _bill("", "holds a number with thousands of digits")),
    "link_outside_the_folder": (_links_outside, _bill("", "is a link that leads outside the outcomes folder")),
    "link_loop": (_loop, Expect("a.json", "", "is a link that cannot be followed (it loops)")),
    "link_to_nothing": (lambda folder: _link(folder, "pay_bill.json", "nowhere.json"),
                        _bill("", "is a link to a file that does not exist")),
    "fifo": (_fifo, _bill("", "is not a regular file")),
    "folder_named_json": (lambda folder: (folder / "pay_bill.json").mkdir(parents=True),
                          _bill("", "is not a regular file")),
    "empty_folder": (lambda folder: folder.mkdir(), Expect("empty_folder", "", "holds no outcome files (*.json)")),
    "missing_folder": (lambda folder: None, Expect("missing_folder", "", "the outcomes folder does not exist")),
    "outcomes_is_a_file": (lambda folder: folder.write_text("{}", encoding="utf-8"),
                           Expect("outcomes_is_a_file", "", "is not a folder")),
}

CASES: dict[str, Expect] = {**COMMITTED_CASES, **{name: expect for name, (_, expect) in GENERATED_CASES.items()}}


def build_corpus(root: Path) -> dict[str, Path]:
    """Copy the committed cases into ``root`` (an empty folder), make the others there; ``{case: --outcomes path}``."""
    shutil.copytree(COMMITTED, root, symlinks=True, dirs_exist_ok=True)
    for name, (make, _) in GENERATED_CASES.items():
        make(root / name)
    return {name: root / name for name in CASES}


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and modification time, links not followed."""
    found = {}
    for folder, folders, files in os.walk(root):
        for name in folders + files:
            path = Path(folder) / name
            info = path.lstat()
            found[str(path.relative_to(root))] = (info.st_size, info.st_mtime_ns)
    return found
