"""Reading JSON that people write: strict where Python's parser is lenient, bounded where it is not.

``json.loads`` keeps the last of two equal keys without a word, decodes ``"\\ud800"`` into a
string no UTF-8 file or API can hold, and raises ``RecursionError`` or a bare ``ValueError`` on input nested or
numbered beyond its limits. Here each of those is a ``JsonProblem`` saying where and what, and the caller turns it
into a ``Problem`` naming its file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import IO, Any

from intentflow.errors import field_name

_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
SYNTAX_FIX = "fix the JSON syntax at that position"
SURROGATE_MESSAGE = "holds an unpaired surrogate escape (\\ud800-\\udfff), which is not text"
SURROGATE_FIX = "remove the escape or write the character itself"
# A line of a labelled JSONL file is one short record; one this long is refused without being read whole.
MAX_LINE_BYTES = 100_000


class JsonProblem(ValueError):
    """What is wrong with a JSON text: ``where`` (``line L column C``, a key path, or empty), the problem, the fix."""

    def __init__(self, where: str, message: str, fix: str = SYNTAX_FIX):
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where
        self.message = message
        self.fix = fix


def parse_json(text: str) -> Any:
    """Decode one JSON document, or raise ``JsonProblem``; nothing else escapes."""
    repeated: dict[int, tuple[dict[str, Any], list[str]]] = {}

    def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result = dict(pairs)
        if len(result) < len(pairs):
            seen: set[str] = set()
            twice = [key for key, _ in pairs if key in seen or seen.add(key)]
            repeated[id(result)] = (result, twice)
        return result

    try:
        data = json.loads(text, object_pairs_hook=unique_keys)
    except json.JSONDecodeError as error:
        raise JsonProblem(f"line {error.lineno} column {error.colno}", f"invalid JSON: {error.msg}") from None
    except RecursionError:
        raise JsonProblem("", "invalid JSON: nested too deeply", "flatten the structure") from None
    except ValueError:  # an integer beyond Python's digit limit for conversion
        raise JsonProblem("", "holds a number with thousands of digits", "write a shorter number") from None
    # Only a "\ud8xx"-style escape can make an unpaired surrogate: a decoded UTF-8 text never holds one.
    surrogates = bool(_SURROGATE_ESCAPE.search(text))
    if repeated or surrogates:
        try:
            found = _first_problem(data, "", repeated, surrogates)
        except RecursionError:
            raise JsonProblem("", "invalid JSON: nested too deeply", "flatten the structure") from None
        if found is not None:
            raise found
    return data


def jsonl_values(stream: IO[bytes], max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` per non-blank line of a binary stream; a line that cannot be read yields a
    ``JsonProblem`` as its value. A line longer than ``max_line_bytes`` is skipped without being held in memory."""
    number = 0
    while True:
        raw = stream.readline(max_line_bytes + 1)
        if not raw:
            return
        number += 1
        where = f"line {number}"
        if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):
                raw = stream.readline(1 << 20)
            yield number, JsonProblem(where, f"is longer than {max_line_bytes:,} bytes",
                                      "keep one record of one sentence per line")
            continue
        try:
            # A byte-order mark, as some Windows editors write, is allowed at the start of the file only.
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as error:
            yield number, JsonProblem(where, f"is not valid UTF-8 (byte {error.start + 1} of the line)",
                                      "save the file as UTF-8")
            continue
        if not line.strip():
            continue
        try:
            yield number, parse_json(line)
        except JsonProblem as problem:
            inner = problem.where if problem.where and not problem.where.startswith("line ") else ""
            yield number, JsonProblem(f"{where} {inner}".strip(), problem.message,
                                      "fix the line's JSON syntax" if problem.fix == SYNTAX_FIX else problem.fix)


def _first_problem(value: Any, path: str, repeated: dict[int, tuple[dict[str, Any], list[str]]],
                   surrogates: bool) -> JsonProblem | None:
    """The first repeated key or unpaired surrogate, with its path in the style of outcome fields."""
    if isinstance(value, str):
        if surrogates and _SURROGATE.search(value):
            return JsonProblem(path or "(top level)", SURROGATE_MESSAGE, SURROGATE_FIX)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _first_problem(item, f"{path}[{index}]", repeated, surrogates)
            if found is not None:
                return found
    elif isinstance(value, dict):
        if id(value) in repeated:
            key = repeated[id(value)][1][0]
            return JsonProblem(f"{path}.{field_name(key)}" if path else field_name(key),
                               "is given twice in one object, and only one of them would count",
                               "merge the two into one key")
        for key, item in value.items():
            inner = f"{path}.{key}" if path else key
            if surrogates and _SURROGATE.search(key):
                return JsonProblem(inner, SURROGATE_MESSAGE, SURROGATE_FIX)
            found = _first_problem(item, inner, repeated, surrogates)
            if found is not None:
                return found
    return None
