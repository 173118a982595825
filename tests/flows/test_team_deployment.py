"""``prefect.team.yaml`` on a worker that shares nothing with the deployer but the Prefect API and the S3 endpoint.

The team's repository is a bare git repository on disk (the project's files, with small outcomes and settings); the
deployer sets the variables and deploys from its checkout; a process worker runs in another empty folder with another
``HOME``. A run kicked with ``prefect deployment run`` clones the branch, trains, publishes into the bucket, and the
application side loads the new production from the bucket. Then an outcome edit is pushed and CI's ``intentflow
notify`` sends the change event: the deployment's trigger runs the new commit on the worker, into the bucket.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from intentflow.inference import Classifier
from intentflow.outcomes import load_outcomes
from intentflow.registry import open_registry

from .flow_helpers import BIN, OUTCOMES, Processes, post, prefect_env, start_server, wait_for, write_outcomes
from .test_fresh_clone_deployments import finished, fresh_clone, run_deployment

RUN_TIMEOUT = 300.0
# The team's small settings (the bundled config/training.toml trains for minutes): what the branch holds.
TINY_SETTINGS = """\
[prepare]
augment_factor = 20
seed = 1

[train]
featurizer = "bow"
epochs = 30
hidden_size = 32
hidden_layers = 1
patience = 5
seed = 1
device = "cpu"
oos_threshold = "off"

[gate]
threshold = 0.5
"""
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid", "GIT_CONFIG_NOSYSTEM": "1"}


def team_repository(tmp_path: Path) -> tuple[Path, Path]:
    """The deployer's checkout and the bare repository it pushed to (branch main)."""
    checkout = fresh_clone(tmp_path / "deployer")
    shutil.rmtree(checkout / "config" / "outcomes")
    shutil.rmtree(checkout / "config" / "evaluation")  # its golden set is for the bundled outcomes
    write_outcomes(checkout / "config" / "outcomes", OUTCOMES)
    (checkout / "config" / "training.toml").write_text(TINY_SETTINGS, encoding="utf-8")
    env = {**os.environ, **GIT_ENV, "HOME": str(tmp_path)}
    for command in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "team repository"]):
        subprocess.run(["git", *command], cwd=checkout, env=env, check=True, capture_output=True)
    bare = tmp_path / "team.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(checkout), str(bare)], env=env, check=True,
                   capture_output=True)
    return checkout, bare


def git(repo: Path, *arguments: str) -> str:
    return subprocess.run(["git", *arguments], cwd=repo, env={**os.environ, **GIT_ENV, "HOME": str(repo.parent)},
                          check=True, capture_output=True, text=True).stdout.strip()


def prefect(env: dict[str, str], cwd: Path, *arguments: str) -> str:
    result = subprocess.run([str(BIN / "prefect"), "--no-prompt", *arguments], env=env, cwd=cwd,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"prefect {' '.join(arguments)}:\n{result.stdout}{result.stderr}"
    return result.stdout


@pytest.mark.slow
def test_a_remote_worker_runs_the_team_deployment_into_the_bucket(tmp_path: Path, processes: Processes,
                                                                  object_store: Any) -> None:
    checkout, bare = team_repository(tmp_path)
    registry = object_store.new_location("team")
    api = start_server(processes, tmp_path)

    # The deployer: its checkout, the API, no S3 credentials needed.
    deployer = {key: value for key, value in prefect_env(tmp_path / "deployer-home", PREFECT_API_URL=api).items()
                if not key.startswith("AWS_")}
    prefect(deployer, checkout, "variable", "set", "intentflow_repository", bare.as_uri())
    prefect(deployer, checkout, "variable", "set", "intentflow_branch", "main")
    prefect(deployer, checkout, "variable", "set", "intentflow_registry", registry)
    prefect(deployer, checkout, "work-pool", "create", "intentflow-team", "--type", "process")
    prefect(deployer, checkout, "deploy", "--prefect-file", "prefect.team.yaml", "--all")
    deployments = {item["name"]: item for item in post(api, "/deployments/filter", {})}
    assert deployments["retrain-monthly"]["parameters"] == {"params": {"registry": registry}}
    assert deployments["retrain-monthly"]["job_variables"]["env"] == {"CUDA_VISIBLE_DEVICES": "0"}
    assert deployments["score-nightly"]["parameters"] == {"registry": registry}
    [automation] = [item for item in post(api, "/automations/filter", {})
                    if item["trigger"]["expect"] == ["intentflow.outcomes.changed"]]
    assert automation["actions"][0]["parameters"]["params"]["registry"] == registry

    # The worker: an empty folder and another HOME; the API and the S3 endpoint (the AWS variables) are all it shares.
    worker_folder, worker_home = tmp_path / "worker", tmp_path / "worker-home"
    worker_folder.mkdir()
    worker_home.mkdir()
    worker_env = prefect_env(worker_home / ".prefect", PREFECT_API_URL=api, HOME=str(worker_home),
                             TMPDIR=str(worker_folder), PREFECT_WORKER_QUERY_SECONDS="1")
    assert {key for key in worker_env if key.startswith("AWS_")} >= {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID"}
    processes.start("worker", [str(BIN / "prefect"), "worker", "start", "--pool", "intentflow-team"], worker_env,
                    worker_folder)

    run_id = run_deployment("retrain/retrain-monthly", deployer, checkout)
    run = wait_for(lambda: finished(api, run_id), RUN_TIMEOUT, "the team run to finish", processes)
    assert run["state"]["type"] == "COMPLETED", f"{run['state']}\n{processes.describe()}"
    assert run["state"]["message"].startswith("promoted")

    # The application side: production, from the bucket.
    published = open_registry(registry)
    [version] = published.versions()
    assert published.production_name() == version.name
    assert version.info["run"]["flow_run_id"] == run_id
    # It trained on the branch's outcomes, read from the clone ("config/outcomes" relative to where it ran).
    assert version.info["outcome_hash"] == load_outcomes(checkout / "config" / "outcomes").content_hash
    assert version.info["config"]["train"]["epochs"] == 30
    assert Classifier.load(registry).predict("will it rain tomorrow").label == "check_weather"
    # The clone was made in the worker's folder, not read from the deployer's.
    assert list(worker_folder.rglob("flows/retrain.py")), "the worker ran without cloning the repository"
    assert json.loads(json.dumps(run["parameters"])) == {"params": {"registry": registry}}

    # A teammate's outcome edit is pushed; the CI job after the push runs notify in its checkout.
    before = git(checkout, "rev-parse", "HEAD")
    alarm = checkout / "config" / "outcomes" / "set_alarm.json"
    definition = json.loads(alarm.read_text(encoding="utf-8"))
    alarm.write_text(json.dumps({**definition, "examples": [*definition["examples"], "alarm for half past six"]}),
                     encoding="utf-8")
    git(checkout, "commit", "-q", "-am", "teach an alarm")
    git(checkout, "push", "-q", bare.as_uri(), "main")
    after = git(checkout, "rev-parse", "HEAD")
    notify = subprocess.run([sys.executable, "-m", "intentflow.cli", "notify", "--outcomes", "config/outcomes",
                             "--since", before], cwd=checkout, capture_output=True, text=True, timeout=120,
                            env=deployer)
    assert notify.returncode == 0, notify.stderr
    assert f"sent intentflow.outcomes.changed to {api} for 1 file(s): set_alarm.json" in notify.stdout
    edited_hash = load_outcomes(checkout / "config" / "outcomes").content_hash
    event_filter = {"filter": {"event": {"name": ["intentflow.outcomes.changed"]}}}
    [event] = wait_for(lambda: post(api, "/events/filter", event_filter)["events"], 60, "the event", processes)
    # What the trigger reads (event.payload.folder and .paths), as the watcher sends it.
    assert (event["payload"]["folder"], event["payload"]["paths"]) == ("config/outcomes", ["set_alarm.json"])
    assert (event["payload"]["content_hash"], event["payload"]["valid"]) == (edited_hash, True)
    assert (event["payload"]["since"], event["payload"]["commit"]) == (before, after)

    def triggered() -> dict[str, Any] | None:
        runs = post(api, "/flow_runs/filter", {"flow_runs": {"id": {"not_any_": [run_id]}},
                                               "deployments": {"id": {"any_": [deployments["retrain-monthly"]["id"]]}}})
        return next((finished(api, item["id"]) for item in runs if "auto-scheduled" not in item["tags"]), None)

    second = wait_for(triggered, RUN_TIMEOUT, "the triggered run to finish", processes)
    assert second["state"]["type"] == "COMPLETED", f"{second['state']}\n{processes.describe()}"
    assert second["parameters"]["params"] == {"registry": registry, "outcomes": "config/outcomes",
                                              "changed_paths": ["set_alarm.json"]}
    assert published.production().info["outcome_hash"] == edited_hash
    assert Classifier.load(registry).predict("alarm for half past six").label == "set_alarm"
