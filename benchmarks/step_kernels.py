"""Two parts of a training step, each timed against the way it was done before (microseconds a call).

    python benchmarks/step_kernels.py

- Dropout masks: ``ByteDropout.masks`` for the playbook recipe's four 64 x 512 masks, against the comparison's
  boolean result converted to floats (before 7b451e4). Both give the same masks (checked here).
- The first layer's forward and backward (``_BagSums``) for 64 bags of 512 units: the backward as one matrix
  product (``DENSE_BACKWARD_ROWS``) against the gather and add of each entry's gradient, at shapes on both sides
  of the switch. Both give the same gradient (checked here).
"""

from __future__ import annotations

import math

import torch
from common import machine, stamp  # noqa: I001 - sets sys.path for intentflow
from train_speed import best_seconds

from intentflow import model as model_module
from intentflow.model import ByteDropout, _BagSums

BAGS, UNITS = 64, 512
# (rows of the first layer, entries of a batch): the playbook recipe, and larger vocabularies.
BAG_SHAPES = [(487, 832), (6000, 7680), (20000, 7680)]


def converted_masks(dropout: ByteDropout, count: int, shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    """The masks as ``ByteDropout.masks`` made them before: a boolean comparison, converted to floats."""
    size = count * math.prod(shape)
    random_bytes = (torch.empty((size + 7) // 8, dtype=torch.int64, device=like.device)
                    .random_(-2**63, None).view(torch.uint8)[:size])
    return (random_bytes >= dropout.cutoff).to(like.dtype).mul_(dropout.scale).view(count, *shape)


def time_masks() -> None:
    dropout = ByteDropout(0.45).train()
    like = torch.zeros(BAGS, UNITS)
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    written = dropout.masks(4, like.shape, like)
    torch.manual_seed(0)
    assert torch.equal(written, converted_masks(dropout, 4, like.shape, like))
    now = best_seconds(lambda: dropout.masks(4, like.shape, like), cpu)
    before = best_seconds(lambda: converted_masks(dropout, 4, like.shape, like), cpu)
    print(f"dropout masks, 4 x {BAGS} x {UNITS}: {now * 1e6:.0f} us written into floats, "
          f"{before * 1e6:.0f} us converted")


def time_bag_sums(rows: int, entries: int) -> None:
    cpu = torch.device("cpu")
    generator = torch.Generator().manual_seed(rows)
    lengths = torch.full((BAGS,), entries // BAGS)
    indices = torch.randint(1, rows, (entries,), generator=generator)
    weights = torch.rand(entries, generator=generator)
    offsets = torch.cumsum(lengths, 0) - lengths
    table = torch.randn(rows, UNITS, generator=generator, requires_grad=True)
    grad = torch.randn(BAGS, UNITS, generator=generator)

    def step() -> None:
        table.grad = None
        _BagSums.apply(indices, table, weights, offsets).backward(grad)

    switch = model_module.DENSE_BACKWARD_ROWS
    seconds, gradients = {}, {}
    for name, setting in (("matrix product", math.inf), ("gather and add", 0)):
        model_module.DENSE_BACKWARD_ROWS = setting
        seconds[name] = best_seconds(step, cpu)
        step()
        gradients[name] = table.grad.clone()
    model_module.DENSE_BACKWARD_ROWS = switch
    assert torch.allclose(gradients["matrix product"], gradients["gather and add"], atol=1e-4)
    chosen = "matrix product" if model_module.dense_backward(rows, entries) else "gather and add"
    print(f"first layer forward + backward, {rows} rows, {entries} entries: "
          + ", ".join(f"{name} {value * 1e6:.0f} us" for name, value in seconds.items()) + f" (chosen: {chosen})")


def main() -> None:
    print(f"machine: {machine()}\ndate: {stamp()}")
    time_masks()
    for rows, entries in BAG_SHAPES:
        time_bag_sums(rows, entries)


if __name__ == "__main__":
    main()
