"""The network's parts: dropout keeps every unit at the same rate; the written-out gradients are autograd's;
merged networks answer with their mean."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from intentflow import kernels
from intentflow.model import ByteDropout, IntentMLP, merge_heads


@pytest.mark.parametrize("rate", [0.1, 0.45, 0.8])
def test_byte_dropout_keeps_every_unit_at_one_minus_the_rate(rate):
    torch.manual_seed(0)
    dropout = ByteDropout(rate).train()
    kept = dropout(torch.ones(4096, 64)) != 0
    share = kept.float().mean(dim=0)
    expected = 1 - dropout.cutoff / 256
    # 4096 draws a unit: the standard error of its share is under 0.008, so 0.04 is five of them.
    assert share.min() > expected - 0.04 and share.max() < expected + 0.04


def test_byte_dropout_keeps_the_expected_activation_and_is_off_in_evaluation():
    torch.manual_seed(1)
    dropout = ByteDropout(0.45)
    inputs = torch.rand(2048, 512)
    assert torch.equal(dropout.eval()(inputs), inputs)
    scaled = dropout.train()(inputs).mean() / inputs.mean()
    assert scaled == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("dense_input", [False, True])
def test_written_out_gradients_equal_autograd_of_the_same_layers(layers, dense_input):
    torch.manual_seed(2)
    model = IntentMLP(12, 4, 6, layers, dropout=0.45, input_dim=5 if dense_input else None).double().train()
    inputs = ((torch.randn(7, 5, dtype=torch.double),) if dense_input else
              (torch.randint(1, 12, (7, 3)), torch.rand(7, 3, dtype=torch.double)))
    torch.manual_seed(3)
    written_out = _gradients(model, model(*inputs))

    # The same function through autograd's own nodes, with the same dropout masks (the same draw).
    torch.manual_seed(3)
    first = (model.input(inputs[0]) if dense_input else
             F.embedding_bag(inputs[0], model.input.weight, per_sample_weights=inputs[1], mode="sum", padding_idx=0))
    hidden = first + model.input_bias
    masks = model.dropout.masks(layers, hidden.shape, hidden)
    hidden = torch.relu(hidden) * masks[0]
    for index, layer in enumerate(model.hidden, start=1):
        hidden = torch.relu(layer(hidden)) * masks[index]
    plain = _gradients(model, model.output(hidden))

    assert written_out.keys() == plain.keys()
    for name, gradient in plain.items():
        assert torch.allclose(written_out[name], gradient, rtol=1e-10, atol=1e-12), name


def test_frozen_layers_get_no_gradient_and_evaluation_needs_no_graph():
    model = IntentMLP(12, 4, 6, 3, dropout=0.45).train()
    for layer in model.hidden:
        layer.requires_grad_(False)
    inputs = (torch.randint(1, 12, (5, 3)), torch.ones(5, 3))
    model(*inputs).square().sum().backward()
    assert all(layer.weight.grad is None for layer in model.hidden)
    assert model.input.weight.grad is not None and model.output.weight.grad is not None
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(*inputs), model(*inputs))


def _gradients(model: IntentMLP, logits: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    targets = torch.arange(len(logits)) % logits.shape[1]
    F.cross_entropy(logits, targets, label_smoothing=0.1).backward()
    return {name: parameter.grad.clone() for name, parameter in model.named_parameters()}


@pytest.mark.parametrize("dense_rows", [0, 1000], ids=["gather-and-add", "matrix-product"])
@pytest.mark.parametrize("weighted", [True, False])
def test_end_to_end_bags_give_the_first_layer_the_gradient_of_autograds_embedding_bag(monkeypatch, dense_rows,
                                                                                       weighted):
    # Either backward of BagSums, whichever the shapes would choose.
    monkeypatch.setattr(kernels, "DENSE_BACKWARD_ROWS", dense_rows)
    torch.manual_seed(4)
    model = IntentMLP(30, 4, 8, 2, dropout=0.0).double().train()
    lengths = torch.tensor([3, 1, 5, 2])
    indices = torch.randint(1, 30, (int(lengths.sum()),))
    indices[:2] = 7  # a feature twice in one bag, and in another
    indices[4] = 7
    weights = torch.rand(len(indices), dtype=torch.double) if weighted else None
    offsets = torch.cumsum(lengths, 0) - lengths
    written_out = _gradients(model, model(indices, weights, offsets=offsets))

    first = F.embedding_bag(indices, model.input.weight, offsets=offsets, per_sample_weights=weights, mode="sum")
    hidden = torch.relu(first + model.input_bias)
    for layer in model.hidden:
        hidden = torch.relu(layer(hidden))
    plain = _gradients(model, model.output(hidden))
    for name, gradient in plain.items():
        assert torch.allclose(written_out[name], gradient, rtol=1e-10, atol=1e-12), name


@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("dense_input", [False, True])
def test_merged_heads_answer_with_the_mean_of_their_logits(layers, dense_input):
    torch.manual_seed(4)
    heads = [IntentMLP(12, 4, 6, layers, dropout=0.45, input_dim=5 if dense_input else None).eval()
             for _ in range(3)]
    inputs = ((torch.randn(7, 5),) if dense_input else (torch.randint(0, 12, (7, 3)), torch.rand(7, 3)))

    merged = merge_heads(heads)

    assert merged.input_bias.shape == (18,) and merged.dense_input == dense_input and not merged.training
    expected = torch.stack([head(*inputs) for head in heads]).mean(dim=0)
    assert torch.allclose(merged(*inputs), expected, atol=1e-6)
    # Not just the first head's answer: each head moves the mean.
    assert not torch.allclose(merged(*inputs), heads[0](*inputs), atol=1e-3)
