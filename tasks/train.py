import time
from collections.abc import Callable
from typing import Any

from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE

from intentflow import train
from intentflow.config import TrainConfig
from intentflow.split import Split
from intentflow.trained import EpochStats, TrainedModel

# The progress artifact is updated at most this often, so a fast trainer is not slowed by API calls.
PROGRESS_INTERVAL_SECONDS = 1.0


@task(name="train_split", cache_policy=NO_CACHE)  # no retries: a failed training fails the same way again
def train_split(data: Split, config: TrainConfig) -> TrainedModel:
    """Train on the worker's GPU when it has one (``device=auto``), showing the epoch as a progress artifact."""
    progress_id, on_epoch = progress("Training epochs (early stopping may end sooner)")
    trained = train.train_split(data, config, on_epoch=on_epoch)
    update_progress_artifact(progress_id, progress=100.0)
    return trained


def progress(description: str) -> tuple[Any, Callable[[EpochStats, int], None]]:
    progress_id = create_progress_artifact(progress=0.0, description=description)
    last_update = 0.0

    def on_epoch(stats: EpochStats, total: int) -> None:
        nonlocal last_update
        now = time.monotonic()
        if now - last_update >= PROGRESS_INTERVAL_SECONDS:
            update_progress_artifact(progress_id, progress=100.0 * stats.epoch / total)
            last_update = now

    return progress_id, on_epoch
