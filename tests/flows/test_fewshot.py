"""The few-shot benchmark (benchmarks/fewshot.py): one real run through the CLI on a tiny data set, and the
developer flow's artifacts (benchmarks/fewshot_flow.py)."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from intentflow.errors import IntentflowError

from .flow_helpers import REPO, read_artifacts, table_rows

TRAIN = {
    "check_weather": ["what is the weather today", "will it rain tomorrow", "is it sunny outside",
                      "forecast for the weekend", "how cold is it", "weather in paris", "is it snowing",
                      "temperature right now"],
    "play_music": ["play some jazz music", "put on my playlist", "start that song again", "play rock tunes",
                   "music please", "play the new album", "shuffle my songs", "put on some music"],
    "set_alarm": ["wake me at seven", "set an alarm for six", "alarm at noon please", "wake me up early",
                  "alarm for tomorrow morning", "set my alarm", "wake me in an hour", "alarm at five"],
}
TEST = {"check_weather": ["is it going to rain", "weather tomorrow"], "play_music": ["play jazz", "play a song"],
        "set_alarm": ["set an alarm", "wake me at six"]}
OOS = ["who won the football match", "translate hello into french"]


@pytest.fixture(scope="module")
def fewshot() -> Iterator[ModuleType]:
    """benchmarks/fewshot.py, imported as its siblings import it when run (by file name, benchmarks/ on the path)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(REPO / "benchmarks"))
        yield importlib.import_module("fewshot")
    for name in ("fewshot", "fewshot_flow", "common"):
        sys.modules.pop(name, None)


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


@pytest.fixture
def tiny_clinc(tmp_path: Path) -> Path:
    folder = tmp_path / "clinc"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [{"text": t, "label": label} for label, ts in TRAIN.items() for t in ts])
    write_jsonl(folder / "test.jsonl", [{"text": t, "label": label} for label, ts in TEST.items() for t in ts])
    write_jsonl(folder / "oos_test.jsonl", [{"text": t, "label": "oos"} for t in OOS])
    return folder


@pytest.mark.slow
def test_one_run_goes_through_import_retrain_and_evaluate(fewshot: ModuleType, tiny_clinc: Path) -> None:
    run = fewshot.run_fewshot(tiny_clinc, "bow", seed=0, shots=6,
                      extra_args=["--augment-factor", "20", "--epochs", "40", "--hidden-size", "32",
                                  "--oos-threshold", "0.5"])

    assert (run.featurizer, run.seed, run.shots) == ("bow", 0, 6)
    assert run.accuracy_without_oos >= 4 / 6  # a learnable toy set
    assert 0.0 <= run.accuracy <= run.accuracy_without_oos
    assert run.oos_threshold == 0.5 and run.oos_recall is not None
    assert run.seconds >= run.train_seconds > 0


def test_missing_data_is_a_clear_error(fewshot: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(IntentflowError, match=r"train.jsonl does not exist \(fix: pass the CLINC150 folder"):
        fewshot.run_fewshot(tmp_path, "bow", seed=0)
    (tmp_path / "train.jsonl").write_text('{"text": "hi", "label": "greet"}\n', encoding="utf-8")
    with pytest.raises(IntentflowError, match=r"val.jsonl does not exist"):
        fewshot.run_fewshot(tmp_path, "bow", seed=0, scored_on="val")


def fake_run(data: Any, featurizer: str, seed: int, shots: int = 10) -> Any:
    fewshot = sys.modules["fewshot"]
    accuracy = {"bow": 0.80, "embeddings": 0.92}[featurizer] + seed / 100
    return fewshot.FewshotRun(featurizer, seed, shots, accuracy - 0.01, accuracy, 0.6, 0.2, 30.0 + seed, 20.0)


def test_the_nightly_flow_publishes_one_table_per_night_under_one_key(fewshot: ModuleType, harness: None,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    benchmark = importlib.import_module("fewshot_flow")

    monkeypatch.setattr(benchmark, "run_fewshot", fake_run)
    state = benchmark.fewshot_benchmark(data="unused", seeds=[0, 1], return_state=True)

    assert state.is_completed(), state.message
    rows = state.result()
    [artifact] = read_artifacts(state.state_details.flow_run_id, benchmark.TABLE_ARTIFACT_KEY)
    assert table_rows(artifact) == rows
    assert [(row["featurizer"], row["accuracy_mean"], row["accuracy_min"], row["accuracy_max"]) for row in rows] == [
        ("bow", 80.5, 80.0, 81.0), ("embeddings", 92.5, 92.0, 93.0)]
    [runs] = read_artifacts(state.state_details.flow_run_id, benchmark.RUNS_ARTIFACT_KEY)
    assert "| embeddings | 1 | 93.00% | 92.00% | 60.00% | confidence 0.2000 | 31 |" in runs.data


def test_summary_rows_give_mean_and_spread(fewshot: ModuleType) -> None:
    runs = [fake_run(None, "bow", seed) for seed in (0, 1, 2)]

    [row] = fewshot.summary_rows(runs)

    assert (row["accuracy_mean"], row["accuracy_min"], row["accuracy_max"], row["seeds"]) == (81.0, 80.0, 82.0,
                                                                                              "0, 1, 2")
    assert row["oos_recall_mean"] == 60.0
    assert "| bow | 0, 1, 2 | 81.00% (80.00-82.00) | 80.00% | 60.00% | 31 |" in fewshot.markdown_table(runs)
