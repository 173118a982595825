"""ONNX export: ONNX Runtime gives PyTorch's labels and confidences, from a checkpoint or a registry folder."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import pytest

from intentflow.checkpoint import build_payload, load_checkpoint, save_checkpoint
from intentflow.cli import main
from intentflow.errors import IntentflowError
from intentflow.features import WORD_SHARE
from intentflow.inference import Classifier, Prediction
from intentflow.onnx_export import OnnxClassifier, _ExportGraph, export_onnx, metadata_path, onnx_files
from intentflow.registry import Registry
from intentflow.train import train_model

from .helpers import tiny_train_config

SENTENCES = [
    "what is the weather today",
    "WILL IT RAIN TOMORROW?!",
    "play some jazz",
    "put on my playlist and start that song again",
    "wake me at seven please",
    "set an alarm for six",
    "completely unknown words here",
    "zzz qqq",
    "",
    "   ",
    "set an alarm and play music and check the weather forecast for the weekend",
    "Forecast, forecast, FORECAST.",
    "l'alarme à sept heures",
]
TOLERANCE = 1e-5


def save_toy_checkpoint(toy_model, folder: Path, trained=None) -> Path:
    data = toy_model.data
    payload = build_payload(trained or toy_model.trained, outcome_hash=toy_model.outcomes.content_hash,
                            prepare={"seed": 1}, val_texts=[row.text for row in data.val],
                            val_labels=[row.label for row in data.val])
    return save_checkpoint(payload, folder / "model.pt")


@pytest.fixture(scope="module")
def checkpoint(toy_model, tmp_path_factory) -> Path:
    return save_toy_checkpoint(toy_model, tmp_path_factory.mktemp("onnx"))


def train_toy_checkpoint(toy_model, folder: Path, **config) -> Path:
    data = toy_model.data
    trained = train_model([row.text for row in data.train], [row.label for row in data.train],
                          [row.text for row in data.val], [row.label for row in data.val], tiny_train_config(**config))
    return save_toy_checkpoint(toy_model, folder, trained)


@pytest.fixture(scope="module")
def deep_checkpoint(toy_model, tmp_path_factory) -> Path:
    """Three hidden layers, so the exported graph's hidden stack is exercised too (the toy model has none)."""
    return train_toy_checkpoint(toy_model, tmp_path_factory.mktemp("onnx-deep"), hidden_layers=3, epochs=5)


@pytest.fixture(scope="module")
def char_checkpoint(toy_model, tmp_path_factory) -> Path:
    """Word pairs and character n-grams as well as words: the exported classifier must featurize the same way."""
    return train_toy_checkpoint(toy_model, tmp_path_factory.mktemp("onnx-chars"), word_ngrams=2, char_ngrams=4,
                                epochs=10)


@pytest.fixture(scope="module")
def exported(checkpoint) -> Path:
    return export_onnx(checkpoint, checkpoint.with_name("model.onnx"))


def run_cli(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


def assert_same_predictions(onnx: list[Prediction], torch_: list[Prediction]) -> None:
    assert [p.label for p in onnx] == [p.label for p in torch_]
    for ours, theirs in zip(onnx, torch_, strict=True):
        assert isinstance(ours.confidence, float)
        assert abs(ours.confidence - theirs.confidence) <= TOLERANCE, (ours, theirs)


@pytest.mark.parametrize("which", ["checkpoint", "deep_checkpoint", "char_checkpoint"])
def test_onnx_predicts_what_pytorch_predicts(which, request, tmp_path):
    source = request.getfixturevalue(which)
    path = export_onnx(source, tmp_path / "model.onnx")
    onnx, reference = OnnxClassifier.load(path), Classifier.load(source)
    assert onnx.vocab.char_ngrams == reference.vocab.char_ngrams == (4 if which == "char_checkpoint" else 0)
    assert onnx.vocab.word_ngrams == reference.vocab.word_ngrams == (2 if which == "char_checkpoint" else 1)
    # Words and character n-grams share each bag's weight as they did in training.
    assert onnx.vocab.word_share == reference.vocab.word_share == (WORD_SHARE if which == "char_checkpoint" else None)

    assert_same_predictions(onnx.predict_batch(SENTENCES), reference.predict_batch(SENTENCES))
    # Every probability, not only the winning one.
    difference = abs(onnx.probabilities(SENTENCES) - reference.probabilities(SENTENCES).numpy()).max()
    assert difference <= TOLERANCE


def test_single_predictions_equal_the_batch(exported):
    classifier = OnnxClassifier.load(exported)
    batch = classifier.predict_batch(SENTENCES)

    singles = [classifier.predict(text) for text in SENTENCES]

    assert [p.label for p in singles] == [p.label for p in batch]
    assert [p.confidence for p in singles] == pytest.approx([p.confidence for p in batch], abs=1e-6)
    assert classifier.predict_batch([]) == []


def test_batches_larger_than_a_chunk_match(exported, monkeypatch):
    classifier = OnnxClassifier.load(exported)
    whole = classifier.predict_batch(SENTENCES)
    monkeypatch.setattr("intentflow.onnx_serving.PREDICT_CHUNK", 3)

    assert_same_predictions(classifier.predict_batch(SENTENCES), whole)


def test_the_json_beside_the_model_holds_what_featurizing_needs(exported, checkpoint):
    payload = load_checkpoint(checkpoint)
    metadata = json.loads(metadata_path(exported).read_text(encoding="utf-8"))

    assert metadata_path(exported) == exported.with_name("model.onnx.json")
    assert metadata["format"] == "intentflow-onnx"
    assert metadata["vocab"] == payload["vocab"]
    assert metadata["labels"] == payload["labels"]
    assert metadata["word_ngrams"] == payload["config"]["word_ngrams"]
    assert metadata["outcome_hash"] == payload["outcome_hash"]
    assert set(metadata["inputs"]) == {"indices", "weights"}
    # Featurized by the same code as PyTorch inference: the same vocabulary, the same index bags.
    classifier, reference = OnnxClassifier.load(exported), Classifier.load(checkpoint)
    for ours, theirs in zip(classifier.vocab.encode(SENTENCES), reference.vocab.encode(SENTENCES), strict=True):
        assert ours.equal(theirs)


def test_cli_exports_a_checkpoint(checkpoint, tmp_path):
    out = tmp_path / "exported" / "intent.onnx"

    code, stdout, err = run_cli(["export-onnx", "--checkpoint", str(checkpoint), "--out", str(out)])

    assert code == 0, err
    assert out.is_file() and (tmp_path / "exported" / "intent.onnx.json").is_file()
    assert str(out) in stdout
    assert_same_predictions(OnnxClassifier.load(out).predict_batch(SENTENCES),
                            Classifier.load(checkpoint).predict_batch(SENTENCES))
    # Written whole: nothing temporary is left beside the files.
    assert sorted(path.name for path in out.parent.iterdir()) == ["intent.onnx", "intent.onnx.json"]


def test_cli_exports_a_registry_folders_production_version(checkpoint, deep_checkpoint, tmp_path):
    registry = Registry(tmp_path / "registry")
    with registry.lock():
        for source in (checkpoint, deep_checkpoint):
            name = registry.next_name()
            registry.add_version(name, load_checkpoint(source), {"gate": {"promote": True}}, {})
            registry.promote(name, why="test")
    out = tmp_path / "production.onnx"

    code, _, err = run_cli(["export-onnx", "--checkpoint", str(registry.root), "--out", str(out)])

    assert code == 0, err
    # The folder means its production version: the second one, with three hidden layers.
    assert_same_predictions(OnnxClassifier.load(out).predict_batch(SENTENCES),
                            Classifier.load(deep_checkpoint).predict_batch(SENTENCES))
    assert OnnxClassifier.load(out).predict_batch(SENTENCES) != Classifier.load(checkpoint).predict_batch(SENTENCES)


def test_cli_on_a_registry_without_production_explains(tmp_path):
    (tmp_path / "registry").mkdir()
    code, _, err = run_cli(["export-onnx", "--checkpoint", str(tmp_path / "registry"), "--out",
                            str(tmp_path / "m.onnx")])
    assert code == 1
    assert "no production version" in err
    assert not (tmp_path / "m.onnx").exists()


def test_a_registry_version_with_onnx_files_loads_from_the_folder(checkpoint, tmp_path):
    registry = Registry(tmp_path / "registry")
    payload = load_checkpoint(checkpoint)
    with registry.lock():
        plain = registry.next_name()
        registry.add_version(plain, payload, {"gate": {"promote": True}}, {})
        registry.promote(plain, why="test")
    with pytest.raises(IntentflowError, match=rf"{plain} of .* has no ONNX model.*\[publish\]"):
        OnnxClassifier.load(registry.root)

    with registry.lock():
        name = registry.next_name()
        registry.add_version(name, payload, {"gate": {"promote": True}}, onnx_files(payload, name))
        registry.promote(name, why="test")

    version = registry.version(name)
    assert (version.path / f"{name}.onnx").is_file() and (version.path / f"{name}.onnx.json").is_file()
    assert_same_predictions(OnnxClassifier.load(registry.root).predict_batch(SENTENCES),
                            Classifier.load(checkpoint).predict_batch(SENTENCES))


def test_missing_onnxruntime_says_what_to_install(exported, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` raise ImportError

    with pytest.raises(IntentflowError, match=r"needs the 'onnxruntime' package.*pip install 'intentflow\[onnx\]'"):
        OnnxClassifier.load(exported)


def test_missing_onnx_says_what_to_install(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)

    code, _, err = run_cli(["export-onnx", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "m.onnx")])

    assert code == 1
    assert "needs the 'onnx' package" in err and "pip install 'intentflow[onnx]'" in err
    assert not (tmp_path / "m.onnx").exists()


def test_a_model_and_json_that_do_not_belong_together_are_refused(checkpoint, deep_checkpoint, tmp_path):
    first = export_onnx(checkpoint, tmp_path / "first.onnx")
    second = export_onnx(deep_checkpoint, tmp_path / "second.onnx")
    metadata_path(first).write_bytes(metadata_path(second).read_bytes())

    with pytest.raises(IntentflowError, match="does not match"):
        OnnxClassifier.load(first)

    metadata_path(second).unlink()
    with pytest.raises(IntentflowError, match="is missing"):
        OnnxClassifier.load(second)
    with pytest.raises(IntentflowError, match="does not exist"):
        OnnxClassifier.load(tmp_path / "absent.onnx")


def test_damaged_metadata_is_refused(exported, tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(exported.read_bytes())
    metadata = json.loads(metadata_path(exported).read_text(encoding="utf-8"))

    metadata_path(model).write_text("{not json", encoding="utf-8")
    with pytest.raises(IntentflowError, match="not JSON"):
        OnnxClassifier.load(model)

    metadata_path(model).write_text(json.dumps({**metadata, "format_version": 99}), encoding="utf-8")
    with pytest.raises(IntentflowError, match="newer than this intentflow"):
        OnnxClassifier.load(model)

    tokenizer = {**metadata["featurizer"], "token_pattern": r"\S+"}
    metadata_path(model).write_text(json.dumps({**metadata, "featurizer": tokenizer}), encoding="utf-8")
    with pytest.raises(IntentflowError, match="splits words differently"):
        OnnxClassifier.load(model)


def test_export_refuses_a_graph_that_drifted_from_the_model(checkpoint, tmp_path, monkeypatch):
    # If IntentMLP.forward changes and the exported graph does not follow, export stops instead of shipping it.
    original = _ExportGraph.forward
    monkeypatch.setattr(_ExportGraph, "forward", lambda self, indices, weights: original(self, indices, weights * 2))

    with pytest.raises(RuntimeError, match="no longer computes IntentMLP.forward"):
        export_onnx(checkpoint, tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


def test_an_export_from_before_embeddings_models_still_loads(exported, checkpoint, tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(exported.read_bytes())
    metadata = json.loads(metadata_path(exported).read_text(encoding="utf-8"))
    assert metadata["kind"] == "bow" and metadata["format_version"] == 1  # readable by an intentflow before kinds
    del metadata["kind"]
    metadata_path(model).write_text(json.dumps(metadata), encoding="utf-8")

    assert_same_predictions(OnnxClassifier.load(model).predict_batch(SENTENCES),
                            Classifier.load(checkpoint).predict_batch(SENTENCES))
