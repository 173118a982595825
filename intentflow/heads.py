"""Several heads on one sentence encoder: networks of different seeds trained on the same vectors, merged into one
that answers with their mean logits (``model.merge_heads``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch

from intentflow import calibration
from intentflow.model import merge_heads, network, val_scores
from intentflow.trained import TrainedModel

logger = logging.getLogger(__name__)

# Training rows times networks, at most, in one run: the heads average away each seed's noise, which shrinks as the
# rows grow while their cost grows with them. CLINC150 10-shot (1,350 rows) keeps five; its 13,216 rows of k = all
# train one, which scored as five did on val.jsonl (97.17% against 97.07%) in 25 s instead of 277 s
# (docs/decisions.md#fine-tuning-and-heads-on-large-outcome-sets).
HEAD_ROWS = 10_000


def head_count(configured: int, rows: int) -> int:
    """How many heads to train on ``rows`` training rows: ``configured`` (``embedding_heads``), fewer where
    ``HEAD_ROWS`` is reached, at least one."""
    count = max(1, min(configured, HEAD_ROWS // max(rows, 1)))
    if count < configured:
        logger.info("training %d of embedding_heads %d networks: %d training rows (at most %d rows x networks)",
                    count, configured, rows, HEAD_ROWS)
    return count


def merge_more_heads(result: TrainedModel, heads: int, train_head: Callable[[TrainedModel, int], Any]) -> None:
    """Networks 2 to ``heads`` beside the trained ``result.model``, all merged into it (``merge_heads``).

    Network i is a fresh one of seed ``config.seed`` + i (its initialisation, dropout and row order), trained by
    ``train_head(network, i)`` on the same sentence vectors (the encoder is shared, its vectors computed once). The
    merged network answers with their mean logits: it keeps what they agree on and averages away each one's own noise.
    """
    config = result.config
    networks, epochs = [result.model], [result.best_epoch]
    for index in range(1, heads):
        head_config = config.model_copy(update={"seed": config.seed + index})
        torch.manual_seed(head_config.seed)
        head = TrainedModel(model=network(result.vocab, result.labels, config, result.encoder), vocab=result.vocab,
                            labels=result.labels, config=head_config, device=result.device, encoder=result.encoder)
        logger.info("network %d of %d, seed %d", index + 1, heads, head_config.seed)
        train_head(head, index)
        networks.append(head.model)
        epochs.append(head.best_epoch)
    result.model = merge_heads(networks)
    result.head_epochs = epochs


def score_merged(result: TrainedModel, val_texts: Sequence[str], val_labels: Sequence[str],
                  val_is_original: Sequence[bool] | None) -> None:
    """The merged network's validation loss and accuracy (``folded_scores``) and its out-of-scope threshold."""
    if not val_texts:
        calibration.calibrate(result, None, None)
        return
    device = torch.device(result.device)
    label_index = {label: index for index, label in enumerate(result.labels)}
    val_x = [tensor.to(device) for tensor in result.inputs(val_texts)]
    val_y = torch.tensor([label_index[label] for label in val_labels], device=device)
    result.folded_scores = val_scores(result.model, (val_x, val_y), result.config.label_smoothing)
    calibration.calibrate(result, (val_x, val_y), val_is_original)
