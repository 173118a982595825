"""The network's parts: dropout keeps every unit at the same rate, and is off in evaluation."""

from __future__ import annotations

import pytest
import torch

from intentflow.model import ByteDropout


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
