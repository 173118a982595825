"""Files written whole or not at all: temp file, flush, fsync, rename, fsync the folder.

Temporary files and folders are created with the mode a plain ``open()`` or ``mkdir`` gives (0666 or 0777 less the
umask), not ``tempfile``'s 0600 and 0700: the rename publishes the temporary file itself, so its mode is the
published file's, and a model server running as another user must be able to read the registry.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import signal
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any, TypeVar

from intentflow.errors import IntentflowError, display_path

TEMP_PREFIX = ".tmp-"
# Tests only: the name of a crash point (see ``crash_point``) where the process kills itself.
CRASH_POINT_VARIABLE = "INTENTFLOW_TEST_CRASH_AT"
# As ``open(path, "wb")`` opens a new file, plus O_EXCL (never an existing file or link) and close-on-exec.
_NEW_FILE_FLAGS = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
_NAME_TRIES = 100

_Made = TypeVar("_Made")


class WriteFailed(IntentflowError):
    """A file could not be written (disk full, no permission); the old file, if any, is as it was."""

    def __init__(self, path: Path, error: OSError, fix: str):
        self.reason = error.strerror or str(error)
        super().__init__(f"cannot write {display_path(path)}: {self.reason} (fix: {fix})")


def crash_point(name: str) -> None:
    """Die here at once, as a power cut or ``kill -9`` would, if INTENTFLOW_TEST_CRASH_AT names this point.

    A no-op otherwise. The crash tests use it to stop a publisher between two steps it must survive.
    """
    if os.environ.get(CRASH_POINT_VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write`` on a temporary file beside ``path`` and rename it into place.

    A crash leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = make_temp_file(path.parent, TEMP_PREFIX + path.name + ".")
    except OSError as error:
        raise WriteFailed(path, error, "free disk space, or check the folder exists and is writable; "
                                       "nothing was replaced") from None
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        crash_point(f"before-rename:{path.name}")
        os.replace(temp, path)
        # The rename itself is only durable once the folder holding it is synced.
        fsync_folder(path.parent)
    except OSError as error:
        temp.unlink(missing_ok=True)
        raise WriteFailed(path, error, "free disk space or check permissions; nothing was replaced") from None
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


def make_temp_file(folder: Path, prefix: str) -> tuple[int, Path]:
    """A new, empty file ``folder/prefix<random>`` opened for writing, with the mode ``open()`` would give it."""
    return _unused_name(folder, prefix, lambda temp: (os.open(temp, _NEW_FILE_FLAGS, 0o666), temp))


def make_temp_folder(folder: Path, prefix: str) -> Path:
    """A new, empty folder ``folder/prefix<random>``, with the mode ``mkdir`` would give it."""

    def make(temp: Path) -> Path:
        os.mkdir(temp, 0o777)
        return temp

    return _unused_name(folder, prefix, make)


def _unused_name(folder: Path, prefix: str, create: Callable[[Path], _Made]) -> _Made:
    """``create(folder/prefix<random>)`` with random names until one is not taken (as ``tempfile`` does)."""
    for _attempt in range(_NAME_TRIES):
        try:
            return create(folder / f"{prefix}{secrets.token_hex(4)}")
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"no unused temporary name after {_NAME_TRIES} tries", str(folder))


def json_bytes(data: Any) -> bytes:
    """``data`` as the registry's JSON files hold it: indented, UTF-8, a final newline."""
    return (json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n").encode("utf-8")


def write_json(path: str | Path, data: Any) -> Path:
    payload = json_bytes(data)
    return atomic_write(path, lambda stream: stream.write(payload))


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda stream: stream.write(text.encode("utf-8")))


def write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda stream: stream.write(data))


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    payload = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records).encode("utf-8")
    return atomic_write(path, lambda stream: stream.write(payload))


def fsync_folder(path: Path) -> None:
    """Make a rename in ``path`` durable; best effort, as some file systems cannot sync a folder."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
