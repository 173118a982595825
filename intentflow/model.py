"""The classifier network: a bag-of-words MLP whose first layer reads sparse index bags."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

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

    def masks(self, count: int, shape: torch.Size, like: torch.Tensor) -> torch.Tensor | None:
        """``count`` masks of ``shape`` from one draw: 0 for a dropped unit, the scale for a kept one (None: off)."""
        if not self.training or self.cutoff == 0:
            return None
        size = count * math.prod(shape)
        # The whole 64-bit range: a bare random_() draws from [0, 2**63), so every eighth byte would be below 128
        # and the unit it masks dropped 90% of the time instead of p (the same units in every row).
        random_bytes = (torch.empty((size + 7) // 8, dtype=torch.int64, device=like.device)
                        .random_(-2**63, None).view(torch.uint8)[:size])
        # The comparison written straight into floats, not a boolean result converted: the playbook recipe's four
        # 64 x 512 masks, draw included, in 106 us instead of 182 (docs/decisions.md#speed-of-the-training-step).
        masks = torch.empty(size, dtype=like.dtype, device=like.device)
        return torch.ge(random_bytes, self.cutoff, out=masks).mul_(self.scale).view(count, *shape)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        masks = self.masks(1, inputs.shape, inputs)
        return inputs if masks is None else inputs * masks[0]


def run_layers(first: torch.Tensor, masks: torch.Tensor | None,
               parameters: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Every layer's output after the first layer's pre-activation ``first``: ReLU and dropout (``masks[i]``, or
    none), then each of ``parameters``' (weight, bias) pairs, the last one the output layer, whose logits come last."""
    outputs = [torch.relu(first)]
    for index in range(0, len(parameters), 2):
        if masks is not None:
            outputs[-1].mul_(masks[index // 2])
        weight, bias = parameters[index], parameters[index + 1]
        outputs.append(torch.addmm(bias, outputs[-1], weight.t()))
        if index + 2 < len(parameters):
            outputs[-1].relu_()
    return outputs


# _BagSums' backward takes the matrix product where the rows are at most this many times the batch's entries. Forward
# and backward of 64 bags of 512 units on 2 Intel Xeon cores (docs/decisions.md): 487 rows (the
# playbook recipe) and 832 entries 285-298 us against 379-508 for the gather and add, 6,000 and 7,680 1.9-2.6 ms
# against 2.8-4.3; 20,000 and 7,680 14.5-15.8 ms against 12.9-13.7.
DENSE_BACKWARD_ROWS = 2


def dense_backward(rows: int, entries: int) -> bool:
    """Whether ``_BagSums``' backward over ``rows`` rows and a batch of ``entries`` bag entries is a matrix product."""
    return rows <= DENSE_BACKWARD_ROWS * entries


class _BagSums(torch.autograd.Function):
    """``F.embedding_bag`` (weighted sums of rows, bags end to end) with a backward that does not sort.

    PyTorch's own backward sorts the batch's indices first: on the playbook recipe that was 0.64 ms a step, more than
    the rest of the first layer (docs/decisions.md). Here the rows' gradient is one matrix product where the rows
    are few for the batch's entries (``DENSE_BACKWARD_ROWS``), else each entry's gradient added to its row with one
    ``index_add_``."""

    @staticmethod
    def forward(ctx: Any, indices: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor | None,
                offsets: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(indices, weights, offsets)
        ctx.rows_shape = rows.shape
        return F.embedding_bag(indices, rows, offsets=offsets, per_sample_weights=weights, mode="sum")

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if not ctx.needs_input_grad[1]:
            return None, None, None, None
        indices, weights, offsets = ctx.saved_tensors
        entries = indices.numel()
        counts = torch.diff(offsets, append=offsets.new_full((1,), entries))
        # The bag (row of ``grad``) of each entry; output_size spares the GPU a sync.
        owners = torch.repeat_interleave(torch.arange(len(offsets), device=grad.device), counts, output_size=entries)
        rows, bags = ctx.rows_shape[0], len(offsets)
        if dense_backward(rows, entries):
            # Few rows for the entries: the gradient is the [rows, bags] matrix of the entries' weights times the
            # bags' gradients, one matrix product instead of an entry-by-entry gather and add.
            spread = grad.new_zeros(rows * bags).index_add_(0, indices * bags + owners,
                                                           weights if weights is not None else grad.new_ones(entries))
            return None, spread.view(rows, bags).mm(grad), None, None
        contributions = grad.index_select(0, owners)
        if weights is not None:
            contributions.mul_(weights.unsqueeze(1))
        rows_grad = grad.new_zeros(ctx.rows_shape).index_add_(0, indices, contributions)
        return None, rows_grad, None, None


class _Layers(torch.autograd.Function):
    """``run_layers`` as one node of the autograd graph, its gradients written out.

    Autograd of the same layers records a node per ReLU, dropout product and linear layer, and converts each dropout
    mask from bytes to floats twice; here the masks come from one draw and the backward pass is two matrix products,
    a bias sum and two masking products a layer (docs/decisions.md#speed-of-the-training-step).
    """

    @staticmethod
    def forward(ctx: Any, first: torch.Tensor, masks: torch.Tensor | None,
                *parameters: torch.Tensor) -> torch.Tensor:
        outputs = run_layers(first, masks, parameters)
        ctx.save_for_backward(masks, *outputs[:-1], *parameters[0::2])
        return outputs[-1]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        masks, *saved = ctx.saved_tensors
        layers = len(saved) // 2
        activations, weights = saved[:layers], saved[layers:]
        grads: list[torch.Tensor | None] = [None] * (2 * layers)
        for layer in range(layers - 1, -1, -1):
            if ctx.needs_input_grad[2 + 2 * layer]:
                grads[2 * layer] = grad.t().mm(activations[layer])
            if ctx.needs_input_grad[3 + 2 * layer]:
                grads[2 * layer + 1] = grad.sum(dim=0)
            grad = grad.mm(weights[layer])
            # ReLU's gradient: nothing where the unit's output is 0 (a dropped unit's output is 0 too).
            grad = torch.ops.aten.threshold_backward(grad, activations[layer], 0)
            if masks is not None:
                grad.mul_(masks[layer])
        return (grad, None, *grads)


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
                # (a batch's forward and backward a third faster: docs/decisions.md#speed-of-the-training-step).
                hidden = (_BagSums.apply(indices, rows, weights, offsets) if torch.is_grad_enabled() else
                          F.embedding_bag(indices, rows, offsets=offsets, per_sample_weights=weights, mode="sum"))
            hidden = hidden + self.input_bias
        parameters = [tensor for layer in [*self.hidden, self.output] for tensor in (layer.weight, layer.bias)]
        masks = self.dropout.masks(len(self.hidden) + 1, hidden.shape, hidden)
        if torch.is_grad_enabled():
            return _Layers.apply(hidden, masks, *parameters)
        return run_layers(hidden, masks, parameters)[-1]


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
