"""Few-shot accuracy on CLINC150 against published results, through the public commands only.

    python benchmarks/fewshot.py                              # bow and embeddings, seeds 0 1 2, k = 10
    python benchmarks/fewshot.py --featurizers embeddings --seeds 0
    python benchmarks/fewshot.py --score-on val --retrain-arg=--finetune-epochs --retrain-arg=4  # tune on val

Follows ../shared/benchmarks/README.md. Each run goes through the public commands in child processes, exactly as a
user would type them::

    intentflow outcomes import train.jsonl --out OUTCOMES --per-label K --seed S
    intentflow retrain --outcomes OUTCOMES --registry REGISTRY --featurizer F --threshold 0
    intentflow evaluate --checkpoint REGISTRY --data test+oos.jsonl --json

The gate threshold is 0 so every run's model is published and scored: the benchmark measures the model, not the
deployment policy. Everything else is the project's defaults (``config/training.toml``). Prints each run and the
mean and spread per featurizer, headed by the command, commit and machine (RESULTS.md keeps one current table:
paste it there). Also used by ``benchmarks/accuracy.py`` and the developer flow ``benchmarks/fewshot_flow.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from common import ROOT, command, git_revision, machine, stamp  # noqa: I001 - sets sys.path for intentflow

from intentflow.errors import IntentflowError

# CLINC150 in the shared benchmark folder beside the repository; any folder of the same files works.
DEFAULT_DATA = ROOT.parent / "shared" / "benchmarks" / "clinc150"
FEATURIZERS = ("bow", "embeddings")
SEEDS = (0, 1, 2)
SHOTS = 10
# A child command may take this long before the run counts as failed (the protocol allows 10 minutes a run).
COMMAND_TIMEOUT_SECONDS = 1800


@dataclass(frozen=True)
class FewshotRun:
    featurizer: str
    seed: int
    shots: int
    accuracy: float  # in-scope test accuracy, an unknown answer counted wrong
    accuracy_without_oos: float  # the same had the model never answered unknown
    oos_recall: float | None  # share of oos_test.jsonl answered unknown
    oos_threshold: float | None
    seconds: float  # import + retrain + evaluate, wall clock
    train_seconds: float  # the retrain command alone (Prefect's start-up included)
    samples: int = 0  # in-scope rows scored
    oos_samples: int = 0  # out-of-scope rows scored
    oos_similarity: float | None = None  # the similarity below which an embeddings model refuses

    @property
    def refuses(self) -> bool:
        """Whether the model answers unknown at all (a confidence threshold or the similarity rule)."""
        return self.oos_threshold is not None or self.oos_similarity is not None

    @property
    def overall(self) -> float:
        """In-scope rows answered right and out-of-scope rows refused, over all rows (HINT3's measure)."""
        rows = self.samples + self.oos_samples
        return (self.accuracy * self.samples + (self.oos_recall or 0.0) * self.oos_samples) / rows if rows else 0.0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def run_fewshot(data: str | Path, featurizer: str, seed: int, shots: int | None = SHOTS,
                extra_args: Sequence[str] = (), scored_on: str = "test") -> FewshotRun:
    """One run of the protocol in a temporary folder; ``extra_args`` go to ``intentflow retrain``; ``shots``
    None takes every training row.

    ``scored_on``: ``test`` (test.jsonl and oos_test.jsonl), or ``val`` (val.jsonl and oos_val.jsonl where it
    exists), the set to tune choices on.
    """
    data = Path(data)
    for name in ("train.jsonl", f"{scored_on}.jsonl"):
        if not (data / name).is_file():
            raise IntentflowError(f"{data / name} does not exist (fix: pass the CLINC150 folder, which holds "
                                  "train.jsonl, test.jsonl and oos_test.jsonl)")
    with tempfile.TemporaryDirectory(prefix="intentflow-fewshot-") as temp:
        work = Path(temp)
        started = time.perf_counter()
        train_seconds = train_fewshot(data, featurizer, seed, shots, work, extra_args)
        scored = work / f"{scored_on}-and-oos.jsonl"
        lines = (data / f"{scored_on}.jsonl").read_text(encoding="utf-8").splitlines()
        if (data / f"oos_{scored_on}.jsonl").is_file():
            lines += (data / f"oos_{scored_on}.jsonl").read_text(encoding="utf-8").splitlines()
        scored.write_text("\n".join(line for line in lines if line.strip()) + "\n", encoding="utf-8")
        report = json.loads(_intentflow("evaluate", "--checkpoint", str(work / "registry"), "--data", str(scored),
                                        "--json"))
        seconds = time.perf_counter() - started
    return FewshotRun(featurizer, seed, shots or 0, report["accuracy"], report["accuracy_without_oos"],
                      report["oos_recall"], report["oos_threshold"], round(seconds, 1), round(train_seconds, 1),
                      report["samples"], report["oos_samples"], report.get("oos_similarity"))


def train_fewshot(data: str | Path, featurizer: str, seed: int, shots: int | None, work: str | Path,
                  extra_args: Sequence[str] = ()) -> float:
    """The protocol's import and retrain: ``work/outcomes`` from ``shots`` rows per intent of train.jsonl (None: all),
    and the model in the registry ``work/registry``; the retrain command's seconds."""
    work = Path(work)
    per_label = ["--per-label", str(shots)] if shots is not None else []
    _intentflow("outcomes", "import", str(Path(data) / "train.jsonl"), "--out", str(work / "outcomes"), *per_label,
                "--seed", str(seed))
    started = time.perf_counter()
    _intentflow("retrain", "--outcomes", str(work / "outcomes"), "--registry", str(work / "registry"),
                "--featurizer", featurizer, "--threshold", "0", *extra_args)
    return time.perf_counter() - started


def _intentflow(*args: str) -> str:
    command = [sys.executable, "-m", "intentflow.cli", *args]
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env,
                              timeout=COMMAND_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        raise IntentflowError(f"`intentflow {' '.join(args)}` ran over {COMMAND_TIMEOUT_SECONDS} s") from None
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise IntentflowError(f"`intentflow {' '.join(args)}` failed (exit {done.returncode}):\n{tail}")
    return done.stdout


def summary_rows(runs: Sequence[FewshotRun]) -> list[dict[str, object]]:
    """One row per featurizer: mean and spread over seeds, as the README of the benchmark data asks."""
    rows = []
    for featurizer in dict.fromkeys(run.featurizer for run in runs):
        mine = [run for run in runs if run.featurizer == featurizer]
        accuracy = [run.accuracy_without_oos for run in mine]
        # A run without a threshold answers nothing unknown: its recall is not a measurement of the detector.
        recall = [run.oos_recall for run in mine if run.oos_recall is not None and run.refuses]
        rows.append({
            "featurizer": featurizer,
            "seeds": ", ".join(str(run.seed) for run in mine),
            "accuracy_mean": round(100 * statistics.mean(accuracy), 2),
            "accuracy_min": round(100 * min(accuracy), 2),
            "accuracy_max": round(100 * max(accuracy), 2),
            "accuracy_with_oos_mean": round(100 * statistics.mean(run.accuracy for run in mine), 2),
            "oos_recall_mean": round(100 * statistics.mean(recall), 2) if recall else None,
            "seconds_mean": round(statistics.mean(run.seconds for run in mine), 1),
            "seconds_max": round(max(run.seconds for run in mine), 1),
        })
    return rows


def markdown_table(runs: Sequence[FewshotRun]) -> str:
    lines = ["| featurizer | seed | accuracy | with out-of-scope rule | OOS recall | rule | run time (s) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for run in runs:
        recall = f"{run.oos_recall:.2%}" if run.oos_recall is not None and run.refuses else "n/a"
        threshold = " and ".join([*([f"similarity {run.oos_similarity:.4f}"] if run.oos_similarity is not None else []),
                                  *([f"confidence {run.oos_threshold:.4f}"] if run.oos_threshold is not None else [])
                                  ]) or "off"
        lines.append(f"| {run.featurizer} | {run.seed} | {run.accuracy_without_oos:.2%} | {run.accuracy:.2%} | "
                     f"{recall} | {threshold} | {run.seconds:.0f} |")
    lines += ["", "| featurizer | seeds | accuracy mean (min-max) | with out-of-scope rule | OOS recall | "
                  "mean run time (s) |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    for row in summary_rows(runs):
        recall = f"{row['oos_recall_mean']:.2f}%" if row["oos_recall_mean"] is not None else "n/a"
        lines.append(f"| {row['featurizer']} | {row['seeds']} | {row['accuracy_mean']:.2f}% "
                     f"({row['accuracy_min']:.2f}-{row['accuracy_max']:.2f}) | {row['accuracy_with_oos_mean']:.2f}% | "
                     f"{recall} | {row['seconds_mean']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CLINC150 folder")
    parser.add_argument("--featurizers", nargs="+", choices=FEATURIZERS, default=list(FEATURIZERS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--shots", type=int, default=SHOTS)
    parser.add_argument("--score-on", choices=["test", "val"], default="test",
                        help="val: score on val.jsonl, the set to tune choices on")
    parser.add_argument("--retrain-arg", action="append", default=[], dest="retrain_args",
                        help="an argument for intentflow retrain (repeat for each), e.g. --retrain-arg=--epochs")
    args = parser.parse_args()

    runs = []
    for featurizer in args.featurizers:
        for seed in args.seeds:
            run = run_fewshot(args.data, featurizer, seed, args.shots, args.retrain_args, args.score_on)
            print(json.dumps(run.to_dict()), flush=True)
            runs.append(run)
    scored = "" if args.score_on == "test" else f", scored on {args.score_on}.jsonl"
    print(f"Few-shot CLINC150 (k = {args.shots}{scored}): `{command()}` at {git_revision()}, {stamp()}; "
          f"{machine()}\n\n{markdown_table(runs)}")


if __name__ == "__main__":
    main()
