"""Constants and builders shared by the orchestration tests (fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# Three outcomes with no words in common, so a tiny network separates them exactly.
OUTCOMES: dict[str, dict[str, Any]] = {
    "check_weather": {
        "name": "check_weather",
        "examples": ["what is the weather today", "will it rain tomorrow", "is it sunny outside",
                     "forecast for the weekend", "how cold is it this morning"],
        "synonyms": {"weather": ["forecast", "conditions"]},
    },
    "play_music": {
        "name": "play_music",
        "examples": ["play some jazz music", "put on my playlist", "start that song again", "play rock tunes loudly",
                     "shuffle my favourite album"],
        "synonyms": {"play": ["put on", "start"]},
    },
    "set_alarm": {
        "name": "set_alarm",
        "examples": ["wake me at seven", "set an alarm for six", "alarm at noon please", "wake me up early",
                     "ring the alarm at eight"],
    },
}

# The tiny training config of every flow run here: about a second per run on one CPU thread. The settings file is
# named, so the runs do not depend on the folder pytest starts in.
TINY: dict[str, Any] = {"config": str(REPO / "config" / "training.toml"), "featurizer": "bow", "augment_factor": 20,
                        "epochs": 30,
                        "hidden_size": 32, "hidden_layers": 1, "patience": 5, "threshold": 0.5, "seed": 1,
                        "device": "cpu", "oos_threshold": "off"}


def retrain_command(outcomes: Path, registry: Path) -> list[str]:
    """`intentflow retrain --force` with the tiny settings, as a child process runs it."""
    flags = ["--outcomes", str(outcomes), "--registry", str(registry), "--config", TINY["config"], "--force"]
    for name in ("featurizer", "augment_factor", "epochs", "hidden_size", "hidden_layers", "patience", "seed", "device",
                 "threshold"):
        flags += ["--" + name.replace("_", "-"), str(TINY[name])]
    return [sys.executable, "-m", "intentflow.cli", "retrain", *flags]


def write_outcomes(folder: Path, definitions: dict[str, dict[str, Any]] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, definition in (definitions or OUTCOMES).items():
        (folder / f"{name}.json").write_text(json.dumps(definition, indent=2), encoding="utf-8")
    return folder


class Recorder:
    """Stands in for ``emit_change``: records the file names of each burst the watcher reports, and lets the test
    wait for the next one."""

    def __init__(self) -> None:
        self.bursts: list[set[str]] = []
        self.arrived = threading.Condition()

    def __call__(self, folder: Path, paths: set[str]) -> None:
        with self.arrived:
            self.bursts.append(set(paths))
            self.arrived.notify_all()

    def wait_for(self, count: int, timeout: float = 15.0) -> list[set[str]]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.bursts) >= count, timeout=timeout)
            return list(self.bursts)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prefect_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a child process that talks to Prefect: ours, with its own home and no inherited URL."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env.update({"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
                "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
                # A loaded 2-core CI machine can take longer than Prefect's default 20 s to start a server.
                "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"})
    env.update(extra)
    return env


class Processes:
    """Child processes in their own process groups, each logging to a file, all stopped at teardown."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, command: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process at teardown
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.started.append((name, process))
        return process

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def describe(self) -> str:
        return "\n".join(f"--- {name} (exit {process.poll()}) ---\n{self.log(name)[-4000:]}"
                         for name, process in self.started)

    def check_alive(self) -> None:
        for name, process in self.started:
            if process.poll() is not None:
                pytest.fail(f"{name} exited early with {process.returncode}\n{self.describe()}")

    def stop(self) -> None:
        # Newest first: the watcher and the runner before the server they talk to.
        for _name, process in reversed(self.started):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for _name, process in reversed(self.started):
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
            if process.stdout:
                process.stdout.close()
        for _name, process in self.started:
            # Children the group leader left behind (the runner's flow-run processes) go too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)


def wait_for(condition: Callable[[], Any], timeout: float, what: str, processes: Processes) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        processes.check_alive()
        result = condition()
        if result:
            return result
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{processes.describe()}")


def post(api: str, path: str, body: dict[str, Any], auth: tuple[str, str] | None = None) -> Any:
    response = httpx.post(f"{api}{path}", json=body, timeout=10, auth=auth)
    response.raise_for_status()
    return response.json()


def healthy(api: str) -> bool:
    try:
        return httpx.get(f"{api}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def start_server(processes: Processes, tmp_path: Path, **env: str) -> str:
    """`prefect server start` on a free port of 127.0.0.1, with its own home; its API URL once it answers."""
    api = f"http://127.0.0.1:{free_port()}/api"
    processes.start("server", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                               "--port", api.split(":")[-1].removesuffix("/api")],
                    prefect_env(tmp_path / "server-home", PREFECT_UI_ENABLED="false", **env), tmp_path)
    wait_for(lambda: healthy(api), 120, "the Prefect server's /api/health", processes)
    return api


def read_artifacts(flow_run_id: Any, key: str) -> list[Any]:
    """The artifacts under ``key`` that one flow run created, read back through the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))


def table_rows(artifact: Any) -> list[dict[str, Any]]:
    data = artifact.data
    return json.loads(data) if isinstance(data, str) else data
