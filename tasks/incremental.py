from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from intentflow import incremental
from intentflow.augment import Row
from intentflow.incremental import IncrementalRows, ModeDecision
from intentflow.outcomes import OutcomeSet
from intentflow.split import Split


@task(name="choose_mode", cache_policy=NO_CACHE)
def choose_mode(requested: str, outcomes: OutcomeSet, config: dict[str, Any], production: dict[str, Any] | None,
                split: Split, *, scheduled: bool = False) -> ModeDecision:
    return incremental.choose_mode(requested, outcomes, config, production, split, scheduled=scheduled)


@task(name="select_incremental_rows", cache_policy=NO_CACHE)
def select_incremental_rows(train: tuple[Row, ...], production: dict[str, Any], replay_ratio: float,
                            seed: int) -> IncrementalRows:
    return incremental.select_incremental_rows(train, production, replay_ratio, seed)
