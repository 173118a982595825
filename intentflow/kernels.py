"""The fast paths of training, each beside the plain torch way it must equal (tests/core/test_kernels.py and the
tests it names).

The training loop (``intentflow.train``) meets this module through one interface, ``Steps``: the batches of an
epoch as the network's inputs, and ``Steps.learn(loss)`` for the backward pass and the update. Behind it:

- ``BagSums`` and ``Layers``: the network's backward passes written out (``IntentMLP`` uses them when training);
- ``ByteDropout``: dropout masks from random bytes;
- ``Bags``: bag-of-words rows laid end to end on the device, drawn batch by batch;
- ``FusedAdamW``: torch's fused AdamW kernel without the optimiser's Python; ``RowAdam``: AdamW on the rows of a
  large first layer a batch uses;
- ``flush_denormals`` and ``scrub_moments``: keeping denormal floats, which x86 CPUs handle a hundred times slower,
  out of training.
"""

from __future__ import annotations

import ctypes
import functools
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from intentflow.model import IntentMLP


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
        # The comparison written straight into floats, not a boolean result converted: nearly twice as fast.
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


# BagSums' backward takes the matrix product where the rows are at most this many times the batch's entries;
# beyond that, adding each entry's gradient to its row is faster.
DENSE_BACKWARD_ROWS = 2


def dense_backward(rows: int, entries: int) -> bool:
    """Whether ``BagSums``' backward over ``rows`` rows and a batch of ``entries`` bag entries is a matrix product."""
    return rows <= DENSE_BACKWARD_ROWS * entries


class BagSums(torch.autograd.Function):
    """``F.embedding_bag`` (weighted sums of rows, bags end to end) with a backward that does not sort.

    PyTorch's own backward sorts the batch's indices first: on the playbook recipe that cost more than the rest of the
    first layer. Here the rows' gradient is one matrix product where the rows
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


class Layers(torch.autograd.Function):
    """``run_layers`` as one node of the autograd graph, its gradients written out.

    Autograd of the same layers records a node per ReLU, dropout product and linear layer, and converts each dropout
    mask from bytes to floats twice; here the masks come from one draw and the backward pass is two matrix products,
    a bias sum and two masking products a layer.
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


class Bags:
    """The training rows' index bags laid end to end without padding, drawn batch by batch in an epoch's order.

    The first layer's fast kernel takes bags this way: a padded batch of the bundled outcomes has twice as many
    slots as features, and needs ``padding_idx``, which turns that kernel off. A
    batch's entries are gathered on the device when it is drawn; the batches' sizes are read once an epoch, so no
    step waits on the host.
    """

    def __init__(self, indices: torch.Tensor, weights: torch.Tensor, lengths: torch.Tensor):
        """``Vocabulary.encode_flat``'s tensors: every row's indices and weights end to end, and the rows' lengths."""
        self.indices, self.weights, self.lengths = indices, weights, lengths
        self.starts = torch.cumsum(lengths, dim=0) - lengths
        self.entries = int(indices.numel())

    def entries_per_row(self) -> float:
        return self.entries / max(len(self.lengths), 1)

    def batches(self, order: torch.Tensor,
                batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``(indices, weights, offsets)`` of each batch of ``order``'s rows, ``batch_size`` rows a batch.

        Gathered batch by batch, so memory holds one batch's entries at a time, not an epoch's.
        """
        lengths = self.lengths[order]
        ends = torch.cumsum(lengths, dim=0)
        # Where each batch's entries end, read once an epoch: it sizes the gathers without a sync in the steps.
        highs = ends[batch_size - 1::batch_size].tolist() + ([int(ends[-1])] if len(order) % batch_size else [])
        low = 0
        for start, high in zip(range(0, len(order), batch_size), highs, strict=True):
            rows, counts = order[start:start + batch_size], lengths[start:start + batch_size]
            offsets = torch.cumsum(counts, dim=0) - counts
            # Entry j of the batch is entry j - offsets[r] of its row r, which starts at starts[r] in the data.
            places = torch.repeat_interleave(self.starts[rows] - offsets, counts, output_size=high - low)
            places += torch.arange(high - low, device=places.device)
            yield self.indices[places], self.weights[places], offsets
            low = high


# Adam's moments of a weight whose gradient stays zero (a word no batch holds, padding, a unit ReLU has switched off)
# decay by 0.9 and 0.999 a step into denormal floats within a few hundred steps. Where flush_denormals cannot reach
# every thread, zeroing the moments below SCRUB_BELOW every SCRUB_EVERY steps keeps them out (1e-30 x 0.9^100 is
# still 3e-35); such a moment would move its weight by about lr x 1e-30 / eps.
SCRUB_EVERY = 100
SCRUB_BELOW = 1e-30


class FusedAdamW:
    """``torch.optim.AdamW(fused=True)``'s update, one call of the same kernel a step without the optimiser's
    Python around it, which took a quarter of the playbook recipe's optimiser step.

    The same arithmetic on the same state (``state[parameter]["exp_avg"]``, ``["exp_avg_sq"]``, ``["step"]``), so a
    run is bit for bit what ``torch.optim.AdamW(fused=True)`` gives (tests/core/test_train.py).
    """

    def __init__(self, parameters: Sequence[torch.Tensor], lr: float, weight_decay: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.parameters = list(parameters)
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps
        self.state = {parameter: {"step": torch.zeros((), dtype=torch.float32, device=parameter.device),
                                  "exp_avg": torch.zeros_like(parameter, memory_format=torch.preserve_format),
                                  "exp_avg_sq": torch.zeros_like(parameter, memory_format=torch.preserve_format)}
                      for parameter in self.parameters}

    def zero_grad(self) -> None:
        for parameter in self.parameters:
            parameter.grad = None

    @torch.no_grad()
    def step(self) -> None:
        learning = [parameter for parameter in self.parameters if parameter.grad is not None]
        if not learning:
            return
        states = [self.state[parameter] for parameter in learning]
        steps = [state["step"] for state in states]
        torch._foreach_add_(steps, 1)
        torch._fused_adamw_(learning, [parameter.grad for parameter in learning],
                            [state["exp_avg"] for state in states], [state["exp_avg_sq"] for state in states], [],
                            steps, amsgrad=False, lr=self.lr, beta1=self.betas[0], beta2=self.betas[1],
                            weight_decay=self.weight_decay, eps=self.eps, maximize=False)


def scrub_moments(optimizer: FusedAdamW) -> None:
    """Zero the optimiser's moments too small to matter, before they decay into denormals."""
    with torch.no_grad():
        for state in optimizer.state.values():
            for key in ("exp_avg", "exp_avg_sq"):
                moment = state.get(key)
                if moment is not None:
                    moment.masked_fill_(moment.abs() < SCRUB_BELOW, 0.0)


# RowAdam pays where the vocabulary has more rows than this many times a batch's bag entries: below it, AdamW's pass
# over every row is cheaper than finding and gathering a batch's rows.
ROWS_ONLY_ABOVE = 2.0


def update_rows_only(model: IntentMLP, device: torch.device, bags: Bags | None, batch_size: int) -> bool:
    """Whether the first layer learns through ``RowAdam``: a bag-of-words network on the CPU, large vocabulary.

    On a CPU AdamW's pass over every row of a large vocabulary is most of a step's time. On a GPU that pass is
    cheap, and finding a batch's rows (``torch.unique``) would stop the host for every step, so the whole weight
    learns there. Deterministic: the choice depends on the data's shape alone, never on timings.
    """
    if model.dense_input or device.type != "cpu" or bags is None or len(bags.lengths) == 0:
        return False
    return model.input.weight.shape[0] > ROWS_ONLY_ABOVE * bags.entries_per_row() * batch_size


class RowAdam:
    """AdamW for a bag-of-words first layer that reads and writes only the rows a batch uses.

    The rows of the batch's features are gathered into a small leaf tensor the forward pass reads, so the backward
    pass makes a gradient of those rows only, and Adam's moments and the weights are updated there (lazy Adam, as
    TensorFlow's LazyAdam and PyTorch's SparseAdam do: a row's moments advance when its feature occurs). Weight
    decay is decoupled, as AdamW's, and applied to every row once per epoch for the epoch's steps. Row 0 is padding
    and never moves; with ``learn_from``, neither do the rows before it.
    """

    def __init__(self, weight: torch.Tensor, lr: float, weight_decay: float, learn_from: int | None,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.weight, self.lr, self.weight_decay, self.learn_from = weight, lr, weight_decay, learn_from
        self.betas, self.eps, self.steps = betas, eps, 0
        self.first = torch.zeros_like(weight, requires_grad=False)
        self.second = torch.zeros_like(weight, requires_grad=False)
        self.padding = torch.zeros(1, dtype=torch.long, device=weight.device)

    def rows(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The rows ``indices`` use (padding first), the indices renumbered into them, and those rows to learn."""
        used, renumbered = torch.unique(torch.cat([self.padding, indices.flatten()]), return_inverse=True)
        rows = self.weight.detach().index_select(0, used).requires_grad_(True)
        return used, renumbered[1:].view_as(indices), rows

    @torch.no_grad()
    def step(self, used: torch.Tensor, rows: torch.Tensor) -> None:
        grad = rows.grad
        if self.learn_from is not None:
            grad[used < self.learn_from] = 0
        self.steps += 1
        beta1, beta2 = self.betas
        first = self.first.index_select(0, used).mul_(beta1).add_(grad, alpha=1 - beta1)
        second = self.second.index_select(0, used).mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        self.first.index_copy_(0, used, first)
        self.second.index_copy_(0, used, second)
        denominator = (second / (1 - beta2 ** self.steps)).sqrt_().add_(self.eps)
        self.weight.index_add_(0, used, first.div_(denominator), alpha=-self.lr / (1 - beta1 ** self.steps))

    @torch.no_grad()
    def decay(self, steps: int) -> None:
        if self.weight_decay:
            self.weight.mul_((1 - self.lr * self.weight_decay) ** steps)


class Steps:
    """How a network learns from training rows: the loop's one interface to the fast paths.

    ``batches(order)`` yields each batch's row numbers and the network's inputs for them (``model(*inputs)``);
    ``learn(loss)`` runs the backward pass and updates the weights; ``end_epoch()`` closes an epoch. Used as a
    context manager: inside it denormal floats are flushed on every CPU thread and the weights that do not learn
    are frozen; both are undone on leaving.

    ``inputs``: the training rows' tensors (dense input) or their ``Bags``. ``learn_rows_from``: only the first
    layer's rows from this index on learn, without weight decay; every other weight stays as it is.
    """

    def __init__(self, model: IntentMLP, inputs: Sequence[torch.Tensor] | Bags, lr: float, weight_decay: float,
                 batch_size: int, learn_rows_from: int | None = None):
        self.model, self.batch_size, self.learn_rows_from = model, batch_size, learn_rows_from
        self.bags = inputs if isinstance(inputs, Bags) else None
        self.tensors = list(inputs) if self.bags is None else []
        self.rows = len(self.bags.lengths) if self.bags is not None else len(self.tensors[0])
        device = next(model.parameters()).device
        learning = [model.input.weight] if learn_rows_from is not None else list(model.parameters())
        self.frozen = [parameter for parameter in model.parameters() if all(parameter is not p for p in learning)]
        # No weight decay where only some rows learn: it would shrink the frozen rows too.
        decay = weight_decay if learn_rows_from is None else 0.0
        self.rows_adam = (RowAdam(model.input.weight, lr, decay, learn_rows_from)
                          if update_rows_only(model, device, self.bags, batch_size) else None)
        if self.rows_adam is not None:
            learning = [parameter for parameter in learning if parameter is not model.input.weight]
        # The fused kernel updates all parameters in one pass: ten times faster per step than the default on a CPU.
        self.optimizer = FusedAdamW(learning, lr=lr, weight_decay=decay) if learning else None
        self.steps = 0
        self._used: torch.Tensor | None = None
        self._rows_used: torch.Tensor | None = None
        self._denormals: Any = None

    def __enter__(self) -> Steps:
        for parameter in self.frozen:
            parameter.requires_grad_(False)
        self._denormals = flush_denormals()
        self._denormals.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._denormals.__exit__(*exc)
        for parameter in self.frozen:
            parameter.requires_grad_(True)

    def batches(self, order: torch.Tensor) -> Iterator[tuple[torch.Tensor, tuple[torch.Tensor | None, ...]]]:
        """``(rows, inputs)`` for each batch of ``order``'s rows, ``batch_size`` rows a batch."""
        if self.bags is None:
            for start in range(0, self.rows, self.batch_size):
                batch = order[start:start + self.batch_size]
                yield batch, tuple(tensor[batch] for tensor in self.tensors)
            return
        drawn = self.bags.batches(order, self.batch_size)
        for start in range(0, self.rows, self.batch_size):
            indices, weights, offsets = next(drawn)
            rows_used = None
            if self.rows_adam is not None:
                self._used, indices, rows_used = self.rows_adam.rows(indices)
                self._rows_used = rows_used
            yield order[start:start + self.batch_size], (indices, weights, rows_used, offsets)

    def learn(self, loss: torch.Tensor) -> None:
        """Backward pass of ``loss`` and one update of every learning weight."""
        if self.optimizer is not None:
            self.optimizer.zero_grad()
        loss.backward()
        if self.rows_adam is not None:
            self.rows_adam.step(self._used, self._rows_used)
        elif self.learn_rows_from is not None:
            # Adam moves a row with zero gradient (and no history) by exactly nothing.
            self.model.input.weight.grad[:self.learn_rows_from] = 0
        if self.optimizer is not None:
            self.optimizer.step()
            self.steps += 1
            if self.steps % SCRUB_EVERY == 0:
                scrub_moments(self.optimizer)

    def end_epoch(self) -> None:
        if self.rows_adam is not None:
            self.rows_adam.decay(math.ceil(self.rows / self.batch_size))


@contextmanager
def flush_denormals() -> Iterator[bool]:
    """Denormal floats read and written as zero for the block, on every thread that runs torch's CPU kernels.

    ``torch.set_flush_denormal`` sets the flags of the calling thread only; torch's kernels run on its OpenMP
    threads too, which keep computing with denormals (half of an elementwise product on 2 cores). Where torch ships
    its own libgomp, the flags are also set inside one OpenMP parallel region, i.e. on each of those threads.
    Yields whether flushing is on (False on a CPU without the flags). Undone on leaving: off, as torch starts.
    """
    on = _set_flush_denormal(True)
    try:
        yield on
    finally:
        if on:
            _set_flush_denormal(False)


def _set_flush_denormal(on: bool) -> bool:
    if not torch.set_flush_denormal(on):
        return False
    openmp = _openmp()
    if openmp is not None and torch.get_num_threads() > 1:
        callback = _PARALLEL_BODY(lambda _: torch.set_flush_denormal(on))
        openmp.GOMP_parallel(callback, None, torch.get_num_threads(), 0)
    return True


_PARALLEL_BODY = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


@functools.cache
def _openmp() -> Any:
    """torch's own libgomp, whose thread pool its CPU kernels run on; None where torch uses another runtime."""
    library = Path(torch.__file__).parent / "lib" / "libgomp.so.1"
    if "OpenMP" not in torch.__config__.parallel_info() or not library.is_file():
        return None
    # ctypes releases the GIL during the call, so each thread's callback can take it to run.
    openmp = ctypes.CDLL(str(library))
    openmp.GOMP_parallel.argtypes = [_PARALLEL_BODY, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
    openmp.GOMP_parallel.restype = None
    return openmp
