from prefect import task
from prefect.cache_policies import NO_CACHE

from intentflow import golden
from intentflow.golden import GoldenSet
from intentflow.outcomes import OutcomeSet
from tasks.outcomes import _io_error


@task(name="load_golden", retries=2, retry_delay_seconds=2, retry_condition_fn=_io_error, cache_policy=NO_CACHE)
def load_golden(folder: str, outcome_set: OutcomeSet, unknown_label: str) -> GoldenSet | None:
    """The golden set of ``folder`` checked against the outcomes, or None where there is none."""
    return golden.load_golden(folder, outcome_set, unknown_label)
