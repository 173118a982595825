from prefect import task
from prefect.cache_policies import NO_CACHE

from intentflow import gate
from intentflow.config import GateConfig
from intentflow.gate import GateDecision
from intentflow.golden import GoldenSet
from intentflow.inference import Classifier


@task(name="gate_candidate", cache_policy=NO_CACHE)
def gate_candidate(candidate_accuracy: float, candidate_labels: list[str], val_texts: list[str],
                   val_labels: list[str], config: GateConfig, production: Classifier | None,
                   production_version: str | None, *, candidate: Classifier | None = None,
                   val_originals: list[str] | None = None, candidate_trained_on: list[str] | None = None,
                   golden: GoldenSet | None = None, candidate_served: Classifier | None = None,
                   production_served: Classifier | None = None) -> GateDecision:
    return gate.gate_candidate(candidate_accuracy, candidate_labels, val_texts, val_labels, config,
                               production, production_version, candidate=candidate, val_originals=val_originals,
                               candidate_trained_on=candidate_trained_on, golden=golden,
                               candidate_served=candidate_served, production_served=production_served)
