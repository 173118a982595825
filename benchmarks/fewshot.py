"""Few-shot accuracy on CLINC150 against published results, through the public CLI and the retrain flow.

    python benchmarks/fewshot.py                              # bow and embeddings, seeds 0 1 2, k = 10
    python benchmarks/fewshot.py --featurizers embeddings --seeds 0
    python benchmarks/fewshot.py --score-on val --retrain-arg=--finetune-epochs --retrain-arg=4  # tune on val

Follows ../shared/benchmarks/README.md: k utterances per intent from train.jsonl (``intentflow outcomes import``),
``intentflow retrain`` with the project's defaults (gate threshold 0, so each model is scored), ``intentflow
evaluate`` on test.jsonl plus oos_test.jsonl. Prints each run and the mean and spread per featurizer, and appends
them to benchmarks/RESULTS.md under a dated heading (``--no-write`` to skip).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import ROOT, command, git_revision, machine, stamp  # noqa: I001 - sets sys.path for intentflow

from intentflow.fewshot import DEFAULT_DATA, FEATURIZERS, SEEDS, SHOTS, markdown_table, run_fewshot


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
    parser.add_argument("--no-write", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = parser.parse_args()

    runs = []
    for featurizer in args.featurizers:
        for seed in args.seeds:
            run = run_fewshot(args.data, featurizer, seed, args.shots, args.retrain_args, args.score_on)
            print(json.dumps(run.to_dict()), flush=True)
            runs.append(run)
    table = markdown_table(runs)
    print(table)
    if not args.no_write:
        scored = "" if args.score_on == "test" else f", scored on {args.score_on}.jsonl"
        section = (f"\n## Few-shot CLINC150 (k = {args.shots}{scored}), {stamp()}\n\n`{command()}` at "
                   f"{git_revision()}; {machine()}\n\n{table}\n")
        with (ROOT / "benchmarks" / "RESULTS.md").open("a", encoding="utf-8") as results:
            results.write(section)


if __name__ == "__main__":
    main()
