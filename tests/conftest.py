"""Fixtures for every test folder: one torch thread, the S3 server (tests/object_store.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from .object_store import ObjectStore, start_object_store


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """The networks in tests are tiny: one thread avoids the contention that makes them many times slower on two
    cores, and changes no result a test asserts. Restored when the session ends."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def object_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectStore]:
    """SeaweedFS's S3 gateway on 127.0.0.1, its address and key in the standard AWS variables for the session."""
    store = start_object_store(tmp_path_factory.mktemp("seaweedfs"))
    patch = pytest.MonkeyPatch()
    for name, value in store.environment.items():
        patch.setenv(name, value)
    try:
        yield store
    finally:
        patch.undo()
        store.stop()


@pytest.fixture
def place(request: pytest.FixtureRequest) -> Callable[[Path], Path | str]:
    """``place(file)``: where a test reads the file from: the file itself, or (parametrised indirectly with "s3") its
    copy uploaded to the test S3 server, as a URL."""
    if getattr(request, "param", "folder") == "folder":
        return lambda path: path
    prefix = request.getfixturevalue("object_store").new_location("files")

    def upload(path: Path) -> str:
        import fsspec

        url = f"{prefix}/{path.name}"
        fsspec.filesystem("s3").put_file(str(path), url)
        return url

    return upload
