"""End to end on a real Prefect server: edit an outcome file, the watcher emits, the trigger runs the served flow.

Everything runs on 127.0.0.1 in processes this test starts and stops: ``prefect server start``, a script that serves
the retrain deployment exactly as ``intentflow serve`` does (with tiny training parameters and a temporary registry),
and ``intentflow watch``. The server keeps its database in PostgreSQL, as a team's shared server should
(tests/flows/postgres.py starts one), or where Debian's package is missing in SQLite, as `make server` does (the
other server tests run on SQLite).
"""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from flows.deployments import RETRAIN_DEPLOYMENT
from intentflow.outcomes import load_outcomes
from intentflow.registry import Registry

from .flow_helpers import REPO, TINY, Processes, post, prefect_env, start_server, wait_for, write_outcomes
from .postgres import binaries as postgres_binaries

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


@pytest.mark.slow
def test_an_outcome_edit_retrains_through_the_served_deployment(tmp_path: Path, processes: Processes,
                                                                request: pytest.FixtureRequest) -> None:
    outcomes = write_outcomes(tmp_path / "outcomes")
    registry = tmp_path / "registry"
    database = "postgresql" if postgres_binaries() is not None else "sqlite"
    server_env = {}
    if database == "postgresql":
        server_env["PREFECT_API_DATABASE_CONNECTION_URL"] = request.getfixturevalue("postgres").url
    api = start_server(processes, tmp_path, **server_env)

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

    # A burst of 50 saves in about 2.5 s (an editor saving on every keystroke), ending with the example added.
    alarm = outcomes / "set_alarm.json"
    definition = json.loads(alarm.read_text(encoding="utf-8"))
    for save in range(50):
        example = "set the alarm clock for nine" if save == 49 else f"set the alarm clock for {save} minutes past"
        alarm.write_text(json.dumps({**definition, "examples": [*definition["examples"], example]}, indent=2),
                         encoding="utf-8")
        time.sleep(0.05)
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
    # One burst, one event, one triggered run (the run took far longer than the watcher's quiet second). The
    # schedule's own runs, months ahead, are the scheduler's ("auto-scheduled"); they are not counted.
    assert len(post(api, "/events/filter", event_filter)["events"]) == 1
    runs = post(api, "/flow_runs/filter", {"deployments": {"id": {"any_": [deployment["id"]]}}})
    assert [r["id"] for r in runs if "auto-scheduled" not in r["tags"]] == [run["id"]], runs

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

    # The run's artifacts: the report, the versions table and the checkpoint link (and the progress bar, unkeyed).
    artifacts = post(api, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run["id"]]}}})
    keys = {"intent-model-report", "intent-model-versions", "intent-model-checkpoint"}
    assert {artifact["key"] for artifact in artifacts} - {None} == keys
    if database == "postgresql":
        # The server kept all of it in PostgreSQL.
        postgres = request.getfixturevalue("postgres")
        assert postgres.query(f"select state_type from flow_run where id = '{run['id']}'") == "COMPLETED"
        assert postgres.query("select count(*) from automation") == "1"
        assert postgres.query(f"select count(*) from artifact where flow_run_id = '{run['id']}' and key in "
                              f"({', '.join(repr(key) for key in sorted(keys))})") == "3"
