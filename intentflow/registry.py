"""The model registry on disk: immutable versions, an atomic production pointer, an append-only history.

Layout of a registry folder (``artifacts/`` by default)::

    intent_model_v2026-11/            one version, written whole (built in a temp folder, then renamed)
        intent_model_v2026-11.pt      the checkpoint
        intent_model_v2026-11.pt.metrics.json
        intent_model_v2026-11.heldout.pt  where the served model learnt the validation rows (a refit): the held-out
                                      model the gate judged, which later gates and incremental runs compare through
        intent_model_v2026-11.onnx    with [publish] onnx = true: the ONNX model, and .onnx.json beside it
                                      (an embeddings model's tokenizer too: intent_model_v2026-11.tokenizer.json)
        version.json                  gate decision, accuracy, hashes; never changed after writing
        evaluation.json, report.md, release_notes.md
    production.json                   which version serves; replaced atomically
    history.jsonl                     every promotion and rollback: who, what, when, why

That is a folder's layout. A registry may also be an ``s3://bucket/prefix`` URL (``intentflow.object_registry``):
the same versions and pointer, with each history event an object of its own and conditional writes in place of the
lock and the renames. ``open_registry`` picks by the location; the rules (names, status, rollback, a promotion a
crash left unrecorded) are ``BaseRegistry``'s, the same for both.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import re
import shutil
import socket
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from intentflow.errors import IntentflowError, display_path
from intentflow.fileio import (
    TEMP_PREFIX,
    WriteFailed,
    crash_point,
    fsync_folder,
    make_temp_folder,
    write_bytes,
    write_json,
    write_text,
)
from intentflow.storage import Location, is_url, join, local_path

VERSION_PREFIX = "intent_model_v"
PRODUCTION_FILE = "production.json"
HISTORY_FILE = "history.jsonl"
LOCK_FILE = ".lock"
VERSION_FILE = "version.json"
_VERSION_NAME = re.compile(rf"^{VERSION_PREFIX}\d{{4}}-\d{{2}}(?:-\d+)?$")


@dataclass(frozen=True)
class Version:
    name: str
    # A folder, or the URL of the version's prefix in an object store.
    path: Location
    info: dict[str, Any]
    # In an object store: the names of the version's objects, listed once (a lookup per file is a request each).
    files: frozenset[str] | None = None

    @property
    def checkpoint(self) -> Location:
        return join(self.path, f"{self.name}.pt")

    @property
    def held_out_checkpoint(self) -> Location:
        """The checkpoint of the model this version was judged as: its held-out model where it keeps one apart
        from the model it serves, else the served model itself."""
        from intentflow.checkpoint import held_out_path

        path = held_out_path(self.checkpoint)
        if self.files is not None:
            return path if str(path).rsplit("/", 1)[-1] in self.files else self.checkpoint
        return path if path.is_file() else self.checkpoint

    @property
    def accepted(self) -> bool:
        return bool(self.info.get("gate", {}).get("promote"))


class BaseRegistry:
    """What a registry means, whatever stores it: version names, status, up to date, promotion and rollback.

    A store gives ``versions``, ``history``, ``lock``, ``add_version``, ``clean_temporary`` and the few primitives
    below; the steps of a promotion and the crash points between them are the same in a folder and a bucket."""

    root: Any
    # Where the history is kept, as messages name it.
    history_name = HISTORY_FILE

    # --- what a store provides -----------------------------------------------------------------------------------
    def versions(self) -> list[Version]:
        raise NotImplementedError

    def history(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def lock(self) -> AbstractContextManager[None]:
        raise NotImplementedError

    def _read_pointer(self) -> dict[str, Any] | None:
        raise NotImplementedError

    def _write_pointer(self, pointer: dict[str, Any]) -> None:
        raise NotImplementedError

    def _append_history(self, event: dict[str, Any], failure: str, state: str) -> None:
        """Append ``event``; if the store refuses, raise ``IntentflowError`` saying ``failure``, why, and (after the
        fix) ``state``, what the registry is left as."""
        raise NotImplementedError

    def _version_at(self, name: str) -> Version:
        """Version ``name`` as stored (info empty where its version.json is unreadable)."""
        raise NotImplementedError

    def _taken_names(self) -> set[str]:
        raise NotImplementedError

    def _shown(self) -> str:
        return str(self.root)

    # --- reading -------------------------------------------------------------------------------------------------
    def version(self, name: str) -> Version:
        versions = self.versions()
        for version in versions:
            if version.name == name:
                return version
        known = ", ".join(v.name for v in versions) or "none"
        raise IntentflowError(f"{self._shown()} has no version '{name}' (known: {known}) "
                              "(fix: pick one from `intentflow versions`)")

    def production_name(self) -> str | None:
        """The version the pointer names; None when there is no pointer or it is unreadable or names no valid
        version (``resolve_checkpoint`` tells those apart). Never a path that leads out of the registry."""
        pointer = self._read_pointer()
        name = pointer.get("version") if pointer else None
        return name if isinstance(name, str) and _VERSION_NAME.fullmatch(name) else None

    def production(self) -> Version | None:
        name = self.production_name()
        return None if name is None else self._version_at(name)

    def up_to_date(self, outcome_hash: str, config: dict[str, dict[str, Any]]) -> Version | None:
        """Production, if it was trained on these outcomes with this config (the device aside)."""
        production = self.production()
        if production is None or production.info.get("outcome_hash") != outcome_hash:
            return None
        return production if _comparable(production.info.get("config", {})) == _comparable(config) else None

    def status(self, version: Version) -> str:
        if version.name == self.production_name():
            return "production"
        if not version.accepted:
            return "rejected"
        promoted = {event.get("version") for event in self.history()}
        return "previous" if version.name in promoted else "accepted"

    # --- writing -------------------------------------------------------------------------------------------------
    def next_name(self, when: datetime | None = None) -> str:
        when = when or datetime.now(UTC)
        base = f"{VERSION_PREFIX}{when:%Y-%m}"
        taken = self._taken_names()
        if base not in taken:
            return base
        number = 2
        while f"{base}-{number}" in taken:
            number += 1
        return f"{base}-{number}"

    def promote(self, name: str, why: str, action: str = "promote") -> dict[str, Any]:
        """Point production at ``name`` atomically and record it. Call under ``lock()``."""
        version = self.version(name)
        previous = self.production_name()
        self._record_unrecorded(previous)
        event = {
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "action": action,
            "version": version.name,
            "previous": previous,
            "who": _who(),
            "why": why,
        }
        self._write_pointer({"version": version.name, "since": event["time"],
                             "val_accuracy": version.info.get("val_accuracy")})
        crash_point("pointer-moved")
        self._append_history(event, f"production of {self._shown()} is now {version.name}, but "
                             f"{self.history_name} could not record it", "the next promotion or rollback records it")
        crash_point("history-appended")
        return event

    def rollback(self, to: str | None = None, why: str = "manual rollback") -> dict[str, Any]:
        """Move production back to ``to``, or to the version production replaced."""
        with self.lock():
            current = self.production_name()
            self._record_unrecorded(current)
            if to is None:
                to = self._previous_good(current)
            target = self.version(to)
            if not target.accepted:
                raise IntentflowError(f"version {to} was rejected by the gate (fix: pick an accepted version "
                                      "from `intentflow versions`)")
            if to == current:
                raise IntentflowError(f"{to} is already production (fix: pass --to another version)")
            return self.promote(to, why=why, action="rollback")

    def _previous_good(self, current: str | None) -> str:
        # The version the current one replaced when it was promoted. Rollback events are skipped, so a second
        # rollback walks further back instead of returning to the version the first one rolled back from.
        for event in reversed(self.history()):
            if event.get("action") == "promote" and event.get("version") == current and event.get("previous"):
                return event["previous"]
        raise IntentflowError(f"{self._shown()} has no earlier production version to roll back to "
                              "(fix: pass --to VERSION, see `intentflow versions`)")

    def _record_unrecorded(self, current: str | None) -> None:
        """Record a promotion whose history line a crash lost (between moving the pointer and appending the line),
        so the history stays a chain in which each event's ``previous`` is the version before it, and rollback can
        walk it."""
        if current is None:
            return
        last = next((event for event in reversed(self.history()) if event.get("version")), None)
        if last is not None and last.get("version") == current:
            return
        pointer = self._read_pointer() or {}
        event = {
            "time": pointer.get("since") or datetime.now(UTC).isoformat(timespec="seconds"),
            "action": "promote",
            "version": current,
            "previous": last.get("version") if last else None,
            "who": _who(),
            "why": "recorded late: production.json names it, but the history had no line for it "
                   "(the process that promoted it stopped before writing one)",
        }
        self._append_history(event, f"cannot write {self.history_name} in {self._shown()}",
                             "production is unchanged")


class Registry(BaseRegistry):
    """A registry in a folder: an ``fcntl`` lock, files written whole and renamed into place."""

    def __init__(self, root: str | Path):
        self.root = local_path(root)

    def _shown(self) -> str:
        return display_path(self.root)

    # --- reading -------------------------------------------------------------------------------------------------
    def versions(self) -> list[Version]:
        """Complete versions, oldest first. Half-written folders (temp names) are never listed."""
        if not self.root.is_dir():
            return []
        found = []
        for path in self.root.iterdir():
            if not (_VERSION_NAME.fullmatch(path.name) and path.is_dir()):
                continue
            info = _read_json(path / VERSION_FILE)
            if info is None or not (path / f"{path.name}.pt").is_file():
                continue
            found.append(Version(path.name, path, info))
        return sort_versions(found)

    def _version_at(self, name: str) -> Version:
        path = self.root / name
        return Version(name, path, _read_json(path / VERSION_FILE) or {})

    def _read_pointer(self) -> dict[str, Any] | None:
        return _read_json(self.root / PRODUCTION_FILE)

    def history(self) -> list[dict[str, Any]]:
        path = self.root / HISTORY_FILE
        if not path.is_file():
            return []
        return parse_history(path.read_bytes().split(b"\n"))

    def _taken_names(self) -> set[str]:
        return {path.name for path in self.root.iterdir()} if self.root.is_dir() else set()

    # --- writing -------------------------------------------------------------------------------------------------
    @contextmanager
    def lock(self) -> Iterator[None]:
        """One publisher at a time: an exclusive lock on the registry, released even on a crash."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            handle = open(self.root / LOCK_FILE, "a+b")  # noqa: SIM115 - closed by the with below
        except OSError as error:
            raise IntentflowError(f"cannot lock the registry {display_path(self.root)}: {error.strerror or error} "
                                  "(fix: check the folder exists and is writable; nothing was changed)") from None
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def add_version(self, name: str, payload: dict[str, Any], info: dict[str, Any],
                    files: dict[str, str | bytes], held_out: dict[str, Any] | None = None) -> Version:
        """Write a complete version folder named ``name`` (from ``next_name``) and return it. Call under ``lock()``.

        ``held_out``: the payload of the held-out model the version was judged as, where it is not ``payload``."""
        from intentflow.checkpoint import held_out_path

        self.clean_temporary()
        if (self.root / name).exists():
            raise IntentflowError(f"version {name} already exists in {display_path(self.root)}")
        temp: Path | None = None
        try:
            temp = make_temp_folder(self.root, f"{TEMP_PREFIX}{name}.")
            save_checkpoint(payload, temp / f"{name}.pt")
            if held_out is not None:
                save_checkpoint(held_out, held_out_path(temp / f"{name}.pt"))
            crash_point("checkpoint-written")
            for filename, content in files.items():
                if isinstance(content, bytes):
                    write_bytes(temp / filename, content)
                else:
                    write_text(temp / filename, content)
            info = {"version": name, **info}
            write_json(temp / VERSION_FILE, info)
            crash_point("version-written")
            os.replace(temp, self.root / name)
            fsync_folder(self.root)
        except (OSError, WriteFailed) as error:
            if temp is not None:
                shutil.rmtree(temp, ignore_errors=True)
            reason = error.reason if isinstance(error, WriteFailed) else error.strerror or str(error)
            raise IntentflowError(f"cannot write version {name} in {display_path(self.root)}: {reason} "
                                  "(fix: free disk space or check permissions; production is unchanged)") from None
        except BaseException:
            if temp is not None:
                shutil.rmtree(temp, ignore_errors=True)
            raise
        crash_point("version-renamed")
        return Version(name, self.root / name, info)

    def clean_temporary(self) -> None:
        """Remove what a crashed writer left behind; such leftovers never count as versions."""
        if not self.root.is_dir():
            return
        for path in self.root.iterdir():
            if path.name.startswith(TEMP_PREFIX):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)

    def _write_pointer(self, pointer: dict[str, Any]) -> None:
        write_json(self.root / PRODUCTION_FILE, pointer)

    def _append_history(self, event: dict[str, Any], failure: str, state: str) -> None:
        line = (json.dumps(event, ensure_ascii=False) + "\n").encode("utf-8")
        try:
            descriptor = os.open(self.root / HISTORY_FILE, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                size = os.fstat(descriptor).st_size
                # A crash mid-append can leave a last line without its newline: start a fresh line, or this event
                # would be glued to the torn one and lost with it.
                if size and os.pread(descriptor, 1, size - 1) != b"\n":
                    line = b"\n" + line
                while line:
                    line = line[os.write(descriptor, line):]
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        except OSError as error:
            raise IntentflowError(f"{failure}: {error.strerror or error} (fix: free disk space or check "
                                  f"permissions; {state})") from None


def save_checkpoint(payload: dict[str, Any], path: Path) -> Path:
    """``intentflow.checkpoint.save_checkpoint``, imported when a version is written: reading a registry (an ONNX
    Runtime server resolving production) must not load torch, which that module needs."""
    from intentflow.checkpoint import save_checkpoint as save

    return save(payload, path)


def open_registry(location: Location) -> BaseRegistry:
    """The registry at ``location``: a folder for a path or a ``file://`` URL, a bucket for ``s3://``."""
    if not is_url(location):
        return Registry(location)
    from intentflow.object_registry import ObjectRegistry

    return ObjectRegistry(str(location))


def resolve_checkpoint(path: Location) -> Location:
    """A checkpoint file (or object) as given, or a registry's production checkpoint."""
    if is_url(path):
        from intentflow.object_registry import resolve_object_checkpoint

        return resolve_object_checkpoint(str(path))
    path = local_path(path)
    if not path.is_dir():
        return path
    registry = Registry(path)
    name = registry.production_name()
    if name is None and (path / PRODUCTION_FILE).exists():
        raise IntentflowError(f"{display_path(path / PRODUCTION_FILE)} is unreadable or names no valid version "
                              f"(fix: `intentflow rollback --registry {display_path(path)} --to VERSION` with a "
                              f"version from `intentflow versions --registry {display_path(path)}`)")
    if name is None:
        raise IntentflowError(f"{display_path(path)} is a folder with no production version "
                              f"({PRODUCTION_FILE} is missing) (fix: run `intentflow retrain --registry "
                              f"{display_path(path)}`, or pass a checkpoint file)")
    checkpoint = path / name / f"{name}.pt"
    if not checkpoint.is_file():
        raise IntentflowError(f"production version {name} of {display_path(path)} has no checkpoint "
                              f"({display_path(checkpoint)} is missing) (fix: `intentflow rollback --registry "
                              f"{display_path(path)}`)")
    return checkpoint


def sort_versions(versions: list[Version]) -> list[Version]:
    """Oldest first: by creation time, then by the number after the month (so -10 comes after -9)."""
    return sorted(versions, key=lambda v: (v.info.get("created_at", ""), _sequence(v.name)))


def parse_history(lines: list[bytes]) -> list[dict[str, Any]]:
    events = []
    for line in lines:
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):
            # A torn line after a crash (possibly cut inside a UTF-8 character); every complete event counts.
            continue
        if isinstance(event, dict):
            events.append(event)
    return events

def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    # Where a model trained does not change what it is.
    train = {key: value for key, value in (config.get("train") or {}).items() if key != "device"}
    return {"prepare": config.get("prepare") or {}, "train": train}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _sequence(name: str) -> int:
    match = re.search(r"-(\d+)$", name.removeprefix(VERSION_PREFIX)[7:])
    return int(match.group(1)) if match else 1


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return os.environ.get("INTENTFLOW_ACTOR") or f"{user}@{socket.gethostname()}"

