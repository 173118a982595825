"""When saving fails (disk full, no permission) or production's files are missing or damaged, the user is told which
file and what to do, and production stays as it was.

Tests run as root here, where a read-only folder does not stop writes, so a full disk is made by making the system
calls of the publishing path fail with ENOSPC, one at a time.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from intentflow import fileio
from intentflow.checkpoint import build_payload
from intentflow.cli import main
from intentflow.errors import IntentflowError
from intentflow.evaluate import evaluate_model
from intentflow.gate import GateDecision
from intentflow.inference import Classifier, build_model
from intentflow.publish import Publication, publish_version
from intentflow.registry import Registry, open_registry
from intentflow.storage import Location

from ..registry_files import RegistryFiles

PROBE = "will it rain tomorrow"


def publish(root: Location, payload: dict[str, Any], promote: bool = True, why: str = "test") -> Publication:
    """Publish ``payload`` the way the flow does, with the gate's decision given."""
    classifier = Classifier(*build_model(payload), payload=payload)
    evaluation = evaluate_model(classifier, payload["validation"]["text"], payload["validation"]["label"])
    decision = GateDecision(promote, evaluation.accuracy, 0.5, 0.01, None, None, why)
    return publish_version(root, payload, evaluation, decision, "release notes", {"by": why})


@pytest.fixture(scope="module")
def payload(toy_model) -> dict[str, Any]:
    data = toy_model.data
    return build_payload(toy_model.trained, outcome_hash=toy_model.outcomes.content_hash, prepare={"seed": 1},
                         val_texts=[row.text for row in data.val], val_labels=[row.label for row in data.val])


@pytest.fixture(scope="module")
def two_versions(payload: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry whose production replaced an earlier version, made once; tests change copies."""
    root = tmp_path_factory.mktemp("two-versions") / "registry"
    publish(root, payload, why="first")
    publish(root, payload, why="second")
    return root


@pytest.fixture
def registry_root(two_versions: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(two_versions, tmp_path / "registry"))


def state(root: Path) -> dict[str, Any]:
    """Everything a failed publication must leave as it was."""
    registry = Registry(root)
    production = registry.production()
    return {"pointer": (root / "production.json").read_bytes(), "history": (root / "history.jsonl").read_bytes(),
            "checkpoint": production.checkpoint.read_bytes(), "versions": [v.name for v in registry.versions()],
            "entries": sorted(path.name for path in root.iterdir())}


def _disk_full(*_args: Any, **_kwargs: Any) -> Any:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _on_call(number: int, real: Callable[..., Any]) -> Callable[..., Any]:
    """``real``, except that its ``number``-th call finds the disk full."""
    calls = []

    def patched(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        if len(calls) == number:
            _disk_full()
        return real(*args, **kwargs)

    return patched


def _replace_failing_for(name: str) -> Callable[..., Any]:
    real = os.replace

    def patched(source: Any, target: Any) -> Any:
        if Path(target).name == name or Path(target).name.startswith("intent_model_v") and name == "version":
            _disk_full()
        return real(source, target)

    return patched


def _torch_save_half(payload: Any, stream: Any, *args: Any, **kwargs: Any) -> None:
    stream.write(b"PK\x03\x04 half a checkpoint")
    _disk_full()


FAILURES: dict[str, Callable[[pytest.MonkeyPatch], None]] = {
    "temp folder": lambda patch: patch.setattr("intentflow.registry.make_temp_folder", _disk_full),
    "checkpoint temp file": lambda patch: patch.setattr(fileio, "make_temp_file", _on_call(1, fileio.make_temp_file)),
    "checkpoint half written": lambda patch: patch.setattr(torch, "save", _torch_save_half),
    "metrics file": lambda patch: patch.setattr(fileio, "make_temp_file", _on_call(2, fileio.make_temp_file)),
    "report file": lambda patch: patch.setattr(fileio, "make_temp_file", _on_call(4, fileio.make_temp_file)),
    "version.json": lambda patch: patch.setattr(fileio, "make_temp_file", _on_call(6, fileio.make_temp_file)),
    "fsync": lambda patch: patch.setattr(os, "fsync", _on_call(3, os.fsync)),
    "version folder rename": lambda patch: patch.setattr(os, "replace", _replace_failing_for("version")),
    "pointer temp file": lambda patch: patch.setattr(fileio, "make_temp_file", _on_call(7, fileio.make_temp_file)),
    "pointer rename": lambda patch: patch.setattr(os, "replace", _replace_failing_for("production.json")),
}
# Failing here, the new version is already complete: it stays, accepted but not production.
AFTER_THE_VERSION = {"pointer temp file", "pointer rename"}


@pytest.mark.parametrize("failure", FAILURES)
def test_a_full_disk_while_publishing_is_a_clear_error_and_production_is_untouched(
        failure: str, registry_root: Path, payload: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    before = state(registry_root)
    with monkeypatch.context() as patch:
        FAILURES[failure](patch)
        with pytest.raises(IntentflowError) as info:
            publish(registry_root, payload, why="third")

    message = str(info.value)
    assert "No space left on device" in message
    assert str(registry_root) in message
    assert "(fix: free disk space" in message
    assert "production is unchanged" in message or "nothing was replaced" in message
    after = state(registry_root)
    if failure in AFTER_THE_VERSION:
        registry = Registry(registry_root)
        new = registry.versions()[-1]
        assert after["versions"] == [*before["versions"], new.name]
        assert registry.status(new) == "accepted"
        before["entries"] = sorted([*before["entries"], new.name])
        before["versions"] = after["versions"]
    assert after == before  # no other version, no temp leftovers, the same pointer and history
    assert Classifier.load(registry_root).predict(PROBE).label == "check_weather"
    # Once there is room again, the same publication goes through.
    assert publish(registry_root, payload, why="third").promoted


def test_a_full_disk_at_the_history_line_says_production_moved_and_the_line_is_written_later(
        registry_root: Path, payload: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write

    def history_full(descriptor: int, data: bytes) -> int:
        if os.readlink(f"/proc/self/fd/{descriptor}").endswith("history.jsonl"):
            _disk_full()
        return real_write(descriptor, data)

    with monkeypatch.context() as patch:
        patch.setattr(os, "write", history_full)
        with pytest.raises(IntentflowError) as info:
            publish(registry_root, payload, why="third")

    registry = Registry(registry_root)
    third = registry.versions()[-1].name
    assert registry.production_name() == third
    assert f"production of {registry_root} is now {third}, but history.jsonl could not record it" in str(info.value)
    assert "the next promotion or rollback records it" in str(info.value)
    # The next rollback records the promotion first, so it goes back to the version the third replaced.
    second = registry.versions()[-2].name
    event = registry.rollback()
    assert event["version"] == second
    history = registry.history()
    assert [(e["version"], e["previous"]) for e in history[-2:]] == [(third, second), (second, third)]
    assert "recorded late" in history[-2]["why"]


def test_a_registry_that_cannot_be_created_or_locked_is_a_clear_error(tmp_path: Path,
                                                                      payload: dict[str, Any]) -> None:
    (tmp_path / "a_file").write_text("not a folder", encoding="utf-8")
    with pytest.raises(IntentflowError, match="cannot lock the registry .*a_file/registry: Not a directory"):
        publish(tmp_path / "a_file" / "registry", payload)

    root = tmp_path / "registry"
    (root / ".lock").mkdir(parents=True)
    with pytest.raises(IntentflowError, match="cannot lock the registry .*: Is a directory"):
        publish(root, payload)
    assert sorted(path.name for path in root.iterdir()) == [".lock"]


# --- a torn history ---------------------------------------------------------------------------------------------------
def test_a_torn_history_line_cut_inside_a_character_is_skipped_and_the_next_line_starts_fresh(
        registry_root: Path, payload: dict[str, Any]) -> None:
    history = registry_root / "history.jsonl"
    torn = json.dumps({"action": "promote", "why": "café au lait"}, ensure_ascii=False).encode("utf-8")
    with open(history, "ab") as stream:
        stream.write(torn[: torn.index("é".encode()) + 1])  # half of the two bytes of é, and no newline
    registry = Registry(registry_root)
    events = len(registry.history())

    third = publish(registry_root, payload, why="third")

    history_events = registry.history()
    assert len(history_events) == events + 1
    assert history_events[-1]["version"] == third.version
    assert [e["previous"] for e in history_events[1:]] == [e["version"] for e in history_events[:-1]]


# --- production's files missing or damaged ---------------------------------------------------------------------------
def _production(files: RegistryFiles) -> str:
    name = open_registry(files.root).production_name()
    return f"{name}/{name}.pt"


def _pointer(content: str) -> Callable[[RegistryFiles], None]:
    return lambda files: files.write("production.json", content.encode("utf-8"))


def _checkpoint(change: Callable[[bytes], bytes]) -> Callable[[RegistryFiles], None]:
    def damage(files: RegistryFiles) -> None:
        files.write(_production(files), change(files.read(_production(files))))
    return damage


def _payload_change(change: Callable[[dict[str, Any]], Any]) -> Callable[[RegistryFiles], None]:
    """Production's checkpoint re-saved with ``change`` made to its payload."""
    def damage(files: RegistryFiles) -> None:
        payload = torch.load(io.BytesIO(files.read(_production(files))), weights_only=True)
        buffer = io.BytesIO()
        torch.save(change(payload), buffer)
        files.write(_production(files), buffer.getvalue())
    return damage


def _wrong_shape(payload: dict[str, Any]) -> dict[str, Any]:
    payload["state_dict"]["output.bias"] = torch.zeros(7)
    return payload


class _RunsCode:
    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("this must never run",))


# (damage, the file the message must name, the fix it must suggest)
DAMAGE: dict[str, tuple[Callable[[RegistryFiles], None], str, str]] = {
    "checkpoint deleted": (lambda files: files.delete(_production(files)), ".pt", "intentflow rollback"),
    "version folder deleted": (lambda files: files.delete(_production(files).split("/")[0]), ".pt",
                               "intentflow rollback"),
    "checkpoint truncated": (_checkpoint(lambda raw: raw[: len(raw) // 2]), ".pt", "intentflow rollback"),
    "checkpoint empty": (_checkpoint(lambda raw: b""), ".pt", "intentflow rollback"),
    "checkpoint is text": (_checkpoint(lambda raw: b"version https://git-lfs.github.com/spec/v1\n"), ".pt",
                           "intentflow rollback"),
    "checkpoint of the wrong shape": (_payload_change(_wrong_shape), ".pt", "intentflow rollback"),
    "checkpoint that would run code": (_payload_change(lambda payload: {**payload, "metrics": _RunsCode()}), ".pt",
                                       "intentflow rollback"),
    "pointer not JSON": (_pointer("{"), "production.json", "intentflow rollback --registry"),
    "pointer empty": (_pointer(""), "production.json", "intentflow rollback --registry"),
    "pointer version a number": (_pointer('{"version": 5}'), "production.json", "intentflow rollback --registry"),
    "pointer leads outside": (_pointer('{"version": "../../outside"}'), "production.json",
                              "intentflow rollback --registry"),
    "pointer to an unknown version": (_pointer('{"version": "intent_model_v1999-01"}'), "intent_model_v1999-01.pt",
                                      "intentflow rollback"),
}


@pytest.mark.parametrize("store", ["folder", "s3"])
@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_production_is_named_with_rollback_as_the_fix(damage: str, store: str, payload: dict[str, Any],
                                                              tmp_path: Path, request: pytest.FixtureRequest,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    if store == "folder":
        registry_root: Location = request.getfixturevalue("registry_root")
    else:
        registry_root = request.getfixturevalue("object_store").new_location("damaged")
        publish(registry_root, payload, why="first")
        publish(registry_root, payload, why="second")
    make, named, fix = DAMAGE[damage]
    make(RegistryFiles(registry_root))

    for command in (["predict", "--checkpoint", str(registry_root), PROBE],
                    ["evaluate", "--checkpoint", str(registry_root)]):
        assert main(command) == 1, command
        out, err = capsys.readouterr()
        assert out == "" and "this must never run" not in out + err
        assert err.startswith("error: ") and "Traceback" not in err
        assert named in err and fix in err, err

    # The suggested fix works: back to the version production replaced, which serves again.
    first = open_registry(registry_root).versions()[0].name
    assert main(["rollback", "--registry", str(registry_root), "--to", first]) == 0
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(registry_root), "--json", PROBE]) == 0
    assert json.loads(capsys.readouterr().out)["label"] == "check_weather"
