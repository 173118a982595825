"""Out of scope: what an intent model answers with the unknown label.

- An embeddings model refuses a sentence no example it learnt is ``oos_similarity`` similar to (cosine of the
  fine-tuned encoder's vectors): ``remember_examples`` keeps those vectors with the model.
- A confidence threshold: predictions less confident than it are the unknown label. ``auto`` chooses it on
  validation rows the model never learnt: where an outcome is marked out of scope, as the threshold that answers the
  most validation rows right; else, for an embeddings model without the similarity rule, from its confidence on the
  correctly predicted originals.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from intentflow.trained import TrainedModel

logger = logging.getLogger(__name__)

# Examples compared with a batch of sentences at a time by ``nearest_similarity``.
SIMILARITY_CHUNK = 4096
# The similarity rule refuses at most this share of the validation originals (docs/decisions.md).
SIMILARITY_SHARE = 0.10

# oos_threshold = "auto": OOS_SCALE of the way from chance (1 / outcomes) to the confidence below which OOS_SHARE of
# the correctly predicted validation originals fall: a share that a few originals decide, not one, scaled back
# because validation originals are scored more confidently than what users type (docs/decisions.md).
OOS_SHARE = 0.05
OOS_SCALE = 0.45


def calibrate(result: TrainedModel, val: tuple[list[torch.Tensor], torch.Tensor] | None,
               val_is_original: Sequence[bool] | None) -> None:
    """``result.oos_threshold`` from the validation rows ``val`` (inputs, targets), the originals among them alone."""
    if val is not None and val_is_original is not None and any(val_is_original):
        keep = torch.tensor(list(val_is_original), device=val[1].device)
        val = [tensor[keep] for tensor in val[0]], val[1][keep]
    result.oos_threshold = oos_threshold(result, *(val if val is not None else (None, None)))


def oos_threshold(result: TrainedModel, val_x: list[torch.Tensor] | None,
                  val_y: torch.Tensor | None) -> float | None:
    """The out-of-scope threshold ``result.config.oos_threshold`` asks for, on validation inputs and targets."""
    setting = result.config.oos_threshold
    if setting == "off":
        return None
    if setting != "auto":
        return float(setting)
    if result.encoder is None:
        # Bag-of-words confidences do not separate out-of-scope sentences: a threshold catching half of them costs
        # ten points of in-scope accuracy (docs/decisions.md).
        logger.info("oos_threshold auto: off for a bag-of-words model (its confidence does not tell out-of-scope "
                    "sentences apart); set a number to force a threshold, or use featurizer embeddings")
        return None
    if val_x is None or val_y is None:
        logger.warning("oos_threshold auto needs validation rows; none, so predictions are never unknown")
        return None
    with torch.no_grad():
        probabilities = torch.softmax(result.model(*val_x).float(), dim=1)
    refuse = [result.labels.index(label) for label in result.out_of_scope]
    if refuse and bool(torch.isin(val_y.cpu(), torch.tensor(refuse)).any()):
        threshold = calibrate_with_refusals(probabilities.cpu(), val_y.cpu(), refuse)
        logger.info("out-of-scope threshold %s, chosen on %d validation rows with those of %s as rows to refuse",
                    threshold, len(val_y), ", ".join(result.out_of_scope))
        return threshold
    if result.config.oos_similarity != "off":
        # The similarity rule refuses what is far from every example; a confidence threshold on top of it refused
        # in-scope sentences it kept and little else (docs/decisions.md#out-of-scope-by-similarity).
        logger.info("oos_threshold auto: off, as oos_similarity %s decides what is out of scope",
                    result.config.oos_similarity)
        return None
    threshold = calibrate_oos(probabilities.cpu(), val_y.cpu())
    logger.info("out-of-scope threshold %s, calibrated on %d validation rows", threshold, len(val_y))
    return threshold


def calibrate_oos(probabilities: torch.Tensor, targets: torch.Tensor, share: float = OOS_SHARE,
                  scale: float = OOS_SCALE) -> float | None:
    """``scale`` of the way from chance to the confidence below which ``share`` of the correctly predicted rows fall.

    Chance is 1 / the number of outcomes (a row of ``probabilities``), the least a top confidence can be; scale 1 is
    the plain quantile. None when no row is correct. Rounded down to 4 decimals, so that a sentence at the threshold
    does not flip to unknown on a runtime (ONNX, bfloat16) whose arithmetic differs in the sixth decimal.
    """
    confidence, predicted = probabilities.max(dim=1)
    correct = confidence[predicted == targets]
    if correct.numel() == 0:
        return None
    chance = 1.0 / probabilities.shape[1]
    quantile = float(torch.quantile(correct.double(), share))
    return math.floor((chance + scale * (quantile - chance)) * 10_000) / 10_000


def calibrate_with_refusals(probabilities: torch.Tensor, targets: torch.Tensor, refuse: Sequence[int]) -> float:
    """The threshold that answers the most validation rows right: a row of an out-of-scope outcome (``refuse``) is
    right when it is refused (predicted as one of them, or below the threshold), any other when its outcome is
    predicted at or above the threshold. Ties go to the lowest threshold, the one that refuses least. In steps of
    1e-4, as ``calibrate_oos`` rounds."""
    confidence, predicted = probabilities.double().max(dim=1)
    to_refuse = torch.isin(targets, torch.tensor(list(refuse)))
    refused_anyway = torch.isin(predicted, torch.tensor(list(refuse)))
    best, best_right = 0.0, -1
    # Candidates in steps of 1e-4 just above each confidence, so that each refuses that row and all below it.
    for step in [0, *sorted({math.floor(value * 10_000) + 1 for value in confidence.tolist()})]:
        threshold = step / 10_000
        below = confidence < threshold
        right = int((to_refuse & (refused_anyway | below)).sum() + (~to_refuse & ~below & (predicted == targets)).sum())
        if right > best_right:
            best, best_right = threshold, right
    return best


def remember_examples(result: TrainedModel, texts: Sequence[str], known: torch.Tensor | None = None) -> None:
    """Keep the unit vectors of ``texts``, the examples ``result`` learnt (with ``known``, vectors of examples kept
    before), for the similarity rule; nothing for a bag-of-words model or with ``oos_similarity`` off."""
    setting = result.config.oos_similarity
    parts: list[torch.Tensor] = []
    if result.encoder is not None and setting != "off":
        parts = [known] if known is not None else []
        unique = list(dict.fromkeys(texts))
        if unique:
            with torch.no_grad():
                parts.append(F.normalize(result.encoder.encode(unique).float().cpu(), dim=1))
    if not parts:
        result.examples, result.oos_similarity = None, None
        return
    # Kept in half precision, as the checkpoint stores them, so that a model answers the same before and after saving.
    result.examples = torch.cat([part.half() for part in parts])
    result.oos_similarity = float(setting)


def calibrate_similarity(result: TrainedModel, val_originals: Sequence[str]) -> None:
    """``result.oos_similarity``: the setting, lowered where it would refuse more than ``SIMILARITY_SHARE`` of the
    validation originals (sentences people wrote for the outcomes, which the model never learnt): outcomes of a
    few examples each leave new wordings far from all of them."""
    if result.examples is None:
        return
    setting = float(result.config.oos_similarity)
    if val_originals:
        with torch.no_grad():
            similarity = nearest_similarity(result.encoder.encode(list(val_originals)), result.examples)
        floor = math.floor(float(torch.quantile(similarity.double(), SIMILARITY_SHARE)) * 10_000) / 10_000
        result.oos_similarity = min(setting, floor)
    logger.info("out of scope below similarity %s to the nearest of %d examples (setting %s, %d validation "
                "originals)", result.oos_similarity, len(result.examples), setting, len(val_originals))


def nearest_similarity(vectors: torch.Tensor, examples: torch.Tensor) -> torch.Tensor:
    """Each of ``vectors``' cosine similarity to the nearest of ``examples`` (unit rows), in chunks of examples so
    that memory holds one chunk's products at a time."""
    vectors = F.normalize(vectors.float(), dim=1)
    best = torch.full((len(vectors),), -1.0)
    for start in range(0, len(examples), SIMILARITY_CHUNK):
        chunk = examples[start:start + SIMILARITY_CHUNK].to(vectors.device, torch.float32)
        best = torch.maximum(best, (vectors @ chunk.T).max(dim=1).values.cpu())
    return best
