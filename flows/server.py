"""Prefect's temporary server for a command-line run, started before the heavy imports so both proceed at once.

With no ``PREFECT_API_URL``, Prefect starts a temporary server itself, but only when the flow's first call reaches
its client: after this process has imported torch, Prefect and the flow, and after the client has imported the
server's own modules. ``TemporaryServer.start`` launches the same server (Prefect's command and settings) as soon
as the CLI knows it will need one; while it boots, the CLI imports what the run needs on the other core, and
``serving`` waits for its health check, points this process at it and stops it afterwards. On Linux the server
also dies with this process, even when it is killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from intentflow.errors import IntentflowError

logger = logging.getLogger("intentflow.server")

# Prefect's own exit status for "port already in use" (SubprocessASGIServer retries on another port too).
_PORT_IN_USE = 3
_PORTS = range(8000, 9000)


class TemporaryServer:
    """A Prefect API server on 127.0.0.1 for the length of one command."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.process = self._launch()

    @classmethod
    def start(cls) -> TemporaryServer | None:
        """Launch a server now if Prefect would start one for this process (no API URL set), else None."""
        from prefect.settings import get_current_settings

        settings = get_current_settings()
        if settings.api.url or not settings.server.ephemeral.enabled:
            return None
        return cls()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def _launch(self) -> subprocess.Popen[bytes]:
        from prefect.settings import get_current_settings

        spec = importlib.util.find_spec("prefect")
        assert spec is not None and spec.submodule_search_locations, "prefect is installed"
        package = Path(next(iter(spec.submodule_search_locations)))
        # As prefect.server.api.server.SubprocessASGIServer runs it: no UI, the ephemeral server's settings.
        environment = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
                       "PREFECT__SERVER_FINAL": "1",
                       **get_current_settings().to_environment_variables(exclude_unset=True)}
        command = [sys.executable, "-m", "uvicorn", "--app-dir", str(package.parent), "--factory",
                   "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
                   "--log-level", "error", "--lifespan", "on"]
        logger.info("starting a temporary Prefect server on http://127.0.0.1:%d", self.port)
        return subprocess.Popen(command, env=environment, stdin=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)

    def wait(self, timeout: float) -> None:
        """Until the server answers its health check; a clear error if it exits or takes over ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.process.poll()
            if status == _PORT_IN_USE:  # taken between the check and the bind: another port
                self.port = _free_port()
                self.process = self._launch()
                continue
            if status is not None:
                raise IntentflowError(f"the temporary Prefect server exited with status {status} before it was "
                                      "ready (its messages are above; fix: set PREFECT_API_URL to a running "
                                      "server, or see `prefect server start`)")
            with contextlib.suppress(OSError, urllib.error.URLError), \
                    urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:  # noqa: S310 - local
                if response.status == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise IntentflowError(f"the temporary Prefect server did not answer within {timeout:.0f} s (fix: raise "
                              "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or set PREFECT_API_URL to a "
                              "running server)")

    @contextlib.contextmanager
    def serving(self) -> Iterator[str]:
        """This process talks to the server inside the block (its URL yielded); the server stops after it."""
        from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

        try:
            self.wait(float(get_current_settings().server.ephemeral.startup_timeout_seconds))
            with temporary_settings(updates={PREFECT_API_URL: self.api_url}):
                try:
                    yield self.api_url
                finally:
                    _drain_prefect_workers()
        finally:
            self.stop()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _drain_prefect_workers() -> None:
    """Send the logs and events still queued while the server runs (Prefect does this at exit, but that is after
    the server is stopped here; the workers would then retry against a closed port)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):  # a lost log line must not fail the run that already finished
            worker.drain_all(timeout=10)


def _free_port() -> int:
    for _ in range(20):
        port = random.choice(_PORTS)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise IntentflowError("no free port in 8000-8999 for the temporary Prefect server "
                          "(fix: set PREFECT_API_URL to a running server)")


def _die_with_parent() -> None:
    """In the child before exec: the kernel sends it SIGKILL when the process that started it dies.

    Not SIGTERM: with no client left there is nothing to shut down gracefully for, and on SIGTERM the server's
    event recorder, cancelled mid-flush, printed a CancelledError traceback into the dead command's output
    (SQLite keeps Prefect's database consistent through a kill; the normal way out is ``stop``, which terminates).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
