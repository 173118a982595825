"""Fixtures for the orchestration tests: a private Prefect home, the test harness, tiny outcomes and runs."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import time

# Before Prefect is imported anywhere in this process: no analytics, no tracking, and a Prefect home of our own,
# so no test reads or writes ~/.prefect or shares a database with another run. They must be set on import, before
# any test module imports Prefect; pytest_sessionfinish puts back what they were.
_SET_ON_IMPORT = ("PREFECT_SERVER_ANALYTICS_ENABLED", "DO_NOT_TRACK", "PREFECT_HOME", "PREFECT_API_URL",
                  "PREFECT_PROFILES_PATH")
_BEFORE = {name: os.environ.get(name) for name in _SET_ON_IMPORT}
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="intentflow-prefect-home-")
atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], ignore_errors=True)
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("PREFECT_PROFILES_PATH", None)

from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

from .flow_helpers import TINY, Processes, Recorder, write_outcomes  # noqa: E402


def pytest_sessionfinish() -> None:
    """The environment variables set on import, as they were before."""
    for name, value in _BEFORE.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def harness() -> Iterator[None]:
    """Prefect's test harness: a temporary server and database for every in-process flow run of the session."""
    from prefect.settings import PREFECT_HOME
    from prefect.testing.utilities import prefect_test_harness

    if str(PREFECT_HOME.value()) != os.environ["PREFECT_HOME"]:
        pytest.fail("Prefect was imported before tests/flows/conftest.py set PREFECT_HOME; import it lazily")
    # Two busy cores can take longer than the default 30 s to start the temporary server.
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def tiny() -> dict[str, Any]:
    return dict(TINY)


@pytest.fixture
def outcomes_folder(tmp_path: Path) -> Path:
    return write_outcomes(tmp_path / "outcomes")


@pytest.fixture
def make_params(tmp_path: Path, outcomes_folder: Path) -> Callable[..., Any]:
    """``make_params(force=True, seed=2)``: the tiny retrain parameters on this test's outcomes and registry."""
    from flows.retrain import RetrainParameters

    def make(**changes: Any) -> RetrainParameters:
        values = {"outcomes": str(outcomes_folder), "registry": str(tmp_path / "registry"), **TINY, **changes}
        return RetrainParameters(**values)

    return make


@pytest.fixture(scope="session")
def promoted_twice(tmp_path_factory: pytest.TempPathFactory, harness: None) -> dict[str, Any]:
    """A registry with two promoted versions (the second forced), built once for the session; copy it before
    changing it."""
    from flows.retrain import RetrainParameters, retrain

    root = tmp_path_factory.mktemp("promoted-twice")
    outcomes = write_outcomes(root / "outcomes")
    base = {"outcomes": str(outcomes), "registry": str(root / "registry"), **TINY}
    first = retrain(RetrainParameters(**base), return_state=True)
    second = retrain(RetrainParameters(**base, force=True), return_state=True)
    assert first.is_completed(), first.message
    assert second.is_completed(), second.message
    return {"registry": root / "registry", "outcomes": outcomes, "states": [first, second]}


@pytest.fixture
def registry_copy(tmp_path: Path, promoted_twice: dict[str, Any]) -> Path:
    """A private copy of the two-version registry, for tests that move production."""
    return Path(shutil.copytree(promoted_twice["registry"], tmp_path / "registry"))


@pytest.fixture
def postgres() -> Iterator[Any]:
    """PostgreSQL on 127.0.0.1 (tests/flows/postgres.py); the test is skipped where Debian's package is missing."""
    from .flow_helpers import free_port
    from .postgres import binaries, start_postgres

    if binaries() is None:
        pytest.skip("PostgreSQL is not installed (fix: apt-get install -y postgresql, as .ci/run does)")
    server = start_postgres(free_port())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Start servers, runners and watchers as child processes; all of them are stopped after the test."""
    (tmp_path / "logs").mkdir()
    started = Processes(tmp_path / "logs")
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def start_watcher(tmp_path: Path) -> Iterator[Callable[..., tuple[Path, Recorder]]]:
    """``folder, recorder = start_watcher(quiet=0.6)``: the outcome watcher, in a thread, on a fresh outcome folder,
    with a ``Recorder`` in place of ``emit_change``. Every watcher started is stopped after the test."""
    from flows.watch import watch_outcomes

    running: list[tuple[threading.Event, threading.Thread]] = []

    def start(quiet: float = 0.6, max_wait: float = 30.0) -> tuple[Path, Recorder]:
        folder = write_outcomes(tmp_path / "outcomes")
        recorder = Recorder()
        stop = threading.Event()
        thread = threading.Thread(target=watch_outcomes, args=(folder, recorder, stop),
                                  kwargs={"quiet": quiet, "max_wait": max_wait}, daemon=True)
        thread.start()
        running.append((stop, thread))
        time.sleep(0.8)  # let the watcher register with the file system before anything changes
        return folder, recorder

    yield start
    for stop, _thread in running:
        stop.set()
    for _stop, thread in running:
        thread.join(timeout=10)
        assert not thread.is_alive()
