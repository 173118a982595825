"""The classifier network: a bag-of-words MLP whose first layer reads sparse index bags."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ByteDropout(nn.Module):
    """Dropout whose mask comes from random bytes: one 64-bit draw masks eight activations.

    ``nn.Dropout`` draws a Bernoulli sample per activation, which on a CPU costs more than the layer's
    matrix product. The rate is rounded to a multiple of 1/256 (0.45 -> 0.4492); the scaling uses the
    rounded rate, so the expected activation is unchanged.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.cutoff = round(p * 256)
        self.scale = 1.0 / (1.0 - self.cutoff / 256) if self.cutoff < 256 else 0.0

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if not self.training or self.cutoff == 0:
            return inputs
        words = (inputs.numel() + 7) // 8
        # The whole 64-bit range: a bare random_() draws from [0, 2**63), so every eighth byte would be below 128
        # and the unit it masks dropped 90% of the time instead of p (the same units in every row).
        random_bytes = (torch.empty(words, dtype=torch.int64, device=inputs.device)
                        .random_(-2**63, None).view(torch.uint8))
        keep = random_bytes[: inputs.numel()].view(inputs.shape) >= self.cutoff
        return inputs * keep * self.scale


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
                # No padding_idx: end-to-end bags hold no padding, and it would turn off the fast CPU kernel
                # (forward and backward of a batch 2.84 ms against 4.12 padded, benchmarks/first_layer.py).
                hidden = F.embedding_bag(indices, rows, offsets=offsets, per_sample_weights=weights, mode="sum")
            hidden = hidden + self.input_bias
        hidden = self.dropout(torch.relu(hidden))
        for layer in self.hidden:
            hidden = self.dropout(torch.relu(layer(hidden)))
        return self.output(hidden)


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
