"""Milliseconds a batch of the bag-of-words first layer, forward and backward: padded bags or bags end to end.

    python benchmarks/first_layer.py

The bundled outcomes prepared with the playbook's settings and featurised with config/training.toml's defaults
(words, word pairs from the originals, character n-grams); 64-row batches of the default width (512). "padded"
is how batches were fed before b0b7879 (``[rows, width]`` with ``padding_idx=0``); "end to end" is how
``intentflow.train`` feeds them now (``_Bags``: 1-d indices with offsets, no padding). Median of repeated timings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torch.utils.benchmark as timing
from common import ROOT, command, machine, playbook_data, stamp  # noqa: I001 - sets sys.path for intentflow

from intentflow.config import load_settings
from intentflow.features import build_vocabulary
from intentflow.train import _Bags

BATCHES = 20


def main() -> None:
    train, _ = playbook_data()
    config = load_settings(ROOT / "config" / "training.toml").train
    texts = [row.text for row in train]
    vocab = build_vocabulary(texts, config.word_ngrams, char_ngrams=config.char_ngrams,
                             pair_texts=[row.text for row in train if not row.synthetic])
    padded, padded_weights = vocab.encode(texts)
    bags = _Bags(*vocab.encode_flat(texts))
    weight = (torch.randn(len(vocab), config.hidden_size) * 0.01).requires_grad_(True)
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(0))
    rows = [order[start:start + config.batch_size] for start in range(0, BATCHES * config.batch_size,
                                                                       config.batch_size)]
    flat = list(bags.batches(order[:BATCHES * config.batch_size], config.batch_size))
    grad = torch.randn(config.batch_size, config.hidden_size)

    def padded_step(index: int, backward: bool) -> None:
        out = F.embedding_bag(padded[rows[index]], weight, per_sample_weights=padded_weights[rows[index]],
                              mode="sum", padding_idx=0)
        if backward:
            out.backward(grad)
            weight.grad = None

    def flat_step(index: int, backward: bool) -> None:
        indices, weights, offsets = flat[index]
        out = F.embedding_bag(indices, weight, offsets=offsets, per_sample_weights=weights, mode="sum")
        if backward:
            out.backward(grad)
            weight.grad = None

    def run(step, backward: bool) -> float:
        def all_batches() -> None:
            for index in range(BATCHES):
                step(index, backward)
        measured = timing.Timer("all_batches()", globals={"all_batches": all_batches}).blocked_autorange(
            min_run_time=2.0)
        return measured.median / BATCHES * 1e3

    entries = sum(len(batch[0]) for batch in flat) / BATCHES
    print(f"machine: {machine()}\ndate: {stamp()}\ncommand: {command()}")
    print(f"data: {len(texts)} rows, {len(vocab) - 1} features, {entries:.0f} bag entries a batch, padded width "
          f"{padded.shape[1]} ({padded.shape[1] * config.batch_size} slots a batch)\n")
    print("| layout | forward ms | forward + backward ms |")
    print("| --- | ---: | ---: |")
    for name, step in (("padded, padding_idx=0", padded_step), ("end to end (_Bags)", flat_step)):
        print(f"| {name} | {run(step, False):.2f} | {run(step, True):.2f} |", flush=True)


if __name__ == "__main__":
    main()
