import time
from collections.abc import Callable
from typing import Any

from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE

from intentflow import train
from intentflow.augment import Row
from intentflow.config import IncrementalConfig, TrainConfig
from intentflow.split import Split
from intentflow.train import EpochStats, TrainedModel

# The progress artifact is updated at most this often, so a fast trainer is not slowed by API calls.
PROGRESS_INTERVAL_SECONDS = 1.0


@task(name="train_model", cache_policy=NO_CACHE)  # no retries: a failed training fails the same way again
def train_model(data: Split, config: TrainConfig) -> TrainedModel:
    """Train on the worker's GPU when it has one (``device=auto``), showing the epoch as a progress artifact."""
    progress_id, on_epoch = _progress("Training epochs (early stopping may end sooner)")
    trained = train.train_split(data, config, on_epoch=on_epoch)
    update_progress_artifact(progress_id, progress=100.0)
    return trained


@task(name="refit_model", cache_policy=NO_CACHE)
def refit_model(held_out: TrainedModel, data: Split) -> TrainedModel:
    """``train.refit_model``: every row, for the held-out run's best epoch count, with a progress artifact."""
    progress_id, on_epoch = _progress("Refit on every row, for the epoch count the held-out run chose")
    trained = train.refit_model(held_out, data, on_epoch=on_epoch)
    update_progress_artifact(progress_id, progress=100.0)
    return trained


@task(name="continue_training", cache_policy=NO_CACHE)
def continue_training(production: dict[str, Any], new_train: tuple[Row, ...], replay_train: tuple[Row, ...],
                      val: tuple[Row, ...], config: TrainConfig, incremental: IncrementalConfig,
                      new_share: float | None = None) -> TrainedModel:
    """Incremental training from production's weights, with the same progress artifact as ``train_model``."""
    progress_id, on_epoch = _progress("Incremental training epochs, from production's weights")
    trained = train.continue_training(production, new_train, replay_train, val, config, incremental,
                                      on_epoch=on_epoch, new_share=new_share)
    update_progress_artifact(progress_id, progress=100.0)
    return trained


def _progress(description: str) -> tuple[Any, Callable[[EpochStats, int], None]]:
    progress_id = create_progress_artifact(progress=0.0, description=description)
    last_update = 0.0

    def on_epoch(stats: EpochStats, total: int) -> None:
        nonlocal last_update
        now = time.monotonic()
        if now - last_update >= PROGRESS_INTERVAL_SECONDS:
            update_progress_artifact(progress_id, progress=100.0 * stats.epoch / total)
            last_update = now

    return progress_id, on_epoch
