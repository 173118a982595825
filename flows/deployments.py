"""The deployments in ``prefect.yaml``, read and checked, so ``intentflow serve`` serves exactly what is deployed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from prefect.cli.deploy._models import PrefectYamlModel
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
from prefect.schedules import Cron
from pydantic import TypeAdapter, ValidationError

from intentflow.errors import IntentflowError, display_path

PREFECT_YAML = Path(__file__).resolve().parent.parent / "prefect.yaml"
RETRAIN_DEPLOYMENT = "retrain-monthly"
NIGHTLY_DEPLOYMENT = "score-nightly"

# Prefect's own models ignore unknown keys, so a misspelt key would silently do nothing: only these are allowed.
ALLOWED_TOP = {"name", "prefect-version", "build", "push", "pull", "deployments"}
ALLOWED_DEPLOYMENT = {"name", "entrypoint", "description", "tags", "parameters", "schedules", "concurrency_limit",
                      "work_pool", "triggers", "version", "enforce_parameter_schema"}
ALLOWED_SCHEDULE = {"cron", "timezone", "active", "parameters", "slug", "day_or"}
ALLOWED_WORK_POOL = {"name", "work_queue_name", "job_variables"}
ALLOWED_TRIGGER = set(DeploymentEventTrigger.model_fields)


def load_prefect_yaml(path: str | Path = PREFECT_YAML) -> dict[str, Any]:
    """Parse ``prefect.yaml`` and check it against Prefect's models plus the key whitelist above."""
    path = Path(path)
    shown = display_path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise IntentflowError(f"{shown}: cannot read: {error} (fix: restore prefect.yaml)") from None
    problems = _unknown(data, ALLOWED_TOP, "")
    if problems and not isinstance(data, dict):
        raise IntentflowError(f"{shown} is invalid:\n  - " + "\n  - ".join(problems))
    for index, deployment in enumerate(data.get("deployments") or []):
        where = f"deployments[{index}]"
        problems += _unknown(deployment, ALLOWED_DEPLOYMENT, where)
        if not isinstance(deployment, dict):
            continue
        for number, schedule in enumerate(deployment.get("schedules") or []):
            problems += _unknown(schedule, ALLOWED_SCHEDULE, f"{where}.schedules[{number}]")
        problems += _unknown(deployment.get("work_pool") or {}, ALLOWED_WORK_POOL, f"{where}.work_pool")
        for number, trigger in enumerate(deployment.get("triggers") or []):
            problems += _unknown(trigger, ALLOWED_TRIGGER, f"{where}.triggers[{number}]")
    try:
        PrefectYamlModel.model_validate(data)
        for deployment in data.get("deployments") or []:
            if isinstance(deployment, dict):
                TypeAdapter(list[DeploymentEventTrigger]).validate_python(deployment.get("triggers") or [])
    except ValidationError as error:
        problems.append(str(error))
    if problems:
        raise IntentflowError(f"{shown} is invalid:\n  - " + "\n  - ".join(problems))
    return data


def deployment_spec(name: str = RETRAIN_DEPLOYMENT, path: str | Path = PREFECT_YAML) -> dict[str, Any]:
    for deployment in load_prefect_yaml(path).get("deployments") or []:
        if deployment.get("name") == name:
            return deployment
    raise IntentflowError(f"{display_path(Path(path))} has no deployment named {name}")


def serve_arguments(name: str = RETRAIN_DEPLOYMENT, path: str | Path = PREFECT_YAML) -> dict[str, Any]:
    """Arguments for ``Flow.serve`` equal to the deployment's schedule, trigger, limit and tags."""
    spec = deployment_spec(name, path)
    schedules = [Cron(item["cron"], timezone=item.get("timezone"), day_or=item.get("day_or", True),
                      active=item.get("active", True), parameters=item.get("parameters"), slug=item.get("slug"))
                 for item in spec.get("schedules") or []]
    return {
        "name": spec["name"],
        "schedules": schedules,
        "triggers": [DeploymentEventTrigger.model_validate(item) for item in spec.get("triggers") or []],
        "global_limit": spec.get("concurrency_limit"),
        "tags": spec.get("tags"),
        "description": spec.get("description"),
        "parameters": spec.get("parameters") or {},
    }


def runner_deployments(path: str | Path = PREFECT_YAML) -> list[Any]:
    """Every deployment of ``prefect.yaml`` as a ``RunnerDeployment`` of its flow, for ``intentflow serve``."""
    from flows.nightly import nightly_score
    from flows.retrain import retrain

    flows = {RETRAIN_DEPLOYMENT: retrain, NIGHTLY_DEPLOYMENT: nightly_score}
    deployments = []
    for spec in load_prefect_yaml(path).get("deployments") or []:
        flow = flows.get(spec.get("name"))
        if flow is None:
            raise IntentflowError(f"{display_path(Path(path))}: intentflow serve does not know deployment "
                                  f"{spec.get('name')!r} (known: {', '.join(flows)}; fix: rename it, or deploy it "
                                  "with `make deploy` and a worker)")
        arguments = serve_arguments(spec["name"], path)
        limit = arguments.pop("global_limit")
        deployments.append(flow.to_deployment(**arguments, concurrency_limit=limit))
    return deployments


def _unknown(section: Any, allowed: set[str], where: str) -> list[str]:
    if not isinstance(section, dict):
        return [f"{where or '(top level)'}: expected a mapping"]
    return [f"{where + '.' if where else ''}{key}: unknown key (allowed: {', '.join(sorted(allowed))})"
            for key in section if key not in allowed]
