"""The README's main job, timed: `intentflow retrain` on the bundled outcomes with the playbook's settings.

    python benchmarks/end_to_end.py

Runs the command as a user would (a fresh process, Prefect's embedded server, a new registry and Prefect
home), then the same stages in-process without Prefect, so the orchestration overhead shows apart.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, command, machine, stamp  # noqa: I001 - sets sys.path for intentflow

from intentflow.config import load_settings, resolve_featurizer
from intentflow.dataset import prepare_data
from intentflow.evaluate import evaluate_model
from intentflow.inference import Classifier
from intentflow.outcomes import load_outcomes
from intentflow.refit import refit_model
from intentflow.split import Split
from intentflow.train import train_split


def timed_retrain(registry: Path, env: dict[str, str]) -> tuple[float, int, str, float, float]:
    """`intentflow retrain --force` as a user runs it: its wall time, exit status and verdict, and when (seconds from
    its start) its output said the flow run began and finished."""
    start = time.perf_counter()
    begun = finished = float("nan")
    lines = []
    with subprocess.Popen([sys.executable, "-m", "intentflow.cli", "retrain", "--force", "--registry", str(registry)],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        for line in process.stdout:
            lines.append(line.strip())
            if "Beginning flow run" in line and math.isnan(begun):
                begun = time.perf_counter() - start
            if "prefect.flow_runs: Finished in state" in line:
                finished = time.perf_counter() - start
    return time.perf_counter() - start, process.returncode, lines[-1] if lines else "", begun, finished


def main() -> None:
    # No options: --help says what it runs instead of starting a minute of training.
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "PREFECT_HOME": str(Path(scratch) / "prefect"), "DO_NOT_TRACK": "1",
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        env.pop("PREFECT_API_URL", None)
        # First with a new Prefect home (its database is created), then again as a user's later runs are.
        for run in ("first run, new Prefect home", "later run (--force)"):
            runs.append((run, *timed_retrain(Path(scratch) / "registry", env)))

    start = time.perf_counter()
    settings, _ = resolve_featurizer(load_settings(ROOT / "config" / "training.toml"))
    data = prepare_data(load_outcomes(ROOT / "config" / "outcomes"), settings.prepare)
    prepared = time.perf_counter() - start
    # As the flow's train task does (word pairs from the originals only, out-of-scope calibrated on them).
    split = Split(data.train, data.val).for_featurizer(settings.train.featurizer)
    trained = train_split(split, settings.train)
    training = time.perf_counter() - start - prepared
    evaluate_model(Classifier.from_trained(trained), [r.text for r in data.val],
                   [r.label for r in data.val])
    refit = 0.0
    if settings.train.refit:
        # As the flow does once the gate passes: train again on every row, and check it on the validation rows.
        refit_start = time.perf_counter()
        refitted = refit_model(trained, split)
        evaluate_model(Classifier.from_trained(refitted), [r.text for r in data.val], [r.label for r in data.val])
        refit = time.perf_counter() - refit_start
    core = time.perf_counter() - start

    print(f"machine: {machine()}\ndate: {stamp()}\ncommand: {command()}")
    for run, seconds, code, verdict, begun, finished in runs:
        print(f"`intentflow retrain`, {run}: {seconds:.1f} s, exit {code}: {verdict}")
        print(f"    read off its output: the flow run began at {begun:.1f} s (imports, Prefect's server started), "
              f"ran {finished - begun:.1f} s, and the process exited {seconds - finished:.1f} s after it finished")
    print(f"core stages in-process without Prefect: {core:.1f} s (prepare {prepared:.1f} s, train {training:.1f} s "
          f"for {trained.metrics['epochs_run']} epochs, best {trained.metrics['best_epoch']}"
          + (f"; refit {refit:.1f} s for {trained.metrics['best_epoch']} epochs" if settings.train.refit else "")
          + ")")
    for run, seconds, *_ in runs:
        print(f"Prefect, start-up and publishing overhead, {run}: {seconds - core:.1f} s (the command's time less "
              "the in-process stages, timed apart: on a noisy machine the timeline above is the steadier figure)")


if __name__ == "__main__":
    main()
