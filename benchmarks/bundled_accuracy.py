"""Honest validation accuracy on the bundled outcomes for a few network choices, over seeds.

    python benchmarks/bundled_accuracy.py

Validation holds out whole originals (with all their paraphrases), so it scores wordings the model never saw.
Each choice trains on 2 augmentation/split seeds x 2 training seeds with config/training.toml otherwise; prints
mean, min and max validation accuracy per choice. This is what chose [train] hidden_layers and label_smoothing.
"""

from __future__ import annotations

import statistics
import time

from common import ROOT, command, machine, playbook_data, stamp  # noqa: I001 - sets sys.path for intentflow

from intentflow.config import load_settings
from intentflow.train import train_model

CHOICES = {
    "playbook: 4 x 512, no smoothing": {"hidden_layers": 4, "label_smoothing": 0.0},
    "1 x 512, no smoothing": {"hidden_layers": 1, "label_smoothing": 0.0},
    "4 x 512, smoothing 0.1": {"hidden_layers": 4, "label_smoothing": 0.1},
    "1 x 512, smoothing 0.1 (defaults)": {"hidden_layers": 1, "label_smoothing": 0.1},
}
DATA_SEEDS = (2025, 1)
TRAIN_SEEDS = (2025, 1)


def main() -> None:
    settings = load_settings(ROOT / "config" / "training.toml")
    data = {seed: playbook_data(seed=seed) for seed in DATA_SEEDS}
    print(f"{stamp()}; `{command()}`; {machine()}")
    print("| choice | mean | min | max | seconds per run |\n| --- | ---: | ---: | ---: | ---: |")
    for name, changes in CHOICES.items():
        scores, seconds = [], []
        for data_seed in DATA_SEEDS:
            train, val = data[data_seed]
            for train_seed in TRAIN_SEEDS:
                config = settings.train.model_copy(update={**changes, "seed": train_seed, "device": "cpu"})
                started = time.perf_counter()
                trained = train_model([r.text for r in train], [r.label for r in train], [r.text for r in val],
                                      [r.label for r in val], config)
                seconds.append(time.perf_counter() - started)
                scores.append(trained.metrics["val_accuracy"])
        print(f"| {name} | {statistics.mean(scores):.3f} | {min(scores):.3f} | {max(scores):.3f} | "
              f"{statistics.mean(seconds):.0f} |", flush=True)


if __name__ == "__main__":
    main()
