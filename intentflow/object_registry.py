"""The registry in an S3 bucket: the folder registry's guarantees from the store's conditional writes.

Layout under ``s3://bucket/prefix`` (the folder's, but for the history)::

    intent_model_v2026-11/...          a version's objects; ``version.json`` is written last and only if absent
                                       (If-None-Match: *): it is the commit marker, a prefix without it is no version
    production.json                    replaced only if unchanged since it was read (If-Match: its ETag)
    history/0000000001.json ...        one object per promotion or rollback, each created only if its number is
                                       free (If-None-Match: *), so two writers never overwrite an entry
    .lock                              the publishers' lease, created only if absent (If-None-Match: *)

S3 has no rename and no append, which is why: a version is never visible half written because readers skip a prefix
without ``version.json``; the pointer is one PUT, which readers see whole, old or new; a history entry is an object
of its own instead of a line of a shared file. The lease is renewed while held and taken over once it has expired,
or at once when its holder was a process on this machine that no longer runs (docs/decisions.md#registry-in-a-bucket).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from intentflow.checkpoint import checkpoint_bytes, held_out_path, metrics_record
from intentflow.errors import IntentflowError
from intentflow.fileio import crash_point, json_bytes
from intentflow.registry import (
    _VERSION_NAME,
    LOCK_FILE,
    PRODUCTION_FILE,
    VERSION_FILE,
    BaseRegistry,
    Version,
    _who,
    parse_history,
    sort_versions,
)
from intentflow.storage import REGISTRY_SCHEMES, filesystem, is_file, scheme, store_error

logger = logging.getLogger(__name__)

HISTORY_PREFIX = "history"
# A publisher that stopped renewing its lease this long ago is taken for dead (on another machine: one on this
# machine is known dead at once). Generous, as the clocks of two machines may differ by some seconds.
LEASE_SECONDS = 60.0
RENEW_EVERY = LEASE_SECONDS / 4
WAIT_BETWEEN_TRIES = 0.2


class _Conflict(Exception):
    """The store refused a conditional write: the object exists, or changed since it was read."""


class _LeaseLost(IntentflowError):
    pass


class ObjectRegistry(BaseRegistry):
    """A registry under an ``s3://`` URL (see the module's docstring)."""

    history_name = f"{HISTORY_PREFIX}/"

    def __init__(self, url: str):
        if scheme(url) not in REGISTRY_SCHEMES:
            raise IntentflowError(f"{url}: a registry must be a folder or an s3:// URL; {scheme(url)}:// stores "
                                  "are not supported for a registry, as its lock, pointer and history need S3's "
                                  "conditional writes (fix: use an s3:// bucket, or a folder)")
        self.root = url.rstrip("/")
        self._fs, self._path = filesystem(self.root)
        # Per thread: the lease it holds (two threads may each take the lock, one after the other, as with a
        # folder) and the ETag of the pointer it last read, which its next pointer write must match.
        self._held = threading.local()

    # --- requests ------------------------------------------------------------------------------------------------
    def _key(self, *parts: str) -> str:
        return "/".join([self._path, *parts])

    def _url(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def _call(self, method: str, relative: str, **arguments: Any) -> dict[str, Any]:
        """One S3 request on the object ``relative`` to the registry; a refused condition raises ``_Conflict``."""
        bucket, key, _ = self._fs.split_path(self._key(relative))
        try:
            return self._fs.call_s3(method, Bucket=bucket, Key=key, **arguments)
        except FileExistsError:
            raise _Conflict(relative) from None
        except OSError as error:
            if _refused_condition(error):
                raise _Conflict(relative) from None
            raise

    def _put(self, relative: str, body: bytes, **condition: str) -> str:
        return self._call("put_object", relative, Body=body, **condition)["ETag"]

    def _etag(self, relative: str) -> str | None:
        try:
            return self._call("head_object", relative)["ETag"]
        except FileNotFoundError:
            return None

    def _read(self, relative: str) -> bytes | None:
        try:
            return self._fs.cat_file(self._key(relative))
        except FileNotFoundError:
            return None

    def _listing(self, relative: str = "") -> list[str]:
        """Every object under the registry (or under ``relative`` in it), as paths relative to the registry."""
        start = self._key(relative) if relative else self._path
        self._fs.invalidate_cache(start)
        try:
            found = self._fs.find(start, detail=False)
        except FileNotFoundError:
            return []
        return [path[len(self._path) + 1:] for path in found]

    def _guarded(self, doing: str) -> Any:
        return _Guard(self.root, doing)

    # --- reading -------------------------------------------------------------------------------------------------
    def versions(self) -> list[Version]:
        """Committed versions (with version.json and the checkpoint), oldest first."""
        with self._guarded("cannot list the registry"):
            files = _by_version(self._listing())
            committed = [name for name, names in files.items() if VERSION_FILE in names and f"{name}.pt" in names]
            contents = self._fs.cat([self._key(name, VERSION_FILE) for name in committed], on_error="return") \
                if committed else {}
        found = []
        for name in committed:
            info = _json_object(contents.get(self._key(name, VERSION_FILE)))
            if info is not None:
                found.append(Version(name, self._url(name), info, frozenset(files[name])))
        return sort_versions(found)

    def _version_at(self, name: str) -> Version:
        with self._guarded(f"cannot read version {name}"):
            names = frozenset(path.split("/", 1)[1] for path in self._listing(name) if "/" in path)
            info = _json_object(self._read(f"{name}/{VERSION_FILE}")) or {}
        return Version(name, self._url(name), info, names)

    def _read_pointer(self) -> dict[str, Any] | None:
        # The ETag first: should the pointer change between the two requests, the later conditional write is
        # refused instead of replacing a pointer this publisher never saw.
        with self._guarded(f"cannot read {PRODUCTION_FILE}"):
            self._held.pointer_etag = self._etag(PRODUCTION_FILE)
            return _json_object(self._read(PRODUCTION_FILE))

    def history(self) -> list[dict[str, Any]]:
        with self._guarded("cannot read the history"):
            keys = sorted(path for path in self._listing(HISTORY_PREFIX) if _history_number(path) is not None)
            contents = self._fs.cat([self._key(key) for key in keys], on_error="return") if keys else {}
        return parse_history([contents.get(self._key(key)) for key in keys
                              if isinstance(contents.get(self._key(key)), bytes)])

    def _taken_names(self) -> set[str]:
        with self._guarded("cannot list the registry"):
            return {name for name, names in _by_version(self._listing()).items() if VERSION_FILE in names}

    # --- writing -------------------------------------------------------------------------------------------------
    @contextmanager
    def lock(self) -> Iterator[None]:
        """One publisher at a time, on any machine: a lease object created only where none exists."""
        lease = _Lease(self)
        with self._guarded("cannot lock the registry"):
            lease.acquire()
        self._held.lease = lease
        try:
            yield
        finally:
            self._held.lease = None
            lease.release()

    def _check_lease(self) -> None:
        lease = getattr(self._held, "lease", None)
        if lease is not None and lease.lost:
            raise _LeaseLost(f"{self.root}: this publisher's lock lapsed (it stopped renewing it for "
                             f"{LEASE_SECONDS:.0f} s) and another may have taken it; nothing more was written "
                             "(fix: run again; production is as the other publisher left it)")

    def add_version(self, name: str, payload: dict[str, Any], info: dict[str, Any],
                    files: dict[str, str | bytes], held_out: dict[str, Any] | None = None) -> Version:
        """Write version ``name``'s objects, then its version.json, only if absent. Call under ``lock()``."""
        self.clean_temporary()
        if name in self._taken_names():
            raise IntentflowError(f"version {name} already exists in {self.root}")
        written: list[str] = []
        info = {"version": name, **info}

        def put(filename: str, content: str | bytes, **condition: str) -> None:
            self._check_lease()
            self._put(f"{name}/{filename}", content.encode("utf-8") if isinstance(content, str) else content,
                      **condition)
            written.append(filename)

        checkpoint = f"{name}.pt"
        try:
            put(checkpoint, checkpoint_bytes(payload))
            put(f"{checkpoint}.metrics.json", json_bytes(metrics_record(payload, checkpoint)))
            if held_out is not None:
                held = str(held_out_path(checkpoint))
                put(held, checkpoint_bytes(held_out))
                put(f"{held}.metrics.json", json_bytes(metrics_record(held_out, held)))
            crash_point("checkpoint-written")
            for filename, content in files.items():
                put(filename, content)
            crash_point(f"before-rename:{VERSION_FILE}")
            put(VERSION_FILE, json_bytes(info), IfNoneMatch="*")
            crash_point("version-written")
        except _Conflict:
            self._remove(name, [filename for filename in written if filename != VERSION_FILE])
            raise IntentflowError(f"version {name} was committed in {self.root} by another publisher while this one "
                                  "wrote it (fix: run again; production is unchanged)") from None
        except _LeaseLost:
            self._remove(name, written)
            raise
        except Exception as error:  # noqa: BLE001 - botocore and aiohttp raise many types for one failed request
            self._remove(name, written)
            raise store_error(self._url(name), f"cannot write version {name}; production is unchanged",
                              error) from None
        crash_point("version-renamed")
        return Version(name, self._url(name), info, frozenset(written))

    def clean_temporary(self) -> None:
        """Delete what a crashed publisher left: objects under a version name that has no version.json. Only the
        lock holder calls this, so no publisher is writing them."""
        with self._guarded("cannot clean the registry"):
            for name, names in _by_version(self._listing()).items():
                if VERSION_FILE not in names:
                    self._remove(name, sorted(names))

    def _remove(self, name: str, filenames: list[str]) -> None:
        if filenames:
            with suppress(FileNotFoundError):
                self._fs.rm([self._key(name, filename) for filename in filenames])

    def _write_pointer(self, pointer: dict[str, Any]) -> None:
        self._check_lease()
        # Replace the pointer this publisher read (If-Match), or create it where there was none (If-None-Match).
        seen = getattr(self._held, "pointer_etag", None)
        condition = {"IfMatch": seen} if seen else {"IfNoneMatch": "*"}
        crash_point(f"before-rename:{PRODUCTION_FILE}")
        try:
            self._held.pointer_etag = self._put(PRODUCTION_FILE, json_bytes(pointer), **condition)
        except _Conflict:
            raise IntentflowError(f"{self.root}/{PRODUCTION_FILE} changed since this publisher read it, so it was "
                                  "left as the other writer made it (fix: check `intentflow versions` and run "
                                  "again)") from None
        except Exception as error:  # noqa: BLE001
            raise store_error(f"{self.root}/{PRODUCTION_FILE}", "cannot replace the production pointer; "
                              "production is unchanged", error) from None

    def _append_history(self, event: dict[str, Any], failure: str, state: str) -> None:
        body = json_bytes(event)
        try:
            self._check_lease()
            numbers = [_history_number(path) for path in self._listing(HISTORY_PREFIX)]
            number = max([n for n in numbers if n is not None], default=0) + 1
            # Each entry is created only where its number is free: a second writer moves to the next number
            # instead of overwriting an entry.
            while True:
                try:
                    self._put(f"{HISTORY_PREFIX}/{number:010d}.json", body, IfNoneMatch="*")
                    return
                except _Conflict:
                    number += 1
        except IntentflowError:
            raise
        except Exception as error:  # noqa: BLE001
            detail = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise IntentflowError(f"{failure}: {detail} (fix: check the endpoint and credentials; {state})") from None


class _Guard:
    """Turns a failed request into an ``IntentflowError`` naming the registry and what to check."""

    def __init__(self, url: str, doing: str):
        self.url, self.doing = url, doing

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, error: BaseException | None, traceback: Any) -> bool:
        if error is None or isinstance(error, IntentflowError | _Conflict) or not isinstance(error, Exception):
            return False
        raise store_error(self.url, self.doing, error) from None


class _Lease:
    """The ``.lock`` object: who holds the registry, until when. Renewed by a thread while held."""

    def __init__(self, registry: ObjectRegistry):
        self.registry = registry
        self.etag: str | None = None
        self.lost = False
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _body(self) -> bytes:
        return json_bytes({"who": _who(), "host": socket.gethostname(), "pid": os.getpid(),
                           "token": secrets.token_hex(8), "expires": time.time() + LEASE_SECONDS})

    def acquire(self) -> None:
        waited = False
        while True:
            try:
                self.etag = self.registry._put(LOCK_FILE, self._body(), IfNoneMatch="*")
                break
            except _Conflict:
                pass
            held_etag, holder = self.registry._etag(LOCK_FILE), _json_object(self.registry._read(LOCK_FILE))
            if held_etag is not None and _expired(holder):
                try:
                    self.etag = self.registry._put(LOCK_FILE, self._body(), IfMatch=held_etag)
                    logger.warning("took over the lock on %s from %s, which stopped renewing it", self.registry.root,
                                   (holder or {}).get("who", "an unknown publisher"))
                    break
                except _Conflict:
                    continue  # another publisher took it first
            if not waited:
                logger.info("waiting for the lock on %s, held by %s", self.registry.root,
                            (holder or {}).get("who", "another publisher"))
                waited = True
            time.sleep(WAIT_BETWEEN_TRIES)
        self._renewer = threading.Thread(target=self._renew, name="intentflow-lease", daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_EVERY):
            try:
                self.etag = self.registry._put(LOCK_FILE, self._body(), IfMatch=self.etag)
            except _Conflict:
                self.lost = True
                return
            except Exception:  # noqa: BLE001 - a failed renewal is tried again; the lease lasts four periods
                logger.warning("could not renew the lock on %s; trying again", self.registry.root)

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        if self.lost:
            return
        try:
            # Only the lease this publisher holds: one taken over meanwhile is the other publisher's to delete.
            self.registry._call("delete_object", LOCK_FILE, IfMatch=self.etag)
        except (_Conflict, FileNotFoundError):
            pass
        except Exception:  # noqa: BLE001 - it expires by itself
            logger.warning("could not release the lock on %s; it expires in %.0f s", self.registry.root,
                           LEASE_SECONDS)


def _expired(holder: dict[str, Any] | None) -> bool:
    """Whether a lease may be taken over: expired, unreadable, or held by a process on this machine that is gone."""
    if holder is None:
        return True
    expires = holder.get("expires")
    if not isinstance(expires, int | float) or expires < time.time():
        return True
    pid = holder.get("pid")
    if holder.get("host") == socket.gethostname() and isinstance(pid, int) and pid > 0:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    return False


def _refused_condition(error: BaseException) -> bool:
    """Whether s3fs's ``OSError`` is S3 refusing a condition (412, or 409 when two conditional writes race)."""
    cause = error.__cause__
    response = getattr(cause, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409")


def _by_version(paths: list[str]) -> dict[str, set[str]]:
    """Objects of version prefixes (``name -> file names``); anything else in the registry is left out."""
    files: dict[str, set[str]] = {}
    for path in paths:
        name, _, filename = path.partition("/")
        if filename and "/" not in filename and _VERSION_NAME.fullmatch(name):
            files.setdefault(name, set()).add(filename)
    return files


def _history_number(path: str) -> int | None:
    name = path.removeprefix(f"{HISTORY_PREFIX}/").removesuffix(".json")
    return int(name) if path.startswith(f"{HISTORY_PREFIX}/") and name.isdigit() else None


def _json_object(data: Any) -> dict[str, Any] | None:
    if not isinstance(data, bytes):
        return None
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def resolve_object_checkpoint(url: str) -> str:
    """An object as given when it is a file (``s3://b/model.pt``), else the production checkpoint of the registry
    at ``url``."""
    if url.endswith(".pt") or (scheme(url) not in REGISTRY_SCHEMES and is_file(url)):
        return url
    registry = ObjectRegistry(url)
    name = registry.production_name()
    # production_name read the pointer's ETag: a pointer that is there but names no version is damaged.
    if name is None and getattr(registry._held, "pointer_etag", None) is not None:
        raise IntentflowError(f"{url}/{PRODUCTION_FILE} is unreadable or names no valid version (fix: `intentflow "
                              f"rollback --registry {url} --to VERSION` with a version from `intentflow versions "
                              f"--registry {url}`)")
    if name is None:
        if is_file(url):
            return url
        raise IntentflowError(f"{url} has no production version ({PRODUCTION_FILE} is missing) (fix: run "
                              f"`intentflow retrain --registry {url}`, check AWS_ENDPOINT_URL, or pass a "
                              "checkpoint URL)")
    return f"{url.rstrip('/')}/{name}/{name}.pt"
