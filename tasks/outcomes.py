from prefect import task
from prefect.cache_policies import NO_CACHE

from intentflow import outcomes
from intentflow.outcomes import OutcomeSet


def _io_error(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's retry_condition_fn signature
    try:
        state.result()
    except OSError:
        return True
    except Exception:  # noqa: BLE001 - anything else (bad outcome files) will fail the same way again
        return False
    return False


@task(name="load_outcomes", retries=2, retry_delay_seconds=2, retry_condition_fn=_io_error, cache_policy=NO_CACHE)
def load_outcomes(folder: str) -> OutcomeSet:
    """Read and validate the outcome files; retried only on I/O errors, which may pass."""
    return outcomes.load_outcomes(folder)

