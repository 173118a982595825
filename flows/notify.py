"""`intentflow notify`: the watcher's ``intentflow.outcomes.changed`` event, sent by a CI job after a push.

A team that edits outcome files through git has no folder to watch: its CI runs ``intentflow notify --outcomes
config/outcomes --since <the commit before the push>`` in the checkout, and the deployment's trigger starts a retrain
as it does for the watcher's event. The event's folder is the one given, as the worker's clone has it: pass it
relative to the repository root and run the command from there.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
from pathlib import Path
from typing import Any

from flows.watch import EVENT_NAME, event_payload, is_outcome_file, resource_id
from intentflow.errors import IntentflowError

logger = logging.getLogger("intentflow.notify")


def _git(folder: Path, *arguments: str) -> str:
    try:
        result = subprocess.run(["git", "-C", str(folder), *arguments], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise IntentflowError("notify needs git, which is not installed (fix: install git)") from None
    if result.returncode != 0:
        raise _GitFailed(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "git failed")
    return result.stdout


class _GitFailed(Exception):
    pass


def changed_outcome_files(folder: str | Path, since: str) -> list[str]:
    """The outcome files of ``folder`` that differ from commit ``since``: changed, added or deleted since, committed
    or not (file names, as the watcher reports them)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise IntentflowError(f"{folder} is not a folder (fix: pass --outcomes DIR, the outcome files' folder)")
    try:
        _git(folder, "rev-parse", "--show-toplevel")
    except _GitFailed:
        raise IntentflowError(f"{folder} is not in a git repository (fix: run notify in a clone of the repository "
                              "that holds the outcome files)") from None
    try:
        _git(folder, "rev-parse", "--verify", "--quiet", f"{since}^{{commit}}")
    except _GitFailed:
        raise IntentflowError(f"{since!r} is not a commit of the repository of {folder} (fix: pass the commit "
                              "before the push, e.g. GitHub's github.event.before, and fetch enough history: "
                              "fetch-depth: 0)") from None
    # Relative to `folder` (git -C folder, pathspec "."), committed changes and the working tree's alike.
    changed = _git(folder, "diff", "--name-only", "--no-renames", "--relative", since, "--", ".").splitlines()
    untracked = _git(folder, "ls-files", "--others", "--exclude-standard", "--", ".").splitlines()
    return sorted({name for name in [*changed, *untracked] if "/" not in name and is_outcome_file(name)})


def send_change(folder: str | Path, since: str, paths: list[str]) -> dict[str, Any]:
    """Send the change event for ``paths`` (from ``changed_outcome_files``) to the Prefect API; its payload."""
    folder = Path(folder)
    payload = {**event_payload(folder, paths), "since": since,
               "commit": _git(folder, "rev-parse", "HEAD").strip()}
    asyncio.run(_emit(folder, payload))
    logger.info("emitted %s for %d file(s): %s", EVENT_NAME, len(paths), ", ".join(paths))
    return payload


async def _emit(folder: Path, payload: dict[str, Any]) -> None:
    # The events client directly, as `prefect events emit` does: the event is sent before this short-lived process
    # exits, where emit_event's background worker could still hold it.
    from prefect.events import Event
    from prefect.events.clients import get_events_client

    event = Event(event=EVENT_NAME, resource={"prefect.resource.id": resource_id(folder),
                                              "prefect.resource.name": str(folder)}, payload=payload)
    async with get_events_client() as client:
        await client.emit(event)
