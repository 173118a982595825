"""A publisher killed with SIGKILL at any moment leaves a registry that serves, lists only whole versions, and takes
the next run.

Three ways to die: at named points between the steps of publishing (``INTENTFLOW_TEST_CRASH_AT``, see
``intentflow.fileio.crash_point``), at random moments of a publication, and the real `intentflow retrain` killed
during training and at two of the named points. Most kills hit a small publisher process (tests/flows/publisher.py,
the flow's last step without Prefect), which starts in a second or two; the real command pays for Prefect's server.
The publisher's kills run against a folder and against a bucket of the test S3 server (tests/object_store.py).
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from intentflow.fileio import CRASH_POINT_VARIABLE, TEMP_PREFIX, crash_point
from intentflow.registry import Registry, open_registry
from intentflow.storage import Location

from ..registry_files import RegistryFiles
from .flow_helpers import TINY, prefect_env, retrain_command
from .registry_checks import assert_consistent, assert_history_is_a_chain, publish_next

PUBLISHER = Path(__file__).with_name("publisher.py")
# Each named point, and whether production has moved to the new version when the process dies there.
CRASH_POINTS = {
    "checkpoint-written": False,  # the checkpoint is in the temp folder, nothing else
    "before-rename:version.json": False,  # every file written in the temp folder but version.json's last rename
    "version-written": False,  # the temp folder complete, not yet renamed into place
    "version-renamed": False,  # the version in place, production not yet moved
    "before-rename:production.json": False,  # the new pointer written beside the old one
    "pointer-moved": True,  # production moved, its history line not yet written
    "history-appended": True,  # everything done but releasing the lock
}
RANDOM_KILLS = {"folder": 10, "s3": 5}  # a bucket's publications take longer; every named point is killed anyway
SEED = 20261124


@pytest.fixture(scope="module")
def base(promoted_twice: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The two-version registry, and its production checkpoint copied out to publish again."""
    root = tmp_path_factory.mktemp("crash")
    checkpoint = root / "candidate.pt"
    shutil.copy(Registry(promoted_twice["registry"]).production().checkpoint, checkpoint)
    return {"registry": promoted_twice["registry"], "outcomes": promoted_twice["outcomes"], "checkpoint": checkpoint}


@pytest.fixture(scope="module", params=["folder", "s3"])
def stored_base(request: pytest.FixtureRequest, base: dict[str, Any]) -> dict[str, Any]:
    """``base``, or a two-version registry of the same checkpoint in a bucket (published there, so it has the
    bucket's history layout)."""
    if request.param == "folder":
        return base
    store = request.getfixturevalue("object_store")
    root = store.new_location("crash-base")
    publish_next(root, base["checkpoint"])
    publish_next(root, base["checkpoint"])
    return {**base, "registry": root, "store": store, "kind": "s3"}


def copy_registry(base: dict[str, Any], destination: Path) -> Location:
    """A copy of the base registry to change: in ``destination``, or in a new prefix of the base's bucket."""
    if "store" in base:
        return RegistryFiles(base["registry"]).copy_to(base["store"].new_location(destination.name))
    return Path(shutil.copytree(base["registry"], destination))


def publisher(registry: Location, checkpoint: Path, count: int = 1, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(PUBLISHER), str(registry), str(checkpoint), "--count", str(count)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **env})


def wait_for_line(process: subprocess.Popen[str], wanted: str, timeout: float = 120) -> list[str]:
    """Lines of output up to the first that contains ``wanted``."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    for line in process.stdout:
        lines.append(line)
        if wanted in line:
            return lines
        if time.monotonic() > deadline:
            break
    pytest.fail(f"no line with {wanted!r} in:\n{''.join(lines)[-4000:]}")


def kill_group(process: subprocess.Popen[str]) -> None:
    """SIGKILL to the process and everything it started (Prefect's temporary server), as a power cut would."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    """Its exit status and the rest of its output. The output is read in a thread while it runs, and its process
    group killed once it has exited: a Prefect server it started would otherwise outlive it, holding the pipe."""
    rest: list[str] = []
    reader = threading.Thread(target=lambda: rest.append(process.stdout.read()), daemon=True)
    reader.start()
    code = process.wait(timeout=180)
    kill_group(process)
    reader.join(timeout=30)
    process.stdout.close()
    return code, "".join(rest)


def check_recovery(root: Location, checkpoint: Path, before: list[str]) -> Registry:
    """After a kill: consistent as it is, then the next publication succeeds, cleans up and keeps the chain."""
    registry = assert_consistent(root)
    versions = [version.name for version in registry.versions()]
    assert versions[: len(before)] == before and len(versions) <= len(before) + 1
    new = publish_next(root, checkpoint)
    registry = assert_consistent(root)
    assert registry.production_name() == new
    assert RegistryFiles(root).leftovers() == []
    assert_history_is_a_chain(registry)
    return registry


@pytest.mark.slow
def test_killed_at_each_named_point(stored_base: dict[str, Any], tmp_path: Path) -> None:
    base = stored_base

    def crash_at(point: str) -> tuple[str, Location, int, str]:
        root = copy_registry(base, tmp_path / point.replace(":", "-"))
        code, output = finish(publisher(root, base["checkpoint"], **{CRASH_POINT_VARIABLE: point}))
        return point, root, code, output

    before = [version.name for version in open_registry(base["registry"]).versions()]
    old_production = open_registry(base["registry"]).production_name()
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(crash_at, CRASH_POINTS))

    for point, root, code, output in results:
        assert code == -signal.SIGKILL, f"{point}: the publisher was not killed there (exit {code}):\n{output}"
        registry = assert_consistent(root)
        moved = registry.production_name() != old_production
        assert moved == CRASH_POINTS[point], point
        check_recovery(root, base["checkpoint"], before)
    # Killed with the pointer moved but its history line unwritten, the next publication records it late.
    history = open_registry(next(root for point, root, _, _ in results if point == "pointer-moved")).history()
    assert "recorded late" in history[-2]["why"]


@pytest.mark.slow
def test_killed_at_random_moments_of_a_publication(stored_base: dict[str, Any], tmp_path: Path) -> None:
    base = stored_base
    # One undisturbed run of three publications measures how long the kills may wait after "ready".
    measured = copy_registry(base, tmp_path / "measured")
    process = publisher(measured, base["checkpoint"], count=3)
    wait_for_line(process, "ready")
    started = time.monotonic()
    code, output = finish(process)
    duration = time.monotonic() - started
    assert code == 0, output
    assert len(open_registry(measured).versions()) == len(open_registry(base["registry"]).versions()) + 3

    kills = RANDOM_KILLS[base.get("kind", "folder")]
    delays = [random.Random(SEED + index).uniform(0, duration) for index in range(kills)]

    def kill_after(index: int) -> tuple[float, Location, int, str]:
        root = copy_registry(base, tmp_path / f"kill-{index}")
        process = publisher(root, base["checkpoint"], count=3)
        wait_for_line(process, "ready")
        time.sleep(delays[index])
        kill_group(process)
        code, output = finish(process)
        return delays[index], root, code, output

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(kill_after, range(kills)))

    before = [version.name for version in open_registry(base["registry"]).versions()]
    for delay, root, _code, output in results:
        published = output.count("published ")
        registry = assert_consistent(root)
        names = [version.name for version in registry.versions()]
        # Every publication that reported success is there whole, and at most one more.
        assert len(before) + published <= len(names) <= len(before) + published + 1, (delay, output)
        # The next run succeeds (after a kill mid-chain of three, the earlier ones are kept).
        new = publish_next(root, base["checkpoint"])
        registry = assert_consistent(root)
        assert registry.production_name() == new
        assert RegistryFiles(root).leftovers() == []
        assert_history_is_a_chain(registry)


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        kill_group(process)
        if process.stdout:
            process.stdout.close()


@pytest.mark.slow
def test_the_real_retrain_killed_during_training_and_while_publishing(
        base: dict[str, Path], tmp_path: Path, children: list[subprocess.Popen[str]], harness: None) -> None:
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from flows.retrain import RetrainParameters, retrain

    # (where it dies, what it waits for before the kill, or the crash point the process stops itself at)
    kills: dict[str, tuple[str | None, str | None]] = {
        "training": ("intentflow.train: epoch 2/", None),
        "version-renamed": (None, "version-renamed"),
        "pointer-moved": (None, "pointer-moved"),
    }
    old_production = Registry(base["registry"]).production_name()

    def run(name: str) -> tuple[str, Path, int, str]:
        root = copy_registry(base, tmp_path / name)
        wait, point = kills[name]
        env = prefect_env(tmp_path / f"home-{name}", **({CRASH_POINT_VARIABLE: point} if point else {}))
        process = subprocess.Popen(retrain_command(base["outcomes"], root), cwd=tmp_path, env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        children.append(process)
        lines = wait_for_line(process, wait, timeout=180) if wait else []
        if wait:
            kill_group(process)
        code, output = finish(process)
        return name, root, code, "".join(lines) + output

    with ThreadPoolExecutor(max_workers=len(kills)) as pool:
        results = list(pool.map(run, kills))

    before = [version.name for version in Registry(base["registry"]).versions()]
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        for name, root, code, output in results:
            assert code == -signal.SIGKILL, f"{name}: exit {code}\n{output[-4000:]}"
            assert "Traceback" not in output
            registry = assert_consistent(root)
            assert (registry.production_name() != old_production) == (name == "pointer-moved"), name
            assert len(registry.versions()) == len(before) + (name != "training")
            # The next run, the real flow, succeeds and leaves the registry whole.
            state = retrain(RetrainParameters(outcomes=str(base["outcomes"]), registry=str(root), force=True, **TINY),
                            return_state=True)
            assert state.is_completed(), f"{name}: {state.message}"
            registry = assert_consistent(root)
            assert not [path.name for path in root.iterdir() if path.name.startswith(TEMP_PREFIX)]
            assert_history_is_a_chain(registry)


def test_a_full_disk_fails_the_run_clearly_and_production_is_untouched(
        base: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, harness: None) -> None:
    from flows.retrain import RetrainParameters, retrain

    root = copy_registry(base, tmp_path / "registry")
    production = Registry(root).production()
    pointer, checkpoint = (root / "production.json").read_bytes(), production.checkpoint.read_bytes()

    def disk_full(payload: Any, path: Path) -> Path:
        path.write_bytes(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("intentflow.registry.save_checkpoint", disk_full)
    state = retrain(RetrainParameters(outcomes=str(base["outcomes"]), registry=str(root), force=True, **TINY),
                    return_state=True)

    assert state.is_failed()
    assert "No space left on device" in state.message and "production is unchanged" in state.message
    assert (root / "production.json").read_bytes() == pointer and production.checkpoint.read_bytes() == checkpoint
    assert [v.name for v in Registry(root).versions()] == [v.name for v in Registry(base["registry"]).versions()]
    assert not [path.name for path in root.iterdir() if path.name.startswith(TEMP_PREFIX)]


def test_the_crash_hook_is_a_no_op_unless_it_names_the_point(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CRASH_POINT_VARIABLE, "some-other-point")
    crash_point("pointer-moved")
    monkeypatch.delenv(CRASH_POINT_VARIABLE)
    crash_point("pointer-moved")  # this test process is still alive to finish the test
