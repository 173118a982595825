from prefect import task
from prefect.cache_policies import NO_CACHE

from intentflow import augment
from intentflow.augment import Augmented
from intentflow.outcomes import OutcomeSet


@task(name="augment_outcomes", cache_policy=NO_CACHE)
def augment_outcomes(outcome_set: OutcomeSet, augment_factor: int, seed: int) -> Augmented:
    return augment.augment_outcomes(outcome_set, augment_factor, seed)
