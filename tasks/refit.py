from prefect import task
from prefect.artifacts import update_progress_artifact
from prefect.cache_policies import NO_CACHE

from intentflow import refit
from intentflow.split import Split
from intentflow.trained import TrainedModel
from tasks.train import progress


@task(name="refit_model", cache_policy=NO_CACHE)
def refit_model(held_out: TrainedModel, data: Split) -> TrainedModel:
    """``refit.refit_model``: every row, for the held-out run's best epoch count, with a progress artifact."""
    progress_id, on_epoch = progress("Refit on every row, for the epoch count the held-out run chose")
    trained = refit.refit_model(held_out, data, on_epoch=on_epoch)
    update_progress_artifact(progress_id, progress=100.0)
    return trained
