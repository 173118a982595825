"""A registry in a bucket (tests/object_store.py runs a real S3 server): what replaces the folder's lock and renames.

The rules shared with a folder (names, status, rollback, crashes at each publishing point, two publishers) run
against both in test_registry.py, test_registry_failures.py and tests/flows; these are the bucket's own mechanisms.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

import pytest

from intentflow import object_registry
from intentflow.checkpoint import build_payload
from intentflow.errors import IntentflowError
from intentflow.evaluate import evaluate_model
from intentflow.gate import GateDecision
from intentflow.inference import Classifier, build_model
from intentflow.object_registry import ObjectRegistry
from intentflow.onnx_export import OnnxClassifier
from intentflow.publish import publish_version
from intentflow.registry import Registry, open_registry

from ..registry_files import RegistryFiles

PROBE = "will it rain tomorrow"


@pytest.fixture(scope="module")
def payload(toy_model) -> dict[str, Any]:
    data = toy_model.data
    return build_payload(toy_model.trained, outcome_hash=toy_model.outcomes.content_hash, prepare={"seed": 1},
                         val_texts=[row.text for row in data.val], val_labels=[row.label for row in data.val])


def publish(root: str, payload: dict[str, Any], why: str = "test", onnx: bool = False) -> str:
    classifier = Classifier(*build_model(payload), payload=payload)
    evaluation = evaluate_model(classifier, payload["validation"]["text"], payload["validation"]["label"])
    decision = GateDecision(True, evaluation.accuracy, 0.5, 0.01, None, None, why)
    return publish_version(root, payload, evaluation, decision, "notes", {"by": why}, onnx=onnx).version


@pytest.fixture
def root(object_store) -> str:
    return object_store.new_location()


def test_a_version_without_its_version_json_is_not_there_and_is_cleaned(root: str, payload: dict[str, Any]) -> None:
    first = publish(root, payload)
    files = RegistryFiles(root)
    # What a publisher killed before its commit marker leaves: every object of the next version but version.json.
    half = "intent_model_v2026-03"
    for name in files.names():
        if name.startswith(f"{first}/") and not name.endswith("version.json"):
            files.write(name.replace(first, half), files.read(name))
    registry = open_registry(root)
    assert [version.name for version in registry.versions()] == [first]
    assert files.leftovers() == [half]

    second = publish(root, payload)
    assert files.leftovers() == []
    assert [version.name for version in registry.versions()] == [first, second]
    assert registry.production_name() == second


def _lease(files: RegistryFiles, host: str, pid: int, expires: float) -> None:
    files.write(".lock", json.dumps({"who": "someone@elsewhere", "host": host, "pid": pid, "token": "t",
                                     "expires": expires}).encode())


def test_a_live_lease_blocks_and_an_expired_one_is_taken_over(root: str) -> None:
    registry, files = open_registry(root), RegistryFiles(root)
    _lease(files, "another-machine", 1, time.time() + 60)
    entered = threading.Event()

    def publisher() -> None:
        with registry.lock():
            entered.set()

    thread = threading.Thread(target=publisher, daemon=True)
    thread.start()
    assert not entered.wait(1.5), "a lease another machine renews was ignored"
    _lease(files, "another-machine", 1, time.time() - 1)  # it stopped renewing
    assert entered.wait(10)
    thread.join(10)
    assert not files.exists(".lock")  # released


def test_the_lease_of_a_dead_process_on_this_machine_is_taken_at_once(root: str) -> None:
    files = RegistryFiles(root)
    _lease(files, socket.gethostname(), 2**22 + 1, time.time() + 60)  # above Linux's largest pid: never running
    started = time.monotonic()
    with open_registry(root).lock():
        assert time.monotonic() - started < 5


def test_the_lease_is_renewed_while_held(root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(object_registry, "RENEW_EVERY", 0.2)
    files = RegistryFiles(root)
    with open_registry(root).lock():
        first = json.loads(files.read(".lock"))["expires"]
        time.sleep(0.8)
        assert json.loads(files.read(".lock"))["expires"] > first


def test_a_pointer_another_writer_replaced_is_not_overwritten(root: str, payload: dict[str, Any],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    first = publish(root, payload)
    files = RegistryFiles(root)
    theirs = json.dumps({"version": first, "since": "their write"}).encode()
    real = object_registry.crash_point

    def another_writer(point: str) -> None:
        # Between this publisher reading the pointer and replacing it, a writer that does not hold the lock (one
        # whose lease lapsed) replaces it.
        if point == "before-rename:production.json":
            files.write("production.json", theirs)
        real(point)

    monkeypatch.setattr(object_registry, "crash_point", another_writer)
    with pytest.raises(IntentflowError, match="production.json changed since this publisher read it"):
        publish(root, payload)
    assert files.read("production.json") == theirs


def test_a_history_entry_is_never_overwritten(root: str, payload: dict[str, Any],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    publish(root, payload)
    files = RegistryFiles(root)
    theirs = json.dumps({"version": "theirs"}).encode()
    real_put = ObjectRegistry._put

    def another_writer_first(self: ObjectRegistry, relative: str, body: bytes, **condition: str) -> str:
        # Another writer creates the entry this publisher chose, between its listing and its write.
        if relative == "history/0000000002.json" and not files.exists(relative):
            files.write(relative, theirs)
        return real_put(self, relative, body, **condition)

    monkeypatch.setattr(ObjectRegistry, "_put", another_writer_first)
    second = publish(root, payload)
    assert files.read("history/0000000002.json") == theirs
    assert json.loads(files.read("history/0000000003.json"))["version"] == second


def test_the_production_of_a_bucket_loads_by_its_url(root: str, payload: dict[str, Any]) -> None:
    pytest.importorskip("onnxruntime")
    publish(root, payload, onnx=True)
    assert Classifier.load(root).predict(PROBE).label == "check_weather"
    assert OnnxClassifier.load(root).predict(PROBE).label == "check_weather"
    name = open_registry(root).production_name()
    assert OnnxClassifier.load(f"{root}/{name}/{name}.onnx").predict(PROBE).label == "check_weather"


def test_an_empty_bucket_prefix_says_how_to_fill_it(root: str) -> None:
    with pytest.raises(IntentflowError, match=f"{root} has no production version.*intentflow retrain --registry"):
        Classifier.load(root)


def test_registry_urls_other_than_s3_are_refused_and_file_urls_are_folders(tmp_path) -> None:
    with pytest.raises(IntentflowError, match="gs://bucket/registry: a registry must be a folder or an s3:// URL"):
        ObjectRegistry("gs://bucket/registry")
    registry = open_registry((tmp_path / "registry").as_uri())
    assert isinstance(registry, Registry) and registry.root == tmp_path / "registry"
