"""The model a version serves, derived from the held-out model the gate judges.

A run first trains a held-out model: it never sees the validation originals, so its scores on them are honest and
the gate judges it. The version then serves either that model or one that also learnt the validation rows:

- full runs with ``[train] refit``: a model trained again on every row for the held-out run's epoch count
  (``refit_or_keep``); it is kept only if it scores at least as well as the held-out model on the validation rows it
  learnt, a sanity check whose figure is labelled as such and never feeds the gate;
- incremental runs from a production that serves such a model: production's served model continued on the same new
  sentences (``continue_served``), while the judged model continues from production's held-out one.

The CLI's ``intentflow train`` and the retrain flow both call these, so they publish by one rule.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from intentflow import calibration
from intentflow.evaluate import evaluate_model
from intentflow.heads import merge_more_heads
from intentflow.incremental import continue_training
from intentflow.inference import Classifier
from intentflow.split import Split
from intentflow.train import fit, new_model, originals
from intentflow.trained import EpochStats, TrainedModel

if TYPE_CHECKING:
    from intentflow.config import Settings
    from intentflow.incremental import IncrementalRows

# Marks the checkpoint of a version's held-out model, kept beside the model it serves.
HELD_OUT_ROLE = "held_out"

logger = logging.getLogger(__name__)


@dataclass
class ServedModel:
    """The model to serve, what it learnt from, and how it was derived (None: it is the held-out model)."""

    trained: TrainedModel
    train_originals: list[str]
    record: dict[str, Any] | None = field(default=None)

    @property
    def is_held_out(self) -> bool:
        return self.record is None or not self.record.get("published")


def refit_model(held_out: TrainedModel, split: Split,
                on_epoch: Callable[[EpochStats, int], None] | None = None) -> TrainedModel:
    """Train again from scratch on the training and the validation rows, for the held-out run's best epoch count.

    ``held_out`` (trained on ``split.train``, validated on ``split.val``) chose the epoch count, was scored and
    passed the gate; this model is what gets published: it also learnt the validation originals, which in a few-shot
    set are a tenth of what there is to learn. Same seed, same settings; every epoch runs and the last is kept.
    The out-of-scope threshold is the held-out run's, calibrated on sentences that model never saw.
    """
    rows = [*split.train, *split.val]
    texts, targets = [row.text for row in rows], [row.label for row in rows]
    epochs = max(held_out.best_epoch, 1)
    written = [row.text for row in rows if not row.synthetic]
    result = new_model(texts, targets, held_out.labels, held_out.config, written)
    # The linear model is folded in where the held-out run's validation kept it (``linear.fold_into``).
    linear_rows = (originals(texts, targets, [not row.synthetic for row in rows]) if held_out.linear is not None
                   else None)
    fit(result, texts, targets, [], [], epochs=epochs, lr=held_out.config.lr, on_epoch=on_epoch, keep_best=False,
        calibrate=False, linear_rows=linear_rows)
    if held_out.head_epochs:
        head_epochs = held_out.head_epochs
        merge_more_heads(result, len(head_epochs), lambda head, index: fit(
            head, texts, targets, [], [], epochs=max(head_epochs[index], 1), lr=held_out.config.lr, on_epoch=None,
            keep_best=False, calibrate=False))
    calibration.remember_examples(result, written)
    last = result.history[-1]
    result.refit = {"epochs": epochs, "rows": len(rows), "originals": len({row.original for row in rows}),
                    "train_loss": last.train_loss, "train_accuracy": last.train_accuracy}
    take_judged_figures(result, held_out)
    logger.info("refit on all %d rows (%d originals) for %d epochs, the held-out run's best", len(rows),
                result.refit["originals"], epochs)
    return result


def take_judged_figures(served: TrainedModel, judged: TrainedModel) -> None:
    """Give ``served`` (a model that learnt the validation rows) the figures of ``judged``, the held-out model that
    was scored on them: its history, best epoch and validation scores, and the out-of-scope threshold calibrated on
    sentences it never saw, as is the similarity below which it refuses. A served model's own validation figures would
    be on rows it learnt."""
    served.history, served.best_epoch = list(judged.history), judged.best_epoch
    served.stopped_early, served.oos_threshold = judged.stopped_early, judged.oos_threshold
    if served.examples is not None:
        served.oos_similarity = judged.oos_similarity
    served.folded_scores = judged.folded_scores
    served.out_of_scope = list(judged.out_of_scope)


def refit_or_keep(held_out: TrainedModel, split: Split, held_out_accuracy: float, *,
                  refit: Callable[[TrainedModel, Split], TrainedModel] = refit_model) -> ServedModel:
    """The model refit on every row, or ``held_out`` itself when the refit scores below it on the validation rows.

    ``held_out_accuracy`` is the held-out model's accuracy on ``split.val``. The refit learnt those rows, so it
    should score at least as well there; when it does not, something went wrong and the held-out model is served.
    ``record["val_accuracy_trained_on"]`` is that check's figure: accuracy on rows the refit learnt.
    """
    refitted = refit(held_out, split)
    check = evaluate_model(Classifier.from_trained(refitted), [row.text for row in split.val],
                           [row.label for row in split.val])
    record = {**(refitted.refit or {}), "val_accuracy_trained_on": check.accuracy,
              "published": check.accuracy >= held_out_accuracy}
    if not record["published"]:
        return ServedModel(held_out, [row.original for row in split.train], record)
    return ServedModel(refitted, [row.original for row in [*split.train, *split.val]], record)


def continue_served(production_served: dict[str, Any], judged: TrainedModel, split: Split, settings: Settings, *,
                    select: Callable[..., IncrementalRows],
                    resume: Callable[..., TrainedModel] = continue_training) -> ServedModel:
    """Production's served model (which learnt its validation rows) continued on the sentences new to it.

    Its replay sample is drawn from every row it learnt, validation rows included, so it forgets none of them.
    The figures it carries are ``judged``'s: the held-out model continued from production's held-out one.
    """
    rows = select((*split.train, *split.val), production_served, settings.incremental.replay_ratio,
                  settings.prepare.seed)
    served = resume(production_served, rows.new, rows.replay, split.val, settings.train, settings.incremental,
                    new_share=rows.new_share)
    take_judged_figures(served, judged)
    served.refit = {"mode": "incremental", "rows": len(rows.new) + len(rows.replay), "new_rows": len(rows.new),
                    "originals": len(set(production_served.get("train_originals", [])) | set(rows.new_originals))}
    record = {**served.refit, "published": True}
    learnt = [*production_served.get("train_originals", []), *rows.new_originals]
    return ServedModel(served, learnt, record)
