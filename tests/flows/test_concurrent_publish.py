"""Two retrains that publish into one registry at the same moment never interleave: the registry lock makes every
publication whole, one after the other.

Two publisher processes (tests/flows/publisher.py, the flow's last step) are released together and publish eight
versions each. (That a deployment runs one retrain at a time, `concurrency_limit: 1`, is tested in
test_deployments.py; this is what protects the registry when two runs happen anyway, e.g. `intentflow retrain` by
hand while the deployment runs.) The same holds for a registry in a bucket of the test S3 server, where the two could
as well be on two machines: nothing but the store's conditional writes keeps them apart.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from intentflow.registry import Registry, open_registry

from .registry_checks import assert_consistent, assert_history_is_a_chain, publish_next

PUBLISHER = Path(__file__).with_name("publisher.py")
EACH = 8


@pytest.mark.slow
@pytest.mark.parametrize("store", ["folder", "s3"])
def test_two_publishers_at_once_never_interleave(promoted_twice: dict[str, Any], tmp_path: Path, store: str,
                                                 request: pytest.FixtureRequest) -> None:
    checkpoint = Path(shutil.copy(Registry(promoted_twice["registry"]).production().checkpoint,
                                  tmp_path / "candidate.pt"))
    if store == "folder":
        root = str(shutil.copytree(promoted_twice["registry"], tmp_path / "registry"))
    else:
        root = request.getfixturevalue("object_store").new_location("two-publishers")
        publish_next(root, checkpoint)
    before = [version.name for version in open_registry(root).versions()]
    events_before = len(open_registry(root).history())
    go = tmp_path / "go"
    publishers = [
        subprocess.Popen([sys.executable, str(PUBLISHER), root, str(checkpoint), "--count", str(EACH),
                          "--tag", tag, "--start-file", str(go)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
        for tag in ("first", "second")
    ]
    try:
        for process in publishers:
            assert process.stdout.readline().strip() == "loaded"
        go.touch()
        outputs = [process.communicate(timeout=180)[0] for process in publishers]
    finally:
        for process in publishers:
            process.kill()
            process.wait()
    assert [process.returncode for process in publishers] == [0, 0], outputs

    registry = assert_consistent(root)
    names = [version.name for version in registry.versions()]
    published = [line.split()[-1] for output in outputs for line in output.splitlines() if line.startswith("published")]
    assert len(published) == len(set(published)) == 2 * EACH
    assert sorted(names) == sorted([*before, *published])
    # One after the other: the history is a chain, holding every publication once, in the order they happened.
    assert_history_is_a_chain(registry)
    events = registry.history()[events_before:]
    assert sorted(event["version"] for event in events) == sorted(published)
    by_publisher = {tag: [e["version"] for e in events if e["why"].startswith(tag)] for tag in ("first", "second")}
    for tag, output in zip(("first", "second"), outputs, strict=True):
        assert by_publisher[tag] == [line.split()[-1] for line in output.splitlines() if line.startswith("published")]
    # Production is the last publication, whole and serving (assert_consistent loaded it and predicted).
    assert registry.production_name() == events[-1]["version"]
