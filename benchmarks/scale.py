"""Prepare and train at scale: 150 outcomes x --augment-factor up to 1000 (150,000 rows), time and peak memory.

    python benchmarks/scale.py [--factors 250 500 1000] [--epochs 2]

Each size runs in a fresh process so its peak resident memory (ru_maxrss) is its own. The outcomes are
generated (150 intents, 8 examples and 2 synonyms each, from per-intent and shared word pools).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, command, machine, stamp  # noqa: I001 - sets sys.path for intentflow

SHARED_WORDS = ("please can you i want to the a for my me now today tomorrow next week what is how do show "
                "help get find set make check tell about with on at in")
SHARED = SHARED_WORDS.split()


def write_outcomes(folder: Path, count: int = 150, seed: int = 0) -> None:
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "ve", "zu", "da", "fe", "gi", "ho", "ju"]
    folder.mkdir(parents=True)
    for number in range(count):
        own = sorted({"".join(rng.choices(syllables, k=3)) + str(number) for _ in range(40)})[:12]
        examples = sorted({" ".join(rng.sample(SHARED, 3) + rng.sample(own, 3)) for _ in range(8)})
        synonyms = {own[0]: [own[10]], own[1]: [own[11]]}
        examples[0] = f"{own[0]} {own[1]} {examples[0]}"
        definition = {"name": f"intent_{number:03d}", "examples": examples, "synonyms": synonyms}
        (folder / f"intent_{number:03d}.json").write_text(json.dumps(definition), encoding="utf-8")


def measure(outcomes: Path, factor: int, epochs: int) -> dict:
    """Run in a child process: prepare, then train ``epochs`` epochs; returns times and peak RSS."""
    code = f"""
import json, resource, time
from intentflow.config import PrepareConfig, TrainConfig
from intentflow.dataset import prepare_data
from intentflow.outcomes import load_outcomes
from intentflow.split import Split
from intentflow.train import train_split
start = time.perf_counter()
data = prepare_data(load_outcomes({str(outcomes)!r}), PrepareConfig(augment_factor={factor}, seed=2025))
prepared = time.perf_counter() - start
prepare_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
# As the flow trains: word pairs from the originals only, the out-of-scope setting calibrated on originals.
train_split(Split(data.train, data.val), TrainConfig(featurizer="bow", epochs={epochs}, patience=0, device="cpu"))
trained = time.perf_counter() - start
print(json.dumps({{"rows": len(data.train) + len(data.val), "prepare_s": prepared, "train_s": trained,
                  "prepare_rss_mb": prepare_rss / 1024,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--factors", type=int, nargs="+", default=[250, 500, 1000])
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    print(f"machine: {machine()}\ndate: {stamp()}\ncommand: {command()}")
    print(f"| augment factor | rows | prepare s | train s ({args.epochs} epochs) | s per 10k rows (train) "
          "| peak RSS MB |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as scratch:
        outcomes = Path(scratch) / "outcomes"
        write_outcomes(outcomes)
        for factor in args.factors:
            result = measure(outcomes, factor, args.epochs)
            print(f"| {factor} | {result['rows']:,} | {result['prepare_s']:.1f} | {result['train_s']:.1f} | "
                  f"{result['train_s'] / result['rows'] * 10_000:.2f} | {result['peak_rss_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
