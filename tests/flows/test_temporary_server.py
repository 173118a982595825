"""`intentflow retrain` without a configured server: it starts Prefect's temporary server itself, early, and the
server stops when the run ends, or when the command is killed."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from .flow_helpers import prefect_env, retrain_command, write_outcomes

SERVER_LINE = re.compile(r"temporary Prefect server on http://127\.0\.0\.1:(\d+)")


def listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_a_configured_server_is_used_as_it_is():
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.server import TemporaryServer

    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert TemporaryServer.start() is None


@pytest.mark.slow
def test_retrain_runs_on_its_own_server_which_stops_after_the_run_and_after_a_kill(tmp_path: Path) -> None:
    outcomes = write_outcomes(tmp_path / "outcomes")
    env = prefect_env(tmp_path / "home")
    done = subprocess.run(retrain_command(outcomes, tmp_path / "registry"), capture_output=True, text=True, timeout=400,
                          cwd=tmp_path, env=env)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "promoted" in done.stdout
    port = int(SERVER_LINE.search(output).group(1))
    assert not listening(port)
    # The queued log lines reached the server before it stopped, not a closed port afterwards.
    assert "Error logging to API" not in output and "attempted to send logs" not in output

    killed = subprocess.Popen(retrain_command(outcomes, tmp_path / "registry"), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, cwd=tmp_path, env=env, start_new_session=True)
    try:
        lines = []
        for line in killed.stdout:
            lines.append(line)
            if "Beginning flow run" in line:
                break
        port = int(SERVER_LINE.search("".join(lines)).group(1))
        assert listening(port), "".join(lines)
        os.kill(killed.pid, signal.SIGKILL)  # the command alone: its server is not signalled by anyone
        killed.wait(timeout=30)
        deadline = time.monotonic() + 30
        while listening(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not listening(port), "the server outlived the killed command"
        # The server shared the command's output; it went without a word (no traceback of its shutdown).
        rest = killed.stdout.read()
        assert "Traceback" not in rest, rest[-4000:]
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(killed.pid, signal.SIGKILL)
        killed.stdout.close()
