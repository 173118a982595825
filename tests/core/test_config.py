"""Settings: unknown keys are errors naming file and key, flags win over files, code and file agree."""

from __future__ import annotations

import json
import re
import tomllib

import pytest

from intentflow.cli import PREPARE_FLAGS, TRAIN_FLAGS, main
from intentflow.config import Settings, load_settings
from intentflow.errors import ValidationFailed

from .helpers import BUNDLED_SETTINGS, TOY


def only_problem(tmp_path, toml: str):
    """The settings file written with ``toml``, and the one problem loading it reports."""
    path = tmp_path / "training.toml"
    path.write_text(toml)
    with pytest.raises(ValidationFailed) as info:
        load_settings(path)
    [problem] = info.value.problems
    return path, problem, info.value


def test_unknown_key_names_file_and_key_with_a_suggestion(tmp_path):
    path, problem, error = only_problem(tmp_path, "[train]\nepoch = 5\nhidden_size = 8\n")

    assert (problem.file, problem.field, problem.message) == (str(path), "train.epoch", "unknown key")
    assert problem.fix == "did you mean 'epochs'?"
    assert f"{path}: train.epoch: unknown key (fix: did you mean 'epochs'?)" in str(error)


def test_unknown_section_and_bad_value_are_reported_together(tmp_path):
    path = tmp_path / "training.toml"
    path.write_text("[trian]\nepochs = 5\n\n[prepare]\naugment_factor = -1\ncolour = 'red'\n")

    with pytest.raises(ValidationFailed) as info:
        load_settings(path)

    by_field = {problem.field: problem for problem in info.value.problems}
    assert set(by_field) == {"trian", "prepare.augment_factor", "prepare.colour"}
    assert by_field["trian"].fix == "did you mean 'train'?"
    assert "greater than or equal to 0" in by_field["prepare.augment_factor"].message
    assert by_field["prepare.colour"].fix.startswith("remove it; known keys: augment_factor")
    assert all(problem.file == str(path) for problem in info.value.problems)


def test_an_incremental_run_that_would_learn_nothing_is_refused_with_its_fix(tmp_path):
    path, problem, _ = only_problem(tmp_path, "[incremental]\nnew_feature_epochs = 0\nepochs = 0\n")

    assert (problem.file, problem.field) == (str(path), "incremental")
    assert problem.message == "new_feature_epochs and epochs are both 0, so an incremental run would learn nothing"
    assert problem.fix == "set either above 0"


def test_invalid_toml_names_the_file(tmp_path):
    path = tmp_path / "training.toml"
    path.write_text("[train\nepochs = 5\n")

    with pytest.raises(ValidationFailed) as info:
        load_settings(path)

    assert info.value.problems[0].file == str(path)
    assert info.value.problems[0].message.startswith("invalid TOML")


def test_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(ValidationFailed, match="the config file does not exist"):
        load_settings(tmp_path / "absent.toml")


def test_without_a_file_the_defaults_apply(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    assert load_settings() == Settings()


def test_cli_reports_a_bad_config_key_and_stops(make_outcomes, tmp_path, capsys):
    config = tmp_path / "training.toml"
    config.write_text("[prepare]\naugment_factr = 3\n")
    folder = make_outcomes(TOY)

    code = main(["prepare", "--outcomes", str(folder), "--out", str(tmp_path / "data"), "--config", str(config)])

    err = capsys.readouterr().err
    assert code == 1
    assert f"{config}: prepare.augment_factr: unknown key (fix: did you mean 'augment_factor'?)" in err
    assert not (tmp_path / "data").exists()


def test_flags_override_the_file_and_unflagged_values_come_from_it(make_outcomes, tmp_path, capsys):
    config = tmp_path / "training.toml"
    config.write_text("[prepare]\naugment_factor = 3\nseed = 11\nmin_val_per_label = 1\n")
    folder = make_outcomes(TOY)

    code = main(["prepare", "--outcomes", str(folder), "--out", str(tmp_path / "data"), "--config", str(config),
                 "--augment-factor", "5"])

    assert code == 0, capsys.readouterr().err
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert manifest["prepare"] == {"augment_factor": 5, "train_fraction": 0.9, "min_val_per_label": 1, "seed": 11}
    assert {counts["synthetic_made"] for counts in manifest["labels"].values()} == {5}


def test_with_overrides_keeps_file_values_for_none(tmp_path):
    path = tmp_path / "training.toml"
    path.write_text("[train]\nepochs = 40\nlr = 0.05\n")

    settings = load_settings(path).with_overrides(train={"epochs": 7, "lr": None})

    assert (settings.train.epochs, settings.train.lr) == (7, 0.05)
    assert settings.prepare == Settings().prepare


def test_override_out_of_range_is_reported():
    with pytest.raises(ValidationFailed) as info:
        Settings().with_overrides(train={"hidden_layers": 0})

    assert [(p.file, p.field) for p in info.value.problems] == [("overrides", "train.hidden_layers")]


def test_code_defaults_equal_the_bundled_training_toml():
    raw = tomllib.loads(BUNDLED_SETTINGS.read_text())

    # Same keys in both directions, and the same values: the file documents exactly what the code does.
    assert raw == Settings().model_dump()
    assert load_settings(BUNDLED_SETTINGS) == Settings()


def test_cli_help_states_the_real_defaults():
    defaults = {**Settings().prepare.model_dump(), **Settings().train.model_dump()}
    for name, (_, help_text, _) in {**PREPARE_FLAGS, **TRAIN_FLAGS}.items():
        stated = re.search(r"\((?:playbook:|default) ([^)]+)\)", help_text)
        assert stated, f"--{name} help states no default"
        expected = defaults[name]
        if isinstance(expected, bool):
            assert stated.group(1) == ("on" if expected else "off"), name
        elif isinstance(expected, str):
            assert stated.group(1) == (expected or "empty"), name
        elif isinstance(expected, list):
            assert stated.group(1) == (",".join(map(str, expected)) or "none"), name
        else:
            assert float(stated.group(1)) == expected, name


def test_train_flags_reach_the_training_settings():
    from intentflow.cli import RETRAIN_FLAGS, _settings, build_parser

    args = build_parser().parse_args(["retrain", "--config", str(BUNDLED_SETTINGS), "--finetune-lr", "1e-4",
                                      "--finetune-epochs", "3", "--char-ngrams", "4", "--embedding-layers", "2,5",
                                      "--embedding-heads", "2"])
    train = _settings(args, RETRAIN_FLAGS).train

    assert (train.finetune_lr, train.finetune_epochs, train.char_ngrams) == (1e-4, 3, 4)
    assert train.embedding_heads == 2 and Settings().train.embedding_heads == 5
    assert train.embedding_layers == [2, 5]
    none = build_parser().parse_args(["retrain", "--config", str(BUNDLED_SETTINGS), "--embedding-layers", "none"])
    assert _settings(none, RETRAIN_FLAGS).train.embedding_layers == []
    assert train.lr == Settings().train.lr  # not flagged: from the file


def test_featurizer_auto_picks_embeddings_where_the_extra_is_installed_and_says_so(monkeypatch):
    import intentflow.config
    from intentflow.config import resolve_featurizer

    auto = Settings().with_overrides(train={"featurizer": "auto"})
    monkeypatch.setattr(intentflow.config, "embeddings_installed", lambda: True)
    resolved, line = resolve_featurizer(auto)
    assert resolved.train.featurizer == "embeddings" and line.startswith("featurizer auto: embeddings (")
    monkeypatch.setattr(intentflow.config, "embeddings_installed", lambda: False)
    resolved, line = resolve_featurizer(auto)
    assert resolved.train.featurizer == "bow" and "pip install 'intentflow[embeddings]'" in line
    # A concrete featurizer is left alone, with nothing to say.
    bow = Settings().with_overrides(train={"featurizer": "bow"})
    assert resolve_featurizer(bow) == (bow, None)
    assert Settings().train.featurizer == "auto"  # the default
