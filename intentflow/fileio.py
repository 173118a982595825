"""Files written whole or not at all: temp file, flush, fsync, rename."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from intentflow.errors import IntentflowError, display_path

TEMP_PREFIX = ".tmp-"


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write`` on a temporary file beside ``path`` and rename it into place.

    A crash leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=TEMP_PREFIX + path.name + ".", dir=path.parent)
    except OSError as error:
        raise IntentflowError(f"cannot write {display_path(path)}: {error.strerror} "
                              "(fix: check the folder exists and is writable)") from None
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except OSError as error:
        temp.unlink(missing_ok=True)
        raise IntentflowError(f"cannot write {display_path(path)}: {error.strerror} "
                              "(fix: free disk space or check permissions; nothing was replaced)") from None
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, data: Any) -> Path:
    payload = (json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n").encode("utf-8")
    return atomic_write(path, lambda stream: stream.write(payload))


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda stream: stream.write(text.encode("utf-8")))


def write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda stream: stream.write(data))


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    payload = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records).encode("utf-8")
    return atomic_write(path, lambda stream: stream.write(payload))
