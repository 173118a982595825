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

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from intentflow.evaluate import evaluate_model
from intentflow.incremental import continue_training
from intentflow.inference import Classifier
from intentflow.split import Split
from intentflow.train import TrainedModel, refit_model, take_judged_figures

if TYPE_CHECKING:
    from intentflow.config import Settings
    from intentflow.incremental import IncrementalRows

# Marks the checkpoint of a version's held-out model, kept beside the model it serves.
HELD_OUT_ROLE = "held_out"


@dataclass
class ServedModel:
    """The model to serve, what it learnt from, and how it was derived (None: it is the held-out model)."""

    trained: TrainedModel
    train_originals: list[str]
    record: dict[str, Any] | None = field(default=None)

    @property
    def is_held_out(self) -> bool:
        return self.record is None or not self.record.get("published")


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
