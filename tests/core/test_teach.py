"""Teaching: corrections land in teach_hints atomically, all or nothing; each refusal says why and how to fix it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from intentflow.cli import main
from intentflow.errors import IntentflowError, ValidationFailed
from intentflow.outcomes import load_outcomes
from intentflow.teach import Correction, read_corrections, teach_utterances

from .helpers import REPO, TOY


def snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def write_jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("".join((record if isinstance(record, str) else json.dumps(record)) + "\n"
                            for record in records), encoding="utf-8")
    return path


def test_teaching_appends_to_teach_hints_keeping_the_rest_of_the_file(make_outcomes):
    # Key order of its own, and no teach_hints yet: the new key goes last, the others keep order and content.
    music = {"synonyms": TOY["play_music"]["synonyms"], "name": "play_music", "examples": TOY["play_music"]["examples"],
             "description": "Music playback"}
    folder = make_outcomes({**TOY, "play_music": music})

    summary = teach_utterances(folder, [Correction("crank up the tunes", "play_music")])

    path = folder / "play_music.json"
    text = path.read_text(encoding="utf-8")
    assert text == json.dumps({**music, "teach_hints": ["crank up the tunes"]}, indent=2) + "\n"
    assert list(json.loads(text)) == ["synonyms", "name", "examples", "description", "teach_hints"]
    [taught] = summary.taught
    assert (taught.text, taught.label, taught.file, taught.field) == ("crank up the tunes", "play_music", path,
                                                                      "teach_hints[0]")
    assert summary.files == (path,) and summary.created == ()
    # A second one is appended after the first; the folder stays valid and holds no temporary files.
    summary = teach_utterances(folder, [Correction("  blast   my  playlist ", "play_music")])
    assert summary.taught[0].field == "teach_hints[1]"
    assert json.loads(path.read_text())["teach_hints"] == ["crank up the tunes", "blast my playlist"]
    assert load_outcomes(folder).outcomes[1].teach_hints == ("crank up the tunes", "blast my playlist")
    assert sorted(p.name for p in folder.iterdir()) == ["check_weather.json", "play_music.json", "set_alarm.json"]


def test_a_conflict_names_the_other_file_and_field_and_changes_nothing(toy_folder):
    before = snapshot(toy_folder)

    with pytest.raises(ValidationFailed) as info:
        teach_utterances(toy_folder, [Correction("Set an ALARM for six", "play_music")])

    [problem] = info.value.problems
    assert f"conflicts with {toy_folder / 'set_alarm.json'} examples[1] (outcome 'set_alarm')" in problem.message
    assert "keep the utterance under one outcome only" in problem.fix
    assert snapshot(toy_folder) == before


@pytest.mark.parametrize("text", ["wake me at seven", "WAKE  me at seven"])
def test_an_utterance_the_outcome_has_already_is_refused(toy_folder, text):
    teach_utterances(toy_folder, [Correction("rouse me at dawn", "set_alarm")])
    before = snapshot(toy_folder)

    with pytest.raises(ValidationFailed, match=r"is already taught: .*set_alarm.json examples\[0\]"):
        teach_utterances(toy_folder, [Correction(text, "set_alarm")])
    with pytest.raises(ValidationFailed, match=r"is already taught: .*set_alarm.json teach_hints\[0\]"):
        teach_utterances(toy_folder, [Correction("Rouse me at dawn", "set_alarm")])
    assert snapshot(toy_folder) == before


@pytest.mark.parametrize("text", ["", "   ", "\t\n"])
def test_a_blank_utterance_is_refused(toy_folder, text):
    before = snapshot(toy_folder)

    with pytest.raises(ValidationFailed, match="is blank"):
        teach_utterances(toy_folder, [Correction(text, "set_alarm")])
    assert snapshot(toy_folder) == before


def test_an_unknown_outcome_needs_create_and_the_error_says_so(toy_folder):
    before = snapshot(toy_folder)

    with pytest.raises(ValidationFailed) as info:
        teach_utterances(toy_folder, [Correction("order a pizza", "order_food")])

    [problem] = info.value.problems
    assert problem.message == f"'order_food' is not an outcome in {toy_folder}"
    assert problem.fix == f"pass --create to make {toy_folder / 'order_food.json'}"
    # A near miss is named, too.
    with pytest.raises(ValidationFailed, match="did you mean 'set_alarm'"):
        teach_utterances(toy_folder, [Correction("rouse me at dawn", "set_alarms")])
    assert snapshot(toy_folder) == before


def test_create_makes_a_valid_outcome_file(toy_folder):
    summary = teach_utterances(toy_folder, [Correction("order a pizza", "order_food"),
                                            Correction("get me sushi delivered", "order_food")], create=True)

    assert summary.created == ("order_food",)
    assert [item.field for item in summary.taught] == ["examples[0]", "examples[1]"]
    text = (toy_folder / "order_food.json").read_text(encoding="utf-8")
    assert text == json.dumps({"name": "order_food", "examples": ["order a pizza", "get me sushi delivered"]},
                              indent=2) + "\n"
    assert load_outcomes(toy_folder).labels == ["check_weather", "order_food", "play_music", "set_alarm"]


@pytest.mark.parametrize("name", ["../escape", "sub/dir", "/tmp/abs", "..", "Order_Food", "1st", "a" * 65, "",
                                  "order food", "order_food.json"])
def test_create_refuses_a_bad_name_and_writes_nothing_anywhere(tmp_path, toy_folder, name):
    before = sorted(str(path) for path in tmp_path.rglob("*"))

    with pytest.raises(ValidationFailed, match="is not a valid outcome name"):
        teach_utterances(toy_folder, [Correction("order a pizza", name)], create=True)
    assert sorted(str(path) for path in tmp_path.rglob("*")) == before


def test_a_batch_is_all_or_nothing(toy_folder, tmp_path):
    before = snapshot(toy_folder)
    corrections = write_jsonl(tmp_path / "corrections.jsonl", [
        {"text": "crank up the tunes", "label": "play_music"},
        {"text": "do i need a brolly", "label": "check_weather"},
        "",
        {"text": "will it rain tomorrow", "label": "set_alarm"},  # line 4: check_weather has it
    ])

    with pytest.raises(ValidationFailed) as info:
        teach_utterances(toy_folder, read_corrections(corrections))

    [problem] = info.value.problems
    assert (problem.file, problem.field) == (str(corrections), "line 4")
    assert "check_weather.json examples[1]" in problem.message
    assert snapshot(toy_folder) == before


def test_conflicts_inside_a_batch_are_refused(toy_folder, tmp_path):
    before = snapshot(toy_folder)
    corrections = write_jsonl(tmp_path / "corrections.jsonl", [
        {"text": "crank up the tunes", "label": "play_music"},
        {"text": "Crank up the tunes!", "label": "play_music"},  # not the same words: punctuation differs
        {"text": "crank  UP the tunes", "label": "set_alarm"},
        {"text": "crank up the tunes", "label": "play_music"},
    ])

    with pytest.raises(ValidationFailed) as info:
        teach_utterances(toy_folder, read_corrections(corrections))

    messages = {problem.field: problem.message for problem in info.value.problems}
    assert set(messages) == {"line 3", "line 4"}
    assert messages["line 3"] == (f"'crank UP the tunes' conflicts with {corrections} line 1, which teaches it as "
                                  "'play_music'")
    assert messages["line 4"].endswith(f"repeats {corrections} line 1")
    assert snapshot(toy_folder) == before


def test_a_batch_writes_every_file(toy_folder, tmp_path):
    corrections = write_jsonl(tmp_path / "corrections.jsonl", [
        {"text": "crank up the tunes", "label": "play_music", "predicted": "set_alarm", "user": 7},
        {"text": "do i need a brolly", "label": "check_weather"},
        {"text": "blast my playlist", "label": "play_music"},
    ])

    summary = teach_utterances(toy_folder, read_corrections(corrections))

    assert summary.outcomes == ["check_weather", "play_music"]
    outcomes = {outcome.name: outcome for outcome in load_outcomes(toy_folder).outcomes}
    assert outcomes["play_music"].teach_hints == ("crank up the tunes", "blast my playlist")
    assert outcomes["check_weather"].teach_hints == ("do i need a brolly",)


def test_a_failed_write_puts_back_the_files_already_written(toy_folder, monkeypatch):
    import intentflow.teach

    before = snapshot(toy_folder)
    real_write_json = intentflow.teach.write_json
    calls = []

    def fail_second(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise IntentflowError(f"cannot write {path}: No space left on device")
        return real_write_json(path, data)

    monkeypatch.setattr(intentflow.teach, "write_json", fail_second)

    with pytest.raises(IntentflowError, match="No space left"):
        teach_utterances(toy_folder, [Correction("crank up the tunes", "play_music"),
                                      Correction("do i need a brolly", "check_weather"),
                                      Correction("order a pizza", "order_food")], create=True)

    assert len(calls) == 2
    assert snapshot(toy_folder) == before


def test_bad_lines_of_a_corrections_file_are_all_reported(tmp_path):
    corrections = write_jsonl(tmp_path / "corrections.jsonl", ["{not json", "[1, 2]", {"text": "hi"},
                                                                {"text": 3, "label": "x"}])

    with pytest.raises(ValidationFailed) as info:
        read_corrections(corrections)

    assert [(problem.field, problem.message) for problem in info.value.problems] == [
        ("line 1", "invalid JSON: Expecting property name enclosed in double quotes"),
        ("line 2", "expected a JSON object"),
        ("line 3 label", "missing or not a string"),
        ("line 4 text", "missing or not a string"),
    ]
    with pytest.raises(ValidationFailed, match="the corrections file does not exist"):
        read_corrections(tmp_path / "absent.jsonl")
    with pytest.raises(ValidationFailed, match="holds no corrections"):
        read_corrections(write_jsonl(tmp_path / "empty.jsonl", ["", "  "]))


GOOD_LINE = json.dumps({"text": "crank up the tunes", "label": "play_music"}).encode()


@pytest.mark.parametrize(("bad_line", "message", "fix"), [
    (b'{"text": "caf\xe9 music", "label": "play_music"}', "is not valid UTF-8", "save the file as UTF-8"),
    (b'{"text": "hi", "label": "play_music", "x": ' + b"[" * 40_000 + b"]" * 40_000 + b"}",
     "nested too deeply", "flatten the structure"),
    (b'{"text": "hi", "label": "play_music", "n": ' + b"9" * 50_000 + b"}", "thousands of digits",
     "write a shorter number"),
])
def test_a_hostile_corrections_file_is_refused_naming_file_and_line(toy_folder, tmp_path, capsys, bad_line,
                                                                      message, fix):
    corrections = tmp_path / "corrections.jsonl"
    corrections.write_bytes(GOOD_LINE + b"\n" + bad_line + b"\n")
    before = snapshot(toy_folder)

    with pytest.raises(ValidationFailed) as info:
        read_corrections(corrections)
    [problem] = info.value.problems
    assert (problem.file, problem.field) == (str(corrections), "line 2")
    assert message in problem.message and problem.fix == fix

    code = main(["teach", "--file", str(corrections), "--outcomes", str(toy_folder)])

    err = capsys.readouterr().err
    assert code == 1
    assert f"{corrections}: line 2: " in err and message in err and "Traceback" not in err
    assert snapshot(toy_folder) == before


def test_teaching_into_a_broken_folder_is_refused(make_outcomes):
    folder = make_outcomes({**TOY, "broken": "{not json"})

    with pytest.raises(IntentflowError, match="nothing was taught: the outcome files have problems"):
        teach_utterances(folder, [Correction("crank up the tunes", "play_music")])


def test_cli_teaches_and_exits_0(toy_folder, capsys):
    code = main(["teach", "crank up the tunes", "--outcome", "play_music", "--outcomes", str(toy_folder)])

    out = capsys.readouterr().out
    assert code == 0
    assert f"taught 'crank up the tunes' -> play_music ({toy_folder / 'play_music.json'} teach_hints[0])" in out
    assert "ok: 1 utterance taught to 1 outcome" in out


def test_cli_teaches_a_file_and_creates_with_create(toy_folder, tmp_path, capsys):
    corrections = write_jsonl(tmp_path / "c.jsonl", [{"text": "order a pizza", "label": "order_food"},
                                                     {"text": "crank up the tunes", "label": "play_music"}])

    code = main(["teach", "--file", str(corrections), "--create", "--outcomes", str(toy_folder)])

    out = capsys.readouterr().out
    assert code == 0
    assert f"created {toy_folder / 'order_food.json'}" in out
    assert "ok: 2 utterances taught to 2 outcomes" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["teach", "Set an alarm for six", "--outcome", "play_music"], "set_alarm.json examples[1]"),
    (["teach", "wake me at seven", "--outcome", "set_alarm"], "is already taught"),
    (["teach", "  ", "--outcome", "set_alarm"], "is blank"),
    (["teach", "order a pizza", "--outcome", "order_food"], "pass --create to make"),
    (["teach", "order a pizza", "--outcome", "../order_food", "--create"], "is not a valid outcome name"),
    (["teach", "order a pizza"], "teach needs an utterance and its outcome"),
    (["teach", "order a pizza", "--outcome", "x", "--file", "c.jsonl"], "not both"),
    (["teach", "--file", "absent.jsonl"], "the corrections file does not exist"),
])
def test_cli_refusals_exit_1_without_a_traceback(toy_folder, capsys, argv, message):
    before = snapshot(toy_folder)

    code = main([*argv, "--outcomes", str(toy_folder)])

    err = capsys.readouterr().err
    assert code == 1
    assert message in err
    assert err.startswith("error: ") and "Traceback" not in err
    assert snapshot(toy_folder) == before


def test_the_installed_command_exits_1_without_a_traceback(toy_folder):
    result = subprocess.run([sys.executable, "-m", "intentflow.cli", "teach", "Set an alarm for six", "--outcome",
                             "play_music", "--outcomes", str(toy_folder)], capture_output=True, text=True,
                            cwd=REPO, timeout=60)

    assert result.returncode == 1
    assert "set_alarm.json examples[1] (outcome 'set_alarm')" in result.stderr
    assert "Traceback" not in result.stderr
