"""The model registry on disk: version names, whole-or-nothing versions, the production pointer, history, rollback."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from intentflow import fileio
from intentflow import registry as registry_module
from intentflow.errors import IntentflowError
from intentflow.registry import Registry, Version, open_registry, resolve_checkpoint

MARCH = datetime(2026, 3, 5, tzinfo=UTC)
CONFIG = {"prepare": {"augment_factor": 20, "seed": 1},
          "train": {"epochs": 30, "hidden_size": 32, "seed": 1, "device": "cpu"}}


def payload(accuracy: float = 0.9) -> dict[str, Any]:
    """The smallest checkpoint payload the registry can save (it never builds a model)."""
    return {"metrics": {"val_accuracy": accuracy}, "labels": ["a", "b"], "outcome_hash": "hash-1"}


def add(registry: Registry, promote: bool = True, accuracy: float = 0.9, when: datetime = MARCH,
        outcome_hash: str = "hash-1", config: dict[str, Any] | None = None, created_at: str | None = None) -> Version:
    """Add a version the way publishing does (under the lock, promoted if the gate agreed)."""
    with registry.lock():
        name = registry.next_name(when)
        info = {"created_at": created_at or datetime.now(UTC).isoformat(timespec="seconds"),
                "val_accuracy": accuracy, "outcome_hash": outcome_hash, "labels": ["a", "b"],
                "config": config or CONFIG, "gate": {"promote": promote}}
        version = registry.add_version(name, payload(accuracy), info, {"report.md": f"# {name}\n"})
        if promote:
            registry.promote(name, why=f"gate passed at {accuracy}")
    return version


def leftovers(root: Path) -> list[str]:
    return sorted(path.name for path in root.iterdir() if path.name.startswith(fileio.TEMP_PREFIX))


# Tests of what a registry means run against a folder and a bucket of the test S3 server alike; those of how a
# folder is written run against a folder.
BOTH_STORES = pytest.mark.parametrize("registry", ["folder", "s3"], indirect=True)


@pytest.fixture
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Registry:
    if getattr(request, "param", "folder") == "folder":
        return Registry(tmp_path / "registry")
    return open_registry(request.getfixturevalue("object_store").new_location())


# --- names -----------------------------------------------------------------------------------------------------------
@BOTH_STORES
def test_versions_are_named_by_month_then_numbered(registry: Registry) -> None:
    assert registry.next_name(MARCH) == "intent_model_v2026-03"
    names = [add(registry).name for _ in range(3)]
    assert names == ["intent_model_v2026-03", "intent_model_v2026-03-2", "intent_model_v2026-03-3"]
    assert registry.next_name(MARCH) == "intent_model_v2026-03-4"
    assert registry.next_name(datetime(2026, 4, 1, tzinfo=UTC)) == "intent_model_v2026-04"


def test_the_default_name_is_this_month(registry: Registry) -> None:
    assert registry.next_name() == f"intent_model_v{datetime.now(UTC):%Y-%m}"


@BOTH_STORES
def test_versions_are_listed_oldest_first(registry: Registry) -> None:
    # Same second: the number orders them, so -10 comes after -9, not after the first.
    stamp = "2026-03-05T10:00:00+00:00"
    names = [add(registry, created_at=stamp).name for _ in range(10)]
    assert [version.name for version in registry.versions()] == names
    assert names[-1] == "intent_model_v2026-03-10"


@BOTH_STORES
def test_a_new_month_sorts_after_the_old_one(registry: Registry) -> None:
    march = add(registry, created_at="2026-03-31T23:59:00+00:00")
    april = add(registry, when=datetime(2026, 4, 1, tzinfo=UTC), created_at="2026-04-01T00:01:00+00:00")
    assert [version.name for version in registry.versions()] == [march.name, april.name]


# --- whole versions or nothing ---------------------------------------------------------------------------------------
def test_a_version_folder_holds_everything(registry: Registry) -> None:
    version = add(registry)
    assert sorted(path.name for path in version.path.iterdir()) == sorted(
        [f"{version.name}.pt", f"{version.name}.pt.metrics.json", "version.json", "report.md"])
    assert json.loads((version.path / "version.json").read_text())["version"] == version.name
    assert version.checkpoint == version.path / f"{version.name}.pt"


def test_leftover_temp_folders_are_cleaned_and_never_listed(registry: Registry) -> None:
    first = add(registry)
    crashed = registry.root / f"{fileio.TEMP_PREFIX}intent_model_v2026-03-2.k3j4"
    crashed.mkdir()
    (crashed / "intent_model_v2026-03-2.pt").write_bytes(b"half")
    (crashed / "version.json").write_text("{}")
    (registry.root / f"{fileio.TEMP_PREFIX}production.json.x1y2").write_text("{")

    assert [version.name for version in registry.versions()] == [first.name]
    assert registry.next_name(MARCH) == "intent_model_v2026-03-2"

    second = add(registry)
    assert second.name == "intent_model_v2026-03-2"
    assert leftovers(registry.root) == []
    assert [version.name for version in registry.versions()] == [first.name, second.name]


def test_incomplete_or_foreign_folders_are_not_versions(registry: Registry) -> None:
    add(registry)
    (registry.root / "intent_model_v2026-03-7").mkdir()  # no version.json, no checkpoint
    no_checkpoint = registry.root / "intent_model_v2026-03-8"
    no_checkpoint.mkdir()
    (no_checkpoint / "version.json").write_text("{}")
    (registry.root / "notes").mkdir()
    (registry.root / "intent_model_v2026-3").mkdir()
    assert [version.name for version in registry.versions()] == ["intent_model_v2026-03"]


def test_a_failed_write_leaves_no_version_and_no_temp(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    add(registry)

    def disk_full(data: dict[str, Any], path: Path) -> Path:
        path.write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(registry_module, "save_checkpoint", disk_full)
    with pytest.raises(IntentflowError, match="No space left on device.*production is unchanged"), registry.lock():
        registry.add_version("intent_model_v2026-03-2", payload(), {"gate": {"promote": True}}, {})
    assert [version.name for version in registry.versions()] == ["intent_model_v2026-03"]
    assert not (registry.root / "intent_model_v2026-03-2").exists()
    assert leftovers(registry.root) == []


@BOTH_STORES
def test_an_existing_name_is_never_overwritten(registry: Registry) -> None:
    version = add(registry)
    with pytest.raises(IntentflowError, match="already exists"), registry.lock():
        registry.add_version(version.name, payload(), {}, {})


def test_empty_or_missing_registry_lists_nothing(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "nowhere")
    assert registry.versions() == []
    assert registry.production() is None
    assert registry.history() == []
    assert registry.up_to_date("hash-1", CONFIG) is None


# --- production pointer and history ----------------------------------------------------------------------------------
def test_promote_points_production_and_records_history(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTENTFLOW_ACTOR", "ci@build-7")
    first = add(registry, accuracy=0.8)
    second = add(registry, accuracy=0.9)
    pointer = json.loads((registry.root / "production.json").read_text())
    assert pointer["version"] == second.name
    assert pointer["val_accuracy"] == 0.9
    assert registry.production_name() == second.name
    assert registry.production().info["val_accuracy"] == 0.9
    history = registry.history()
    assert [(event["action"], event["version"], event["previous"]) for event in history] == [
        ("promote", first.name, None), ("promote", second.name, first.name)]
    assert all(event["who"] == "ci@build-7" and event["why"].startswith("gate passed") for event in history)
    assert leftovers(registry.root) == []


def test_the_production_pointer_is_replaced_atomically(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    first = add(registry)
    second = add(registry, promote=False)
    before = (registry.root / "production.json").read_bytes()
    real_replace = os.replace

    def crash_on_pointer(source: Any, target: Any) -> None:
        if Path(target).name == "production.json":
            raise OSError(5, "Input/output error")
        real_replace(source, target)

    # The new pointer is written beside the old one and renamed over it; a crash before the rename changes nothing.
    monkeypatch.setattr(fileio.os, "replace", crash_on_pointer)
    with pytest.raises(IntentflowError, match="production.json"), registry.lock():
        registry.promote(second.name, why="test")
    assert (registry.root / "production.json").read_bytes() == before
    assert registry.production_name() == first.name
    assert leftovers(registry.root) == []
    assert len(registry.history()) == 1  # a promotion that did not happen is not recorded


def test_a_torn_last_history_line_is_skipped(registry: Registry) -> None:
    add(registry)
    with open(registry.root / "history.jsonl", "a", encoding="utf-8") as history:
        history.write('{"action": "promo')
    assert [event["action"] for event in registry.history()] == ["promote"]


@BOTH_STORES
def test_status_of_each_version(registry: Registry) -> None:
    first = add(registry)
    rejected = add(registry, promote=False, accuracy=0.2)
    second = add(registry)
    with registry.lock():
        accepted = registry.add_version(registry.next_name(MARCH), payload(), {"gate": {"promote": True}}, {})
    assert {version.name: registry.status(version) for version in registry.versions()} == {
        first.name: "previous", rejected.name: "rejected", second.name: "production", accepted.name: "accepted"}


@BOTH_STORES
def test_the_lock_is_exclusive(registry: Registry) -> None:
    order: list[str] = []
    inside = threading.Event()

    def hold() -> None:
        with registry.lock():
            order.append("first in")
            inside.set()
            time.sleep(0.3)
            order.append("first out")

    thread = threading.Thread(target=hold)
    thread.start()
    inside.wait(5)
    with registry.lock():
        order.append("second in")
    thread.join(5)
    assert order == ["first in", "first out", "second in"]


# --- up to date ------------------------------------------------------------------------------------------------------
@BOTH_STORES
def test_same_outcomes_and_config_is_up_to_date(registry: Registry) -> None:
    version = add(registry)
    current = registry.up_to_date("hash-1", json.loads(json.dumps(CONFIG)))
    assert current is not None and current.name == version.name


def test_the_device_does_not_matter(registry: Registry) -> None:
    version = add(registry)
    config = {"prepare": dict(CONFIG["prepare"]), "train": {**CONFIG["train"], "device": "cuda"}}
    assert registry.up_to_date("hash-1", config).name == version.name


@pytest.mark.parametrize("change", [
    {"train": {**CONFIG["train"], "epochs": 31}},
    {"train": {**CONFIG["train"], "hidden_size": 64}},
    {"prepare": {**CONFIG["prepare"], "augment_factor": 21}},
    {"prepare": {**CONFIG["prepare"], "seed": 2}},
])
def test_a_different_config_is_not_up_to_date(registry: Registry, change: dict[str, Any]) -> None:
    add(registry)
    assert registry.up_to_date("hash-1", {**CONFIG, **change}) is None


def test_different_outcomes_are_not_up_to_date(registry: Registry) -> None:
    add(registry)
    assert registry.up_to_date("hash-2", CONFIG) is None


@BOTH_STORES
def test_only_production_counts_for_up_to_date(registry: Registry) -> None:
    add(registry, outcome_hash="hash-1")
    add(registry, promote=False, outcome_hash="hash-2")  # rejected: production is still the first
    assert registry.up_to_date("hash-2", CONFIG) is None
    assert registry.up_to_date("hash-1", CONFIG) is not None


# --- rollback --------------------------------------------------------------------------------------------------------
@BOTH_STORES
def test_rollback_returns_to_the_version_production_replaced(registry: Registry) -> None:
    first = add(registry)
    add(registry, promote=False)
    second = add(registry)
    event = registry.rollback(why="misroutes alarms")
    assert registry.production_name() == first.name
    assert (event["action"], event["version"], event["previous"], event["why"]) == (
        "rollback", first.name, second.name, "misroutes alarms")
    assert event["who"] and event["time"]
    assert registry.history()[-1] == event


@BOTH_STORES
def test_rollback_to_a_named_version(registry: Registry) -> None:
    first = add(registry)
    add(registry)
    third = add(registry)
    registry.rollback(to=first.name)
    assert registry.production_name() == first.name
    assert registry.history()[-1]["previous"] == third.name


@BOTH_STORES
def test_rollback_with_no_earlier_version_is_a_clear_error(registry: Registry) -> None:
    only = add(registry)
    with pytest.raises(IntentflowError, match="no earlier production version to roll back to.*--to VERSION"):
        registry.rollback()
    assert registry.production_name() == only.name
    assert len(registry.history()) == 1


@BOTH_STORES
def test_rollback_in_an_empty_registry_is_a_clear_error(registry: Registry) -> None:
    with pytest.raises(IntentflowError, match="no earlier production version"):
        registry.rollback()


@BOTH_STORES
def test_rollback_refuses_unknown_rejected_and_current_versions(registry: Registry) -> None:
    first = add(registry)
    rejected = add(registry, promote=False)
    with pytest.raises(IntentflowError, match=f"no version 'intent_model_v1999-01'.*known: {first.name}"):
        registry.rollback(to="intent_model_v1999-01")
    with pytest.raises(IntentflowError, match="rejected by the gate"):
        registry.rollback(to=rejected.name)
    with pytest.raises(IntentflowError, match="already production"):
        registry.rollback(to=first.name)
    assert registry.production_name() == first.name


# --- a registry folder as a checkpoint -------------------------------------------------------------------------------
def test_a_registry_folder_resolves_to_production(registry: Registry, tmp_path: Path) -> None:
    add(registry)
    second = add(registry)
    assert resolve_checkpoint(registry.root) == second.checkpoint
    registry.rollback()
    assert resolve_checkpoint(registry.root) == registry.versions()[0].checkpoint
    assert resolve_checkpoint(tmp_path / "model.pt") == tmp_path / "model.pt"


def test_a_registry_folder_without_production_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(IntentflowError, match="no production version.*intentflow retrain --registry"):
        resolve_checkpoint(tmp_path / "empty")


def test_a_production_pointer_to_a_missing_checkpoint_is_a_clear_error(registry: Registry) -> None:
    version = add(registry)
    version.checkpoint.unlink()
    with pytest.raises(IntentflowError, match="has no checkpoint.*intentflow rollback"):
        resolve_checkpoint(registry.root)


@BOTH_STORES
def test_rolling_back_twice_walks_further_back(registry: Registry) -> None:
    first = add(registry)
    second = add(registry)
    add(registry)
    registry.rollback()
    assert registry.production_name() == second.name
    # Not back to the third, which was just rolled back from.
    registry.rollback()
    assert registry.production_name() == first.name
    with pytest.raises(IntentflowError, match="no earlier production version"):
        registry.rollback()
    assert [event["action"] for event in registry.history()] == ["promote"] * 3 + ["rollback"] * 2


# --- permissions -----------------------------------------------------------------------------------------------------
def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o027])
def test_published_files_and_folders_get_the_modes_open_and_mkdir_give(tmp_path: Path, umask: int) -> None:
    # A model server running as another user reads production: nothing may be 0600 / 0700 as tempfile makes them.
    registry = Registry(tmp_path / "registry")
    old = os.umask(umask)
    try:
        version = add(registry)
        plain = tmp_path / "plain"
        plain.mkdir()
        with open(plain / "file", "w"):
            pass
        written = fileio.write_json(tmp_path / "written.json", {"a": 1})
    finally:
        os.umask(old)
    file_mode, folder_mode = mode(plain / "file"), mode(plain)

    files = [*version.path.iterdir(), *(registry.root / name for name in ("production.json", "history.jsonl")),
             written]
    assert {version.checkpoint.name, "version.json", "report.md"} <= {path.name for path in files}
    assert {path.name: mode(path) for path in files} == {path.name: file_mode for path in files}
    assert (mode(version.path), mode(registry.root)) == (folder_mode, folder_mode)
    assert (file_mode, folder_mode) == (0o666 & ~umask, 0o777 & ~umask)
