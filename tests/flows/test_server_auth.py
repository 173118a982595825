"""A self-hosted Prefect server with basic auth: clients that know the string are served, the others are refused.

The server gets ``PREFECT_SERVER_API_AUTH_STRING``; each client ``PREFECT_API_AUTH_STRING`` (Prefect 3.9: the
middleware in ``prefect/server/api/server.py`` and ``api.auth_string`` in ``prefect/settings/models/api.py``). Only
``/health`` and ``/ready`` stay open, for probes: that is why the watcher's start-up check makes an authenticated call
as well, so a watcher without the string fails at once instead of dropping every event in the background.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .flow_helpers import BIN, REPO, Processes, healthy, post, prefect_env, start_server, wait_for, write_outcomes

USER, PASSWORD = "intentflow", "correct horse battery staple"
AUTH = f"{USER}:{PASSWORD}"
EVENTS = {"filter": {"event": {"name": ["intentflow.outcomes.changed"]}}}

# What `intentflow watch` does first (require_server, then emit_change on an edit), and a plain client call.
CLIENT = textwrap.dedent("""
    import json
    import sys
    from pathlib import Path

    from prefect.client.orchestration import get_client

    from flows.watch import emit_change, require_server
    from intentflow.errors import IntentflowError

    said = {}
    try:
        said["require_server"] = "ok " + require_server()
    except IntentflowError as error:
        said["require_server"] = f"refused: {error}"
    try:
        with get_client(sync_client=True) as client:
            said["read_deployments"] = f"ok {len(client.read_deployments())}"
    except Exception as error:
        said["read_deployments"] = f"refused: {type(error).__name__}: {str(error).splitlines()[0]}"
    if said["require_server"].startswith("ok"):
        emit_change(Path(sys.argv[1]), {"set_alarm.json"})
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all()
    print(json.dumps(said))
""")


def client(tmp_path: Path, api: str, folder: Path, auth: str | None, name: str) -> dict[str, str]:
    extra: dict[str, Any] = {"PREFECT_API_URL": api, **({"PREFECT_API_AUTH_STRING": auth} if auth else {})}
    result = subprocess.run([sys.executable, "-c", CLIENT, str(folder)], cwd=REPO, capture_output=True, text=True,
                            timeout=120, env=prefect_env(tmp_path / f"home-{name}", **extra))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def events(api: str) -> list[dict[str, Any]]:
    return post(api, "/events/filter", EVENTS, auth=(USER, PASSWORD))["events"]


@pytest.mark.slow
def test_only_clients_with_the_auth_string_are_served(tmp_path: Path, processes: Processes) -> None:
    api = start_server(processes, tmp_path, PREFECT_SERVER_API_AUTH_STRING=AUTH)
    folder = write_outcomes(tmp_path / "outcomes")

    # Probes stay open; every API call needs the credentials.
    assert healthy(api)
    assert httpx.post(f"{api}/deployments/filter", json={}, timeout=10).status_code == 401
    assert httpx.post(f"{api}/deployments/filter", json={}, timeout=10, auth=(USER, "guess")).status_code == 401
    assert post(api, "/deployments/filter", {}, auth=(USER, PASSWORD)) == []

    served = client(tmp_path, api, folder, AUTH, "served")
    assert served == {"require_server": f"ok {api}", "read_deployments": "ok 0"}
    [event] = wait_for(lambda: events(api), 30, "the authenticated client's event", processes)
    assert event["payload"]["paths"] == ["set_alarm.json"]

    for name, auth in (("no-string", None), ("wrong-string", f"{USER}:guess")):
        refused = client(tmp_path, api, folder, auth, name)
        assert refused["require_server"].startswith(
            f"refused: the Prefect server at {api} refused this client's credentials (HTTP 401)"), refused
        assert "PREFECT_API_AUTH_STRING" in refused["require_server"]
        assert refused["read_deployments"].startswith("refused: PrefectHTTPStatusError: Client error '401"), refused

    # `intentflow watch` without the string stops at once, saying what to set; with it, it watches and emits.
    watch = [str(BIN / "intentflow"), "watch", "--outcomes", str(folder), "--quiet-seconds", "0.5"]
    result = subprocess.run(watch, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            env=prefect_env(tmp_path / "home-watch-refused", PREFECT_API_URL=api))
    assert result.returncode == 1
    assert "refused this client's credentials (HTTP 401)" in result.stderr
    assert "PREFECT_API_AUTH_STRING" in result.stderr and "Traceback" not in result.stderr

    # So does a retrain run sent to that server, before it trains or writes anything.
    retrain = [str(BIN / "intentflow"), "retrain", "--outcomes", str(folder), "--registry", str(tmp_path / "registry")]
    result = subprocess.run(retrain, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            env=prefect_env(tmp_path / "home-retrain-refused", PREFECT_API_URL=api))
    assert result.returncode == 1
    assert "refused this client's credentials (HTTP 401)" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "registry").exists()

    processes.start("watch", watch, prefect_env(tmp_path / "home-watch", PREFECT_API_URL=api,
                                                PREFECT_API_AUTH_STRING=AUTH), tmp_path)
    wait_for(lambda: "watching" in processes.log("watch"), 60, "the watcher to start", processes)
    time.sleep(1.5)  # the watcher registers with the file system just after it prints
    (folder / "play_music.json").write_text(json.dumps({"name": "play_music", "examples": ["play jazz"]}),
                                            encoding="utf-8")
    wait_for(lambda: len(events(api)) == 2, 30, "the watcher's event", processes)
    assert sorted(event["payload"]["paths"][0] for event in events(api)) == ["play_music.json", "set_alarm.json"]
