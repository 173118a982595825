"""`intentflow notify`: which outcome files changed since a commit (a CI job after a push). That its event reaches a
server and triggers the team deployment on a remote worker is tested in test_team_deployment.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.notify import changed_outcome_files
from intentflow.errors import IntentflowError

from .flow_helpers import OUTCOMES, prefect_env, write_outcomes

INTENTFLOW = [sys.executable, "-m", "intentflow.cli"]
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid", "GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent"}


def git(repo: Path, *arguments: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *arguments], check=True, capture_output=True, text=True,
                          env={**os.environ, **GIT_ENV}).stdout.strip()


def commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A team's repository: the outcomes under config/outcomes, one commit."""
    root = tmp_path / "team"
    write_outcomes(root / "config" / "outcomes")
    git(root.parent, "init", "-q", str(root))
    commit_all(root, "outcomes")
    return root


def edit(folder: Path, name: str, example: str) -> None:
    definition = dict(OUTCOMES[name], examples=[*OUTCOMES[name]["examples"], example])
    (folder / f"{name}.json").write_text(json.dumps(definition), encoding="utf-8")


def test_the_outcome_files_changed_since_a_commit(repo: Path) -> None:
    outcomes = repo / "config" / "outcomes"
    before = git(repo, "rev-parse", "HEAD")
    edit(outcomes, "set_alarm", "alarm for half past six")
    (outcomes / "play_music.json").unlink()
    (repo / "README.md").write_text("not an outcome", encoding="utf-8")
    (outcomes / "notes.txt").write_text("not an outcome either", encoding="utf-8")
    commit_all(repo, "edit, delete")
    # Not yet committed: an edit and a new file count too (a CI job may have changed files itself).
    edit(outcomes, "check_weather", "umbrella needed today")
    (outcomes / "order_food.json").write_text(json.dumps({"name": "order_food", "examples": ["order a pizza"]}))

    assert changed_outcome_files(outcomes, before) == ["check_weather.json", "order_food.json", "play_music.json",
                                                       "set_alarm.json"]
    assert changed_outcome_files(outcomes, "HEAD") == ["check_weather.json", "order_food.json"]


def test_a_revision_or_folder_git_does_not_know_is_refused(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(IntentflowError, match="'no-such-commit' is not a commit.*fetch-depth"):
        changed_outcome_files(repo / "config" / "outcomes", "no-such-commit")
    loose = write_outcomes(tmp_path / "loose")
    with pytest.raises(IntentflowError, match="is not in a git repository"):
        changed_outcome_files(loose, "HEAD")


def test_nothing_changed_sends_nothing_and_needs_no_server(repo: Path, tmp_path: Path) -> None:
    result = subprocess.run([*INTENTFLOW, "notify", "--outcomes", "config/outcomes", "--since", "HEAD"], cwd=repo,
                            capture_output=True, text=True, timeout=120, env=prefect_env(tmp_path / "home"))
    assert result.returncode == 0, result.stderr
    assert "no outcome file in config/outcomes changed since HEAD; no event sent" in result.stdout
