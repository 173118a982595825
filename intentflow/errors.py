"""Errors a user can act on: each names the file, the field and the fix."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

# Shown as escapes in messages: control characters and line separators would break the one-problem-per-line layout,
# and unpaired surrogates (from a JSON "\ud800" escape or a file name that is not UTF-8) cannot be written to a UTF-8
# stream or sent to the Prefect API.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
# A message lists this many problems; the rest are counted (the exception keeps them all).
MAX_SHOWN_PROBLEMS = 100


class IntentflowError(Exception):
    """An error caused by input or state the user controls; the CLI prints it without a traceback."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one input file."""

    file: str
    field: str
    message: str
    fix: str

    def __post_init__(self) -> None:
        for name in ("file", "field", "message", "fix"):
            object.__setattr__(self, name, _escape(str(getattr(self, name))))

    def __str__(self) -> str:
        where = f"{self.file}: {self.field}" if self.field else self.file
        return f"{where}: {self.message} (fix: {self.fix})"


class ValidationFailed(IntentflowError):
    """Every problem found in a set of input files, reported together."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        count = len(problems)
        lines = [f"{count} problem{'s' if count != 1 else ''} found:"]
        lines += [f"  - {problem}" for problem in problems[:MAX_SHOWN_PROBLEMS]]
        if count > MAX_SHOWN_PROBLEMS:
            lines.append(f"  ... and {count - MAX_SHOWN_PROBLEMS:,} more (fix the ones above first)")
        super().__init__("\n".join(lines))


def display_path(path: Path | str) -> str:
    """A path as the user typed it relative to the working directory when possible; a URL as it is.

    Symbolic links are not followed: a message names the link the user put there, not what it points to.
    """
    if isinstance(path, str) and "://" in path and not path.startswith("file://"):
        return path
    absolute = Path(os.path.abspath(path))
    for base in (Path.cwd(), Path.cwd().resolve()):
        try:
            return str(absolute.relative_to(base))
        except ValueError:
            continue
    return str(path)


def quote(text: str, limit: int = 80) -> str:
    """User text inside a message: quoted, on one line, cut to ``limit`` characters."""
    cut = text if len(text) <= limit else text[: limit - 1] + "…"
    return f"'{_escape(cut)}'"


def field_name(key: str, limit: int = 80) -> str:
    """A key the user wrote, as the field part of a message; a blank key shows as its JSON string."""
    if not key.strip():
        return json.dumps(key)
    return _escape(key if len(key) <= limit else key[: limit - 1] + "…")


def _escape(text: str) -> str:
    return _UNPRINTABLE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)
