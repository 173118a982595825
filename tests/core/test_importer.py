"""`intentflow outcomes import`: labelled JSONL/CSV -> valid outcome files, reproducibly, no accidental overwrite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from intentflow.cli import main
from intentflow.errors import IntentflowError, ValidationFailed
from intentflow.importer import import_outcomes, outcome_name
from intentflow.outcomes import load_outcomes


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


ROWS = [{"text": f"play song number {n}", "label": "Play Music"} for n in range(8)] + \
       [{"text": f"weather in city {n}", "label": "weather"} for n in range(8)]


def test_writes_valid_outcomes_with_k_examples_each(tmp_path: Path) -> None:
    summary = import_outcomes(write_jsonl(tmp_path / "data.jsonl", ROWS), tmp_path / "out", per_label=3, seed=1)
    outcomes = load_outcomes(tmp_path / "out")
    assert outcomes.labels == ["play_music", "weather"]
    assert [len(outcome.examples) for outcome in outcomes.outcomes] == [3, 3]
    assert summary.labels == {"play_music": "Play Music", "weather": "weather"}
    assert all(text.startswith("play song") for text in outcomes.outcomes[0].examples)


def test_choice_is_deterministic_for_a_seed_and_varies_across_seeds(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "data.jsonl", ROWS)
    picks = []
    for run, seed in enumerate([1, 1, 2]):
        import_outcomes(source, tmp_path / f"out{run}", per_label=3, seed=seed)
        picks.append(json.loads((tmp_path / f"out{run}" / "weather.json").read_text())["examples"])
    assert picks[0] == picks[1]
    assert picks[0] != picks[2]


def test_all_examples_without_per_label(tmp_path: Path) -> None:
    import_outcomes(write_jsonl(tmp_path / "data.jsonl", ROWS), tmp_path / "out")
    assert len(json.loads((tmp_path / "out" / "weather.json").read_text())["examples"]) == 8


@pytest.mark.parametrize(("label", "name"), [("Book Flight!", "book_flight"), ("2fa-reset", "intent_2fa_reset"),
                                             ("  ÜBER  ride ", "uber_ride")])
def test_label_normalisation(label: str, name: str) -> None:
    assert outcome_name(label) == name


def test_colliding_labels_are_an_error_naming_both(tmp_path: Path) -> None:
    rows = [{"text": "a b", "label": "Book Flight"}, {"text": "c d", "label": "book-flight"}]
    with pytest.raises(ValidationFailed) as info:
        import_outcomes(write_jsonl(tmp_path / "data.jsonl", rows), tmp_path / "out")
    assert "'Book Flight' and 'book-flight' both become outcome 'book_flight'" in str(info.value)
    assert "line 2 label" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_empty_and_nameless_labels_are_reported(tmp_path: Path) -> None:
    rows = [{"text": "a b", "label": ""}, {"text": "c d", "label": "!!!"}]
    with pytest.raises(ValidationFailed) as info:
        import_outcomes(write_jsonl(tmp_path / "data.jsonl", rows), tmp_path / "out")
    message = str(info.value)
    assert "line 1 label: missing, blank" in message and "line 2 label" in message and "'!!!'" in message


def test_refuses_to_overwrite_unless_told(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "data.jsonl", ROWS)
    import_outcomes(source, tmp_path / "out", per_label=2, seed=1)
    before = (tmp_path / "out" / "weather.json").read_text()
    with pytest.raises(IntentflowError, match="would overwrite 2 outcome file"):
        import_outcomes(source, tmp_path / "out", per_label=5, seed=1)
    assert (tmp_path / "out" / "weather.json").read_text() == before
    import_outcomes(source, tmp_path / "out", per_label=5, seed=1, overwrite=True)
    assert len(json.loads((tmp_path / "out" / "weather.json").read_text())["examples"]) == 5


def test_a_sentence_under_two_labels_is_reported_and_kept_under_neither_unless_told(tmp_path: Path) -> None:
    rows = [{"text": "Hello there", "label": "greet"}, {"text": "hello  THERE", "label": "smalltalk"},
            {"text": "how are you", "label": "smalltalk"}, {"text": "hi", "label": "greet"}]
    source = write_jsonl(tmp_path / "data.jsonl", rows)
    summary = import_outcomes(source, tmp_path / "out")
    outcomes = load_outcomes(tmp_path / "out")  # valid: no conflict left
    assert summary.conflicts == [("Hello there", ["greet", "smalltalk"])]
    assert {outcome.name: outcome.examples for outcome in outcomes.outcomes} == {
        "greet": ("hi",), "smalltalk": ("how are you",)}
    told = import_outcomes(source, tmp_path / "first", on_conflict="first")
    assert told.conflicts == summary.conflicts
    assert load_outcomes(tmp_path / "first").outcomes[0].examples == ("Hello there", "hi")


def test_repeats_differing_in_case_and_spaces_are_dropped_and_counted_so_retrain_accepts_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # As HINT3 sofmattress's training file has them: spaced, CamelCase and lower-case labels, repeats of one
    # sentence that differ only in case and spaces.
    rows = [{"text": "Where is my order", "label": "Order Status"},
            {"text": "where is my  order", "label": "Order Status"},
            {"text": "WHERE IS MY ORDER", "label": "Order Status"},
            {"text": "track my order please", "label": "Order Status"},
            {"text": "Do you have EMI options", "label": "EMI"},
            {"text": "emi available?", "label": "EMI"},
            {"text": "cash on delivery?", "label": "CashOnDelivery"},
            {"text": "Is COD available", "label": "CashOnDelivery"}]
    source = write_jsonl(tmp_path / "train.jsonl", rows)
    assert main(["outcomes", "import", str(source), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "dropped 2 repeated sentences" in err
    outcomes = load_outcomes(tmp_path / "out")  # what retrain validates: no "repeats examples[0]"
    assert outcomes.labels == ["cashondelivery", "emi", "order_status"]
    assert len(next(o for o in outcomes.outcomes if o.name == "order_status").examples) == 2


def test_a_csv_with_an_extra_empty_column_imports(tmp_path: Path) -> None:
    # HINT3 powerplay11's CSV has a trailing comma on every line: a third, unnamed and empty column.
    (tmp_path / "train.csv").write_text("sentence,label,\nhow do i join a contest,join_contest,\n"
                                        "join contest kaise kare,join_contest,\nwithdraw my money,withdrawal_intro,\n",
                                        encoding="utf-8")
    summary = import_outcomes(tmp_path / "train.csv", tmp_path / "out", text_column="sentence")
    assert summary.examples == 3
    assert load_outcomes(tmp_path / "out").labels == ["join_contest", "withdrawal_intro"]


def test_csv_with_named_columns(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("utterance,intent\nturn on the lights,lights\nlights off please,lights\n"
                                       "what time is it,clock\n", encoding="utf-8")
    import_outcomes(tmp_path / "data.csv", tmp_path / "out", text_column="utterance", label_column="intent")
    assert load_outcomes(tmp_path / "out").labels == ["clock", "lights"]
    with pytest.raises(ValidationFailed, match="column label: is missing"):
        import_outcomes(tmp_path / "data.csv", tmp_path / "other")


def test_cli_import_and_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write_jsonl(tmp_path / "data.jsonl", ROWS)
    assert main(["outcomes", "import", str(source), "--out", str(tmp_path / "out"), "--per-label", "2"]) == 0
    assert "wrote 2 outcome files with 4 examples" in capsys.readouterr().out
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": "x"}\n{not json}\n', encoding="utf-8")
    assert main(["outcomes", "import", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "out2")]) == 1
    error = capsys.readouterr().err
    assert "bad.jsonl: line 2: invalid JSON" in error and "Traceback" not in error
    assert not (tmp_path / "out2").exists()


def test_evaluate_scores_data_labelled_as_it_was_imported_and_refuses_data_of_other_labels(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from intentflow.config import PrepareConfig
    from intentflow.dataset import prepare_data, write_prepared
    from intentflow.pipeline import train_from_data

    from .helpers import tiny_train_config

    train = [{"text": text, "label": "AddToPlaylist"} for text in
             ["add this song to my playlist", "put the track on my road trip list", "add tune to playlist"]]
    train += [{"text": text, "label": "GetWeather"} for text in
              ["what is the weather in paris", "will it rain in rome", "forecast for london weather"]]
    import_outcomes(write_jsonl(tmp_path / "train.jsonl", train), tmp_path / "outcomes")
    prepared = write_prepared(prepare_data(load_outcomes(tmp_path / "outcomes"),
                                           PrepareConfig(augment_factor=10, min_val_per_label=1, seed=1)),
                              tmp_path / "data")
    train_from_data(prepared, tiny_train_config(refit=False), tmp_path / "model.pt")
    test = write_jsonl(tmp_path / "test.jsonl", [{"text": "add it to my playlist", "label": "AddToPlaylist"},
                                                 {"text": "weather in paris", "label": "GetWeather"},
                                                 {"text": "tell me a joke", "label": "oos"}])

    assert main(["evaluate", "--checkpoint", str(tmp_path / "model.pt"), "--data", str(test), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accuracy"] == 1.0 and result["unknown_labels"] == [] and result["oos_samples"] == 1
    assert {score["label"] for score in result["per_label"]} == {"addtoplaylist", "getweather"}

    other = write_jsonl(tmp_path / "other.jsonl", [{"text": "book a table", "label": "BookRestaurant"}])
    assert main(["evaluate", "--checkpoint", str(tmp_path / "model.pt"), "--data", str(other)]) == 1
    error = capsys.readouterr().err
    assert f"{other}: no label matches an outcome of the model (BookRestaurant;" in error
