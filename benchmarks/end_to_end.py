"""The README's main job, timed: `intentflow retrain` on the bundled outcomes with the playbook's settings.

    python benchmarks/end_to_end.py

Runs the command as a user would (a fresh process, Prefect's embedded server, a new registry and Prefect
home), then the same stages in-process without Prefect, so the orchestration overhead shows apart.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, command, machine, stamp  # noqa: I001 - sets sys.path for intentflow

from intentflow.config import load_settings
from intentflow.dataset import prepare_data
from intentflow.evaluate import evaluate_model
from intentflow.inference import Classifier
from intentflow.outcomes import load_outcomes
from intentflow.split import Split
from intentflow.train import refit_model, train_split


def main() -> None:
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "PREFECT_HOME": str(Path(scratch) / "prefect"), "DO_NOT_TRACK": "1",
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        env.pop("PREFECT_API_URL", None)
        # First with a new Prefect home (its database is created), then again as a user's later runs are.
        for run in ("first run, new Prefect home", "later run (--force)"):
            start = time.perf_counter()
            result = subprocess.run([sys.executable, "-m", "intentflow.cli", "-q", "retrain", "--force",
                                     "--registry", str(Path(scratch) / "registry")], cwd=ROOT, env=env,
                                    capture_output=True, text=True)
            verdict = (result.stdout.strip() or result.stderr.strip()).splitlines()[-1]
            runs.append((run, time.perf_counter() - start, result.returncode, verdict))

    start = time.perf_counter()
    settings = load_settings(ROOT / "config" / "training.toml")
    data = prepare_data(load_outcomes(ROOT / "config" / "outcomes"), settings.prepare)
    prepared = time.perf_counter() - start
    # As the flow's train task does (word pairs from the originals only, out-of-scope calibrated on them).
    trained = train_split(Split(data.train, data.val), settings.train)
    training = time.perf_counter() - start - prepared
    evaluate_model(Classifier.from_trained(trained), [r.text for r in data.val],
                   [r.label for r in data.val])
    refit = 0.0
    if settings.train.refit:
        # As the flow does once the gate passes: train again on every row, and check it on the validation rows.
        refit_start = time.perf_counter()
        refitted = refit_model(trained, Split(data.train, data.val))
        evaluate_model(Classifier.from_trained(refitted), [r.text for r in data.val], [r.label for r in data.val])
        refit = time.perf_counter() - refit_start
    core = time.perf_counter() - start

    print(f"machine: {machine()}\ndate: {stamp()}\ncommand: {command()}")
    for run, seconds, code, verdict in runs:
        print(f"`intentflow retrain`, {run}: {seconds:.1f} s, exit {code}: {verdict}")
    print(f"core stages in-process without Prefect: {core:.1f} s (prepare {prepared:.1f} s, train {training:.1f} s "
          f"for {trained.metrics['epochs_run']} epochs, best {trained.metrics['best_epoch']}"
          + (f"; refit {refit:.1f} s for {trained.metrics['best_epoch']} epochs" if settings.train.refit else "")
          + ")")
    for run, seconds, _code, _verdict in runs:
        print(f"Prefect, start-up and publishing overhead, {run}: {seconds - core:.1f} s")


if __name__ == "__main__":
    main()
