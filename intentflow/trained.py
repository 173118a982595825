"""What training returns: the network with what it needs to read text and name labels, and each epoch's figures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from intentflow.config import TrainConfig
from intentflow.features import Vocabulary
from intentflow.model import IntentMLP

if TYPE_CHECKING:
    from intentflow.encoder import SentenceEncoder


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float | None
    val_accuracy: float | None

    def to_dict(self) -> dict[str, float | int | None]:
        return {"epoch": self.epoch, "train_loss": self.train_loss, "train_accuracy": self.train_accuracy,
                "val_loss": self.val_loss, "val_accuracy": self.val_accuracy}


@dataclass
class TrainedModel:
    """A trained network with what it needs to read text and name labels."""

    model: IntentMLP
    vocab: Vocabulary
    labels: list[str]
    config: TrainConfig
    device: str
    history: list[EpochStats] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    # Sentence encoder of an embeddings model (its vocabulary is then empty); None for bag-of-words.
    encoder: SentenceEncoder | None = None
    # Confidence below which predictions are the unknown label; None: never.
    oos_threshold: float | None = None
    # Set on a model refit on every row (``refit``): how, and on how much. ``history`` and ``best_epoch`` are then
    # the held-out run's, which chose the epoch count and was validated.
    refit: dict[str, Any] | None = None
    # Set where a linear model of the examples is folded into the network (``linear_share``): its share of the
    # logits, the hidden units it added, and how many examples it learnt from.
    linear: dict[str, Any] | None = None
    # Validation loss and accuracy of the network as published, where they differ from ``history``'s best epoch
    # (which scored the first network alone): a linear model folded in, heads merged. A refit takes its held-out run's.
    folded_scores: dict[str, float] | None = None
    # Set where ``embedding_heads`` networks were merged into ``model``: the epochs each was trained for (its best,
    # in a held-out run), the first network's being ``best_epoch``.
    head_epochs: list[int] | None = None
    # Labels of outcomes whose examples are things to refuse: predicting one answers the unknown label.
    out_of_scope: list[str] = field(default_factory=list)
    # An embeddings model's vectors of the examples it learnt (unit length, one row each), and the cosine similarity
    # below which a sentence near none of them is the unknown label (``calibration.remember_examples``).
    examples: torch.Tensor | None = None
    oos_similarity: float | None = None

    def inputs(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """The network's input tensors for ``texts``: index bags and weights, or sentence vectors."""
        if self.encoder is not None:
            return [self.encoder.encode(list(texts))]
        return list(self.vocab.encode(list(texts)))

    @property
    def metrics(self) -> dict[str, float | int | bool | None]:
        best = self.history[self.best_epoch - 1] if self.history else None
        folded = self.folded_scores
        return {
            "best_epoch": self.best_epoch,
            "epochs_run": len(self.history),
            "stopped_early": self.stopped_early,
            "train_loss": best.train_loss if best else None,
            "train_accuracy": best.train_accuracy if best else None,
            "val_loss": folded["val_loss"] if folded else best.val_loss if best else None,
            "val_accuracy": folded["val_accuracy"] if folded else best.val_accuracy if best else None,
            "device": self.device,
            "oos_threshold": self.oos_threshold,
            "oos_similarity": self.oos_similarity,
            "refit": self.refit,
            "linear": self.linear,
            "head_epochs": self.head_epochs,
        }
