"""Honest validation accuracy on the bundled outcomes for a few network choices, over seeds.

    python benchmarks/bundled_accuracy.py
    python benchmarks/bundled_accuracy.py --only defaults "MLP alone"   # the choices whose names hold these

Validation holds out whole originals (with all their paraphrases), so it scores wordings the model never saw.
Each choice trains on 2 augmentation/split seeds x 2 training seeds with config/training.toml otherwise; prints
mean, min and max validation accuracy per choice. This is what chose [train] hidden_layers and label_smoothing,
and checked linear_share on data other than CLINC150's.
"""

from __future__ import annotations

import argparse
import statistics
import time

from common import ROOT, command, machine, playbook_data, stamp  # noqa: I001 - sets sys.path for intentflow

from intentflow.config import load_settings
from intentflow.split import Split
from intentflow.train import train_split

CHOICES = {
    "playbook: 4 x 512, no smoothing": {"hidden_layers": 4, "label_smoothing": 0.0},
    "1 x 512, no smoothing": {"hidden_layers": 1, "label_smoothing": 0.0},
    "4 x 512, smoothing 0.1": {"hidden_layers": 4, "label_smoothing": 0.1},
    "1 x 512, smoothing 0.1, MLP alone (linear_share 0)": {"hidden_layers": 1, "label_smoothing": 0.1,
                                                           "linear_share": 0.0},
    "1 x 512, smoothing 0.1 (defaults)": {"hidden_layers": 1, "label_smoothing": 0.1},
}
DATA_SEEDS = (2025, 1)
TRAIN_SEEDS = (2025, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", default=[], help="run only the choices whose names hold one of these")
    only = parser.parse_args().only
    settings = load_settings(ROOT / "config" / "training.toml").with_overrides(train={"featurizer": "bow"})
    data = {seed: playbook_data(seed=seed) for seed in DATA_SEEDS}
    print(f"{stamp()}; `{command()}`; {machine()}")
    print("| choice | mean | min | max | seconds per run |\n| --- | ---: | ---: | ---: | ---: |")
    for name, changes in CHOICES.items():
        if only and not any(part in name for part in only):
            continue
        scores, seconds = [], []
        for data_seed in DATA_SEEDS:
            train, val = data[data_seed]
            for train_seed in TRAIN_SEEDS:
                config = settings.train.model_copy(update={**changes, "seed": train_seed, "device": "cpu"})
                started = time.perf_counter()
                # As the flow trains: word pairs and the linear model from the originals alone.
                trained = train_split(Split(train, val), config)
                seconds.append(time.perf_counter() - started)
                scores.append(trained.metrics["val_accuracy"])
        print(f"| {name} | {statistics.mean(scores):.3f} | {min(scores):.3f} | {max(scores):.3f} | "
              f"{statistics.mean(seconds):.0f} |", flush=True)


if __name__ == "__main__":
    main()
