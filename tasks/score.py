from prefect import task
from prefect.cache_policies import NO_CACHE

from intentflow import score
from intentflow.score import ProductionScore


@task(name="score_production", cache_policy=NO_CACHE)
def score_production(registry: str, evaluation: str) -> ProductionScore:
    return score.score_production(registry, evaluation)
