"""What ``prefect.yaml`` deploys works on a fresh clone: each deployment, served by ``intentflow serve`` from a copy of
the repository's files, completes a run kicked with ``prefect deployment run``; a rejected retrain ends as a decision
(state ``Rejected``, the verdict its last log line, no traceback in its logs or on the serving console).

Everything runs on 127.0.0.1 in processes this test starts and stops.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flows.deployments import load_prefect_yaml

from .flow_helpers import REPO, Processes, post, prefect_env, start_server, wait_for

BIN = Path(sys.executable).parent
RUN_TIMEOUT = 300.0


def fresh_clone(target: Path) -> Path:
    """The repository's files as a clone has them (tracked, and new files git would commit), nothing built."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def run_deployment(name: str, env: dict[str, str], cwd: Path, *params: str) -> str:
    """``prefect deployment run NAME``; the flow run's id."""
    result = subprocess.run([str(BIN / "prefect"), "deployment", "run", name, *params], env=env, cwd=cwd,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(line for line in result.stdout.splitlines() if "UUID" in line)
    return line.split()[-1]


def finished(api: str, run_id: str) -> dict[str, Any] | None:
    [run] = post(api, "/flow_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}})
    state = run.get("state") or {}
    return run if state.get("type") in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"} else None


def run_logs(api: str, run_id: str) -> list[str]:
    logs = post(api, "/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "sort": "TIMESTAMP_ASC",
                                      "limit": 200})
    return [log["message"] for log in logs]


@pytest.mark.slow
def test_every_deployment_completes_on_a_fresh_clone_and_a_rejection_reads_as_a_decision(
        tmp_path: Path, processes: Processes) -> None:
    clone = fresh_clone(tmp_path / "clone")
    assert not (clone / "artifacts" / "production.json").exists()
    api = start_server(processes, tmp_path)
    (tmp_path / "tmp").mkdir()
    env = prefect_env(tmp_path / "client-home", PREFECT_API_URL=api, PREFECT_RUNNER_POLL_FREQUENCY="1",
                      TMPDIR=str(tmp_path / "tmp"))
    processes.start("serve", [str(BIN / "intentflow"), "serve"], env, clone)
    names = [spec["name"] for spec in load_prefect_yaml(clone / "prefect.yaml")["deployments"]]
    deployments = wait_for(lambda: len(post(api, "/deployments/filter", {})) == len(names)
                           and post(api, "/deployments/filter", {}), 120, "the served deployments", processes)
    flows = {flow["id"]: flow["name"] for flow in post(api, "/flows/filter", {})}
    full_names = {item["name"]: f"{flows[item['flow_id']]}/{item['name']}" for item in deployments}
    assert sorted(full_names) == sorted(names)

    # Each deployment with the parameters prefect.yaml gives it, in order: the retrain publishes the bundled
    # outcomes' first version, the nightly check scores it.
    for name in names:
        run_id = run_deployment(full_names[name], env, clone)
        run = wait_for(lambda run_id=run_id: finished(api, run_id), RUN_TIMEOUT, f"a run of {name}", processes)
        assert run["state"]["type"] == "COMPLETED", f"{name}: {run['state']}\n{processes.describe()}"
    assert (clone / "artifacts" / "production.json").exists()
    nightly = post(api, "/artifacts/filter", {"artifacts": {"key": {"any_": ["intent-model-nightly"]}}})
    assert nightly and "intent_model_v" in str(nightly[0]["data"])

    # A dry run (threshold above 1) is rejected by the gate: a decision, not a crash.
    run_id = run_deployment(full_names["retrain-monthly"], env, clone, "--params",
                            '{"params": {"threshold": 1.5, "force": true, "epochs": 2, "augment_factor": 20, '
                            '"featurizer": "bow"}}')
    run = wait_for(lambda: finished(api, run_id), RUN_TIMEOUT, "the rejected run", processes)
    assert run["state"]["type"] == "FAILED" and run["state"]["name"] == "Rejected", run["state"]
    assert run["state"]["message"].startswith("gate rejected intent_model_v")
    logs = wait_for(lambda: (lambda lines: lines if any("verdict:" in line for line in lines) else None)(
        run_logs(api, run_id)), 30, "the rejected run's logs", processes)
    assert logs[-1].startswith("verdict: gate rejected"), logs[-5:]
    assert not [line for line in logs if "Traceback" in line or "FailedRun" in line], logs
    assert "Traceback" not in processes.log("serve"), processes.log("serve")[-3000:]
