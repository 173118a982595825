"""Outcome files: every schema error names the file and the field, and all of them are reported at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from intentflow.errors import Problem, ValidationFailed
from intentflow.outcomes import load_outcomes, normalise_text, parse_outcome

from .helpers import TOY

VALID = {"name": "pay_bill", "examples": ["pay my electric bill", "settle the phone bill"]}


def failure(folder: Path) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as info:
        load_outcomes(folder)
    return info.value


def problem_at(error: ValidationFailed, file_name: str, field: str) -> Problem:
    """The one problem reported for ``file_name`` at ``field``; its rendering must name both."""
    found = [p for p in error.problems if Path(p.file).name == file_name and p.field == field]
    assert len(found) == 1, f"expected one problem at {file_name} {field!r}, got:\n{error}"
    rendered = f"{file_name}: {field}: " if field else f"{file_name}: "
    assert rendered in str(error), str(error)
    return found[0]


_DROP = object()


def with_changes(**changes: Any) -> dict[str, Any]:
    """VALID with keys replaced; a key given ``_DROP`` is removed."""
    data = {**VALID, **changes}
    return {key: value for key, value in data.items() if value is not _DROP}


@pytest.mark.parametrize(
    ("document", "field", "message", "fix"),
    [
        pytest.param(with_changes(colour="red"), "colour", "unknown key", "allowed keys", id="unknown-key"),
        pytest.param(with_changes(synonym={"bill": ["invoice"]}), "synonym", "unknown key",
                     "did you mean 'synonyms'?", id="misspelt-key"),
        pytest.param(with_changes(name=7), "name", "expected a string, found a number", "", id="name-not-string"),
        pytest.param(with_changes(examples="pay my bill"), "examples", "expected a list of strings, found a string",
                     "", id="examples-not-list"),
        pytest.param(with_changes(examples=["pay my bill", 3]), "examples[1]", "expected a string, found a number",
                     "", id="example-not-string"),
        pytest.param(with_changes(synonyms=["bill", "invoice"]), "synonyms", "expected an object, found a list", "",
                     id="synonyms-not-object"),
        pytest.param(with_changes(synonyms={"bill": "invoice"}), "synonyms.bill", "expected a non-empty list", "",
                     id="alternatives-not-list"),
        pytest.param(with_changes(examples=["pay my bill", "   "]), "examples[1]", "is blank", "", id="blank-example"),
        pytest.param(with_changes(teach_hints=["pay it", ""]), "teach_hints[1]", "is blank", "",
                     id="blank-teach-hint"),
        pytest.param(with_changes(synonyms={"bill": ["invoice", " "]}), "synonyms.bill[1]", "is blank", "",
                     id="blank-alternative"),
        pytest.param(with_changes(name=_DROP), "name", "required key is missing", 'add "name"', id="missing-name"),
        pytest.param(with_changes(examples=_DROP), "examples", "required key is missing", 'add "examples"',
                     id="missing-examples"),
        pytest.param(with_changes(examples=[]), "examples", "is empty", "", id="empty-examples"),
        pytest.param(with_changes(name="pay_bills"), "name", "differs from the file name 'pay_bill.json'",
                     "rename the file", id="stem-differs"),
        pytest.param(with_changes(examples=["pay my bill", "Pay  MY bill"]), "examples[1]", "repeats examples[0]",
                     "", id="repeat-within-file"),
    ],
)
def test_schema_error_names_file_and_field(make_outcomes, document, field, message, fix):
    folder = make_outcomes({"pay_bill": document, "check_weather": TOY["check_weather"]})

    error = failure(folder)

    problem = problem_at(error, "pay_bill.json", field)
    assert message in problem.message
    assert fix in problem.fix
    # The valid neighbour is not blamed for pay_bill's mistake.
    assert all(Path(p.file).name == "pay_bill.json" for p in error.problems), str(error)


def test_misspelt_required_key_suggests_it_and_reports_it_missing(make_outcomes):
    folder = make_outcomes({"pay_bill": {"name": "pay_bill", "exampels": ["pay my bill"]}})

    error = failure(folder)

    assert problem_at(error, "pay_bill.json", "exampels").fix == "did you mean 'examples'?"
    assert problem_at(error, "pay_bill.json", "examples").message == "required key is missing"
    assert len(error.problems) == 2


@pytest.mark.parametrize("name", ["Pay_Bill", "pay-bill", "1pay", "p" * 65, ""])
def test_invalid_name_pattern(make_outcomes, name):
    folder = make_outcomes({"pay_bill": with_changes(name=name)})

    problem = problem_at(failure(folder), "pay_bill.json", "name")

    assert f"'{name}' is not a valid outcome name" in problem.message
    assert "lowercase" in problem.fix


def test_name_with_trailing_newline_is_invalid():
    outcome, problems, _ = parse_outcome({"name": "pay_bill\n", "examples": ["pay my bill"]}, "pay_bill.json")

    assert outcome is None
    assert [p.field for p in problems] == ["name"]


def test_top_level_not_an_object(make_outcomes):
    folder = make_outcomes({"pay_bill": ["pay my bill"]})

    problem = problem_at(failure(folder), "pay_bill.json", "(top level)")

    assert "expected a JSON object, found a list" in problem.message


def test_invalid_json_reports_line_and_column(make_outcomes):
    folder = make_outcomes({"pay_bill": '{\n  "name": "pay_bill",\n  "examples": ["pay my bill",]\n}\n'})

    error = failure(folder)

    problem = problem_at(error, "pay_bill.json", "line 3 column 30")
    assert problem.message.startswith("invalid JSON")
    assert "pay_bill.json: line 3 column 30: invalid JSON" in str(error)


def test_invalid_utf8_names_file_and_byte(make_outcomes):
    raw = b'{"name": "pay_bill", "examples": ["caf\xe9 bill"]}'
    folder = make_outcomes({"pay_bill": raw})

    problem = problem_at(failure(folder), "pay_bill.json", "")

    assert f"is not valid UTF-8 (byte {raw.index(0xE9)})" in problem.message


def test_empty_folder(tmp_path):
    folder = tmp_path / "outcomes"
    folder.mkdir()
    (folder / "notes.txt").write_text("not an outcome")

    error = failure(folder)

    assert [(p.file, p.message) for p in error.problems] == [(str(folder), "holds no outcome files (*.json)")]
    assert str(folder) in str(error)


def test_missing_folder(tmp_path):
    folder = tmp_path / "no_such_folder"

    error = failure(folder)

    assert [(p.file, p.message) for p in error.problems] == [(str(folder), "the outcomes folder does not exist")]
    assert "--outcomes" in error.problems[0].fix


def test_copied_file_with_the_same_name_is_rejected(make_outcomes):
    folder = make_outcomes({"pay_bill": VALID, "pay_bill_copy": VALID})

    error = failure(folder)

    problem = problem_at(error, "pay_bill_copy.json", "name")
    assert "'pay_bill'" in problem.message


def test_duplicate_name_error_names_both_files(make_outcomes):
    folder = make_outcomes({"pay_bill": VALID, "pay_bill_copy": VALID})

    problem = problem_at(failure(folder), "pay_bill_copy.json", "name")

    assert "pay_bill.json" in problem.message
    assert "rename the file to pay_bill.json" not in problem.fix


def test_same_utterance_under_two_outcomes_names_both_files(make_outcomes):
    weather = {"name": "check_weather", "examples": ["will it rain", "Check the   Bill"]}
    folder = make_outcomes({"pay_bill": {"name": "pay_bill", "examples": ["pay my bill", "check the bill"]},
                            "check_weather": weather})

    error = failure(folder)

    assert len(error.problems) == 1, str(error)
    problem = error.problems[0]
    # Files load in name order, so pay_bill.json is reported as conflicting with check_weather.json.
    assert Path(problem.file).name == "pay_bill.json"
    assert problem.field == "examples[1]"
    assert "check_weather.json examples[1]" in problem.message
    assert "'check_weather'" in problem.message
    assert "pay_bill.json" in str(error) and "check_weather.json" in str(error)


def test_teach_hint_conflicting_with_another_outcomes_example(make_outcomes):
    folder = make_outcomes({"pay_bill": {**VALID, "teach_hints": ["WILL IT RAIN"]},
                            "check_weather": {"name": "check_weather", "examples": ["will it rain"]}})

    problem = problem_at(failure(folder), "pay_bill.json", "teach_hints[0]")

    assert "check_weather.json examples[0]" in problem.message


def test_every_problem_in_every_file_is_reported_at_once(make_outcomes):
    folder = make_outcomes({
        "pay_bill": {"name": "pay_bill", "examples": [], "colour": 1},
        "play_music": {"name": "play_music", "examples": ["play jazz", 4], "synonyms": {"play": [""]}},
        "set_alarm": '{"name": "set_alarm", ',
        "check_weather": {"name": "check_weather", "examples": ["is it sunny"]},
    })

    error = failure(folder)

    found = {(Path(p.file).name, p.field) for p in error.problems}
    assert found == {
        ("pay_bill.json", "colour"),
        ("pay_bill.json", "examples"),
        ("play_music.json", "examples[1]"),
        ("play_music.json", "synonyms.play[0]"),
        ("set_alarm.json", "line 1 column 23"),
    }
    assert str(error).startswith("5 problems found:")
    assert len(str(error).splitlines()) == 6


def test_valid_folder_loads_in_name_order_with_normalised_text(make_outcomes, toy_definitions):
    toy_definitions["set_alarm"]["teach_hints"] = ["  wake   me  at dawn "]
    folder = make_outcomes(toy_definitions)

    outcomes = load_outcomes(folder)

    assert outcomes.labels == ["check_weather", "play_music", "set_alarm"]
    alarm = outcomes.outcomes[2]
    assert alarm.originals[-1] == "wake me at dawn"
    assert outcomes.summary() == {"outcomes": 3, "originals": 13, "examples": 12, "teach_hints": 1, "synonyms": 2}


def test_content_hash_ignores_formatting_but_not_meaning(make_outcomes, tmp_path, toy_definitions):
    compact = make_outcomes(toy_definitions, folder="compact")
    spaced = tmp_path / "spaced"
    spaced.mkdir()
    for name, data in toy_definitions.items():
        reordered = dict(reversed(list(data.items())))
        (spaced / f"{name}.json").write_text(json.dumps(reordered, indent=8))
    toy_definitions["set_alarm"]["examples"].append("alarm for nine")
    changed = make_outcomes(toy_definitions, folder="changed")

    assert load_outcomes(compact).content_hash == load_outcomes(spaced).content_hash
    assert load_outcomes(compact).content_hash != load_outcomes(changed).content_hash


def test_unused_synonym_phrase_is_a_warning_not_an_error(make_outcomes):
    folder = make_outcomes({"pay_bill": {**VALID, "synonyms": {"invoice": ["statement"]}}})

    outcomes = load_outcomes(folder)

    assert len(outcomes.warnings) == 1
    assert "pay_bill.json: synonyms.invoice" in outcomes.warnings[0]


def test_normalise_text_folds_case_and_space():
    assert normalise_text("  Pay\tMY   bill ") == normalise_text("pay my bill") == "pay my bill"
    assert normalise_text("pay my bill.") != normalise_text("pay my bill")


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(make_outcomes):
    import tracemalloc

    folder = make_outcomes({"check_weather": TOY["check_weather"]})
    with open(folder / "pay_bill.json", "wb") as stream:  # 50 MB by its size, sparse on disk
        stream.truncate(50 * 1024 * 1024)

    tracemalloc.start()
    try:
        error = failure(folder)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert "is 52,428,800 bytes, over the limit of 2,000,000" in problem_at(error, "pay_bill.json", "").message
    assert peak < 5_000_000, f"validation held {peak:,} bytes at its peak: the file was read"


def test_a_byte_order_mark_is_allowed(make_outcomes, toy_definitions):
    plain = make_outcomes(toy_definitions, folder="plain")
    marked = make_outcomes({name: b"\xef\xbb\xbf" + json.dumps(data).encode()
                            for name, data in toy_definitions.items()}, folder="marked")

    assert load_outcomes(marked).content_hash == load_outcomes(plain).content_hash


def test_messages_name_the_link_not_what_it_points_to(make_outcomes, tmp_path):
    folder = make_outcomes({"check_weather": TOY["check_weather"]})
    (tmp_path / "elsewhere.json").write_text("{}", encoding="utf-8")
    (folder / "pay_bill.json").symlink_to(tmp_path / "elsewhere.json")

    problem = problem_at(failure(folder), "pay_bill.json", "")

    assert problem.message == "is a link that leads outside the outcomes folder"
    assert "elsewhere" not in str(problem)


def test_a_link_inside_the_folder_is_followed(make_outcomes, toy_definitions):
    folder = make_outcomes({name: data for name, data in toy_definitions.items() if name != "set_alarm"})
    (folder / "drafts").mkdir()
    (folder / "drafts" / "set_alarm.json").write_text(json.dumps(toy_definitions["set_alarm"]), encoding="utf-8")
    (folder / "set_alarm.json").symlink_to(folder / "drafts" / "set_alarm.json")

    assert load_outcomes(folder).labels == ["check_weather", "play_music", "set_alarm"]
