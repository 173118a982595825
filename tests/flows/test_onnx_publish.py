"""Publishing ONNX with each version: off by default, on through the flow parameter or [publish] onnx."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from flows.retrain import RetrainParameters, retrain
from intentflow.config import load_settings
from intentflow.inference import Classifier
from intentflow.onnx_export import OnnxClassifier, metadata_path
from intentflow.registry import Registry

pytestmark = pytest.mark.usefixtures("harness")

SENTENCES = ["will it rain tomorrow", "wake me at seven", "play some jazz music", "unknown words only", ""]


def test_onnx_is_published_beside_the_checkpoint_only_when_asked(make_params: Callable[..., RetrainParameters]) -> None:
    params = make_params()
    assert retrain(params, return_state=True).is_completed()
    registry = Registry(params.registry)
    [plain] = registry.versions()
    assert not list(plain.path.glob("*.onnx*"))

    state = retrain(make_params(onnx=True, force=True), return_state=True)

    assert state.is_completed(), state.message
    version = registry.versions()[-1]
    assert registry.production_name() == version.name
    model = version.path / f"{version.name}.onnx"
    assert model.is_file()
    assert metadata_path(model) == version.path / f"{version.name}.onnx.json"
    assert metadata_path(model).is_file()
    assert not [path for path in Path(params.registry).iterdir() if path.name.startswith(".tmp-")]
    # The registry folder serves production from ONNX Runtime with PyTorch's answers.
    onnx = OnnxClassifier.load(registry.root).predict_batch(SENTENCES)
    reference = Classifier.load(registry.root).predict_batch(SENTENCES)
    assert [p.label for p in onnx] == [p.label for p in reference]
    assert [p.confidence for p in onnx] == pytest.approx([p.confidence for p in reference], abs=1e-5)


def test_the_settings_file_switches_it_on(make_params: Callable[..., RetrainParameters], tmp_path: Path,
                                         tiny: dict) -> None:
    config = tmp_path / "training.toml"
    config.write_text(Path(tiny["config"]).read_text(encoding="utf-8").replace("onnx = false", "onnx = true"),
                      encoding="utf-8")
    assert load_settings(config).publish.onnx is True
    # The parameter, when given, wins over the file.
    assert make_params(config=str(config), onnx=False).settings().publish.onnx is False
    assert make_params().settings().publish.onnx is False

    params = make_params(config=str(config))
    state = retrain(params, return_state=True)

    assert state.is_completed(), state.message
    [version] = Registry(params.registry).versions()
    assert (version.path / f"{version.name}.onnx").is_file()


def test_missing_onnx_package_fails_before_training(make_params: Callable[..., RetrainParameters],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` raise ImportError
    params = make_params(onnx=True)

    state = retrain(params, return_state=True)

    assert state.is_failed()
    assert "pip install 'intentflow[onnx]'" in state.message
    assert not Registry(params.registry).versions()


@pytest.mark.slow  # fine-tunes an encoder and exports it
def test_an_embeddings_version_is_published_with_its_encoder_and_tokenizer(
        make_params: Callable[..., RetrainParameters]) -> None:
    params = make_params(onnx=True, featurizer="embeddings", finetune_epochs=1, embedding_heads=2, hidden_size=32,
                         lr=0.01)

    state = retrain(params, return_state=True)

    assert state.is_completed(), state.message
    registry = Registry(params.registry)
    version = registry.production()
    assert sorted(path.name for path in version.path.glob(f"{version.name}.*") if ".pt" not in path.name) == [
        f"{version.name}.onnx", f"{version.name}.onnx.json", f"{version.name}.tokenizer.json"]
    onnx = OnnxClassifier.load(registry.root)
    assert onnx.kind == "embeddings"
    reference = Classifier.load(registry.root).predict_batch(SENTENCES)
    assert [p.label for p in onnx.predict_batch(SENTENCES)] == [p.label for p in reference]
    assert [p.confidence for p in onnx.predict_batch(SENTENCES)] == pytest.approx(
        [p.confidence for p in reference], abs=1e-4)


def test_int8_for_a_bag_of_words_run_is_refused_before_training(make_params: Callable[..., RetrainParameters]) -> None:
    params = make_params(onnx=True, onnx_precision="int8", featurizer="bow")

    state = retrain(params, return_state=True)

    assert state.is_failed()
    assert 'onnx_precision = "int8"' in state.message and "bag-of-words model" in state.message
    assert not Registry(params.registry).versions()


@pytest.mark.slow  # exports an encoder twice (float32 to check it, then int8)
def test_an_int8_embeddings_version_is_served_from_the_registry(make_params: Callable[..., RetrainParameters]) -> None:
    params = make_params(onnx=True, onnx_precision="int8", featurizer="embeddings", finetune_epochs=0,
                         embedding_heads=2, hidden_size=32, lr=0.01)

    state = retrain(params, return_state=True)

    assert state.is_completed(), state.message
    registry = Registry(params.registry)
    version = registry.production()
    metadata = json.loads((version.path / f"{version.name}.onnx.json").read_text(encoding="utf-8"))
    assert metadata["precision"] == "int8"
    onnx = OnnxClassifier.load(registry.root)
    reference = Classifier.load(registry.root).predict_batch(SENTENCES)
    assert [p.label for p in onnx.predict_batch(SENTENCES)] == [p.label for p in reference]
