"""A rejection is a decision, not a crash.

A flow that returns a failed state makes Prefect's engine, in the run process of a worker or of ``intentflow
serve``, raise ``FailedRun`` afterwards and log it with a traceback ("Engine execution exited with unexpected
exception"), as if the run had crashed, and then log "Finished in state ..." after our own last line.
``quiet_failure`` filters exactly those two records for this run from Prefect's engine loggers: the state keeps its
name and message, the run's last log line is ours, and any other failure keeps its traceback. Relies on Prefect
3.9's logger names and "Finished in state" line (tests/flows/test_fresh_clone_deployments.py checks it).
"""

from __future__ import annotations

import logging
from typing import Any

from prefect.context import FlowRunContext
from prefect.exceptions import FailedRun
from prefect.states import Failed, State

# The state's name in the UI: failed in type, so it never counts as completed.
REJECTED = "Rejected"
# The loggers the engine reports a finished flow run and its exception on: the run's own and the engine's.
ENGINE_LOGGERS = ("prefect.flow_runs", "prefect.engine")


class _QuietFailures(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.messages: set[str] = set()
        self.runs: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, FailedRun) and str(error) in self.messages:
            return False
        return not (isinstance(record.msg, str) and record.msg.startswith("Finished in state ")
                    and str(getattr(record, "flow_run_id", "")) in self.runs)


_FILTER = _QuietFailures()


def quiet_failure(message: str) -> None:
    """Keep the engine from logging this run's ``FailedRun(message)`` traceback and its "Finished in state" line."""
    _FILTER.messages.add(message)
    context = FlowRunContext.get()
    if context is not None and context.flow_run is not None:
        _FILTER.runs.add(str(context.flow_run.id))
    for name in ENGINE_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def rejected_state(message: str, logger: Any) -> State:
    """A failed state named ``Rejected`` holding ``message``, logged as the run's last line: the verdict."""
    logger.warning("verdict: %s", message)
    quiet_failure(message)
    return Failed(name=REJECTED, message=message)


def failed_state(message: str, logger: Any) -> State:
    """A failed state for an error the user can fix (bad input), its message the run's last line."""
    logger.error("%s", message)
    quiet_failure(message)
    return Failed(message=message)
