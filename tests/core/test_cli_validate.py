"""``intentflow validate``: every problem and exit 1 on bad input, a one-line summary and exit 0 on good."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from intentflow.cli import main

from .helpers import BUNDLED_OUTCOMES, REPO, TOY

BAD_FILES = {
    "pay_bill": {"name": "pay_bill", "examples": ["pay my bill", "   "]},
    "play_music": {"name": "play_music", "examples": ["play jazz"], "synonymz": {}},
}


def test_bad_outcomes_exit_1_listing_every_problem(make_outcomes, capsys):
    folder = make_outcomes(BAD_FILES)

    code = main(["validate", "--outcomes", str(folder)])

    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert err.startswith("error: 2 problems found:")
    assert f"{folder / 'pay_bill.json'}: examples[1]: is blank" in err
    assert f"{folder / 'play_music.json'}: synonymz: unknown key (fix: did you mean 'synonyms'?)" in err
    assert "Traceback" not in err


def test_paths_in_messages_are_relative_to_the_working_folder(make_outcomes, tmp_path, monkeypatch, capsys):
    make_outcomes(BAD_FILES)
    monkeypatch.chdir(tmp_path)

    code = main(["validate", "--outcomes", "outcomes"])

    err = capsys.readouterr().err
    assert code == 1
    assert "\n  - outcomes/pay_bill.json: examples[1]: is blank" in err
    assert str(tmp_path) not in err


def test_missing_folder_exits_1(tmp_path, capsys):
    code = main(["validate", "--outcomes", str(tmp_path / "nowhere")])

    err = capsys.readouterr().err
    assert code == 1
    assert f"{tmp_path / 'nowhere'}: the outcomes folder does not exist" in err


def test_bundled_outcomes_are_valid(capsys):
    code = main(["validate", "--outcomes", str(BUNDLED_OUTCOMES)])

    out, err = capsys.readouterr()
    assert code == 0
    assert out.count("\n") == 2
    assert out.startswith("ok: 18 outcomes, ")
    # The golden set beside them is checked too: every label an outcome or out of scope, no sentence in both.
    assert "ok: golden set " in out and "none in an outcome file" in out
    assert "error" not in err


def test_default_folder_is_config_outcomes_in_the_working_folder(tmp_path, monkeypatch, make_outcomes, capsys):
    make_outcomes(TOY, folder="config/outcomes")
    monkeypatch.chdir(tmp_path)

    code = main(["validate"])

    assert code == 0
    assert capsys.readouterr().out.startswith("ok: 3 outcomes, 12 originals (12 examples, 0 teach hints), ")


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # starts another interpreter
def test_module_entry_point_reports_without_traceback(make_outcomes, tmp_path):
    make_outcomes(BAD_FILES)

    result = _run([sys.executable, "-m", "intentflow.cli", "validate", "--outcomes", "outcomes"], cwd=tmp_path)

    assert result.returncode == 1
    assert result.stdout == ""
    assert "outcomes/pay_bill.json: examples[1]: is blank" in result.stderr
    assert "outcomes/play_music.json: synonymz: unknown key" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow  # starts another interpreter
def test_console_script_validates_the_bundled_outcomes(tmp_path):
    script = Path(sys.executable).with_name("intentflow")
    assert script.is_file(), "the `intentflow` console script is not installed beside the interpreter"

    result = _run([str(script), "validate", "--outcomes", str(BUNDLED_OUTCOMES)], cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: 18 outcomes, ")
    assert len(result.stdout.splitlines()) == 2  # the outcomes, then the golden set beside them
