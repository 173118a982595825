"""The outcome watcher: one ``intentflow.outcomes.changed`` event per burst of edits to the outcome files."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from watchfiles import watch

from intentflow.errors import IntentflowError
from intentflow.outcomes import load_outcomes

# Under "intentflow", the logger `intentflow watch` shows at INFO: each emitted event is reported on the terminal.
logger = logging.getLogger("intentflow.watch")

EVENT_NAME = "intentflow.outcomes.changed"
# Edits closer together than this are one burst; an editor's save or a `git pull` lands well inside it.
QUIET_SECONDS = 2.0
# A burst that never goes quiet is still reported this often.
MAX_WAIT_SECONDS = 30.0


def resource_id(folder: Path) -> str:
    return f"intentflow.outcomes.{folder.resolve()}"


def is_outcome_file(path: str) -> bool:
    name = Path(path).name
    return name.endswith(".json") and not name.startswith(".")


def require_server() -> str:
    """The API URL, once the server there answers; a clear error otherwise."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise IntentflowError("the watcher needs a running Prefect server, and PREFECT_API_URL is not set "
                              "(fix: `prefect server start`, then `export PREFECT_API_URL=http://127.0.0.1:4200/api`)")
    import httpx

    with get_client(sync_client=True) as client:
        error = client.api_healthcheck()
        if error is None:
            # /health answers without credentials even on a server that requires them, and events sent without
            # them are dropped in the background; this call needs them, so a refusal is reported here, at start.
            try:
                client.api_version()
            except httpx.HTTPStatusError as refused:
                status = refused.response.status_code
                if status in (401, 403):
                    raise IntentflowError(
                        f"the Prefect server at {url} refused this client's credentials (HTTP {status}) (fix: set "
                        "PREFECT_API_AUTH_STRING to the server's PREFECT_SERVER_API_AUTH_STRING, user:password)"
                    ) from None
                error = refused
            except httpx.HTTPError as failed:
                error = failed
    if error is not None:
        raise IntentflowError(f"no Prefect server answers at {url} ({type(error).__name__}) "
                              "(fix: start it with `prefect server start`, or correct PREFECT_API_URL)")
    return url


def event_payload(folder: Path, paths: Iterable[str]) -> dict[str, Any]:
    try:
        content_hash: str | None = load_outcomes(folder).content_hash
        valid = True
    except IntentflowError:
        # The run itself reports the problems; the event still fires so the failure is visible in the UI.
        content_hash, valid = None, False
    return {"folder": str(folder), "paths": sorted(paths), "content_hash": content_hash, "valid": valid}


def emit_change(folder: Path, paths: Iterable[str]) -> dict[str, Any]:
    from prefect.events import emit_event

    payload = event_payload(folder, paths)
    emit_event(event=EVENT_NAME, resource={"prefect.resource.id": resource_id(folder),
                                           "prefect.resource.name": str(folder)}, payload=payload)
    logger.info("emitted %s for %d file(s): %s", EVENT_NAME, len(payload["paths"]), ", ".join(payload["paths"]))
    return payload


def watch_outcomes(folder: str | Path, emit: Callable[[Path, set[str]], Any] = emit_change,
                   stop: threading.Event | None = None, quiet: float = QUIET_SECONDS,
                   max_wait: float = MAX_WAIT_SECONDS) -> None:
    """Watch ``folder`` and call ``emit`` once per burst of changes to outcome files, until ``stop`` is set."""
    folder = Path(folder)
    if not folder.is_dir():
        raise IntentflowError(f"{folder} is not a folder (fix: pass --outcomes DIR)")
    pending: set[str] = set()
    first = last = 0.0
    for changes in watch(folder, stop_event=stop, rust_timeout=200, yield_on_timeout=True, debounce=200,
                         watch_filter=lambda change, path: is_outcome_file(path), raise_interrupt=False):
        now = time.monotonic()
        if changes:
            if not pending:
                first = now
            pending.update(Path(path).name for _change, path in changes)
            last = now
        if pending and (now - last >= quiet or now - first >= max_wait):
            emit(folder, set(pending))
            pending.clear()
