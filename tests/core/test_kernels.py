"""Training's fast paths that the other core tests do not reach. (BagSums and Layers against autograd:
test_model.py; FusedAdamW against torch's AdamW, Bags, the moment scrub: test_train.py; RowAdam: test_row_adam.py)."""

import pytest
import torch

from intentflow.kernels import flush_denormals


def test_denormals_are_flushed_on_every_thread_inside_the_block_and_kept_outside():
    # Large enough that torch splits the product over its threads; torch.set_flush_denormal alone flushes only the
    # calling thread's share (half of it on 2 cores).
    denormal = torch.full((4_000_000,), 1e-40)
    assert bool(((denormal * 1.0) != 0).all())
    with flush_denormals() as on:
        if not on:
            pytest.skip("this CPU has no flush-to-zero flags")
        flushed = denormal * 1.0
    assert bool((flushed == 0).all())
    assert bool(((denormal * 1.0) != 0).all())  # undone on leaving
