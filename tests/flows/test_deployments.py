"""``prefect.yaml`` is checked against Prefect's models and our key whitelist; ``intentflow serve`` serves it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.deployments import PREFECT_YAML, RETRAIN_DEPLOYMENT, deployment_spec, load_prefect_yaml, serve_arguments
from flows.retrain import retrain
from intentflow.errors import IntentflowError

REPO = Path(__file__).resolve().parents[2]


def write_variant(tmp_path: Path, change: Any) -> Path:
    """A copy of the real prefect.yaml with ``change(data)`` applied."""
    data = yaml.safe_load(PREFECT_YAML.read_text(encoding="utf-8"))
    change(data)
    path = tmp_path / "prefect.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def retrain_spec(data: dict[str, Any]) -> dict[str, Any]:
    return next(item for item in data["deployments"] if item["name"] == RETRAIN_DEPLOYMENT)


def test_the_real_file_passes() -> None:
    assert PREFECT_YAML == REPO / "prefect.yaml"
    data = load_prefect_yaml()
    assert [item["name"] for item in data["deployments"]] == [RETRAIN_DEPLOYMENT, "score-nightly"]


def test_the_nightly_deployment_scores_the_users_own_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.flows import load_flow_from_entrypoint

    from flows.nightly import nightly_score

    monkeypatch.chdir(REPO)
    spec = deployment_spec("score-nightly")
    loaded = load_flow_from_entrypoint(spec["entrypoint"])
    assert loaded.name == nightly_score.name == "score-production"
    assert set(spec["parameters"]) <= set(loaded.parameters.properties)
    assert [item["cron"] for item in spec["schedules"]] == ["0 2 * * *"]
    assert spec["concurrency_limit"] == 1
    assert serve_arguments("score-nightly")["schedules"][0].cron == "0 2 * * *"
    # No deployment reads data outside the repository (the CLINC150 benchmark is a developer tool).
    assert "shared" not in PREFECT_YAML.read_text(encoding="utf-8")


def test_entrypoint_loads_the_retrain_flow(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.flows import load_flow_from_entrypoint

    monkeypatch.chdir(REPO)  # entrypoints are relative to the project, where `prefect deploy` runs
    spec = deployment_spec()
    assert spec["entrypoint"] == "flows/retrain.py:retrain"
    loaded = load_flow_from_entrypoint(spec["entrypoint"])
    assert loaded.name == retrain.name == "retrain"
    assert Path(loaded.fn.__code__.co_filename).resolve() == REPO / "flows" / "retrain.py"
    assert loaded.fn.__qualname__ == retrain.fn.__qualname__
    assert list(loaded.parameters.properties) == ["params"]


def test_schedule_limit_pool_and_trigger() -> None:
    spec = deployment_spec()
    [schedule] = spec["schedules"]
    assert schedule["cron"] == "0 3 1 * *"
    assert schedule["timezone"]
    assert schedule.get("active", True) is True
    assert spec["concurrency_limit"] == 1
    assert spec["work_pool"]["name"]
    [trigger] = spec["triggers"]
    assert trigger["type"] == "event"
    assert trigger.get("enabled", True) is True
    assert trigger["expect"] == ["intentflow.outcomes.changed"]
    assert trigger["match"] == {"prefect.resource.id": "intentflow.outcomes.*"}
    assert trigger["posture"] == "Reactive"
    assert trigger["parameters"] == {"params": {"outcomes": "{{ event.payload.folder }}",
                                               "changed_paths": "{{ event.payload.paths }}"}}


def test_trigger_matches_what_the_watcher_emits(tmp_path: Path) -> None:
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    from flows.watch import EVENT_NAME, resource_id

    [trigger] = serve_arguments()["triggers"]
    assert isinstance(trigger, DeploymentEventTrigger)
    assert trigger.expect == {EVENT_NAME}
    pattern = trigger.match.root["prefect.resource.id"]
    assert pattern.endswith("*")
    assert resource_id(tmp_path).startswith(pattern.rstrip("*"))


@pytest.mark.parametrize(("change", "named"), [
    (lambda data: retrain_spec(data).update(schedual=retrain_spec(data).pop("schedules")), "schedual"),
    (lambda data: retrain_spec(data)["triggers"][0].update(expects=retrain_spec(data)["triggers"][0].pop("expect")),
     "expects"),
    (lambda data: retrain_spec(data)["schedules"][0].update(timezon="UTC"), "timezon"),
    (lambda data: retrain_spec(data)["work_pool"].update(job_variable={}), "job_variable"),
    (lambda data: data.update(deploymens=[]), "deploymens"),
])
def test_a_misspelt_key_is_rejected_naming_it(tmp_path: Path, change: Any, named: str) -> None:
    path = write_variant(tmp_path, change)
    with pytest.raises(IntentflowError, match=rf"{named}: unknown key") as caught:
        load_prefect_yaml(path)
    assert str(path) in str(caught.value) or "prefect.yaml" in str(caught.value)


def test_a_value_prefect_refuses_is_rejected(tmp_path: Path) -> None:
    path = write_variant(tmp_path, lambda data: retrain_spec(data)["triggers"][0].update(posture="Sometimes"))
    with pytest.raises(IntentflowError, match="posture"):
        load_prefect_yaml(path)


@pytest.mark.parametrize("text", ["", "- just\n- a list\n", "deployments:\n  - not a mapping\n", "a: [unclosed\n"])
def test_a_malformed_file_is_a_clear_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "prefect.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(IntentflowError, match="prefect.yaml"):
        load_prefect_yaml(path)


def test_an_unknown_deployment_name_is_a_clear_error() -> None:
    with pytest.raises(IntentflowError, match="no deployment named nightly"):
        deployment_spec("nightly")


def test_serve_arguments_equal_what_prefect_yaml_declares() -> None:
    spec = deployment_spec()
    arguments = serve_arguments()
    assert set(arguments) == {"name", "schedules", "triggers", "global_limit", "tags", "description", "parameters"}
    assert arguments["name"] == spec["name"]
    assert arguments["global_limit"] == spec["concurrency_limit"]
    assert arguments["tags"] == spec["tags"]
    assert arguments["description"] == spec["description"]
    assert arguments["parameters"] == spec["parameters"]
    assert [(item.cron, item.timezone, item.active, item.day_or, item.parameters, item.slug)
            for item in arguments["schedules"]] == [
        (item["cron"], item["timezone"], item.get("active", True), item.get("day_or", True),
         item.get("parameters") or {}, item.get("slug")) for item in spec["schedules"]]
    assert [trigger.model_dump(mode="json", exclude_unset=True) for trigger in arguments["triggers"]] == [
        {**item, "expect": list(item["expect"]), "within": 0.0} for item in spec["triggers"]]


def test_serve_keeps_every_schedule_field(tmp_path: Path) -> None:
    def change(data: dict[str, Any]) -> None:
        retrain_spec(data)["schedules"][0].update(day_or=False, slug="monthly", timezone="Europe/Berlin",
                                                  parameters={"params": {"force": True}})

    [schedule] = serve_arguments(path=write_variant(tmp_path, change))["schedules"]
    assert (schedule.day_or, schedule.slug, schedule.timezone, schedule.parameters) == (
        False, "monthly", "Europe/Berlin", {"params": {"force": True}})


def test_the_served_deployment_matches_prefect_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.deployments.runner import RunnerDeployment

    monkeypatch.chdir(REPO)  # Prefect makes the entrypoint relative to where `intentflow serve` runs: the project
    spec = deployment_spec()
    arguments = serve_arguments()
    limit = arguments.pop("global_limit")
    deployment = retrain.to_deployment(**arguments, concurrency_limit=limit)

    assert isinstance(deployment, RunnerDeployment)
    assert deployment.name == spec["name"]
    assert deployment.concurrency_limit == spec["concurrency_limit"] == 1
    assert deployment.entrypoint == spec["entrypoint"]
    assert deployment.tags == spec["tags"]
    assert deployment.parameters == spec["parameters"]
    [schedule] = deployment.schedules
    declared = spec["schedules"][0]
    assert schedule.schedule.cron == declared["cron"]
    assert schedule.schedule.timezone == declared["timezone"]
    assert schedule.active is declared["active"]
    [trigger] = deployment.triggers
    declared = spec["triggers"][0]
    assert trigger.name == declared["name"]
    assert trigger.expect == set(declared["expect"])
    assert trigger.match.root == declared["match"]
    assert trigger.posture.value == declared["posture"]
    assert trigger.threshold == declared["threshold"]
    assert trigger.within == timedelta(seconds=declared["within"])
    assert trigger.parameters == declared["parameters"]
    assert trigger.enabled is declared["enabled"]


def test_serve_command_serves_every_deployment_of_prefect_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    import prefect

    from flows.nightly import nightly_score
    from intentflow.cli import main

    monkeypatch.chdir(REPO)
    monkeypatch.delenv("PREFECT_LOGGING_EXTRA_LOGGERS", raising=False)  # the command sets it; undo that after
    served: list[tuple[Any, ...]] = []
    monkeypatch.setattr(prefect, "serve", lambda *deployments, **kwargs: served.append(deployments))
    assert main(["serve"]) == 0
    [deployments] = served
    assert [d.name for d in deployments] == [RETRAIN_DEPLOYMENT, "score-nightly"]
    assert [d.flow_name for d in deployments] == [retrain.name, nightly_score.name]
    for deployment in deployments:
        spec = deployment_spec(deployment.name)
        assert deployment.entrypoint == spec["entrypoint"]
        assert deployment.concurrency_limit == spec["concurrency_limit"]
        assert [s.schedule.cron for s in deployment.schedules] == [item["cron"] for item in spec["schedules"]]
        assert len(deployment.triggers) == len(spec.get("triggers") or [])


def test_serve_refuses_a_deployment_it_has_no_flow_for(tmp_path: Path) -> None:
    from flows.deployments import runner_deployments

    def add(data: dict) -> None:
        data["deployments"].append({**data["deployments"][1], "name": "mystery"})

    path = write_variant(tmp_path, add)
    with pytest.raises(IntentflowError, match="does not know deployment 'mystery'"):
        runner_deployments(path)


def test_deployment_parameters_fit_the_flow() -> None:
    from flows.retrain import RetrainParameters

    # What the deployment passes must validate as the flow's parameters, or every scheduled run would fail.
    RetrainParameters.model_validate(deployment_spec()["parameters"].get("params", {}))
    template = deployment_spec()["triggers"][0]["parameters"]["params"]
    assert set(template) <= set(RetrainParameters.model_fields)


def test_a_served_run_can_validate_its_parameters(tmp_path: Path) -> None:
    """The runner of `intentflow serve` sends the flow to each run's process by value (cloudpickle), without the
    module's globals: its parameter annotations must still resolve there, or every served run fails validation."""
    import subprocess
    import sys

    import cloudpickle

    from .flow_helpers import prefect_env

    code = ("import sys, cloudpickle\n"
            "flow = cloudpickle.loads(sys.stdin.buffer.read())\n"
            "print(type(flow.validate_parameters({'params': {'outcomes': 'x', 'epochs': 3}})['params']).__name__)\n")
    result = subprocess.run([sys.executable, "-c", code], input=cloudpickle.dumps(retrain), capture_output=True,
                            timeout=120, env=prefect_env(tmp_path / "prefect-home"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert result.stdout.decode().strip() == "RetrainParameters"
