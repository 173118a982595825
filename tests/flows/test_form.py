"""The custom-run form tells the truth: every setting with the value a run will use, its limits, a description
without figures; fields the trigger fills are marked; a run's name tells two runs of one day apart."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from flows.retrain import RetrainParameters, retrain, run_name
from intentflow.cli import PREPARE_FLAGS, RETRAIN_FLAGS, TRAIN_FLAGS, build_parser
from intentflow.config import featurizer_of, flat_settings, load_settings

from .flow_helpers import REPO


def form() -> dict[str, dict]:
    schema = retrain.parameters.model_dump()
    return schema["definitions"]["RetrainParameters"]["properties"]


def test_every_setting_shows_the_value_from_training_toml_and_its_limits() -> None:
    properties = form()
    settings = load_settings(REPO / "config" / "training.toml")
    for name, (places, _, _) in flat_settings(settings).items():
        section, key = places[0]
        field = properties[name]
        assert field["default"] == getattr(getattr(settings, section), key), name
        assert "null" not in json.dumps(field), f"{name} shows as None"
        assert "config/training.toml" in field["description"], name
        # No measured figures in descriptions: they go stale (RESULTS.md holds them).
        assert not re.search(r"\d+(\.\d+)?\s*(%|points|s a run)", field["description"]), field["description"]
    assert properties["lr"]["exclusiveMinimum"] == 0 and properties["lr"]["maximum"] == 1
    assert properties["epochs"]["minimum"] == 1
    # The form enforces bounds without showing them; the description says them.
    assert "; above 0.0 to 1.0 (" in properties["lr"]["description"]
    assert "; from 1 to 100000 (" in properties["epochs"]["description"]
    assert "; from 0.0 below 1.0 (" in properties["dropout"]["description"]
    assert properties["featurizer"]["enum"] == ["auto", "bow", "embeddings"]
    assert "Filled in by the outcome-change trigger" in properties["changed_paths"]["description"]


def test_a_run_takes_the_settings_file_except_where_it_sets_a_field(tmp_path: Path) -> None:
    config = tmp_path / "training.toml"
    config.write_text("[train]\nlr = 0.01\n\n[prepare]\ntrain_fraction = 0.8\n", encoding="utf-8")
    assert RetrainParameters(config=str(config)).settings().train.lr == 0.01
    chosen = RetrainParameters(config=str(config), lr=0.02, train_fraction=0.5, min_val_per_label=4,
                               incremental_lr=0.001, seed=7).settings()
    assert (chosen.train.lr, chosen.prepare.train_fraction, chosen.prepare.min_val_per_label) == (0.02, 0.5, 4)
    assert chosen.incremental.lr == 0.001
    assert chosen.prepare.seed == chosen.train.seed == 7


def commands() -> dict[str, Any]:
    return build_parser()._subparsers._group_actions[0].choices


def test_every_setting_is_a_flag_of_the_commands_that_honour_it_and_reaches_the_flow() -> None:
    """One source of truth: each setting of the settings models is a flag of `retrain` (and a field of the flow's
    form), the preparation settings of `prepare`, the training settings of `train`; nothing is dropped on the way."""
    settings = flat_settings(load_settings(REPO / "config" / "training.toml"))
    flags = {name: {action.dest for action in parser._actions} for name, parser in commands().items()}
    for name, (places, _, _) in settings.items():
        sections = {section for section, _ in places}
        assert name in flags["retrain"] and name in RetrainParameters.model_fields, name
        assert (name in flags["prepare"]) == ("prepare" in sections), name
        assert (name in flags["train"]) == ("train" in sections), name
    assert set(RETRAIN_FLAGS) == set(settings)
    assert set(PREPARE_FLAGS) | set(TRAIN_FLAGS) < set(RETRAIN_FLAGS)


def test_settings_of_one_featurizer_are_grouped_under_it_in_the_help() -> None:
    settings = flat_settings(load_settings(REPO / "config" / "training.toml"))
    grouped = {name: featurizer_of(info) for name, (_, _, info) in settings.items()}
    assert {name for name, group in grouped.items() if group == "bow"} == {"word_ngrams", "char_ngrams",
                                                                           "linear_share"}
    assert {name for name, group in grouped.items() if group == "embeddings"} >= {"embedding_layers",
                                                                                 "oos_similarity"}
    # Each says so where it is read: the help line, and the form's field.
    for name, group in grouped.items():
        prefix = {"bow": "Bag-of-words: ", "embeddings": "Embeddings: ", None: ""}[group]
        assert settings[name][2].description.startswith(prefix), name
    parser = commands()["retrain"]
    headings = {group.title: {action.dest for action in group._group_actions} for group in parser._action_groups}
    assert headings["bag-of-words settings"] == {"word_ngrams", "char_ngrams", "linear_share"}
    assert headings["embeddings settings"] == {name for name, group in grouped.items() if group == "embeddings"}


def test_a_flag_a_command_cannot_honour_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    # `train` works on prepared data: augmentation is done; the gate is retrain's.
    for flags in (["--augment-factor", "10"], ["--threshold", "0.5"], ["--incremental-lr", "0.01"]):
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args(["train", "--checkpoint", "model.pt", *flags])
        assert exit_info.value.code == 2
        assert f"unrecognized arguments: {' '.join(flags)}" in capsys.readouterr().err


def test_retrain_flags_set_what_they_name(tmp_path: Path) -> None:
    from intentflow.cli import _settings

    args = build_parser().parse_args(["retrain", "--config", str(REPO / "config" / "training.toml"),
                                      "--train-fraction", "0.5", "--min-val-per-label", "4", "--tolerance", "0.05",
                                      "--incremental-epochs", "3", "--oos-threshold", "0.3", "--no-refit"])
    settings = _settings(args, RETRAIN_FLAGS)
    assert (settings.prepare.train_fraction, settings.prepare.min_val_per_label) == (0.5, 4)
    assert (settings.gate.tolerance, settings.incremental.epochs) == (0.05, 3)
    assert (settings.train.oos_threshold, settings.train.refit) == (0.3, False)


def test_run_names_carry_the_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    assert re.fullmatch(r"retrain-\d{4}-\d{2}-\d{2}-\d{6}-[0-9a-f]{8}", run_name())


def test_a_run_with_featurizer_auto_records_the_featurizer_it_picked(harness: None, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import intentflow.config
    from intentflow.registry import Registry

    from .flow_helpers import TINY, write_outcomes

    monkeypatch.setattr(intentflow.config, "embeddings_installed", lambda: False)  # as without the extra
    outcomes = write_outcomes(tmp_path / "outcomes")
    state = retrain(RetrainParameters(**{**TINY, "featurizer": "auto", "outcomes": str(outcomes),
                                         "registry": str(tmp_path / "registry")}), return_state=True)
    assert state.is_completed(), state.message
    payload = torch.load(Registry(tmp_path / "registry").production().checkpoint, weights_only=True)
    assert payload["config"]["featurizer"] == payload["config"]["train"]["featurizer"] == "bow"
