"""Every bad outcome folder of the corpus is refused the same way by `intentflow validate` and by a retrain run.

The command exits 1 with the file, the field and the problem on stderr and no traceback; the run ends Failed with the
same in its message, and a registry that already has a production version is left byte for byte as it was. The
command runs through ``main`` in this process for every case, and as a real process for every case in the slow suite
(each process imports PyTorch).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from intentflow.fileio import TEMP_PREFIX
from intentflow.registry import Registry

from .bad_outcomes import CASES, COMMITTED, COMMITTED_CASES, build_corpus, snapshot
from .flow_helpers import TINY


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_corpus(tmp_path_factory.mktemp("bad_outcomes"))


def test_the_corpus_is_complete() -> None:
    committed = sorted(path.name for path in COMMITTED.iterdir() if path.is_dir())
    assert committed == sorted(COMMITTED_CASES), "a folder under tests/data/bad_outcomes lacks an expectation"
    assert len(CASES) >= 60


def validate(case: str, root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "intentflow.cli", "validate", "--outcomes", case], cwd=root,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def validate_in_process(case: str) -> subprocess.CompletedProcess[str]:
    """``intentflow validate`` through ``main`` in this process, from the working folder; an exception that escapes
    ``main`` is reported as the traceback a process would have printed."""
    from intentflow.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["validate", "--outcomes", case])
        except Exception as error:  # reported below as a failure, as a process would print it
            code, err = 1, io.StringIO(f"Traceback (escaped main): {error!r}")
    return subprocess.CompletedProcess(["intentflow", "validate"], code, out.getvalue(), err.getvalue())


def assert_every_case_refused(results: dict[str, subprocess.CompletedProcess[str]]) -> None:
    failures = []
    for case, result in results.items():
        said = result.stderr
        if result.returncode != 1 or result.stdout or not said.startswith("error: ") or "Traceback" in said:
            failures.append(f"{case}: exit {result.returncode}\nstdout: {result.stdout}\nstderr: {said[-2000:]}")
        elif (missing := CASES[case].missing_from(said)) is not None:
            failures.append(f"{case}: {missing}, got:\n{said[:2000]}")
    assert not failures, "\n\n".join(failures)


def test_validate_refuses_every_case_naming_file_and_field(corpus: dict[str, Path],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(corpus["empty_folder"].parent)
    assert_every_case_refused({case: validate_in_process(case) for case in CASES})


@pytest.mark.slow
def test_validate_as_a_process_refuses_every_case_naming_file_and_field(corpus: dict[str, Path]) -> None:
    root = corpus["empty_folder"].parent
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert_every_case_refused(dict(zip(CASES, pool.map(lambda case: validate(case, root), CASES), strict=True)))


@pytest.mark.slow  # a retrain run per bad outcome file, over two promoted versions
def test_a_retrain_run_fails_on_every_case_and_production_is_untouched(
        corpus: dict[str, Path], promoted_twice: dict, tmp_path: Path, harness: None) -> None:
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from flows.retrain import RetrainParameters, retrain

    registry_root = Path(shutil.copytree(promoted_twice["registry"], tmp_path / "registry"))
    registry = Registry(registry_root)
    production = registry.production()
    checkpoint = production.checkpoint.read_bytes()
    files = {name: (registry_root / name).read_bytes() for name in ("production.json", "history.jsonl")}
    versions = [version.name for version in registry.versions()]
    corpus_root = corpus["empty_folder"].parent
    before = snapshot(corpus_root)

    failures = []
    # A run's heartbeat thread costs about a second to stop; these runs end in a fraction of that.
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        for case, folder in corpus.items():
            state = retrain(RetrainParameters(outcomes=str(folder), registry=str(registry_root), **TINY),
                            return_state=True)
            message = state.message or ""
            if not state.is_failed() or "Traceback" in message:
                failures.append(f"{case}: ended {state.name}: {message[:2000]}")
            elif (missing := CASES[case].missing_from(message)) is not None:
                failures.append(f"{case}: {missing}, got:\n{message[:2000]}")
    assert not failures, "\n\n".join(failures)

    assert registry.production_name() == production.name
    assert production.checkpoint.read_bytes() == checkpoint
    assert {name: (registry_root / name).read_bytes() for name in files} == files
    assert [version.name for version in registry.versions()] == versions
    assert not [path.name for path in registry_root.iterdir() if path.name.startswith(TEMP_PREFIX)]
    # Nothing was written into, or beside, the outcome folders.
    assert snapshot(corpus_root) == before
