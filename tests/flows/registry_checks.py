"""What a registry must look like whenever a publisher stopped, however it stopped."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from intentflow.checkpoint import load_checkpoint
from intentflow.cli import main
from intentflow.inference import Classifier
from intentflow.registry import _VERSION_NAME, Registry

PROBE = "will it rain tomorrow"
VERSION_FILES = ("{name}.pt", "{name}.pt.metrics.json", "version.json", "evaluation.json", "report.md",
                 "release_notes.md")


def listed_versions(root: Path) -> list[str]:
    """The names `intentflow versions --json` lists."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["versions", "--registry", str(root), "--json"]) == 0
    return [entry["version"] for entry in json.loads(out.getvalue())]


def assert_consistent(root: Path) -> Registry:
    """Production loads and predicts; only complete versions exist and are listed; history names only them."""
    registry = Registry(root)
    names = [version.name for version in registry.versions()]
    folders = sorted(path.name for path in root.iterdir() if path.is_dir() and _VERSION_NAME.fullmatch(path.name))
    assert sorted(names) == folders, f"a version folder is incomplete: {folders} vs {names}"
    for version in registry.versions():
        for pattern in VERSION_FILES:
            assert (version.path / pattern.format(name=version.name)).is_file(), (version.name, pattern)
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
