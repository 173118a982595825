"""End to end on a real Prefect server: edit an outcome file, the watcher emits, the trigger runs the served flow.

Everything runs on 127.0.0.1 in processes this test starts and stops: ``prefect server start``, a script that serves
the retrain deployment exactly as ``intentflow serve`` does (with tiny training parameters and a temporary registry),
and ``intentflow watch``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from flow_helpers import REPO, TINY, free_port, prefect_env, write_outcomes

from flows.deployments import RETRAIN_DEPLOYMENT
from intentflow.outcomes import load_outcomes
from intentflow.registry import Registry

BIN = Path(sys.executable).parent
RUN_TIMEOUT = 180.0

# Serves the deployment with the arguments `intentflow serve` uses: the same name, schedule, limit and trigger (same
# match, expect and templated outcomes/changed_paths); only the training parameters are tiny and the registry temporary.
SERVE_SCRIPT = textwrap.dedent("""
    import json
    import sys

    from flows.deployments import serve_arguments
    from flows.retrain import retrain

    # The runner starts each flow run in a spawned process that imports this file again: serve only once.
    if __name__ == "__main__":
        tiny = json.loads(sys.argv[1])
        arguments = serve_arguments()
        arguments["parameters"] = {"params": {**arguments["parameters"].get("params", {}), **tiny}}
        arguments["triggers"] = [
            trigger.model_copy(update={"parameters": {"params": {**tiny, **trigger.parameters["params"]}}})
            for trigger in arguments["triggers"]
        ]
        retrain.serve(**arguments)
""")


class Processes:
    """Child processes in their own process groups, each logging to a file, all stopped at teardown."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, command: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process at teardown
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.started.append((name, process))
        return process

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def describe(self) -> str:
        return "\n".join(f"--- {name} (exit {process.poll()}) ---\n{self.log(name)[-4000:]}"
                         for name, process in self.started)

    def check_alive(self) -> None:
        for name, process in self.started:
            if process.poll() is not None:
                pytest.fail(f"{name} exited early with {process.returncode}\n{self.describe()}")

    def stop(self) -> None:
        # Newest first: the watcher and the runner before the server they talk to.
        for _name, process in reversed(self.started):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for _name, process in reversed(self.started):
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
            if process.stdout:
                process.stdout.close()
        for _name, process in self.started:
            # Children the group leader left behind (the runner's flow-run processes) go too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    (tmp_path / "logs").mkdir()
    started = Processes(tmp_path / "logs")
    try:
        yield started
    finally:
        started.stop()


def wait_for(condition: Callable[[], Any], timeout: float, what: str, processes: Processes) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        processes.check_alive()
        result = condition()
        if result:
            return result
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{processes.describe()}")


def post(api: str, path: str, body: dict[str, Any]) -> Any:
    response = httpx.post(f"{api}{path}", json=body, timeout=10)
    response.raise_for_status()
    return response.json()


def healthy(api: str) -> bool:
    try:
        return httpx.get(f"{api}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.slow
def test_an_outcome_edit_retrains_through_the_served_deployment(tmp_path: Path, processes: Processes) -> None:
    outcomes = write_outcomes(tmp_path / "outcomes")
    registry = tmp_path / "registry"
    api = f"http://127.0.0.1:{free_port()}/api"

    processes.start("server", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                               "--port", api.split(":")[-1].removesuffix("/api")],
                    prefect_env(tmp_path / "server-home", PREFECT_UI_ENABLED="false"), tmp_path)
    wait_for(lambda: healthy(api), 120, "the Prefect server's /api/health", processes)

    # The runner keeps a scratch folder under TMPDIR: inside this test's folder, it goes with it.
    (tmp_path / "tmp").mkdir()
    client_env = {"PREFECT_API_URL": api, "PREFECT_RUNNER_POLL_FREQUENCY": "1", "TMPDIR": str(tmp_path / "tmp")}
    tiny = {**TINY, "outcomes": str(outcomes), "registry": str(registry)}
    script = tmp_path / "serve_retrain.py"
    script.write_text(SERVE_SCRIPT, encoding="utf-8")
    processes.start("serve", [sys.executable, str(script), json.dumps(tiny)],
                    prefect_env(tmp_path / "serve-home", **client_env), REPO)
    [deployment] = wait_for(
        lambda: post(api, "/deployments/filter", {"deployments": {"name": {"any_": [RETRAIN_DEPLOYMENT]}}}),
        90, "the served deployment", processes)
    [schedule] = deployment["schedules"]
    assert schedule["schedule"]["cron"] == "0 3 1 * *"
    [automation] = wait_for(lambda: post(api, "/automations/filter", {}), 60, "the trigger's automation", processes)
    assert automation["trigger"]["expect"] == ["intentflow.outcomes.changed"]
    assert automation["enabled"]
    limits = post(api, "/v2/concurrency_limits/filter", {})
    assert [limit["limit"] for limit in limits if limit["name"] == f"deployment:{deployment['id']}"] == [1]

    processes.start("watch", [str(BIN / "intentflow"), "watch", "--outcomes", str(outcomes), "--quiet-seconds", "1"],
                    prefect_env(tmp_path / "watch-home", **client_env), tmp_path)
    wait_for(lambda: "watching" in processes.log("watch"), 60, "the watcher to start", processes)
    time.sleep(2.0)  # the watcher registers with the file system just after it prints

    alarm = outcomes / "set_alarm.json"
    definition = json.loads(alarm.read_text(encoding="utf-8"))
    definition["examples"].append("set the alarm clock for nine")
    alarm.write_text(json.dumps(definition, indent=2), encoding="utf-8")
    edited_hash = load_outcomes(outcomes).content_hash

    event_filter = {"filter": {"event": {"name": ["intentflow.outcomes.changed"]}}}
    [event] = wait_for(lambda: post(api, "/events/filter", event_filter)["events"], 60,
                       "the watcher's event to reach the server", processes)
    assert event["payload"]["paths"] == ["set_alarm.json"]
    assert event["payload"]["content_hash"] == edited_hash
    assert "emitted intentflow.outcomes.changed for 1 file(s): set_alarm.json" in processes.log("watch")

    def finished_run() -> dict[str, Any] | None:
        runs = post(api, "/flow_runs/filter", {"deployments": {"id": {"any_": [deployment["id"]]}}})
        for run in runs:
            state = run.get("state") or {}
            if state.get("type") in {"FAILED", "CRASHED", "CANCELLED"}:
                pytest.fail(f"flow run {run['name']} ended {state['type']}: {state.get('message')}\n"
                            f"{processes.describe()}")
            if state.get("type") == "COMPLETED":
                return run
        return None

    run = wait_for(finished_run, RUN_TIMEOUT, "a triggered flow run to complete", processes)

    # The trigger passed the event's folder and changed files; the deployment's tiny parameters came along.
    params = run["parameters"]["params"]
    assert params["outcomes"] == str(outcomes)
    assert params["changed_paths"] == ["set_alarm.json"]
    assert params["registry"] == str(registry)
    assert run["name"].endswith(edited_hash[:8])
    assert "promoted" in run["state"]["message"]

    published = Registry(registry)
    [version] = published.versions()
    assert published.production_name() == version.name
    assert version.info["outcome_hash"] == edited_hash
    assert version.info["run"]["flow_run_id"] == run["id"]
    assert version.info["run"]["changed_paths"] == ["set_alarm.json"]
    assert [event["action"] for event in published.history()] == ["promote"]
