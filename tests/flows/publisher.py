"""A publisher in a process of its own, for the crash and concurrency tests.

Publishes a checkpoint into a registry as the retrain flow's last step does (``intentflow.publish.publish_version``,
gate passed), ``--count`` times, printing ``loaded`` once it has read the checkpoint, ``ready`` before the first
publication and ``published <version>`` after each::

    python tests/flows/publisher.py REGISTRY CHECKPOINT [--count N] [--tag NAME] [--start-file PATH]

With ``--start-file`` it waits between ``loaded`` and ``ready`` until that file exists: two publishers then start at
once.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("registry")
    parser.add_argument("checkpoint")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--tag", default="publisher")
    parser.add_argument("--start-file", default=None)
    args = parser.parse_args()

    import os

    import torch

    from intentflow.checkpoint import load_checkpoint
    from intentflow.evaluate import evaluate_model
    from intentflow.gate import GateDecision
    from intentflow.inference import Classifier, build_model
    from intentflow.publish import publish_version

    torch.set_num_threads(1)
    payload = load_checkpoint(args.checkpoint)
    classifier = Classifier(*build_model(payload), payload=payload)
    evaluation = evaluate_model(classifier, payload["validation"]["text"], payload["validation"]["label"])
    print("loaded", flush=True)
    while args.start_file and not os.path.exists(args.start_file):
        time.sleep(0.005)
    print("ready", flush=True)
    for index in range(args.count):
        payload["created_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        decision = GateDecision(True, evaluation.accuracy, 0.5, 0.01, None, None, f"{args.tag} #{index}")
        publication = publish_version(args.registry, payload, evaluation, decision, f"published by {args.tag}",
                                      {"publisher": args.tag, "index": index})
        print(f"published {publication.version}", flush=True)


if __name__ == "__main__":
    main()
