"""The CLI's single steps in a temporary folder: validate, prepare, train, evaluate, predict."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from intentflow.checkpoint import held_out_path
from intentflow.cli import main
from intentflow.dataset import read_labelled
from intentflow.errors import ValidationFailed
from intentflow.inference import Classifier
from intentflow.outcomes import load_outcomes

from .helpers import TOY, write_outcome_folder


@dataclass(frozen=True)
class Workspace:
    root: Path
    outcomes: Path
    data: Path
    checkpoint: Path
    prepare_out: str
    train_out: str


def run_cli(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    """validate -> prepare -> train once, from inside a folder with no config/training.toml."""
    root = tmp_path_factory.mktemp("cli")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        write_outcome_folder(root / "outcomes", TOY)
        code, out, err = run_cli(["validate", "--outcomes", "outcomes"])
        assert (code, err) == (0, ""), err
        assert out.startswith("ok: 3 outcomes")
        code, prepare_out, err = run_cli(["prepare", "--outcomes", "outcomes", "--out", "data",
                                          "--augment-factor", "20", "--seed", "1"])
        assert code == 0, err
        code, train_out, err = run_cli(["train", "--data", "data", "--checkpoint", "model.pt", "--featurizer", "bow",
                                        "--epochs", "30",
                                        "--hidden-size", "32", "--hidden-layers", "1", "--device", "cpu"])
        assert code == 0, err
    return Workspace(root, root / "outcomes", root / "data", root / "model.pt", prepare_out, train_out)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_prepare_writes_rows_and_manifest(workspace):
    train = read_jsonl(workspace.data / "train.jsonl")
    val = read_jsonl(workspace.data / "val.jsonl")
    manifest = json.loads((workspace.data / "manifest.json").read_text())

    for row in train + val:
        assert set(row) == {"text", "label", "original", "synthetic"}
        assert row["label"] in TOY and isinstance(row["synthetic"], bool)
    assert manifest["outcome_hash"] == load_outcomes(workspace.outcomes).content_hash
    assert manifest["prepare"]["seed"] == 1
    assert manifest["prepare"]["augment_factor"] == 20
    assert manifest["rows"] == {"train": len(train), "val": len(val)}
    assert set(manifest["labels"]) == set(TOY)
    for label, counts in manifest["labels"].items():
        assert counts["train"] == sum(row["label"] == label for row in train)
        assert counts["val"] == sum(row["label"] == label for row in val)
        assert counts["synthetic_made"] == 20
    assert manifest["leaky_labels"] == [] and manifest["shortfalls"] == {}
    assert workspace.prepare_out == f"wrote data: {len(train)} train rows, {len(val)} validation rows, 3 outcomes " \
                                    "(seed 1)\n"


def test_prepare_is_reproducible(workspace, tmp_path):
    code, _, err = run_cli(["prepare", "--outcomes", str(workspace.outcomes), "--out", str(tmp_path / "again"),
                            "--augment-factor", "20", "--seed", "1"])

    assert code == 0, err
    for name in ("train.jsonl", "val.jsonl"):
        assert (tmp_path / "again" / name).read_bytes() == (workspace.data / name).read_bytes()


def test_train_writes_checkpoint_and_metrics(workspace):
    payload = torch.load(workspace.checkpoint, map_location="cpu", weights_only=True)
    metrics = json.loads((workspace.root / "model.pt.metrics.json").read_text())

    assert payload["config"]["train"]["epochs"] == 30
    # 32 configured units, and two per outcome where the linear model was folded in (where it kept the validation
    # accuracy; tests/core/test_linear.py covers both decisions). The metrics say which.
    linear = payload["config"].get("linear")
    assert metrics["linear"] == linear
    assert payload["config"]["hidden_size"] == 32 + (2 * len(payload["labels"]) if linear else 0)
    assert payload["config"]["hidden_layers"] == 1
    assert payload["config"]["prepare"]["seed"] == 1
    assert payload["outcome_hash"] == load_outcomes(workspace.outcomes).content_hash
    assert metrics["epochs_run"] == len(payload["history"]) <= 30
    assert metrics["checkpoint"] == "model.pt"
    assert workspace.train_out.startswith("wrote model.pt: validation accuracy ")
    assert f"best epoch {metrics['best_epoch']} of {metrics['epochs_run']} run on cpu" in workspace.train_out
    # Refit (the default): trained again on every row for the best epoch count, the history the held-out run's.
    rows = len(read_jsonl(workspace.data / "train.jsonl")) + len(read_jsonl(workspace.data / "val.jsonl"))
    assert metrics["refit"]["rows"] == rows and metrics["refit"]["epochs"] == metrics["best_epoch"]
    assert f"then refit on all {rows} rows for {metrics['best_epoch']} epochs" in workspace.train_out
    assert set(payload["train_originals"]) >= set(payload["validation"]["original"])


def test_evaluate_recorded_validation_set(workspace, capsys):
    code = main(["evaluate", "--checkpoint", str(workspace.checkpoint), "--validation"])

    out = capsys.readouterr().out
    val = read_jsonl(workspace.data / "val.jsonl")
    assert code == 0
    # The model was refit on those rows; the held-out model it was judged as, kept beside it, is scored instead.
    assert out.startswith("data: the validation set recorded in the checkpoint, scored with the held-out model it "
                          "was judged as (")
    metrics = json.loads(workspace.checkpoint.with_name("model.pt.metrics.json").read_text())
    assert f"accuracy: {metrics['val_accuracy']:.4f}" in out
    assert f"samples: {len(val)}" in out
    for label in TOY:
        assert f"\n{label} " in out


def test_evaluate_json(workspace, capsys):
    code = main(["evaluate", "--checkpoint", str(workspace.checkpoint), "--json"])

    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert {"accuracy", "macro_f1", "samples", "per_label", "confused_pairs"} <= set(result)
    val = read_jsonl(workspace.data / "val.jsonl")
    # Scored with the held-out model the refit checkpoint was judged as, which never learnt these rows.
    predicted = Classifier.load(held_out_path(workspace.checkpoint)).predict_batch([row["text"] for row in val])
    expected = sum(p.label == row["label"] for p, row in zip(predicted, val, strict=True)) / len(val)
    assert result["samples"] == len(val)
    assert result["accuracy"] == pytest.approx(expected)
    assert 0.0 <= result["macro_f1"] <= 1.0
    assert [score["label"] for score in result["per_label"]] == sorted(TOY)
    assert sum(score["support"] for score in result["per_label"]) == len(val)
    wrong = sum(pair["count"] for pair in result["confused_pairs"])
    assert wrong == round((1 - expected) * len(val))


def test_evaluate_labelled_file(workspace, tmp_path, capsys):
    rows = [{"text": "will it rain tomorrow", "label": "check_weather"},
            {"text": "play some jazz music", "label": "play_music"},
            {"text": "wake me at seven", "label": "set_alarm"},
            {"text": "order a pizza", "label": "order_food"}]
    data = tmp_path / "extra.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))

    code = main(["evaluate", "--checkpoint", str(workspace.checkpoint), "--data", str(data)])

    text = capsys.readouterr().out
    assert code == 0
    assert text.startswith(f"data: {data}\n")
    assert "samples: 4" in text
    assert text.rstrip().endswith("labels the model does not know: order_food")

    code = main(["evaluate", "--checkpoint", str(workspace.checkpoint), "--data", str(data), "--json"])

    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert result["data"] == str(data)
    assert result["samples"] == 4
    assert result["unknown_labels"] == ["order_food"]
    assert result["accuracy"] <= 0.75  # the unknown label's row can only be wrong


def test_evaluate_bad_data_file_names_file_and_line(workspace, tmp_path, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"text": "will it rain", "label": "check_weather"}\n{"text": "oops", \n'
                    '{"text": "", "label": "play_music"}\n')

    code = main(["evaluate", "--checkpoint", str(workspace.checkpoint), "--data", str(data)])

    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert f"{data}: line 2: invalid JSON" in err
    assert f"{data}: line 3 text: missing, blank or not a string" in err
    assert "Traceback" not in err


def test_predict(workspace, capsys):
    code = main(["predict", "--checkpoint", str(workspace.checkpoint), "is it sunny outside", "put on my playlist"])

    lines = capsys.readouterr().out.splitlines()
    classifier = Classifier.load(workspace.checkpoint)
    assert code == 0
    assert len(lines) == 2
    for line, text in zip(lines, ["is it sunny outside", "put on my playlist"], strict=True):
        label, confidence = classifier.predict(text)
        assert line == f"{text} -> {label} {confidence:.2%}"


def test_predict_json(workspace, capsys):
    code = main(["predict", "--checkpoint", str(workspace.checkpoint), "--json", "wake me up early"])

    record = json.loads(capsys.readouterr().out)
    assert code == 0
    assert record["text"] == "wake me up early"
    assert record["label"] in TOY
    assert 0.0 <= record["confidence"] <= 1.0


def test_predict_missing_checkpoint_exits_1(tmp_path, capsys):
    code = main(["predict", "--checkpoint", str(tmp_path / "absent.pt"), "hello"])

    err = capsys.readouterr().err
    assert code == 1
    assert f"checkpoint {tmp_path / 'absent.pt'} does not exist" in err
    assert "Traceback" not in err


def test_train_without_prepared_data_exits_1(tmp_path, capsys):
    code = main(["train", "--data", str(tmp_path / "nothing"), "--checkpoint", str(tmp_path / "m.pt")])

    err = capsys.readouterr().err
    assert code == 1
    assert f"{tmp_path / 'nothing' / 'train.jsonl'} does not exist" in err
    assert "intentflow prepare" in err
    assert not (tmp_path / "m.pt").exists()


def test_read_labelled_reports_every_bad_line(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text('[1]\n\n{"text": "hi", "label": 3}\n{"text": "ok", "label": "greet"}\n')

    with pytest.raises(ValidationFailed) as info:
        read_labelled(data)

    assert [(p.field, p.message) for p in info.value.problems] == [
        ("line 1", "expected a JSON object"), ("line 3 label", "missing, blank or not a string")]
