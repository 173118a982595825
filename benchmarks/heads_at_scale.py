"""One head against several on one fine-tuned encoder, for an outcome set with many examples (CLINC150, k = all).

    python benchmarks/heads_at_scale.py            # heads 5, 1 and 2; in-scope accuracy on val.jsonl, seconds

The study behind ``heads.HEAD_ROWS`` (docs/decisions.md#fine-tuning-and-heads-on-large-outcome-sets). The encoder
is fine-tuned once (with the default ``finetune_pairs``) by the five-head run; the others train fresh heads on the
same tuned encoder. Scored on CLINC150's val.jsonl, never its test file. Prints the figures; writes nothing.
"""

from __future__ import annotations

import json
import tempfile
import time

import torch
from common import ROOT  # noqa: I001 - sets sys.path for intentflow

import intentflow.heads as heads_rule
import intentflow.train as train
from intentflow.config import PrepareConfig, TrainConfig
from intentflow.dataset import prepare_data, read_labelled
from intentflow.evaluate import align_labels
from intentflow.features import Vocabulary
from intentflow.importer import import_outcomes
from intentflow.inference import Classifier
from intentflow.model import network
from intentflow.outcomes import load_outcomes
from intentflow.split import Split
from intentflow.trained import TrainedModel

CLINC = ROOT.parent / "shared" / "benchmarks" / "clinc150"


def main() -> None:
    heads_rule.HEAD_ROWS = 10**9  # the rule under study is off here: every run trains the heads it is given
    with tempfile.TemporaryDirectory(prefix="intentflow-heads-") as temp:
        import_outcomes(CLINC / "train.jsonl", temp, per_label=None, seed=0)
        data = prepare_data(load_outcomes(temp), PrepareConfig())
    split = Split(data.train, data.val).for_featurizer("embeddings")
    texts, labels, _ = read_labelled(CLINC / "val.jsonl")
    config = TrainConfig(featurizer="embeddings", embedding_heads=5)
    started = time.perf_counter()
    five = train.train_split(split, config)
    figures = {"rows": len(split.train), "heads 5 seconds": round(time.perf_counter() - started)}
    labels, _ = align_labels(labels, five.labels)

    def accuracy(model: TrainedModel) -> float:
        predicted = [p.label for p in Classifier.from_trained(model).predict_batch(texts, apply_oos=False)]
        return round(100 * sum(p == t for p, t in zip(predicted, labels, strict=True)) / len(labels), 2)

    figures["heads 5"] = accuracy(five)
    tuned = five.encoder

    def on_tuned_encoder(_texts, _labels, names, settings, _pairs=None) -> TrainedModel:
        torch.manual_seed(settings.seed)
        vocab = Vocabulary([], word_ngrams=1)
        return TrainedModel(model=network(vocab, names, settings, tuned), vocab=vocab, labels=names,
                            config=settings, device="cpu", encoder=tuned)

    train.new_model = on_tuned_encoder
    for heads in (1, 2):
        started = time.perf_counter()
        model = train.train_split(split, config.model_copy(update={"embedding_heads": heads}))
        figures[f"heads {heads}"] = accuracy(model)
        figures[f"heads {heads} seconds"] = round(time.perf_counter() - started)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
