"""Out of scope by similarity: an embeddings model refuses a sentence near none of the examples it learnt."""

from __future__ import annotations

import math

import pytest
import torch

from intentflow.augment import Row
from intentflow.calibration import SIMILARITY_SHARE, nearest_similarity
from intentflow.checkpoint import build_payload, load_checkpoint, save_checkpoint
from intentflow.errors import IntentflowError
from intentflow.evaluate import evaluate_model
from intentflow.inference import Classifier
from intentflow.refit import refit_model
from intentflow.split import Split
from intentflow.train import train_model

from .test_embeddings import UNSEEN, embedding_config, toy_texts

# Nothing the toy outcomes (weather, music, alarms) are about.
OFF_TOPIC = ["what is the boiling point of mercury", "how many legs does a spider have",
             "file my quarterly tax return", "who won the chess olympiad in 1974"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INTENTFLOW_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def judged(cache):
    """A held-out model: the toy examples learnt, the unseen wordings its validation originals."""
    texts, labels = toy_texts()
    val_texts = [text for wordings in UNSEEN.values() for text in wordings]
    val_labels = [label for label, wordings in UNSEEN.items() for _ in wordings]
    return train_model(texts, labels, val_texts, val_labels, embedding_config(), val_is_original=[True] * 6)


def test_the_examples_are_answered_and_sentences_near_none_of_them_are_unknown(judged):
    texts, labels = toy_texts()
    classifier = Classifier.from_trained(judged)

    assert judged.examples is not None and judged.examples.shape == (len(set(texts)), 768)
    assert torch.allclose(judged.examples.float().norm(dim=1), torch.ones(len(texts)), atol=1e-2)
    assert [p.label for p in classifier.predict_batch(texts)] == labels
    assert [p.label for p in classifier.predict_batch(OFF_TOPIC)] == ["unknown"] * len(OFF_TOPIC)
    # The confidence threshold "auto" is off where the similarity rule decides.
    assert judged.oos_threshold is None
    # The top outcome is still there for whoever asks for it.
    assert all(p.label in labels for p in classifier.predict_batch(OFF_TOPIC, apply_oos=False))


def test_the_threshold_refuses_at_most_a_tenth_of_the_validation_originals(judged):
    val_texts = [text for wordings in UNSEEN.values() for text in wordings]
    similarity = nearest_similarity(judged.encoder.encode(val_texts), judged.examples)
    quantile = math.floor(float(torch.quantile(similarity.double(), SIMILARITY_SHARE)) * 10_000) / 10_000

    assert judged.oos_similarity == min(0.66, quantile)
    assert int((similarity < judged.oos_similarity).sum()) <= math.ceil(SIMILARITY_SHARE * len(val_texts))


def test_without_validation_rows_the_setting_holds_and_off_turns_the_rule_off(cache):
    texts, labels = toy_texts()
    plain = train_model(texts, labels, [], [], embedding_config(oos_similarity=0.5, embedding_heads=1))
    off = train_model(texts, labels, [], [], embedding_config(oos_similarity="off", embedding_heads=1))

    assert plain.oos_similarity == 0.5
    assert off.examples is None and off.oos_similarity is None
    assert "unknown" not in {p.label for p in Classifier.from_trained(off).predict_batch(OFF_TOPIC)}


def test_a_refit_serves_every_example_with_the_held_out_runs_threshold(cache):
    texts, labels = toy_texts()
    rows = [Row(text, label, text, False) for text, label in zip(texts, labels, strict=True)]
    held = {rows[index].text for index in (3, 7, 11)}
    split = Split(tuple(row for row in rows if row.text not in held), tuple(row for row in rows if row.text in held))
    held_out = train_model([r.text for r in split.train], [r.label for r in split.train],
                           [r.text for r in split.val], [r.label for r in split.val],
                           embedding_config(embedding_heads=1), val_is_original=[True] * len(split.val))

    refitted = refit_model(held_out, split)

    assert held_out.examples.shape[0] == len(split.train) and refitted.examples.shape[0] == len(rows)
    assert refitted.oos_similarity == held_out.oos_similarity
    assert [p.label for p in Classifier.from_trained(refitted).predict_batch(texts)] == labels


def test_a_reloaded_model_refuses_the_same_sentences_and_a_damaged_entry_is_refused(judged, tmp_path):
    texts, labels = toy_texts()
    payload = build_payload(judged, outcome_hash="toy", prepare={}, val_texts=[], val_labels=[])
    path = save_checkpoint(payload, tmp_path / "model.pt")
    probes = [*texts, *OFF_TOPIC, *(text for wordings in UNSEEN.values() for text in wordings)]

    assert Classifier.load(path).predict_batch(probes) == Classifier.from_trained(judged).predict_batch(probes)
    assert load_checkpoint(path)["oos"]["examples"].dtype == torch.float16

    payload["oos"]["examples"] = payload["oos"]["examples"][:, :100]
    save_checkpoint(payload, tmp_path / "damaged.pt")
    with pytest.raises(IntentflowError, match="'oos.similarity' must be a cosine"):
        load_checkpoint(tmp_path / "damaged.pt")


def test_evaluation_counts_the_refusals_and_names_the_rule(judged):
    texts, labels = toy_texts()

    evaluation = evaluate_model(Classifier.from_trained(judged), [*texts, *OFF_TOPIC],
                                [*labels, *["oos"] * len(OFF_TOPIC)])

    assert evaluation.accuracy == 1.0 and evaluation.oos_recall == 1.0
    assert evaluation.oos_similarity == judged.oos_similarity and evaluation.oos_threshold is None


def test_a_continued_model_keeps_productions_examples_and_adds_the_taught_one(judged, tmp_path):
    from intentflow.config import IncrementalConfig
    from intentflow.incremental import continue_training

    texts, labels = toy_texts()
    path = save_checkpoint(build_payload(judged, outcome_hash="toy", prepare={}, val_texts=[], val_labels=[],
                                         train_originals=texts), tmp_path / "model.pt")
    production = load_checkpoint(path)
    taught = "blorp the zxq vimmel"
    replay = [Row(text, label, text, False) for text, label in zip(texts, labels, strict=True)]

    continued = continue_training(production, [Row(taught, "play_music", taught, False)], replay, replay[:3],
                                  embedding_config(), IncrementalConfig(epochs=10, lr=0.01), new_share=0.2)

    assert continued.examples.shape[0] == production["oos"]["examples"].shape[0] + 1
    assert torch.equal(continued.examples[:-1], production["oos"]["examples"])
    assert continued.oos_similarity == production["oos"]["similarity"]
    assert Classifier.from_trained(continued).predict(taught).label == "play_music"
