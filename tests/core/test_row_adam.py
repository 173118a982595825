"""The first layer's row-only Adam: Adam's arithmetic on the rows a batch uses, and training that still learns."""

from __future__ import annotations

import pytest
import torch

import intentflow.kernels as kernels
from intentflow.config import PrepareConfig
from intentflow.dataset import prepare_data
from intentflow.inference import Classifier
from intentflow.kernels import Bags, RowAdam, update_rows_only
from intentflow.model import IntentMLP
from intentflow.outcomes import load_outcomes
from intentflow.train import train_model

from .helpers import TOY, tiny_train_config


def bags(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(row) for row in rows)
    indices = torch.tensor([row + [0] * (width - len(row)) for row in rows])
    return indices, (indices != 0).float()


def step_both(weight: torch.Tensor, batches: list[list[list[int]]], weight_decay: float = 0.0):
    """The same batches through torch's AdamW over the whole weight and through ``RowAdam``."""
    targets = torch.tensor([[1.0, -2.0, 0.5]])
    dense = torch.nn.Parameter(weight.clone())
    reference = torch.optim.AdamW([dense], lr=0.05, weight_decay=weight_decay)
    lazy = torch.nn.Parameter(weight.clone())
    rows_adam = RowAdam(lazy, lr=0.05, weight_decay=weight_decay, learn_from=None)
    for rows in batches:
        indices, weights = bags(rows)
        reference.zero_grad()
        loss = ((torch.nn.functional.embedding_bag(indices, dense, per_sample_weights=weights, mode="sum",
                                                   padding_idx=0) - targets) ** 2).sum()
        loss.backward()
        reference.step()
        used, renumbered, used_rows = rows_adam.rows(indices)
        loss = ((torch.nn.functional.embedding_bag(renumbered, used_rows, per_sample_weights=weights, mode="sum",
                                                   padding_idx=0) - targets) ** 2).sum()
        loss.backward()
        rows_adam.step(used, used_rows)
    rows_adam.decay(len(batches))
    return dense.detach(), lazy.detach()


def test_rows_every_batch_uses_move_exactly_as_adam_moves_them():
    weight = torch.randn(6, 3)
    weight[0] = 0
    # Rows 1-4 in every batch, row 5 never: Adam and the row-only update agree on 1-4, and 5 and padding stay put.
    dense, lazy = step_both(weight, [[[1, 2], [3, 4, 1]], [[4, 3, 2, 1]], [[2, 1], [4], [3]]] * 3)

    assert not torch.allclose(dense[1:5], weight[1:5])
    assert torch.allclose(lazy[1:5], dense[1:5], atol=1e-6)
    assert torch.equal(lazy[5], weight[5]) and torch.equal(lazy[0], weight[0])


def test_a_row_moves_only_while_its_feature_occurs_and_decay_reaches_every_row():
    weight = torch.randn(4, 3)
    weight[0] = 0
    dense, lazy = step_both(weight, [[[1, 2]], [[1, 2]], [[1]], [[1]]])
    # Adam's momentum carries row 2 on after its feature is gone; the row-only update stops it where it was.
    after_two = step_both(weight, [[[1, 2]], [[1, 2]]])[1]
    assert torch.equal(lazy[2], after_two[2])
    assert not torch.allclose(dense[2], after_two[2])

    decayed = step_both(weight, [[[1]]] * 4, weight_decay=0.5)[1]
    assert torch.allclose(decayed[3], weight[3] * (1 - 0.05 * 0.5) ** 4)
    assert torch.equal(decayed[0], weight[0])


def test_rows_before_learn_from_never_move():
    weight = torch.nn.Parameter(torch.randn(5, 2))
    before = weight.detach().clone()
    rows_adam = RowAdam(weight, lr=0.1, weight_decay=0.0, learn_from=3)
    for _ in range(3):
        used, renumbered, used_rows = rows_adam.rows(torch.tensor([[1, 3, 4], [2, 4, 0]]))
        torch.nn.functional.embedding_bag(renumbered, used_rows, mode="sum", padding_idx=0).sum().backward()
        rows_adam.step(used, used_rows)

    assert torch.equal(weight.detach()[:3], before[:3])
    assert not torch.allclose(weight.detach()[3:], before[3:])


@pytest.mark.parametrize(("vocabulary", "device", "expected"), [
    (10_000, "cpu", True),  # 10,000 rows against 2 x 16 x 4 bag entries a batch
    (100, "cpu", False),
    (10_000, "cuda", False),  # a GPU updates the whole weight: finding a batch's rows would sync the host
])
def test_the_row_only_update_is_chosen_by_the_data_shape_on_the_cpu(vocabulary, device, expected):
    model = IntentMLP(vocabulary, 3, hidden_size=4, hidden_layers=1, dropout=0.0)
    flat = Bags(torch.arange(1, 33) % 4 + 1, torch.full((32,), 0.5), torch.full((8,), 4))

    assert update_rows_only(model, torch.device(device), flat, batch_size=16) is expected
    dense_input = IntentMLP(0, 3, hidden_size=4, hidden_layers=1, dropout=0.0, input_dim=5)
    assert not update_rows_only(dense_input, torch.device("cpu"), None, batch_size=16)


@pytest.fixture
def toy_data(toy_folder):
    return prepare_data(load_outcomes(toy_folder), PrepareConfig(augment_factor=12, min_val_per_label=2, seed=1))


def test_training_with_the_row_only_update_learns_and_is_reproducible(toy_data, monkeypatch):
    monkeypatch.setattr(kernels, "ROWS_ONLY_ABOVE", 0.0)
    chosen = []
    original = kernels.RowAdam
    monkeypatch.setattr(kernels, "RowAdam", lambda *args: chosen.append(args) or original(*args))
    texts, labels = [row.text for row in toy_data.train], [row.label for row in toy_data.train]
    val_texts, val_labels = [row.text for row in toy_data.val], [row.label for row in toy_data.val]
    config = tiny_train_config(weight_decay=0.01)

    first = train_model(texts, labels, val_texts, val_labels, config)
    second = train_model(texts, labels, val_texts, val_labels, config)

    assert len(chosen) == 2
    assert first.metrics["val_accuracy"] >= 0.9 and first.metrics["train_accuracy"] == 1.0
    originals = [(text, name) for name, data in TOY.items() for text in data["examples"]]
    classifier = Classifier.from_trained(first)
    assert [classifier.predict(text).label for text, _ in originals] == [name for _, name in originals]
    assert first.history == second.history
    for name, value in first.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[name]), name
    assert not first.model.state_dict()["input.weight"][0].any()  # padding
