"""Seconds per epoch of the playbook recipe: the plain DataLoader reference vs intentflow's trainer, and the bound.

    python benchmarks/train_speed.py [--epochs 10] [--device cpu]

Both train the same data (the bundled outcomes, --augment-factor 500, ~9,000 rows) with the same shapes
(4 x 512, batch 64) for a fixed number of epochs without early stopping; intentflow's epochs are timed from the
end of the first to the end of the last, the reference's as a whole, neither with its featurising. The bound is
the time the epoch's matrix products need at the rate this machine's matrix product reaches for these shapes,
measured here; a fused AdamW pass over the weights is timed beside it. With --device cuda it also times 1000
epochs of intentflow's trainer.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch
from common import command, machine, playbook_data, stamp  # noqa: I001 - sets sys.path for intentflow
from reference_trainer import dense_bag_of_words, train_reference

from intentflow.config import TrainConfig
from intentflow.features import build_vocabulary, tokenize
from intentflow.train import train_model

# The playbook's network, which both trainers build.
RECIPE = {"lr": 0.003, "batch_size": 64, "hidden_size": 512, "hidden_layers": 4, "dropout": 0.45,
          "weight_decay": 1e-4, "seed": 2025}
# ...on the playbook's features (single words only, as the reference below counts them), and the MLP alone (no
# linear model of the examples folded in, which the reference has no counterpart of).
FEATURES = {"featurizer": "bow", "word_ngrams": 1, "char_ngrams": 0, "linear_share": 0.0}


def matmul_rate(rows: int, inner: int, cols: int, device: torch.device, seconds: float = 1.0) -> float:
    """FLOP/s of ``[rows, inner] @ [inner, cols]`` on ``device``, best of repeated timed loops."""
    left = torch.randn(rows, inner, device=device)
    right = torch.randn(inner, cols, device=device)
    return 2 * rows * inner * cols / best_seconds(lambda: left @ right, device, seconds)


def best_seconds(operation: Callable[[], object], device: torch.device, seconds: float = 1.0) -> float:
    """Seconds of one call of ``operation`` on ``device``: the best loop of 50 calls within ``seconds``, after 20
    calls of warm-up."""
    for _ in range(20):
        operation()
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        _sync(device)
        start = time.perf_counter()
        for _ in range(50):
            operation()
        _sync(device)
        best = min(best, (time.perf_counter() - start) / 50)
    return best


def epoch_bound(rows: int, val_rows: int, labels: int, device: torch.device) -> tuple[float, float]:
    """Seconds the dense matrix products of one epoch need at the measured rate, and that rate (GFLOP/s).

    Per training batch: forward, and the two backward products (input and weight gradients) of each dense
    layer; per epoch one validation forward. The sparse first layer is left out (it is not a matrix product).
    """
    hidden, batch, layers = RECIPE["hidden_size"], RECIPE["batch_size"], RECIPE["hidden_layers"]
    square = matmul_rate(batch, hidden, hidden, device)
    head = matmul_rate(batch, hidden, labels, device)
    steps = rows / batch
    seconds = steps * 3 * ((layers - 1) * 2 * batch * hidden * hidden / square + 2 * batch * hidden * labels / head)
    val_rate = matmul_rate(val_rows, hidden, hidden, device)
    seconds += (layers - 1) * 2 * val_rows * hidden * hidden / val_rate
    return seconds, square / 1e9


def optimizer_seconds(parameters: int, device: torch.device, seconds: float = 1.0) -> float:
    """Seconds of one fused AdamW step over ``parameters`` float32 weights on ``device``, best of timed loops.

    Not part of the bound: it is memory traffic (weights, gradients and two moments read, three written), which
    every step pays on top of the matrix products; printed so the bound's distance can be read against it.
    """
    weight = torch.zeros(parameters, device=device, requires_grad=True)
    weight.grad = torch.randn(parameters, device=device)
    optimizer = torch.optim.AdamW([weight], lr=RECIPE["lr"], weight_decay=RECIPE["weight_decay"], fused=True)
    return best_seconds(optimizer.step, device, seconds)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)

    train, val = playbook_data()
    labels = sorted({row.label for row in train})
    results: dict[str, object] = {"machine": machine(), "date": stamp(), "command": command(),
                                  "rows": len(train), "val_rows": len(val), "epochs": args.epochs}

    config = TrainConfig(epochs=args.epochs, patience=0, device=args.device, **RECIPE, **FEATURES)
    train_args = ([r.text for r in train], [r.label for r in train], [r.text for r in val], [r.label for r in val])
    train_model(*train_args, TrainConfig(**{**config.model_dump(), "epochs": 2}))  # warm-up
    # Seconds per epoch from the ends of the epochs (the first epoch's end to the last's), as the reference's
    # epochs are timed without its featurising; what comes before (vocabulary, bags, weights) is shown apart.
    ends: list[float] = []
    start = time.perf_counter()
    trained = train_model(*train_args, config, on_epoch=lambda stats, total: ends.append(time.perf_counter()))
    finished = time.perf_counter()
    ours = (ends[-1] - ends[0]) / (len(ends) - 1) if len(ends) > 1 else finished - start
    results["intentflow_s_per_epoch"] = ours
    results["intentflow_setup_s"] = ends[0] - start - ours

    if not args.skip_reference and args.device == "cpu":
        vocab = {feature: index for index, feature in enumerate(build_vocabulary(train_args[0], 1).features)}
        label_index = {label: index for index, label in enumerate(labels)}
        train_x = dense_bag_of_words(train_args[0], vocab, tokenize)
        val_x = dense_bag_of_words(train_args[2], vocab, tokenize)
        train_y = torch.tensor([label_index[label] for label in train_args[1]])
        val_y = torch.tensor([label_index[label] for label in train_args[3]])
        start = time.perf_counter()
        train_reference(train_x, train_y, val_x, val_y, len(labels), epochs=args.epochs, **RECIPE)
        reference = (time.perf_counter() - start) / args.epochs
        results["reference_s_per_epoch"] = reference
        results["speedup"] = reference / ours

    bound, rate = epoch_bound(len(train), len(val), len(labels), device)
    results["bound_s_per_epoch"] = bound
    results["matmul_gflops_64x512x512"] = rate
    results["ours_over_bound"] = ours / bound
    weights = sum(parameter.numel() for parameter in trained.model.parameters())
    steps = -(-len(train) // RECIPE["batch_size"])
    results["adamw_s_per_epoch"] = steps * optimizer_seconds(weights, device)
    results["parameters"] = weights
    if args.device == "cuda":
        start = time.perf_counter()
        train_model(*train_args, TrainConfig(**{**config.model_dump(), "epochs": 1000}))
        results["intentflow_1000_epochs_s"] = time.perf_counter() - start

    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"machine: {results['machine']}\ndate: {results['date']}\ncommand: {results['command']}")
    print(f"data: {len(train)} training rows, {len(val)} validation rows; {args.epochs} epochs, no early stopping")
    if "reference_s_per_epoch" in results:
        print(f"reference (DataLoader, dense): {results['reference_s_per_epoch']:.3f} s/epoch")
    print(f"intentflow:                    {ours:.3f} s/epoch (and {results['intentflow_setup_s']:.2f} s before the "
          "first epoch: vocabulary, bags, weights)")
    if "speedup" in results:
        print(f"speed-up:                      {results['speedup']:.1f}x")
    print(f"bound (matmul at {rate:.0f} GFLOP/s): {bound:.3f} s/epoch; intentflow is {ours / bound:.2f}x the bound")
    adamw = results["adamw_s_per_epoch"]
    print(f"fused AdamW alone ({weights:,} weights, a pass a step): {adamw:.3f} s/epoch; bound + AdamW "
          f"{bound + adamw:.3f} s/epoch = {(bound + adamw) / bound:.2f}x the bound")
    if "intentflow_1000_epochs_s" in results:
        print(f"1000 epochs on {args.device}: {results['intentflow_1000_epochs_s']:.1f} s")


if __name__ == "__main__":
    main()
