"""The outcome watcher: one event per burst of outcome-file edits, and a clear refusal without a server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flows.watch import EVENT_NAME, emit_change, event_payload, is_outcome_file, resource_id, watch_outcomes
from intentflow.errors import IntentflowError

from .flow_helpers import OUTCOMES, Recorder, free_port, prefect_env, write_outcomes

INTENTFLOW = [sys.executable, "-m", "intentflow.cli"]


@pytest.mark.slow  # waits out the debounce, and the watcher's exit
def test_a_burst_of_edits_is_one_event(start_watcher: Callable[..., tuple[Path, Recorder]]) -> None:
    folder, recorder = start_watcher(quiet=0.6)
    for name in ("check_weather", "play_music"):
        definition = dict(OUTCOMES[name], examples=[*OUTCOMES[name]["examples"], f"one more {name} example"])
        (folder / f"{name}.json").write_text(json.dumps(definition), encoding="utf-8")
    (folder / "order_food.json").write_text(json.dumps({"name": "order_food", "examples": ["order pizza"]}),
                                            encoding="utf-8")
    # Not outcome files: other suffixes and an editor's hidden swap files.
    (folder / "notes.txt").write_text("not an outcome", encoding="utf-8")
    (folder / ".set_alarm.json.swp").write_text("swap", encoding="utf-8")
    (folder / ".draft.json").write_text("{}", encoding="utf-8")

    bursts = recorder.wait_for(1)
    assert bursts == [{"check_weather.json", "play_music.json", "order_food.json"}]

    # A later, separate edit is a second event, naming only what changed then.
    (folder / "order_food.json").unlink()
    assert recorder.wait_for(2)[1] == {"order_food.json"}
    time.sleep(1.0)
    assert len(recorder.bursts) == 2


@pytest.mark.slow  # waits out the debounce of fifty edits
def test_fifty_edits_in_a_few_seconds_are_one_event(start_watcher: Callable[..., tuple[Path, Recorder]]) -> None:
    folder, recorder = start_watcher(quiet=1.0)
    names = [*OUTCOMES, *(f"new_outcome_{index}" for index in range(7))]
    edited = set()
    started = time.monotonic()
    for edit in range(50):  # every 50 ms, round the ten files: each is written five times
        name = names[edit % len(names)]
        (folder / f"{name}.json").write_text(json.dumps({"name": name, "examples": [f"edit {edit} of {name}"]}),
                                             encoding="utf-8")
        edited.add(f"{name}.json")
        time.sleep(0.05)
    took = time.monotonic() - started

    assert recorder.wait_for(1) == [edited]
    time.sleep(2.0)  # twice the quiet time: a second event for the same burst would have come by now
    assert 2.0 < took < 10.0
    assert recorder.bursts == [edited], f"{len(recorder.bursts)} events for one burst of 50 edits in {took:.1f} s"


def test_only_outcome_files_count() -> None:
    assert is_outcome_file("/x/outcomes/pay_bill.json")
    assert not is_outcome_file("/x/outcomes/.pay_bill.json")
    assert not is_outcome_file("/x/outcomes/pay_bill.json~")
    assert not is_outcome_file("/x/outcomes/README.md")


def test_a_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IntentflowError, match="is not a folder"):
        watch_outcomes(tmp_path / "nowhere", emit=lambda folder, paths: None)


def test_event_payload_says_whether_outcomes_are_valid(tmp_path: Path) -> None:
    folder = write_outcomes(tmp_path / "outcomes")
    payload = event_payload(folder, {"b.json", "a.json"})
    assert payload["paths"] == ["a.json", "b.json"]
    assert payload["valid"] is True and len(payload["content_hash"]) >= 12
    assert payload["folder"] == str(folder)
    (folder / "broken.json").write_text("{not json", encoding="utf-8")
    payload = event_payload(folder, {"broken.json"})
    assert payload["valid"] is False and payload["content_hash"] is None


def test_emit_change_sends_the_event_the_trigger_expects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import prefect.events

    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(prefect.events, "emit_event", lambda **kwargs: sent.append(kwargs))
    folder = write_outcomes(tmp_path / "outcomes")
    emit_change(folder, {"set_alarm.json"})
    [event] = sent
    assert event["event"] == EVENT_NAME
    assert event["resource"]["prefect.resource.id"] == resource_id(folder) == f"intentflow.outcomes.{folder.resolve()}"
    assert event["payload"]["folder"] == str(folder)
    assert event["payload"]["paths"] == ["set_alarm.json"]


def run_watch(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    folder = write_outcomes(tmp_path / "outcomes")
    return subprocess.run([*INTENTFLOW, "watch", "--outcomes", str(folder)], capture_output=True, text=True,
                          timeout=120, env=prefect_env(tmp_path / "prefect-home", **env), cwd=tmp_path)


@pytest.mark.slow  # waits for the watcher's exit
def test_watch_without_an_api_url_exits_naming_it(tmp_path: Path) -> None:
    result = run_watch(tmp_path)
    assert result.returncode == 1, result.stderr
    assert "PREFECT_API_URL is not set" in result.stderr
    assert "prefect server start" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow  # waits for connection timeouts
def test_watch_with_no_server_answering_exits_naming_the_url(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/api"
    result = run_watch(tmp_path, PREFECT_API_URL=url)
    assert result.returncode == 1, result.stderr
    assert f"no Prefect server answers at {url}" in result.stderr
    assert "Traceback" not in result.stderr
