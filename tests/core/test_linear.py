"""The linear model of the examples: it learns them, and folded into the network it computes exactly the mixture."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from intentflow.checkpoint import build_payload, load_checkpoint, save_checkpoint
from intentflow.config import PrepareConfig
from intentflow.dataset import prepare_data
from intentflow.features import build_vocabulary
from intentflow.inference import Classifier
from intentflow.linear import fit_linear, fold_linear
from intentflow.model import IntentMLP
from intentflow.outcomes import load_outcomes
from intentflow.train import train_split

from .helpers import TOY, tiny_train_config

EXAMPLES = [(text, name) for name, data in TOY.items() for text in data["examples"]]


@pytest.mark.parametrize("layers", [1, 3])
def test_the_folded_network_computes_the_share_weighted_sum_of_both_logits(layers):
    torch.manual_seed(0)
    vocab_size, labels, share = 40, 5, 0.3
    model = IntentMLP(vocab_size, labels, 16, layers, dropout=0.45).eval()
    weight, bias = torch.randn(vocab_size, labels), torch.randn(labels)
    weight[0] = 0
    indices = torch.randint(0, vocab_size, (8, 6))
    weights = torch.rand(8, 6)

    folded = fold_linear(model, weight, bias, share).eval()

    linear = F.embedding_bag(indices, weight, per_sample_weights=weights, mode="sum", padding_idx=0) + bias
    with torch.no_grad():
        expected = share * linear + (1 - share) * model(indices, weights)
        assert torch.allclose(folded(indices, weights), expected, atol=1e-5)
    assert folded.input_bias.shape[0] == 16 + 2 * labels and len(folded.hidden) == layers - 1


def test_the_linear_model_learns_the_examples_and_is_deterministic():
    texts, names = [text for text, _ in EXAMPLES], [name for _, name in EXAMPLES]
    labels = sorted(set(names))
    vocab = build_vocabulary(texts, word_ngrams=1)
    targets = torch.tensor([labels.index(name) for name in names])

    weight, bias = fit_linear(vocab, texts, targets, len(labels), torch.device("cpu"))
    again, _ = fit_linear(vocab, texts, targets, len(labels), torch.device("cpu"))

    indices, weights = vocab.encode(texts)
    logits = F.embedding_bag(indices, weight, per_sample_weights=weights, mode="sum", padding_idx=0) + bias
    assert logits.argmax(dim=1).tolist() == targets.tolist()
    assert torch.equal(weight, again)
    assert not weight[0].any()  # padding stays zero


def test_the_linear_model_is_the_regularised_optimum():
    texts, names = [text for text, _ in EXAMPLES], [name for _, name in EXAMPLES]
    labels = sorted(set(names))
    vocab = build_vocabulary(texts, word_ngrams=2, char_ngrams=5)
    targets = torch.tensor([labels.index(name) for name in names])

    weight, bias = fit_linear(vocab, texts, targets, len(labels), torch.device("cpu"), c=10.0)

    # The objective's gradient vanishes there: L-BFGS ran to convergence, not to an iteration limit.
    weight, bias = weight.clone().requires_grad_(True), bias.clone().requires_grad_(True)
    indices, weights = vocab.encode(texts)
    logits = F.embedding_bag(indices, weight, per_sample_weights=weights, mode="sum", padding_idx=0) + bias
    loss = F.cross_entropy(logits, targets) + weight.square().sum() / (2.0 * 10.0 * len(texts))
    loss.backward()
    assert len(vocab) > 200 and weight.abs().max() > 0.1
    assert weight.grad.abs().max() < 1e-5 and bias.grad.abs().max() < 1e-5


def test_a_trained_model_carries_the_linear_model_through_its_checkpoint(toy_folder, tmp_path):
    data = prepare_data(load_outcomes(toy_folder), PrepareConfig(augment_factor=12, min_val_per_label=2, seed=1))
    from intentflow.split import Split

    split = Split(data.train, data.val)
    mixed = train_split(split, tiny_train_config(epochs=30))
    alone = train_split(split, tiny_train_config(epochs=30, linear_share=0.0))

    originals = sum(not row.synthetic for row in split.train)
    assert mixed.linear == {"share": 0.5, "c": 100.0, "examples": originals, "hidden_units": 6}
    assert alone.linear is None and alone.model.input_bias.shape[0] == 32
    # Same seed, same epochs: the MLP inside is the one trained alone, and the answers differ only by the mixture.
    assert mixed.history == alone.history
    payload = build_payload(mixed, outcome_hash="toy", prepare={}, val_texts=[], val_labels=[])
    loaded = Classifier.load(save_checkpoint(payload, tmp_path / "model.pt"))
    assert load_checkpoint(tmp_path / "model.pt")["config"]["linear"]["hidden_units"] == 6
    texts = [row.text for row in split.val]
    assert loaded.predict_batch(texts) == Classifier.from_trained(mixed).predict_batch(texts)
    assert [loaded.predict(text).label for text, _ in EXAMPLES] == [name for _, name in EXAMPLES]
    # Its validation figures are the folded network's; the history's are the MLP's.
    answers = Classifier.from_trained(mixed).predict_batch(texts)
    accuracy = sum(answer.label == row.label for answer, row in zip(answers, split.val, strict=True)) / len(texts)
    assert mixed.metrics["val_accuracy"] == pytest.approx(accuracy)
    assert mixed.history[mixed.best_epoch - 1].val_accuracy == alone.metrics["val_accuracy"]


def test_a_linear_model_that_lowers_validation_accuracy_is_left_out_and_the_refit_follows(toy_folder, monkeypatch):
    import intentflow.linear as linear
    from intentflow.refit import refit_model
    from intentflow.split import Split

    data = prepare_data(load_outcomes(toy_folder), PrepareConfig(augment_factor=12, min_val_per_label=2, seed=1))
    split = Split(data.train, data.val)

    def always_the_first_outcome(vocab, texts, targets, labels, device):
        fitted = [torch.zeros(len(vocab), labels), torch.zeros(labels)]
        fitted[1][0] = 100.0
        return tuple(fitted)

    monkeypatch.setattr(linear, "fit_linear", always_the_first_outcome)
    declined = train_split(split, tiny_train_config(epochs=30))
    alone = train_split(split, tiny_train_config(epochs=30, linear_share=0.0))

    assert declined.linear is None and declined.folded_scores is None
    assert declined.metrics["val_accuracy"] == alone.metrics["val_accuracy"]
    texts = [row.text for row in split.val]
    assert Classifier.from_trained(declined).predict_batch(texts) == Classifier.from_trained(alone).predict_batch(texts)
    refitted = refit_model(declined, split)
    assert refitted.linear is None and refitted.model.input_bias.shape[0] == 32
