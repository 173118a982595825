"""Incremental retraining: the mode decision for each case, the rows it trains on, and training from production."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
import torch

from intentflow.augment import Row
from intentflow.checkpoint import build_payload
from intentflow.config import IncrementalConfig, PrepareConfig, TrainConfig
from intentflow.errors import IntentflowError
from intentflow.incremental import choose_mode, outcome_record, select_incremental_rows
from intentflow.inference import Classifier, build_model
from intentflow.outcomes import OutcomeSet, load_outcomes
from intentflow.split import Split

from .helpers import TOY, tiny_train_config

CONFIG = {"prepare": PrepareConfig().model_dump(), "train": TrainConfig().model_dump()}


def split_of(outcomes: OutcomeSet, val: set[str]) -> Split:
    """Each original as one row; those in ``val`` validate, the rest train."""
    rows = [Row(text, outcome.name, text, False) for outcome in outcomes.outcomes for text in outcome.originals]
    return Split(train=tuple(row for row in rows if row.text not in val),
                 val=tuple(row for row in rows if row.text in val))


# One validation original per outcome; production trained on the others.
VAL = {"forecast for the weekend", "start that song again", "wake me up early"}


def production_of(outcomes: OutcomeSet, split: Split, config: dict[str, Any] = CONFIG) -> dict[str, Any]:
    """What ``choose_mode`` reads of a production checkpoint payload."""
    return {"labels": outcomes.labels, "config": json.loads(json.dumps(config)),
            "outcomes": outcome_record(outcomes),
            "train_originals": sorted({row.original for row in split.train}),
            "validation": {"text": [row.text for row in split.val], "label": [row.label for row in split.val],
                           "original": [row.original for row in split.val]}}


@pytest.fixture
def toy(make_outcomes, toy_definitions):
    """``toy(changes)``: the toy outcomes with ``changes`` applied, loaded; ``toy.production`` is trained on TOY."""
    base = load_outcomes(make_outcomes(toy_definitions, folder="production"))
    folders = itertools.count()
    production = production_of(base, split_of(base, VAL))

    def edit(changes: dict[str, Any] | None = None, remove: tuple[str, ...] = ()) -> OutcomeSet:
        definitions = {name: value for name, value in json.loads(json.dumps(TOY)).items() if name not in remove}
        for name, fields in (changes or {}).items():
            definitions[name] = {**definitions.get(name, {"name": name, "examples": []}), **fields}
        return load_outcomes(make_outcomes(definitions, folder=f"now-{next(folders)}"))

    edit.production = production  # type: ignore[attr-defined]
    return edit


def taught(*hints: str, outcome: str = "play_music") -> dict[str, Any]:
    return {outcome: {"teach_hints": list(hints)}}


def decide(toy, outcomes: OutcomeSet, requested: str = "auto", val: set[str] = VAL, **kwargs: Any):
    return choose_mode(requested, outcomes, kwargs.pop("config", CONFIG), kwargs.pop("production", toy.production),
                       split_of(outcomes, val), **kwargs)


def test_only_added_utterances_are_incremental(toy):
    outcomes = toy(taught("crank up the tunes", "blast my playlist"))

    decision = decide(toy, outcomes)

    assert decision.mode == "incremental"
    assert decision.new_originals == 2
    assert decision.reason.startswith("only examples or teach hints were added (2 new originals: 'crank up the tunes'")
    # A new example counts the same as a teach hint.
    example = {"set_alarm": {"examples": [*TOY["set_alarm"]["examples"], "rouse me at dawn"]}}
    assert decide(toy, toy(example)).mode == "incremental"


@pytest.mark.parametrize(("change", "reason"), [
    (lambda toy: toy({"order_food": {"examples": ["order a pizza", "get me sushi"]}}),
     "the outcome set changed (added: order_food; removed: none)"),
    (lambda toy: toy(remove=("set_alarm",)), "the outcome set changed (added: none; removed: set_alarm)"),
    (lambda toy: toy({"play_music": {"synonyms": {"play": ["put on", "start", "blast"]},
                                     "teach_hints": ["crank up the tunes"]}}),
     "synonyms changed in play_music"),
    (lambda toy: toy({"set_alarm": {"examples": TOY["set_alarm"]["examples"][:-1]}}),
     "1 original removed or moved to another outcome ('wake me up early')"),
    (lambda toy: toy({"set_alarm": {"examples": TOY["set_alarm"]["examples"][1:]},
                      "play_music": {"teach_hints": ["wake me at seven"]}}),
     "1 original removed or moved to another outcome ('wake me at seven')"),
    (lambda toy: toy(), "no utterance is new to production"),
    (lambda toy: toy({"play_music": {"description": "Music"}}), "no utterance is new to production"),
])
def test_anything_but_added_utterances_is_full(toy, change, reason):
    decision = decide(toy, change(toy))

    assert decision.mode == "full"
    assert reason in decision.reason


def test_no_production_is_full(toy):
    decision = decide(toy, toy(taught("crank up the tunes")), production=None)

    assert (decision.mode, decision.reason) == ("full", "there is no production model to start from")


def test_a_changed_config_is_full_but_the_device_is_not_a_change(toy):
    outcomes = toy(taught("crank up the tunes"))
    changed = {"prepare": CONFIG["prepare"], "train": {**CONFIG["train"], "lr": 0.01}}
    moved = {"prepare": CONFIG["prepare"], "train": {**CONFIG["train"], "device": "cuda"}}

    assert decide(toy, outcomes, config=changed).reason == "the config changed (train.lr 0.003 -> 0.01)"
    assert decide(toy, outcomes, config=moved).mode == "incremental"


def test_a_scheduled_run_is_full(toy):
    decision = decide(toy, toy(taught("crank up the tunes")), scheduled=True)

    assert decision.mode == "full" and decision.scheduled
    assert decision.reason.startswith("scheduled run")


def test_new_utterances_that_all_land_in_validation_are_full(toy):
    decision = decide(toy, toy(taught("crank up the tunes")), val=VAL | {"crank up the tunes"})

    assert decision.mode == "full"
    assert "every new original landed in validation" in decision.reason


def test_an_original_production_trained_on_now_in_validation_is_full(toy):
    # Starting from production would score it on a sentence it learnt.
    decision = decide(toy, toy(taught("crank up the tunes")), val=VAL | {"play some jazz music"})

    assert decision.mode == "full"
    assert "moved 1 original production trained on into validation ('play some jazz music')" in decision.reason


def test_a_refit_production_without_its_held_out_model_is_never_continued(toy):
    # Published before versions kept their held-out model: it learnt its validation originals, so a candidate
    # continued from it would be scored on sentences it learnt. Auto retrains in full; forcing it is refused.
    refit = {**toy.production, "metrics": {"refit": {"epochs": 3, "rows": 40}}}
    refit["train_originals"] = sorted({*refit["train_originals"], *refit["validation"]["original"]})
    outcomes = toy(taught("crank up the tunes"))

    decision = decide(toy, outcomes, production=refit)

    assert decision.mode == "full"
    assert decision.reason.startswith("production was refit on its validation rows and keeps no held-out model")
    with pytest.raises(IntentflowError, match="cannot train incrementally: production was refit"):
        decide(toy, outcomes, requested="incremental", production=refit)


@pytest.mark.parametrize("record", [None, "outcomes", [{"name": "play_music", "examples": [3]}], [["play_music"]]])
def test_a_production_without_its_outcomes_recorded_is_full(toy, record):
    production = {**toy.production, "outcomes": record}

    decision = decide(toy, toy(taught("crank up the tunes")), production=production)

    assert decision.mode == "full"
    assert "does not record the outcomes" in decision.reason


def test_the_mode_can_be_forced(toy):
    outcomes = toy(taught("crank up the tunes"))
    changed = {"prepare": CONFIG["prepare"], "train": {**CONFIG["train"], "lr": 0.01}}

    assert decide(toy, outcomes, "full").mode == "full"
    assert decide(toy, outcomes, "full").reason == "full retrain asked for (mode full)"
    # Forced incremental goes ahead where auto would not: a config change, a scheduled run.
    assert decide(toy, outcomes, "incremental", config=changed).mode == "incremental"
    assert decide(toy, outcomes, "incremental", scheduled=True).mode == "incremental"


@pytest.mark.parametrize(("kwargs", "why"), [
    ({"production": None}, "there is no production model to start from"),
    ({"outcomes": {"order_food": {"examples": ["order a pizza"]}}}, "the outcome set changed"),
    ({"config": {"prepare": CONFIG["prepare"], "train": {**CONFIG["train"], "hidden_size": 64}}},
     "the network changed (train.hidden_size 512 -> 64)"),
    ({"outcomes": {}}, "no training sentence is new to production"),
])
def test_forcing_incremental_when_it_cannot_be_done_is_an_error(toy, kwargs, why):
    outcomes = toy(kwargs.pop("outcomes", taught("crank up the tunes")))

    with pytest.raises(IntentflowError, match=r"cannot train incrementally: .*\(fix: use mode full or auto\)") as info:
        decide(toy, outcomes, "incremental", **kwargs)
    assert why in str(info.value)


def test_an_unknown_mode_is_an_error(toy):
    with pytest.raises(IntentflowError, match="mode 'partial' is not one of auto, full, incremental"):
        decide(toy, toy(), "partial")


def rows_for(originals: dict[str, list[str]], per_original: int) -> list[Row]:
    return [Row(f"{text} {index}" if index else text, label, text, index > 0)
            for label, texts in originals.items() for text in texts for index in range(per_original)]


def test_incremental_rows_are_the_new_ones_and_an_even_replay_sample():
    old = {"a": ["a one", "a two"], "b": ["b one", "b two", "b three", "b four"], "c": ["c one", "c two"]}
    new = {"a": ["a new"], "c": ["c new"]}
    production = {"train_originals": [text for texts in old.values() for text in texts]}
    train = rows_for(old, 10) + rows_for(new, 10)

    rows = select_incremental_rows(train, production, replay_ratio=2.0, seed=1)

    assert {row.original for row in rows.new} == {"a new", "c new"} and len(rows.new) == 20
    assert rows.new_originals == ("a new", "c new")
    assert len(rows.replay) == 40
    # The same share of every outcome's old rows: 40 of 80 here.
    counts = {label: sum(row.label == label for row in rows.replay) for label in old}
    assert counts == {"a": 10, "b": 20, "c": 10}
    assert all(row.original in production["train_originals"] for row in rows.replay)
    assert rows.new_share == pytest.approx(20 / 100)
    assert select_incremental_rows(train, production, 2.0, seed=1) == rows
    assert select_incremental_rows(train, production, 0.0, seed=1).replay == ()
    # Never more than there is.
    assert len(select_incremental_rows(train, production, 100.0, seed=1).replay) == 80


# Sentences with words the toy production never saw, and their outcomes.
NEW = {"crank loud tunes": "play_music", "blast tracks": "play_music", "brolly needed": "check_weather"}


def toy_production(toy_model) -> dict[str, Any]:
    data = toy_model.data
    return build_payload(toy_model.trained, outcome_hash="toy", prepare={},
                         val_texts=[row.text for row in data.val], val_labels=[row.label for row in data.val],
                         val_originals=[row.original for row in data.val],
                         train_originals=[row.original for row in data.train])


def new_rows() -> list[Row]:
    # Each new utterance with a few casing and punctuation variants, as augmentation would make them.
    return [Row(variant, label, text, variant != text) for text, label in NEW.items()
            for variant in (text, text.upper(), text.capitalize() + "?", text + "!")]


def test_training_continues_from_production_weights_with_the_vocabulary_extended(toy_model):
    production = toy_production(toy_model)
    old_vocab = production["vocab"]

    # A learning rate too small to move anything: the result is production's function, with more features.
    trained = _continue(toy_model, production, IncrementalConfig(new_feature_epochs=0, epochs=1, lr=1e-9))

    assert trained.vocab.features[:len(old_vocab)] == old_vocab
    assert set(trained.vocab.features[len(old_vocab):]) == {"crank", "loud", "tunes", "blast", "tracks", "brolly",
                                                            "needed"}
    weights = trained.model.state_dict()["input.weight"]
    assert torch.allclose(weights[:len(old_vocab) + 1], production["state_dict"]["input.weight"], atol=1e-6)
    # New features start at zero, so they change nothing until trained.
    assert weights[len(old_vocab) + 1:].abs().max().item() < 1e-6
    # Sentences of known words only: a new word, even at zero, would change a sentence's length normalisation.
    texts = [row.text for row in toy_model.data.train]
    before = Classifier(*build_model(production)).probabilities(texts)
    after = Classifier.from_trained(trained).probabilities(texts)
    assert torch.allclose(before, after, atol=1e-4)
    assert trained.labels == production["labels"]


def test_word_pairs_added_by_continued_training_come_from_the_new_originals_only(toy_model):
    from intentflow.incremental import continue_training

    production = toy_production(toy_model)
    production["config"] = {**production["config"], "word_ngrams": 2}
    rows = [*new_rows(), Row("tunes crank loud", "play_music", "crank loud tunes", True)]

    trained = continue_training(production, rows, [], list(toy_model.data.val),
                                tiny_train_config(word_ngrams=2), IncrementalConfig(new_feature_epochs=0, epochs=1))

    added = trained.vocab.features[len(production["vocab"]):]
    assert {feature for feature in added if " " in feature} == {"crank loud", "loud tunes", "blast tracks",
                                                               "brolly needed"}


def test_continued_training_learns_new_utterances_and_keeps_the_old(toy_model):
    production = toy_production(toy_model)
    before = Classifier(*build_model(production))
    old_texts = [row.text for row in [*toy_model.data.train, *toy_model.data.val]]
    old_labels = [row.label for row in [*toy_model.data.train, *toy_model.data.val]]
    right_before = [p.label == label for p, label in zip(before.predict_batch(old_texts), old_labels, strict=True)]

    trained = _continue(toy_model, production, IncrementalConfig(new_feature_epochs=10, epochs=20, lr=0.01))

    after = Classifier.from_trained(trained)
    assert [p.label for p in after.predict_batch(list(NEW))] == list(NEW.values())
    right_after = [p.label == label for p, label in zip(after.predict_batch(old_texts), old_labels, strict=True)]
    assert sum(right_after) >= sum(right_before)
    # Both stages' epochs, numbered on, the last kept.
    assert [stats.epoch for stats in trained.history] == list(range(1, 31))
    assert trained.best_epoch == 30


@pytest.mark.parametrize("rows_only", [False, True], ids=["adamw", "row-only-adam"])
def test_stage_one_learns_new_words_and_leaves_every_other_weight_as_production_had_it(toy_model, rows_only,
                                                                                       monkeypatch):
    import intentflow.kernels as kernels

    monkeypatch.setattr(kernels, "ROWS_ONLY_ABOVE", 0.0 if rows_only else float("inf"))
    production = toy_production(toy_model)
    rows = len(production["vocab"]) + 1  # with the padding row

    trained = _continue(toy_model, production, IncrementalConfig(new_feature_epochs=30, new_feature_lr=0.05,
                                                                  epochs=0))

    state = trained.model.state_dict()
    assert state["input.weight"][rows:].abs().max().item() > 0.01
    assert torch.equal(state["input.weight"][:rows], production["state_dict"]["input.weight"])
    for name, value in production["state_dict"].items():
        if name != "input.weight":
            assert torch.equal(state[name], value), name
    # Every new sentence has a new word, so stage 1 alone learns all of them.
    after = Classifier.from_trained(trained)
    assert [p.label for p in after.predict_batch(list(NEW))] == list(NEW.values())
    # Sentences without the new words: exactly production's answers. Those with one now lean to its outcome.
    texts = [row.text for row in [*toy_model.data.train, *toy_model.data.val]]
    known = [text for text in texts if max(trained.vocab.bag(text), default=0) < rows]
    assert len(known) < len(texts) and "loudly rock tunes start" not in known
    before = Classifier(*build_model(production))
    assert torch.equal(before.probabilities(known), after.probabilities(known))
    assert len(trained.history) == 30 and all(parameter.requires_grad for parameter in trained.model.parameters())


def test_stage_two_weighs_new_rows_at_their_share_of_all_training_rows():
    from intentflow.incremental import _new_row_weights

    weights = _new_row_weights(new=10, replay=20, new_share=0.1)
    assert len(weights) == 30
    assert sum(weights[:10]) / sum(weights) == pytest.approx(0.1)
    assert weights[10:] == [1.0] * 20
    assert _new_row_weights(10, 0, 0.1) is None
    assert _new_row_weights(10, 20, None) is None
    assert _new_row_weights(10, 20, 1.0) is None


def _continue(toy_model, production: dict[str, Any], incremental: IncrementalConfig, **config: Any):
    from intentflow.incremental import continue_training

    data = toy_model.data
    return continue_training(production, new_rows(), list(data.train), list(data.val),
                             tiny_train_config(**config), incremental)


@pytest.mark.parametrize(("change", "message"), [
    ({"config": {"hidden_size": 16}}, "production's network {'hidden_size': 32, 'hidden_layers': 1} differs"),
    ({"rows": [Row("order a pizza", "order_food", "order a pizza", False)]},
     "outcomes production does not know: order_food"),
    ({"rows": []}, "incremental training got no new rows"),
])
def test_continued_training_refuses_what_production_cannot_continue_into(toy_model, change, message):
    from intentflow.incremental import continue_training

    production = toy_production(toy_model)
    with pytest.raises(IntentflowError, match="fix: run a full retrain, mode full") as info:
        continue_training(production, change.get("rows", new_rows()), [], list(toy_model.data.val),
                          tiny_train_config(**change.get("config", {})), IncrementalConfig(epochs=1))
    assert message in str(info.value)
