"""Refit after the gate against publishing the held-out model, on the bundled outcomes, over split seeds.

    python benchmarks/refit.py [--seeds 1 2 3 4 5 6 7 8] [--train char_ngrams=5 ...]

For each seed the bundled outcomes are prepared as the flow prepares them (config/training.toml), and the
validation side of that split (whole originals with their paraphrases) becomes the test set, used for nothing
else. The training side is split again the same way into the run's own training and validation rows. The
held-out model trains on the inner training rows with early stopping on the inner validation rows (what the gate
judges); the refit trains from scratch on both for the held-out run's best epoch count (what `refit = true`
publishes). Both are scored on the test originals (the sentences people wrote) and on all test rows.
"""

from __future__ import annotations

import argparse
import statistics
import time

from common import ROOT, command, machine, stamp  # noqa: I001 - sets sys.path for intentflow

from intentflow.config import load_settings
from intentflow.dataset import prepare_data
from intentflow.inference import Classifier
from intentflow.outcomes import load_outcomes
from intentflow.split import split_rows
from intentflow.train import TrainedModel, refit_model, train_split


def accuracy(trained: TrainedModel, rows: list) -> float:
    predictions = Classifier.from_trained(trained).predict_batch([row.text for row in rows])
    return sum(p.label == row.label for p, row in zip(predictions, rows, strict=True)) / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(1, 9)))
    parser.add_argument("--train", nargs="+", default=[], metavar="KEY=VALUE",
                        help="[train] settings to change for the run, e.g. char_ngrams=5")
    args = parser.parse_args()
    settings = load_settings(ROOT / "config" / "training.toml")
    outcomes = load_outcomes(ROOT / "config" / "outcomes")
    changes = dict(change.split("=", 1) for change in args.train)
    config = type(settings.train).model_validate({**settings.train.model_dump(), **changes, "device": "cpu"})
    print(f"{stamp()}; `{command()}`; {machine()}")
    print("| seed | held-out: test originals | refit: test originals | held-out: all test rows | refit: all test rows "
          "| epochs | held-out s | refit s |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    totals: dict[str, list[float]] = {"held": [], "refit": [], "held_all": [], "refit_all": []}
    for seed in args.seeds:
        data = prepare_data(outcomes, settings.prepare.model_copy(update={"seed": seed}))
        test = list(data.val)
        originals = [row for row in test if not row.synthetic]
        inner = split_rows(data.train, settings.prepare.train_fraction, settings.prepare.min_val_per_label, seed + 1000,
                           frozenset(outcomes.teach_hints))
        started = time.perf_counter()
        held = train_split(inner, config.model_copy(update={"seed": seed}))
        held_seconds = time.perf_counter() - started
        started = time.perf_counter()
        refitted = refit_model(held, inner)
        refit_seconds = time.perf_counter() - started
        scores = {"held": accuracy(held, originals), "refit": accuracy(refitted, originals),
                  "held_all": accuracy(held, test), "refit_all": accuracy(refitted, test)}
        for key, value in scores.items():
            totals[key].append(value)
        print(f"| {seed} | {scores['held']:.2%} | {scores['refit']:.2%} | {scores['held_all']:.2%} | "
              f"{scores['refit_all']:.2%} | {held.best_epoch} | {held_seconds:.1f} | {refit_seconds:.1f} |", flush=True)
    mean = {key: statistics.mean(values) for key, values in totals.items()}
    differences = [refit - held for refit, held in zip(totals["refit"], totals["held"], strict=True)]
    spread = statistics.stdev(differences) / len(differences) ** 0.5 if len(differences) > 1 else float("nan")
    print(f"| mean | {mean['held']:.2%} | {mean['refit']:.2%} | {mean['held_all']:.2%} | {mean['refit_all']:.2%} "
          "| | | |")
    print(f"refit minus held-out on test originals: {100 * statistics.mean(differences):+.2f} points "
          f"(standard error {100 * spread:.2f}) over {len(differences)} seeds")


if __name__ == "__main__":
    main()
