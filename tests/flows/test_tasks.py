"""Each task is a thin adapter named after the one core function it wraps; only I/O errors are retried."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
from prefect import Task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, Failed

import tasks
from intentflow.errors import ValidationFailed
from tasks.outcomes import _io_error

STAGES = sorted(module.name for module in pkgutil.iter_modules(tasks.__path__))


def test_every_stage_has_a_task_module() -> None:
    assert STAGES == ["augment", "evaluate", "gate", "golden", "incremental", "outcomes", "publish", "refit", "score",
                      "split", "train"]


@pytest.mark.parametrize("stage", STAGES)
def test_each_task_wraps_the_core_function_of_its_name(stage: str) -> None:
    module = importlib.import_module(f"tasks.{stage}")
    core = importlib.import_module(f"intentflow.{stage}")
    found = [value for value in vars(module).values()
             if isinstance(value, Task) and value.fn.__module__ == module.__name__]
    assert found, f"tasks/{stage}.py defines no task"
    for task in found:
        assert task.name == task.fn.__name__
        assert callable(getattr(core, task.name, None)), f"intentflow/{stage}.py has no {task.name}"
        # Tasks never cache: each run trains on what the outcome files say now.
        assert task.cache_policy is NO_CACHE


def test_only_loading_outcomes_is_retried_and_only_on_io_errors() -> None:
    from tasks.incremental import continue_training
    from tasks.outcomes import load_outcomes
    from tasks.publish import publish_version
    from tasks.train import train_split

    assert load_outcomes.retries == 2
    assert load_outcomes.retry_condition_fn is _io_error
    assert _io_error(load_outcomes, None, Failed(data=OSError(5, "Input/output error"))) is True
    assert _io_error(load_outcomes, None, Failed(data=ValidationFailed([]))) is False
    assert _io_error(load_outcomes, None, Completed(data=None)) is False
    # A retried publish would add a second version; a retried training fails the same way again.
    assert publish_version.retries == 0
    assert train_split.retries == 0
    assert continue_training.retries == 0
