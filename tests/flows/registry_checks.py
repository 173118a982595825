"""What a registry must look like whenever a publisher stopped, however it stopped."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from intentflow.checkpoint import load_checkpoint
from intentflow.cli import main
from intentflow.evaluate import evaluate_model
from intentflow.gate import GateDecision
from intentflow.inference import Classifier, build_model
from intentflow.publish import publish_version
from intentflow.registry import Registry, open_registry
from intentflow.storage import Location

from ..registry_files import RegistryFiles

PROBE = "will it rain tomorrow"
VERSION_FILES = ("{name}.pt", "{name}.pt.metrics.json", "version.json", "evaluation.json", "report.md",
                 "release_notes.md")


def listed_versions(root: Location) -> list[str]:
    """The names `intentflow versions --json` lists."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["versions", "--registry", str(root), "--json"]) == 0
    return [entry["version"] for entry in json.loads(out.getvalue())]


def assert_consistent(root: Location) -> Registry:
    """Production loads and predicts; only complete versions exist and are listed; history names only them.

    In a folder every version folder is whole; in a bucket a crash may leave a prefix without version.json, which
    is never listed (and the next publisher removes)."""
    registry = open_registry(root)
    names = [version.name for version in registry.versions()]
    files = RegistryFiles(root)
    leftovers = files.leftovers() if files.in_bucket else []
    folders = [name for name in files.version_names() if name not in leftovers]
    assert sorted(names) == folders, f"a version folder is incomplete: {folders} vs {names}"
    stored = set(files.names())
    for version in registry.versions():
        for pattern in VERSION_FILES:
            assert f"{version.name}/{pattern.format(name=version.name)}" in stored, (version.name, pattern)
        load_checkpoint(version.checkpoint)
    assert listed_versions(root) == names
    assert registry.production_name() in names
    production = Classifier.load(root)
    production.oos_threshold = None  # the weights are checked here, not the out-of-scope policy
    assert production.predict(PROBE).label == "check_weather"
    for event in registry.history():
        assert event["version"] in names, event
    return registry


def assert_history_is_a_chain(registry: Registry) -> None:
    """Each promotion or rollback names as previous the version the one before it put in production."""
    events = registry.history()
    assert [event["previous"] for event in events[1:]] == [event["version"] for event in events[:-1]], events
    assert events[-1]["version"] == registry.production_name()


def publish_next(root: Location, checkpoint: Path) -> str:
    """The next run's publication, in this process: it must go through after any crash."""
    payload = load_checkpoint(checkpoint)
    classifier = Classifier(*build_model(payload), payload=payload)
    evaluation = evaluate_model(classifier, payload["validation"]["text"], payload["validation"]["label"])
    decision = GateDecision(True, evaluation.accuracy, 0.5, 0.01, None, None, "the run after the crash")
    return publish_version(root, payload, evaluation, decision, "after a crash", {"by": "test"}).version
