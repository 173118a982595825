"""Errors a user can act on: each names the file, the field and the fix."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class IntentflowError(Exception):
    """An error caused by input or state the user controls; the CLI prints it without a traceback."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one input file."""

    file: str
    field: str
    message: str
    fix: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.field}" if self.field else self.file
        return f"{where}: {self.message} (fix: {self.fix})"


class ValidationFailed(IntentflowError):
    """Every problem found in a set of input files, reported together."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        count = len(problems)
        lines = [f"{count} problem{'s' if count != 1 else ''} found:"]
        lines += [f"  - {problem}" for problem in problems]
        super().__init__("\n".join(lines))


def display_path(path: Path) -> str:
    """A path as the user typed it relative to the working directory when possible."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
