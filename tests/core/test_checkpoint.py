"""Checkpoints: plain data on disk, identical predictions after reload, and nothing in them ever runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from intentflow.checkpoint import FORMAT_VERSION, build_payload, load_checkpoint, metrics_path, save_checkpoint
from intentflow.errors import IntentflowError
from intentflow.inference import Classifier, Prediction, load_classifier, predict
from intentflow.model import IntentMLP

from .helpers import TOY

PROBES = [
    "what is the weather today",
    "WILL IT RAIN TOMORROW?!",
    "play some jazz",
    "wake me at seven please",
    "completely unknown words here",
    "",
    "set an alarm and play music and check the weather forecast for the weekend",
]


@pytest.fixture(scope="module")
def checkpoint(toy_model, tmp_path_factory) -> Path:
    data, trained = toy_model.data, toy_model.trained
    payload = build_payload(trained, outcome_hash=toy_model.outcomes.content_hash, prepare={"seed": 1},
                            val_texts=[row.text for row in data.val], val_labels=[row.label for row in data.val])
    return save_checkpoint(payload, tmp_path_factory.mktemp("checkpoint") / "model.pt")


@pytest.fixture(scope="module")
def in_memory(toy_model) -> Classifier:
    trained = toy_model.trained
    return Classifier.from_trained(trained)


def test_checkpoint_loads_with_weights_only(checkpoint, toy_model):
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)

    trained = toy_model.trained
    assert payload["format"] == "intentflow-checkpoint"
    assert payload["labels"] == trained.labels == sorted(TOY)
    assert payload["vocab"] == trained.vocab.features
    assert payload["metrics"] == trained.metrics
    assert payload["outcome_hash"] == toy_model.outcomes.content_hash
    assert payload["config"]["train"] == trained.config.model_dump()
    assert payload["validation"]["text"] == [row.text for row in toy_model.data.val]
    assert len(payload["history"]) == len(trained.history)
    for name, value in trained.model.state_dict().items():
        assert torch.equal(payload["state_dict"][name], value.cpu()), name


def test_playbook_architecture_keys_rebuild_the_network(checkpoint):
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    config = payload["config"]

    model = IntentMLP(config["vocab_size"], config["num_labels"], config["hidden_size"], config["hidden_layers"],
                      config["dropout"])

    model.load_state_dict(payload["state_dict"])  # strict: raises on any missing or unexpected key
    assert config["vocab_size"] == len(payload["vocab"]) + 1
    # The configured 32 units, and the folded linear model's two per label (intentflow.linear).
    assert config["linear"]["hidden_units"] == 2 * config["num_labels"]
    assert (config["hidden_size"], config["hidden_layers"]) == (32 + 2 * config["num_labels"], 1)


def test_metrics_file_is_written_beside_the_checkpoint(checkpoint, toy_model):
    path = checkpoint.with_name("model.pt.metrics.json")

    assert metrics_path(checkpoint) == path
    metrics = json.loads(path.read_text())
    assert metrics == {**toy_model.trained.metrics, "outcome_hash": toy_model.outcomes.content_hash,
                       "labels": sorted(TOY), "checkpoint": "model.pt"}
    assert not [p for p in checkpoint.parent.iterdir() if p.name.startswith(".tmp-")]


def test_reloaded_classifier_predicts_identically(checkpoint, in_memory, toy_model):
    loaded = Classifier.load(checkpoint)

    assert loaded.labels == in_memory.labels
    assert loaded.predict_batch(PROBES) == in_memory.predict_batch(PROBES)
    assert loaded.metrics == toy_model.trained.metrics
    assert not loaded.model.training


def test_batched_equals_one_by_one(checkpoint):
    classifier = Classifier.load(checkpoint)

    batched = classifier.predict_batch(PROBES)
    single = [classifier.predict(text) for text in PROBES]

    assert [p.label for p in batched] == [p.label for p in single]
    for many, one in zip(batched, single, strict=True):
        assert many.confidence == pytest.approx(one.confidence, abs=1e-6)


def test_batched_threshold_decides_as_one_by_one_at_the_boundary(checkpoint):
    classifier = Classifier.load(checkpoint)
    confidences = [p.confidence for p in classifier.predict_batch(PROBES, apply_oos=False)]
    middle = sorted(confidences)[len(confidences) // 2]

    # At a probe's own confidence it is kept; a hair above (lost if compared in float32) it is unknown.
    unknowns = []
    for threshold in (middle, math.nextafter(middle, 1.0)):
        classifier.oos_threshold = threshold
        batched = classifier.predict_batch(PROBES)

        index, confidence, _ = classifier.answers(PROBES)
        assert batched == [classifier.decide(i, c) for i, c in zip(index.tolist(), confidence.tolist(), strict=True)]
        assert all(type(p) is Prediction for p in batched)
        unknowns.append(sum(p.label == classifier.unknown_label for p in batched))
        assert unknowns[-1] == sum(confidence < threshold for confidence in confidences)
    assert unknowns[1] > unknowns[0]


def test_batches_larger_than_a_chunk_equal_one_by_one(checkpoint, monkeypatch):
    monkeypatch.setattr("intentflow.inference.PREDICT_CHUNK", 3)
    classifier = Classifier.load(checkpoint)

    batched = classifier.predict_batch(PROBES)

    assert len(batched) == len(PROBES)
    for text, many in zip(PROBES, batched, strict=True):
        one = classifier.predict(text)
        assert many.label == one.label
        assert many.confidence == pytest.approx(one.confidence, abs=1e-6)


def test_predictions_ignore_case_and_punctuation(checkpoint):
    classifier = Classifier.load(checkpoint)

    plain = classifier.predict("will it rain tomorrow")

    assert classifier.predict("Will it RAIN tomorrow?!") == plain


def test_training_originals_are_predicted_correctly_after_reload(checkpoint):
    classifier = Classifier.load(checkpoint)

    for name, data in TOY.items():
        assert [p.label for p in classifier.predict_batch(data["examples"])] == [name] * len(data["examples"])


def test_playbook_snippet(checkpoint):
    model, vocab, idx_to_label = load_classifier(checkpoint)

    label, confidence = predict("is it sunny outside", model, vocab, idx_to_label)

    assert type(label) is str and type(confidence) is float
    assert label == "check_weather"
    assert 0.0 <= confidence <= 1.0
    assert idx_to_label == dict(enumerate(sorted(TOY)))
    assert (label, confidence) == tuple(Classifier.load(checkpoint).predict("is it sunny outside"))


class _WritesMarker:
    """Unpickling this runs ``exec``: exactly what a checkpoint must never be able to do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


@pytest.mark.parametrize("place", ["folder", "s3"], indirect=True)
def test_checkpoint_that_would_run_code_is_refused(checkpoint, tmp_path, place):
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    marker = tmp_path / "marker"
    local = tmp_path / "evil.pt"
    torch.save({**payload, "metrics": {**payload["metrics"], "note": _WritesMarker(marker)}}, local)
    evil = place(local)  # a file, or an object in the test S3 server

    with pytest.raises(IntentflowError) as info:
        Classifier.load(evil)

    assert not marker.exists()
    assert str(evil) in str(info.value)
    assert "refused" in str(info.value)
    with pytest.raises(IntentflowError):
        load_checkpoint(evil)
    assert not marker.exists()
    # The file really is dangerous: an unsafe load runs it. This proves the test above could fail.
    proof = tmp_path / "proof.pt"
    torch.save({"x": _WritesMarker(tmp_path / "proof")}, proof)
    torch.load(proof, weights_only=False)
    assert (tmp_path / "proof").read_text() == "ran"


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda raw: raw[: len(raw) // 2], id="truncated-half"),
        pytest.param(lambda raw: raw[:100], id="truncated-header"),
        pytest.param(lambda raw: b"", id="empty"),
        pytest.param(lambda raw: raw[:200] + bytes(len(raw) - 200), id="zeroed-tail"),
    ],
)
def test_corrupt_checkpoint_names_the_file(checkpoint, tmp_path, corrupt):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(corrupt(checkpoint.read_bytes()))

    with pytest.raises(IntentflowError) as info:
        Classifier.load(broken)

    assert str(broken) in str(info.value)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"hello world", id="text"),
        pytest.param(b"\x00", id="one-byte"),
        pytest.param(b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12\n", id="lfs-pointer"),
    ],
)
def test_non_checkpoint_file_is_an_intentflow_error(tmp_path, content):
    broken = tmp_path / "notes.pt"
    broken.write_bytes(content)

    with pytest.raises(IntentflowError) as info:
        load_checkpoint(broken)

    assert str(broken) in str(info.value)


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(IntentflowError, match="does not exist") as info:
        Classifier.load(tmp_path / "absent.pt")

    assert str(tmp_path / "absent.pt") in str(info.value)


@pytest.mark.parametrize("place", ["s3"], indirect=True)
def test_a_checkpoint_url_loads_and_predicts_as_the_file(checkpoint, place):
    url = place(checkpoint)
    loaded, local = Classifier.load(url), Classifier.load(checkpoint)
    assert loaded.predict_batch(PROBES) == local.predict_batch(PROBES)
    assert load_classifier(url)[2] == load_classifier(checkpoint)[2]
    absent = url.rsplit("/", 1)[0] + "/absent.pt"
    with pytest.raises(IntentflowError, match=f"checkpoint {absent} does not exist"):
        Classifier.load(absent)


def test_a_url_whose_backend_is_missing_names_the_extra():
    with pytest.raises(IntentflowError, match=r"nosuchscheme://bucket/model.pt.*fix:"):
        Classifier.load("nosuchscheme://bucket/model.pt")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(lambda p: p.update(format="something-else"), "is not an intentflow checkpoint", id="format"),
        pytest.param(lambda p: p.update(format_version=FORMAT_VERSION + 1), "upgrade intentflow", id="newer"),
        pytest.param(lambda p: p.update(labels=p["labels"][:-1]), "do not match its config", id="labels"),
        pytest.param(lambda p: p.pop("state_dict"), "lacks a valid 'state_dict'", id="no-weights"),
        pytest.param(lambda p: p["config"].update(hidden_size="32"), "config.hidden_size", id="config-type"),
        pytest.param(lambda p: p["config"].update(hidden_size=64), "weights do not match its config", id="shape"),
    ],
)
def test_inconsistent_checkpoint_is_refused(checkpoint, tmp_path, change, message):
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    change(payload)
    bad = tmp_path / "bad.pt"
    torch.save(payload, bad)

    with pytest.raises(IntentflowError, match=message):
        Classifier.load(bad)


def _set_config(**values):
    return lambda p: p["config"].update(values)


def _weights(change):
    return lambda p: p["state_dict"].update(change(p["state_dict"]))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(_weights(lambda w: {k: v.tolist() for k, v in w.items()}), "found list", id="weights-as-lists"),
        pytest.param(_weights(lambda w: {"input.weight": "weights"}), "found str", id="weight-a-string"),
        pytest.param(_weights(lambda w: {k: v.to(torch.int64) for k, v in w.items()}), "torch.int64",
                     id="integer-weights"),
        pytest.param(_weights(lambda w: {"extra.weight": torch.zeros(2)}), "unexpected: extra.weight",
                     id="extra-weight"),
        pytest.param(lambda p: p["state_dict"].pop("output.bias"), "missing: output.bias", id="missing-weight"),
        pytest.param(_set_config(hidden_size=-1), "config.hidden_size", id="negative-size"),
        pytest.param(_set_config(hidden_size=True), "config.hidden_size", id="size-a-boolean"),
        pytest.param(_set_config(hidden_layers=0), "config.hidden_layers", id="no-layers"),
        pytest.param(_set_config(word_ngrams="2"), "config.word_ngrams", id="ngrams-a-string"),
        pytest.param(_set_config(word_ngrams=-1), "config.word_ngrams", id="ngrams-negative"),
        pytest.param(_set_config(char_ngrams=1), "config.char_ngrams", id="char-ngrams-single"),
        pytest.param(_set_config(char_ngrams="4"), "config.char_ngrams", id="char-ngrams-a-string"),
        pytest.param(_set_config(char_ngrams=99), "config.char_ngrams", id="char-ngrams-too-long"),
        pytest.param(_set_config(dropout="0.1"), "config.dropout", id="dropout-a-string"),
        pytest.param(lambda p: p.update(vocab=list(range(len(p["vocab"])))), "vocabulary", id="vocab-of-numbers"),
        pytest.param(lambda p: p.update(vocab=["same"] * len(p["vocab"])), "vocabulary", id="vocab-repeats"),
        pytest.param(lambda p: p.update(labels=[0, 1, 2]), "labels must be", id="labels-numbers"),
        pytest.param(lambda p: p.update(labels=["a", "a", "b"]), "labels must be", id="labels-repeat"),
        pytest.param(lambda p: p.update(validation=[1, 2]), "'validation'", id="validation-a-list"),
        pytest.param(lambda p: p["validation"].update(label=p["validation"]["label"][:-1]), "'validation'",
                     id="validation-ragged"),
        pytest.param(lambda p: p.update(train_originals="all of them"), "'train_originals'", id="originals-text"),
        pytest.param(lambda p: p.update(history={"epoch": 1}), "'history'", id="history-an-object"),
    ],
)
def test_plain_data_of_the_wrong_shape_or_type_is_refused(checkpoint, tmp_path, capsys, change, message):
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    change(payload)
    bad = tmp_path / "bad.pt"
    torch.save(payload, bad)

    with pytest.raises(IntentflowError, match=message) as info:
        Classifier.load(bad)
    assert str(bad) in str(info.value)
    assert "intentflow rollback" in str(info.value)
    # The same through the commands that read checkpoints: exit 1, the reason, no traceback.
    from intentflow.cli import main

    for command in (["evaluate", "--checkpoint", str(bad)], ["predict", "--checkpoint", str(bad), "hello"]):
        assert main(command) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: checkpoint {bad}") and "Traceback" not in err


def test_a_huge_claimed_network_is_refused_before_it_is_built(checkpoint, tmp_path):
    # 32 layers of 16,384 x 16,384 would be 34 GB of weights; the file holds a few kB. Refused by the shapes.
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    payload["config"].update(hidden_size=16_384, hidden_layers=32)
    bad = tmp_path / "huge.pt"
    torch.save(payload, bad)

    with pytest.raises(IntentflowError, match="weights do not match its config"):
        Classifier.load(bad)


@pytest.mark.parametrize(("vocab", "labels", "size", "layers"), [(10, 3, 8, 1), (50, 7, 16, 3), (2, 2, 4, 4)])
def test_the_shapes_checked_are_the_shapes_the_network_has(vocab, labels, size, layers):
    from intentflow.model import parameter_shapes

    network = IntentMLP(vocab, labels, size, layers, 0.0)

    assert parameter_shapes(vocab, labels, size, layers) == {
        name: tuple(value.shape) for name, value in network.state_dict().items()}


def test_character_ngram_bags_keep_their_weights_after_reload_and_older_checkpoints_keep_theirs(toy_model, tmp_path):
    from intentflow.features import WORD_SHARE
    from intentflow.train import train_model

    from .helpers import tiny_train_config

    data = toy_model.data
    trained = train_model([row.text for row in data.train], [row.label for row in data.train],
                          [row.text for row in data.val], [row.label for row in data.val],
                          tiny_train_config(char_ngrams=4, epochs=20))
    payload = build_payload(trained, outcome_hash="toy", prepare={}, val_texts=[], val_labels=[])
    assert payload["config"]["word_share"] == WORD_SHARE
    loaded = Classifier.load(save_checkpoint(payload, tmp_path / "new.pt"))
    assert loaded.vocab.word_share == WORD_SHARE
    one, batch = [loaded.predict(text) for text in PROBES], loaded.predict_batch(PROBES)
    assert [p.label for p in one] == [p.label for p in batch]
    assert [p.confidence for p in one] == pytest.approx([p.confidence for p in batch], abs=1e-6)
    # A checkpoint written before the rule has no word_share: it is served with the weights it learnt with.
    del payload["config"]["word_share"]
    old = Classifier.load(save_checkpoint(payload, tmp_path / "old.pt"))
    assert old.vocab.word_share is None
    one, batch = [old.predict(text) for text in PROBES], old.predict_batch(PROBES)
    assert [p.label for p in one] == [p.label for p in batch]
    assert [p.confidence for p in one] == pytest.approx([p.confidence for p in batch], abs=1e-6)
    indices, weights = old.vocab.encode([PROBES[0]])
    assert torch.allclose(weights, torch.full_like(weights, indices.shape[1] ** -0.5))
