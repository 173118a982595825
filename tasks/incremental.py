from typing import Any

from prefect import task
from prefect.artifacts import update_progress_artifact
from prefect.cache_policies import NO_CACHE

from intentflow import incremental
from intentflow.augment import Row
from intentflow.config import IncrementalConfig, TrainConfig
from intentflow.incremental import IncrementalRows, ModeDecision
from intentflow.incremental import continue_training as continue_from_production
from intentflow.outcomes import OutcomeSet
from intentflow.split import Split
from intentflow.trained import TrainedModel
from tasks.train import progress


@task(name="choose_mode", cache_policy=NO_CACHE)
def choose_mode(requested: str, outcomes: OutcomeSet, config: dict[str, Any], production: dict[str, Any] | None,
                split: Split, *, scheduled: bool = False) -> ModeDecision:
    return incremental.choose_mode(requested, outcomes, config, production, split, scheduled=scheduled)


@task(name="select_incremental_rows", cache_policy=NO_CACHE)
def select_incremental_rows(train: tuple[Row, ...], production: dict[str, Any], replay_ratio: float,
                            seed: int) -> IncrementalRows:
    return incremental.select_incremental_rows(train, production, replay_ratio, seed)


@task(name="continue_training", cache_policy=NO_CACHE)
def continue_training(production: dict[str, Any], new_train: tuple[Row, ...], replay_train: tuple[Row, ...],
                      val: tuple[Row, ...], config: TrainConfig, incremental: IncrementalConfig,
                      new_share: float | None = None) -> TrainedModel:
    """Incremental training from production's weights, with the same progress artifact as ``train_split``."""
    progress_id, on_epoch = progress("Incremental training epochs, from production's weights")
    # ``incremental`` here is the settings parameter, which shadows the core module.
    trained = continue_from_production(production, new_train, replay_train, val, config, incremental,
                                       on_epoch=on_epoch, new_share=new_share)
    update_progress_artifact(progress_id, progress=100.0)
    return trained
