"""The classifier network: a bag-of-words MLP whose first layer reads sparse index bags."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from intentflow.kernels import BagSums, ByteDropout, Layers, run_layers

if TYPE_CHECKING:
    from intentflow.config import TrainConfig
    from intentflow.encoder import SentenceEncoder
    from intentflow.features import Vocabulary


class IntentMLP(nn.Module):
    """``hidden_layers`` x ``hidden_size`` ReLU layers with dropout, then a linear output.

    For bag-of-words input the first layer is an ``EmbeddingBag`` summing weighted rows: the same function as
    a linear layer over a dense bag-of-words vector, at the cost of a sentence's words, not the vocabulary.
    With ``input_dim`` set it reads dense vectors (sentence embeddings) through a plain linear layer instead.
    """

    def __init__(self, vocab_size: int, num_labels: int, hidden_size: int, hidden_layers: int,
                 dropout: float, input_dim: int | None = None):
        super().__init__()
        self.dense_input = input_dim is not None
        fan_in = input_dim if input_dim is not None else vocab_size
        if input_dim is not None:
            self.input = nn.Linear(input_dim, hidden_size, bias=False)
        else:
            self.input = nn.EmbeddingBag(vocab_size, hidden_size, mode="sum", padding_idx=0)
        self.input_bias = nn.Parameter(torch.zeros(hidden_size))
        bound = 1.0 / math.sqrt(fan_in)
        # Linear-layer initialisation keeps the first layer's scale what a dense input layer would have.
        nn.init.uniform_(self.input.weight, -bound, bound)
        nn.init.uniform_(self.input_bias, -bound, bound)
        if input_dim is None:
            with torch.no_grad():
                self.input.weight[0].zero_()
        self.hidden = nn.ModuleList(nn.Linear(hidden_size, hidden_size) for _ in range(hidden_layers - 1))
        self.dropout = ByteDropout(dropout)
        self.output = nn.Linear(hidden_size, num_labels)

    def forward(self, indices: torch.Tensor, weights: torch.Tensor | None = None,
                input_rows: torch.Tensor | None = None, offsets: torch.Tensor | None = None) -> torch.Tensor:
        """``(indices, weights)`` of bags, or ``(vectors,)`` for a dense-input network.

        Bags come padded (``[rows, width]``, index 0 and weight 0 where a sentence has no more features) or, with
        ``offsets``, laid end to end without padding (1-d, each bag starting at its offset). ``input_rows``: the
        first layer's rows to read instead of its weight, with ``indices`` pointing into them (training on the rows
        a batch uses).
        """
        if self.dense_input:
            hidden = self.input(indices) + self.input_bias
        else:
            rows = input_rows if input_rows is not None else self.input.weight
            if offsets is None:
                hidden = F.embedding_bag(indices, rows, per_sample_weights=weights, mode="sum", padding_idx=0)
            else:
                # No padding_idx: end-to-end bags hold no padding, and it would turn off the fast CPU kernel.
                hidden = (BagSums.apply(indices, rows, weights, offsets) if torch.is_grad_enabled() else
                          F.embedding_bag(indices, rows, offsets=offsets, per_sample_weights=weights, mode="sum"))
            hidden = hidden + self.input_bias
        parameters = [tensor for layer in [*self.hidden, self.output] for tensor in (layer.weight, layer.bias)]
        masks = self.dropout.masks(len(self.hidden) + 1, hidden.shape, hidden)
        if torch.is_grad_enabled():
            return Layers.apply(hidden, masks, *parameters)
        return run_layers(hidden, masks, parameters)[-1]


def network(vocab: Vocabulary, labels: list[str], config: TrainConfig,
             encoder: SentenceEncoder | None) -> IntentMLP:
    """A network of ``config``'s shape with fresh weights (torch's seed as it stands): bags of ``vocab``'s features,
    or ``encoder``'s vectors where there is one."""
    return IntentMLP(len(vocab), len(labels), config.hidden_size, config.hidden_layers, config.dropout,
                     input_dim=encoder.dimension if encoder is not None else None)


def parameter_shapes(vocab_size: int, num_labels: int, hidden_size: int,
                     hidden_layers: int, input_dim: int | None = None) -> dict[str, tuple[int, ...]]:
    """Name and shape of every weight ``IntentMLP`` holds, so a checkpoint is checked before a network is built
    (a hostile file cannot make one allocate more than the weights it really holds)."""
    first = (hidden_size, input_dim) if input_dim is not None else (vocab_size, hidden_size)
    shapes: dict[str, tuple[int, ...]] = {"input.weight": first, "input_bias": (hidden_size,)}
    for index in range(hidden_layers - 1):
        shapes[f"hidden.{index}.weight"] = (hidden_size, hidden_size)
        shapes[f"hidden.{index}.bias"] = (hidden_size,)
    shapes["output.weight"] = (num_labels, hidden_size)
    shapes["output.bias"] = (num_labels,)
    return shapes


def merge_heads(heads: Sequence[IntentMLP]) -> IntentMLP:
    """One network whose logits are the mean of ``heads``' logits for every input (in evaluation mode).

    Their hidden units side by side (block diagonal from one hidden layer to the next, so no head reads another's),
    the output weights over the heads' count and the output bias their mean. A checkpoint and ``Classifier`` see one
    plain network, as wide as the heads together.
    """
    first, count = heads[0], len(heads)
    states = [{name: value.detach() for name, value in head.state_dict().items()} for head in heads]
    weight = first.input.weight
    # Bags: one row per feature ([vocab, hidden]); dense input: a linear layer's [hidden, input_dim].
    merged = IntentMLP(0 if first.dense_input else weight.shape[0], first.output.out_features,
                       sum(state["input_bias"].shape[0] for state in states), len(first.hidden) + 1,
                       first.dropout.p, input_dim=weight.shape[1] if first.dense_input else None)
    state = {"input.weight": torch.cat([state["input.weight"] for state in states], dim=0 if first.dense_input else 1),
             "input_bias": torch.cat([state["input_bias"] for state in states])}
    for index in range(len(first.hidden)):
        state[f"hidden.{index}.weight"] = torch.block_diag(*(state[f"hidden.{index}.weight"] for state in states))
        state[f"hidden.{index}.bias"] = torch.cat([state[f"hidden.{index}.bias"] for state in states])
    state["output.weight"] = torch.cat([state["output.weight"] for state in states], dim=1) / count
    state["output.bias"] = torch.stack([state["output.bias"] for state in states]).mean(dim=0)
    merged.load_state_dict(state)
    return merged.to(weight.device).eval()


def val_scores(model: IntentMLP, val: tuple[list[torch.Tensor], torch.Tensor],
                label_smoothing: float) -> dict[str, float]:
    """Validation loss and accuracy of ``model`` (in evaluation mode) on ``val`` (inputs, targets)."""
    with torch.no_grad():
        logits = model(*val[0])
    return {"val_loss": float(F.cross_entropy(logits, val[1], label_smoothing=label_smoothing)),
            "val_accuracy": float((logits.argmax(dim=1) == val[1]).float().mean())}
