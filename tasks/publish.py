from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from intentflow import publish
from intentflow.evaluate import Evaluation
from intentflow.gate import GateDecision
from intentflow.publish import Publication


@task(name="publish_version", cache_policy=NO_CACHE)
def publish_version(registry: str, payload: dict[str, Any], evaluation: Evaluation, decision: GateDecision,
                    notes: str, run: dict[str, Any], onnx: bool = False, int8: bool = False,
                    held_out: dict[str, Any] | None = None, golden: Evaluation | None = None) -> Publication:
    """Not retried: a version is written whole or not at all, and a retry would add a second version."""
    return publish.publish_version(registry, payload, evaluation, decision, notes, run, onnx=onnx,
                                   int8=int8, held_out=held_out, golden=golden)
