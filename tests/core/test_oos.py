"""Out-of-scope answers: the calibrated threshold, the unknown label, evaluation's OOS recall, label smoothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from intentflow.calibration import calibrate_oos
from intentflow.checkpoint import build_payload, load_checkpoint, save_checkpoint
from intentflow.config import PrepareConfig
from intentflow.dataset import prepare_data
from intentflow.errors import IntentflowError
from intentflow.evaluate import evaluate_model
from intentflow.inference import Classifier
from intentflow.outcomes import load_outcomes
from intentflow.train import train_model

from .helpers import tiny_train_config

OFF_TOPIC = ["purple elephants juggle quietly", "the mitochondria is the powerhouse", "zzz qqq xxx"]


@pytest.fixture
def toy_rows(toy_folder):
    return prepare_data(load_outcomes(toy_folder), PrepareConfig(augment_factor=12, min_val_per_label=2, seed=1))


def texts_labels(rows):
    return [row.text for row in rows], [row.label for row in rows]


def test_calibration_rejects_the_asked_share_of_correct_rows():
    # 200 correct rows with confidences 0.5025 ... 1.0, and wrong rows that must not count.
    confidence = torch.linspace(0.5025, 1.0, 200)
    probabilities = torch.stack([confidence, 1 - confidence], dim=1)
    probabilities = torch.cat([probabilities, torch.tensor([[0.01, 0.99]] * 50)])
    targets = torch.zeros(250, dtype=torch.long)

    threshold = calibrate_oos(probabilities, targets, share=0.05, scale=1.0)

    rejected = (confidence < threshold).float().mean().item()
    assert rejected == pytest.approx(0.05, abs=0.006)
    assert threshold == round(threshold, 4) and threshold <= float(torch.quantile(confidence.double(), 0.05))
    assert calibrate_oos(probabilities[200:], targets[200:]) is None  # nothing correct: no threshold


@pytest.mark.parametrize("outcomes", [2, 3, 150])
def test_calibration_scales_from_chance_to_the_quantile(outcomes):
    # The same correct confidences, 0.6 ... 1.0, under 2, 3 and 150 outcomes: the default threshold lies 0.45 of
    # the way from 1 / outcomes to their 5% quantile, so it sits above chance for any number of outcomes.
    confidence = torch.linspace(0.6, 1.0, 101)
    rest = (1 - confidence).unsqueeze(1).expand(-1, outcomes - 1) / (outcomes - 1)
    probabilities = torch.cat([confidence.unsqueeze(1), rest], dim=1)
    targets = torch.zeros(101, dtype=torch.long)
    quantile = float(torch.quantile(confidence.double(), 0.05))

    threshold = calibrate_oos(probabilities, targets)

    chance = 1 / outcomes
    assert threshold == pytest.approx(chance + 0.45 * (quantile - chance), abs=1e-4)
    assert chance < threshold < quantile


def test_auto_threshold_answers_unknown_for_off_topic_sentences_and_survives_reload(toy_rows, tmp_path,
                                                                                   monkeypatch):
    monkeypatch.setenv("INTENTFLOW_CACHE_DIR", str(tmp_path / "cache"))
    train_texts, train_labels = texts_labels(toy_rows.train)
    val_texts, val_labels = texts_labels(toy_rows.val)
    trained = train_model(train_texts, train_labels, val_texts, val_labels,
                          tiny_train_config(oos_threshold="auto", label_smoothing=0.1, featurizer="embeddings",
                                            finetune_epochs=0, hidden_size=64, epochs=40, oos_similarity="off"))
    classifier = Classifier.from_trained(trained)

    assert trained.oos_threshold is not None and 0.0 < trained.oos_threshold < 1.0
    # It lies below the 5% quantile of the correct validation originals' confidences: at most one correct row here.
    answers = classifier.predict_batch(val_texts)
    top = classifier.predict_batch(val_texts, apply_oos=False)
    correct = [index for index, label in enumerate(val_labels) if top[index].label == label]
    assert sum(answers[index].label == "unknown" for index in correct) <= max(1, 0.01 * len(correct))
    off_topic = classifier.predict_batch(OFF_TOPIC)
    assert [a.label for a in off_topic].count("unknown") >= 2, off_topic
    assert all(a.confidence < trained.oos_threshold for a in off_topic if a.label == "unknown")

    payload = build_payload(trained, outcome_hash="toy", prepare={}, val_texts=val_texts, val_labels=val_labels)
    path = save_checkpoint(payload, tmp_path / "model.pt")
    loaded = Classifier.load(path)
    assert loaded.oos_threshold == trained.oos_threshold
    assert loaded.predict_batch(OFF_TOPIC) == off_topic
    single = [loaded.predict(text) for text in OFF_TOPIC]
    assert [a.label for a in single] == [a.label for a in off_topic]
    assert [a.confidence for a in single] == pytest.approx([a.confidence for a in off_topic], abs=1e-5)


def test_auto_leaves_a_bag_of_words_model_without_a_threshold(toy_rows):
    train_texts, train_labels = texts_labels(toy_rows.train)
    val_texts, val_labels = texts_labels(toy_rows.val)
    trained = train_model(train_texts, train_labels, val_texts, val_labels, tiny_train_config(oos_threshold="auto"))

    assert trained.oos_threshold is None
    assert "unknown" not in {a.label for a in Classifier.from_trained(trained).predict_batch(OFF_TOPIC)}


def test_fixed_threshold_and_label_name_are_used(toy_rows):
    train_texts, train_labels = texts_labels(toy_rows.train)
    trained = train_model(train_texts, train_labels, [], [],
                          tiny_train_config(oos_threshold=0.999, unknown_label="no_idea"))
    classifier = Classifier.from_trained(trained)

    assert trained.oos_threshold == 0.999
    assert {a.label for a in classifier.predict_batch(OFF_TOPIC)} == {"no_idea"}
    # apply_oos=False gives the top label all the same.
    assert {a.label for a in classifier.predict_batch(OFF_TOPIC, apply_oos=False)} <= set(trained.labels)


def test_evaluation_reports_in_scope_accuracy_and_oos_recall(toy_rows):
    train_texts, train_labels = texts_labels(toy_rows.train)
    trained = train_model(train_texts, train_labels, [], [], tiny_train_config())
    classifier = Classifier.from_trained(trained)
    texts = train_texts[:6] + OFF_TOPIC
    labels = train_labels[:6] + ["oos"] * len(OFF_TOPIC)
    confidences = [a.confidence for a in classifier.predict_batch(texts)]
    # A threshold between the off-topic and the training sentences' confidences separates them exactly.
    classifier.oos_threshold = (max(confidences[6:]) + min(confidences[:6])) / 2
    assert max(confidences[6:]) < min(confidences[:6])

    evaluation = evaluate_model(classifier, texts, labels)

    assert evaluation.samples == 6 and evaluation.accuracy == 1.0
    assert evaluation.oos_samples == 3 and evaluation.oos_recall == 1.0
    assert evaluation.accuracy_without_oos == 1.0
    assert evaluation.unknown_labels == []
    classifier.oos_threshold = 1.0  # everything unknown: in-scope accuracy 0, recall 1, accuracy without it 1
    evaluation = evaluate_model(classifier, texts, labels)
    assert (evaluation.accuracy, evaluation.oos_recall, evaluation.accuracy_without_oos) == (0.0, 1.0, 1.0)


def test_an_outcome_named_like_the_unknown_label_is_refused():
    with pytest.raises(IntentflowError, match="unknown_label"):
        train_model(["hello", "bye"], ["unknown", "farewell"], [], [], tiny_train_config(oos_threshold="auto"))


def test_a_checkpoint_with_a_malformed_oos_entry_is_refused(toy_model, tmp_path):
    trained = toy_model.trained
    payload = build_payload(trained, outcome_hash="toy", prepare={}, val_texts=[], val_labels=[])
    payload["oos"] = {"threshold": 7, "label": "unknown"}
    path = save_checkpoint(payload, tmp_path / "bad.pt")

    with pytest.raises(IntentflowError, match="'oos'"):
        load_checkpoint(path)


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_label_smoothing_caps_the_confidence_on_training_sentences(toy_rows, smoothing):
    train_texts, train_labels = texts_labels(toy_rows.train)
    trained = train_model(train_texts, train_labels, [], [],
                          tiny_train_config(label_smoothing=smoothing, epochs=150, linear_share=0.0))
    top = max(a.confidence for a in Classifier.from_trained(trained).predict_batch(train_texts))

    # The smoothed target puts 1 - smoothing + smoothing / 3 on the right label: 0.8 for 0.3 here (the MLP's alone:
    # an unsmoothed linear model folded in would raise it).
    if smoothing:
        assert top < 1 - smoothing + smoothing / 3 + 0.05
    else:
        assert top > 0.95


def test_one_refusal_rule_answers_alike_for_a_batch_and_for_one_sentence():
    from intentflow.prediction import Refusal

    rule = Refusal.of(["book", "chit_chat", "weather"], threshold=0.5, similarity=0.6, out_of_scope=["chit_chat"])
    index = np.array([0, 0, 1, 2, 2])
    confidence = np.array([0.9, 0.4, 0.99, 0.7, 0.5], dtype=np.float32)
    similarity = np.array([0.8, 0.9, 0.9, 0.59, 0.6], dtype=np.float32)

    batch = rule.refused(index, confidence, similarity)

    # confident and near an example; unsure; an outcome marked out of scope; far from every example; both at
    # their thresholds exactly (kept: only below refuses)
    assert batch.tolist() == [False, True, True, True, False]
    assert [bool(rule.refused(int(i), float(c), float(s))) for i, c, s in zip(index, confidence, similarity,
                                                                              strict=True)] == batch.tolist()
    # one answer in plain Python (bag-of-words, no similarity) agrees with the arrays
    assert [rule.refuses(int(i), float(c)) for i, c in zip(index, confidence, strict=True)] == \
        rule.refused(index, confidence).tolist()
    # without a similarity (bag-of-words) only the confidence and the marked outcomes decide
    assert rule.refused(index, confidence).tolist() == [False, True, True, False, False]
    never = Refusal.of(["book", "weather"], threshold=None, similarity=None, out_of_scope=[])
    assert not never.refused(np.array([0, 1]), np.array([0.01, 0.02]), np.array([0.0, 0.0])).any()
