"""Seconds an epoch of training as users run it: each recipe through ``intentflow train`` (the CLI), through the
retrain flow (``intentflow retrain``) and in-process (a diagnostic), beside the playbook's own loop and the bound.

    python benchmarks/train_speed.py [--epochs 12] [--recipes playbook default] [--entries cli flow in-process]

Recipes, both on the bundled outcomes prepared as the playbook does (``--augment-factor 500 --seed 2025``, about
9,000 training rows):

- ``playbook``: the playbook's exact training recipe: 4 x 512, batch 64, lr 0.003, dropout 0.45, weight decay 1e-4,
  single words, no label smoothing (``--hidden-layers 4 --word-ngrams 1 --char-ngrams 0 --linear-share 0
  --label-smoothing 0``), bag-of-words, no refit;
- ``default``: config/training.toml's bag-of-words recipe (1 x 512, words and word pairs, character n-grams,
  label smoothing 0.1, the linear model of the examples folded in), no refit.

Every run trains ``--epochs`` epochs without early stopping (``--patience 0``). Seconds an epoch come from the
trainer's own epoch ends, from the first epoch's end to the last's: the CLI's and the flow's log lines, time-stamped
as they arrive, and in-process the ``on_epoch`` callback. Whole-command seconds (Python start, data, Prefect and
saving included) are shown beside them. The reference is the playbook's loop as its user would write it
(``reference_trainer.py``: dense bag-of-words, ``DataLoader``, default AdamW) on the same rows and the recipe's
features and shapes. The bound is the time the epoch's dense matrix products need at the rate this machine reaches
for these shapes (the sparse first layer left out). With ``--device cuda`` the entry points train there.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from common import ROOT, command, git_revision, machine, playbook_data, stamp  # noqa: I001 - sets sys.path
from reference_trainer import train_reference

from intentflow.config import TrainConfig, load_settings
from intentflow.features import build_vocabulary
from intentflow.split import Split
from intentflow.train import train_split

PREPARE = ["--augment-factor", "500", "--seed", "2025"]
SHAPES = {"lr": 0.003, "batch_size": 64, "hidden_size": 512, "dropout": 0.45, "weight_decay": 1e-4, "seed": 2025}
RECIPES: dict[str, dict[str, object]] = {
    "playbook": {**SHAPES, "hidden_layers": 4, "word_ngrams": 1, "char_ngrams": 0, "linear_share": 0.0,
                 "label_smoothing": 0.0},
    "default": {},  # config/training.toml's values
}
EPOCH_LINE = re.compile(r"epoch (\d+)/(\d+) train loss")


def recipe_config(name: str, epochs: int, device: str) -> TrainConfig:
    """The recipe's training settings: config/training.toml's, with the recipe's values over them."""
    base = load_settings(ROOT / "config" / "training.toml").train
    return base.model_copy(update={**RECIPES[name], "featurizer": "bow", "refit": False, "epochs": epochs,
                                   "patience": 0, "device": device})


def flags(config: TrainConfig) -> list[str]:
    """``config``'s settings as the flags ``intentflow train`` and ``retrain`` take."""
    values = {"epochs": config.epochs, "patience": 0, "lr": config.lr, "batch-size": config.batch_size,
              "hidden-size": config.hidden_size, "hidden-layers": config.hidden_layers, "dropout": config.dropout,
              "weight-decay": config.weight_decay, "word-ngrams": config.word_ngrams,
              "char-ngrams": config.char_ngrams, "linear-share": config.linear_share,
              "label-smoothing": config.label_smoothing, "featurizer": "bow", "device": config.device}
    return [*(part for key, value in values.items() for part in (f"--{key}", str(value))), "--no-refit"]


def timed_command(args: list[str]) -> tuple[float, list[float]]:
    """Whole seconds of ``intentflow ARGS`` and the time each of its epoch log lines arrived."""
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "intentflow.cli", *args], cwd=ROOT, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1)
    ends, tail = [], []
    assert process.stdout is not None
    for line in process.stdout:
        if EPOCH_LINE.search(line):
            ends.append(time.perf_counter())
        tail = [*tail[-20:], line]
    if process.wait() != 0:
        raise SystemExit(f"intentflow {' '.join(args)} failed:\n{''.join(tail)}")
    return time.perf_counter() - started, ends


def per_epoch(ends: list[float]) -> float:
    if len(ends) < 2:
        raise SystemExit("fewer than two epochs were timed (use --epochs 3 or more)")
    return (ends[-1] - ends[0]) / (len(ends) - 1)


def run_cli(config: TrainConfig, work: Path) -> tuple[float, float]:
    data = work / "data"
    timed_command(["prepare", "--outcomes", str(ROOT / "config" / "outcomes"), "--out", str(data), *PREPARE])
    seconds, ends = timed_command(["train", "--data", str(data), "--checkpoint", str(work / "model.pt"),
                                   *flags(config)])
    return per_epoch(ends), seconds


def run_flow(config: TrainConfig, work: Path) -> tuple[float, float]:
    seconds, ends = timed_command(["retrain", "--outcomes", str(ROOT / "config" / "outcomes"), "--registry",
                                   str(work / "registry"), "--threshold", "0", "--mode", "full", *PREPARE,
                                   *flags(config)])
    return per_epoch(ends), seconds


def run_in_process(config: TrainConfig, split: Split) -> tuple[float, float]:
    ends: list[float] = []
    started = time.perf_counter()
    train_split(split, config, on_epoch=lambda stats, total: ends.append(time.perf_counter()))
    return per_epoch(ends), time.perf_counter() - started


def reference_seconds(config: TrainConfig, split: Split, epochs: int) -> float:
    """Seconds an epoch of the playbook's plain loop, on dense vectors of the recipe's features."""
    texts = [row.text for row in split.train]
    vocab = build_vocabulary(texts, word_ngrams=config.word_ngrams, char_ngrams=config.char_ngrams,
                             pair_texts=[row.text for row in split.train if not row.synthetic])
    labels = sorted({row.label for row in split.train})

    def dense(rows: list) -> torch.Tensor:
        indices, weights = vocab.encode([row.text for row in rows])
        matrix = torch.zeros(len(rows), len(vocab))
        matrix.scatter_add_(1, indices, weights)
        matrix[:, 0] = 0  # padding
        return matrix

    targets = lambda rows: torch.tensor([labels.index(row.label) for row in rows])  # noqa: E731
    started = time.perf_counter()
    train_reference(dense(list(split.train)), targets(split.train), dense(list(split.val)), targets(split.val),
                    len(labels), epochs=epochs, lr=config.lr, batch_size=config.batch_size,
                    hidden_size=config.hidden_size, hidden_layers=config.hidden_layers, dropout=config.dropout,
                    weight_decay=config.weight_decay, seed=config.seed, label_smoothing=config.label_smoothing)
    return (time.perf_counter() - started) / epochs


def matmul_rate(rows: int, inner: int, cols: int, device: torch.device, seconds: float = 1.0) -> float:
    """FLOP/s of ``[rows, inner] @ [inner, cols]`` on ``device``, best of repeated timed loops."""
    left, right = torch.randn(rows, inner, device=device), torch.randn(inner, cols, device=device)
    return 2 * rows * inner * cols / best_seconds(lambda: left @ right, device, seconds)


def best_seconds(operation: Callable[[], object], device: torch.device, seconds: float = 1.0) -> float:
    """Seconds of one call: the best loop of 50 calls within ``seconds``, after 20 calls of warm-up."""
    for _ in range(20):
        operation()
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        _sync(device)
        start = time.perf_counter()
        for _ in range(50):
            operation()
        _sync(device)
        best = min(best, (time.perf_counter() - start) / 50)
    return best


def epoch_bound(config: TrainConfig, rows: int, val_rows: int, labels: int, device: torch.device) -> float:
    """Seconds the dense matrix products of one epoch need at the measured rate: per batch the forward and both
    backward products of each dense layer, per epoch one validation forward."""
    hidden, batch, layers = config.hidden_size, config.batch_size, config.hidden_layers
    square = matmul_rate(batch, hidden, hidden, device)
    head = matmul_rate(batch, hidden, labels, device)
    seconds = rows / batch * 3 * ((layers - 1) * 2 * batch * hidden * hidden / square
                                  + 2 * batch * hidden * labels / head)
    return seconds + (layers - 1) * 2 * val_rows * hidden * hidden / matmul_rate(val_rows, hidden, hidden, device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    parser.add_argument("--entries", nargs="+", choices=["cli", "flow", "in-process"],
                        default=["cli", "flow", "in-process"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--skip-reference", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    train, val = playbook_data()
    split = Split(tuple(train), tuple(val))
    labels = len({row.label for row in train})
    lines = ["| recipe | entry point | s / epoch | whole command (s) | reference s / epoch | speed-up | "
             "bound s / epoch |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for recipe in args.recipes:
        config = recipe_config(recipe, args.epochs, args.device)
        reference = (None if args.skip_reference or args.device != "cpu"
                     else reference_seconds(config, split, max(3, args.epochs // 3)))
        bound = epoch_bound(config, len(train), len(val), labels, device)
        for entry in args.entries:
            with tempfile.TemporaryDirectory(prefix="intentflow-train-speed-") as temp:
                if entry == "cli":
                    seconds, whole = run_cli(config, Path(temp))
                elif entry == "flow":
                    seconds, whole = run_flow(config, Path(temp))
                else:
                    seconds, whole = run_in_process(config, split)
            speedup = f"{reference / seconds:.1f}x" if reference else "-"
            line = (f"| {recipe} | {entry} | {seconds:.3f} | {whole:.1f} | "
                    f"{f'{reference:.3f}' if reference else '-'} | {speedup} | {bound:.3f} |")
            print(line, flush=True)
            lines.append(line)
    print(f"\n`{command()}` at {git_revision()}; {machine()}; {stamp()}; {args.epochs} epochs a run, "
          f"{len(train)} training rows\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
