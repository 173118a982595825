"""The training loop: forward, loss, backward, step, validate, stop early, keep the best epoch.

``train_model`` starts from random weights; ``continue_training`` from production's (incremental retraining).
Both run the same loop, ``_fit``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from intentflow.augment import Row
from intentflow.config import IncrementalConfig, TrainConfig
from intentflow.errors import IntentflowError
from intentflow.features import Vocabulary, build_vocabulary
from intentflow.linear import LINEAR_C, fit_linear, fold_linear
from intentflow.model import IntentMLP, merge_heads
from intentflow.split import Split

if TYPE_CHECKING:
    from intentflow.encoder import SentenceEncoder

logger = logging.getLogger(__name__)

# oos_threshold = "auto": OOS_SCALE of the way from chance (1 / outcomes) to the confidence below which OOS_SHARE of
# the correctly predicted validation originals fall. Chosen on CLINC150's val.jsonl (10-shot, data seeds 0-2, config
# seeds 2025 and 7): the plain 0.25% quantile, which is one or two originals of about 170, cost 0.30-1.90 points of
# in-scope accuracy (0.91 on average); 0.45 of the way to the 5% quantile, which about eight originals decide, cost
# 0.67-1.27 (0.94). Measured from chance, the same rule fits three outcomes and 150 (docs/decisions.md).
OOS_SHARE = 0.05
OOS_SCALE = 0.45
# Where sentence vectors of a frozen encoder are kept between runs (INTENTFLOW_CACHE_DIR overrides).
CACHE_VARIABLE = "INTENTFLOW_CACHE_DIR"


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
            "refit": self.refit,
            "linear": self.linear,
            "head_epochs": self.head_epochs,
        }


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise IntentflowError("--device cuda was asked for, but PyTorch sees no CUDA GPU "
                              "(fix: use --device auto or cpu, or install a CUDA build of torch)")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def train_model(
    train_texts: Sequence[str],
    train_labels: Sequence[str],
    val_texts: Sequence[str],
    val_labels: Sequence[str],
    config: TrainConfig,
    on_epoch: Callable[[EpochStats, int], None] | None = None,
    val_is_original: Sequence[bool] | None = None,
    pair_texts: Sequence[str] | None = None,
    train_is_original: Sequence[bool] | None = None,
    out_of_scope: Sequence[str] = (),
) -> TrainedModel:
    """Train an ``IntentMLP`` and return it with the weights of its best validation epoch.

    ``pair_texts``: the sentences word runs (``word_ngrams`` > 1) are taken from, the originals where the training
    set is augmented: a paraphrase's swapped or inserted word makes runs nobody wrote, which would multiply the
    vocabulary (and each step's cost) several-fold. None: every training text.

    ``val_is_original`` marks the validation rows written by people (not paraphrases); the out-of-scope threshold
    is calibrated on those alone, since a paraphrase of a held-out sentence is scored more confidently than what
    users type. None: all rows.

    ``train_is_original`` marks the training rows written by people: the linear model folded into a bag-of-words
    network (``linear_share``) learns from those alone. None: all rows.

    ``out_of_scope``: labels of outcomes whose examples are things to refuse; the model learns them as outcomes,
    answers them with the unknown label, and the out-of-scope threshold is calibrated with their validation rows.
    """
    if not train_texts:
        raise IntentflowError("the training set is empty (fix: prepare data from at least one outcome)")
    if config.featurizer == "auto":
        raise IntentflowError("featurizer auto reached training unresolved (fix: resolve it with "
                              "intentflow.config.resolve_featurizer first)")
    labels = sorted(set(train_labels))
    _check_val_labels(val_labels, labels)
    if config.oos_threshold != "off" and config.unknown_label in labels:
        raise IntentflowError(f"an outcome is named {config.unknown_label!r}, the label of out-of-scope predictions "
                              "(fix: rename the outcome, or set [train] unknown_label to another name)")
    result = _new_model(train_texts, train_labels, labels, config, pair_texts)
    result.out_of_scope = [label for label in labels if label in set(out_of_scope)]
    heads = config.embedding_heads if result.encoder is not None else 1
    _fit(result, train_texts, train_labels, val_texts, val_labels, epochs=config.epochs, lr=config.lr,
         on_epoch=on_epoch, val_is_original=val_is_original, calibrate=heads == 1,
         linear_rows=_originals(train_texts, train_labels, train_is_original))
    if heads > 1:
        _merge_more_heads(result, heads, lambda head, _: _fit(head, train_texts, train_labels, val_texts, val_labels,
                                                              epochs=config.epochs, lr=config.lr, on_epoch=None,
                                                              calibrate=False))
        _score_merged(result, val_texts, val_labels, val_is_original)
    return result


def _new_model(train_texts: Sequence[str], train_labels: Sequence[str], labels: list[str],
               config: TrainConfig, pair_texts: Sequence[str] | None = None) -> TrainedModel:
    """Random weights, and the features of ``train_texts``: their vocabulary, or an encoder (fine-tuned on them)."""
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    if config.featurizer == "embeddings":
        encoder = load_encoder(config.embedding_model, str(device), layers=config.embedding_layers)
        if config.finetune_epochs:
            encoder.finetune(train_texts, train_labels, config.finetune_epochs, config.finetune_lr, config.seed)
        torch.manual_seed(config.seed)
        vocab = Vocabulary([], word_ngrams=1)
    else:
        encoder = None
        vocab = build_vocabulary(train_texts, word_ngrams=config.word_ngrams, char_ngrams=config.char_ngrams,
                                 pair_texts=pair_texts)
    return TrainedModel(model=_network(vocab, labels, config, encoder), vocab=vocab, labels=labels, config=config,
                        device=str(device), encoder=encoder)


def _network(vocab: Vocabulary, labels: list[str], config: TrainConfig,
             encoder: SentenceEncoder | None) -> IntentMLP:
    """A network of ``config``'s shape with fresh weights (torch's seed as it stands): bags of ``vocab``'s features,
    or ``encoder``'s vectors where there is one."""
    return IntentMLP(len(vocab), len(labels), config.hidden_size, config.hidden_layers, config.dropout,
                     input_dim=encoder.dimension if encoder is not None else None)


def train_split(split: Split, config: TrainConfig,
                on_epoch: Callable[[EpochStats, int], None] | None = None) -> TrainedModel:
    """``train_model`` on a split's rows, the out-of-scope threshold calibrated on its validation originals."""
    return train_model([row.text for row in split.train], [row.label for row in split.train],
                       [row.text for row in split.val], [row.label for row in split.val], config,
                       on_epoch=on_epoch, val_is_original=[not row.synthetic for row in split.val],
                       pair_texts=[row.text for row in split.train if not row.synthetic],
                       train_is_original=[not row.synthetic for row in split.train], out_of_scope=split.out_of_scope)


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
    result = _new_model(texts, targets, held_out.labels, held_out.config,
                        [row.text for row in rows if not row.synthetic])
    # The linear model is folded in where the held-out run's validation kept it (``_fold_linear``).
    linear_rows = (_originals(texts, targets, [not row.synthetic for row in rows]) if held_out.linear is not None
                   else None)
    _fit(result, texts, targets, [], [], epochs=epochs, lr=held_out.config.lr, on_epoch=on_epoch, keep_best=False,
         calibrate=False, linear_rows=linear_rows)
    if held_out.head_epochs:
        head_epochs = held_out.head_epochs
        _merge_more_heads(result, len(head_epochs), lambda head, index: _fit(
            head, texts, targets, [], [], epochs=max(head_epochs[index], 1), lr=held_out.config.lr, on_epoch=None,
            keep_best=False, calibrate=False))
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
    sentences it never saw. A served model's own validation figures would be on rows it learnt."""
    served.history, served.best_epoch = list(judged.history), judged.best_epoch
    served.stopped_early, served.oos_threshold = judged.stopped_early, judged.oos_threshold
    served.folded_scores = judged.folded_scores
    served.out_of_scope = list(judged.out_of_scope)


def continue_training(
    production: dict[str, Any],
    new_train: Sequence[Row],
    replay_train: Sequence[Row],
    val: Sequence[Row],
    config: TrainConfig,
    incremental: IncrementalConfig,
    on_epoch: Callable[[EpochStats, int], None] | None = None,
    new_share: float | None = None,
) -> TrainedModel:
    """Start from production's weights and learn ``new_train``, rehearsing ``replay_train``, in two stages.

    The vocabulary is production's, with the features first seen in these rows appended: known features keep their
    row of weights (and their column), new ones start at zero, so the network begins as production's function.

    1. ``incremental.new_feature_epochs``: only the rows of the new features learn; every other weight is frozen.
       A sentence of known features (words, word pairs, character n-grams) is predicted exactly as production
       predicts it, and a new sentence with new features is learnt through them.
    2. ``incremental.epochs``: every weight learns, for what stage 1 could not (new sentences of known features). The
       loss weighs the new rows at ``new_share``, their share of the whole training set (None: as many as they
       are), so the mix of a few new rows and a replay sample pulls no harder toward the new sentences than a full
       retrain would.

    On the bundled outcomes (7 splits, docs/decisions.md) stage 2 alone, unweighted, lost 3.6 points of
    validation accuracy against a full retrain; both stages, weighted, lost none. The labels must be production's;
    the architecture is production's and must match ``config``.
    """
    rows = [*new_train, *replay_train]
    featurizer = production["config"].get("featurizer", "bow")
    if featurizer != config.featurizer:
        raise IntentflowError(f"production is a {featurizer} model and the config asks for {config.featurizer} "
                              "(fix: run a full retrain, mode full)")
    if not new_train:
        raise IntentflowError("incremental training got no new rows (fix: run a full retrain, mode full)")
    if featurizer == "embeddings":
        return _continue_embeddings(production, new_train, replay_train, val, config, incremental, on_epoch,
                                    new_share)
    labels = list(production["labels"])
    architecture = production["config"]
    # A folded linear model widened production's hidden layers; they keep that width (and go on learning).
    linear = architecture.get("linear") if isinstance(architecture.get("linear"), dict) else None
    width = architecture.get("hidden_size")
    expected = {"hidden_size": config.hidden_size, "hidden_layers": config.hidden_layers}
    found = {"hidden_size": width - int(linear["hidden_units"]) if linear and isinstance(width, int) else width,
             "hidden_layers": architecture.get("hidden_layers")}
    if found != expected:
        raise IntentflowError(f"production's network {found} differs from the config's {expected}, so training "
                              "cannot continue from it (fix: run a full retrain, mode full)")
    _check_continuable(rows, val, labels)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    word_ngrams = int(architecture.get("word_ngrams", 1))
    char_ngrams = int(architecture.get("char_ngrams", 0))
    known = set(production["vocab"])
    seen = build_vocabulary([row.text for row in rows], word_ngrams=word_ngrams, char_ngrams=char_ngrams,
                            pair_texts=[row.text for row in rows if not row.synthetic])
    added = [feature for feature in seen.features if feature not in known]
    vocab = Vocabulary([*production["vocab"], *added], word_ngrams=word_ngrams, char_ngrams=char_ngrams)
    model = IntentMLP(len(vocab), len(labels), width, config.hidden_layers, config.dropout)
    state = dict(production["state_dict"])
    old_rows = state["input.weight"]
    grown = torch.zeros((len(vocab), old_rows.shape[1]), dtype=old_rows.dtype)
    grown[: old_rows.shape[0]] = old_rows
    state["input.weight"] = grown
    model.load_state_dict(state)
    logger.info("continuing from production: %d new rows, %d replayed, %d new features (vocabulary %d -> %d)",
                len(new_train), len(replay_train), len(added), old_rows.shape[0], len(vocab))
    result = TrainedModel(model=model, vocab=vocab, labels=labels, config=config, device=str(device),
                          linear=dict(linear) if linear else None,
                          out_of_scope=list((production.get("oos") or {}).get("outcomes") or []))
    texts, targets = [row.text for row in rows], [row.label for row in rows]
    val_texts, val_labels = [row.text for row in val], [row.label for row in val]
    val_is_original = [not row.synthetic for row in val]
    stage_one = incremental.new_feature_epochs if added else 0
    total = stage_one + incremental.epochs
    # All epochs run and the last is kept: validation rarely holds the new sentences, so its loss would pick an
    # epoch before they were learnt. The gate still compares the result with production.
    if stage_one:
        _fit(result, texts, targets, val_texts, val_labels, epochs=stage_one, lr=incremental.new_feature_lr,
             on_epoch=on_epoch, keep_best=False, val_is_original=val_is_original, learn_rows_from=old_rows.shape[0],
             total_epochs=total)
    if incremental.epochs:
        weights = _new_row_weights(len(new_train), len(replay_train), new_share)
        _fit(result, texts, targets, val_texts, val_labels, epochs=incremental.epochs, lr=incremental.lr,
             on_epoch=on_epoch, keep_best=False, val_is_original=val_is_original, row_weights=weights,
             total_epochs=total)
    return result


def _continue_embeddings(production: dict[str, Any], new_train: Sequence[Row], replay_train: Sequence[Row],
                         val: Sequence[Row], config: TrainConfig, incremental: IncrementalConfig,
                         on_epoch: Callable[[EpochStats, int], None] | None, new_share: float | None) -> TrainedModel:
    """An embeddings model continued: production's network (its merged heads) on production's fine-tuned encoder,
    frozen, learns the new rows with the replayed ones for ``incremental.epochs`` at ``incremental.lr`` (stage 2 of
    ``continue_training``; there are no new features to learn first). The encoder is not tuned again, so a taught
    sentence costs seconds, not a fine-tuning run; the monthly full retrain tunes it on everything."""
    from intentflow.inference import build_encoder, build_model

    if not incremental.epochs:
        raise IntentflowError("[incremental] epochs is 0, and an embeddings model learns new sentences only in that "
                              "stage (fix: set [incremental] epochs above 0, or run a full retrain, mode full)")
    labels = list(production["labels"])
    rows = [*new_train, *replay_train]
    _check_continuable(rows, val, labels)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model, vocab, _ = build_model(production)
    encoder = build_encoder(production, str(device))
    result = TrainedModel(model=model.to(device), vocab=vocab, labels=labels, config=config, device=str(device),
                          encoder=encoder, out_of_scope=list((production.get("oos") or {}).get("outcomes") or []))
    logger.info("continuing from production's embeddings model: %d new rows, %d replayed, its encoder frozen",
                len(new_train), len(replay_train))
    _fit(result, [row.text for row in rows], [row.label for row in rows], [row.text for row in val],
         [row.label for row in val], epochs=incremental.epochs, lr=incremental.lr, on_epoch=on_epoch, keep_best=False,
         val_is_original=[not row.synthetic for row in val],
         row_weights=_new_row_weights(len(new_train), len(replay_train), new_share))
    return result


def _check_continuable(rows: Sequence[Row], val: Sequence[Row], labels: list[str]) -> None:
    """Training and validation rows of production's outcomes only: continuing cannot add an output."""
    unknown = sorted({row.label for row in rows} - set(labels))
    if unknown:
        raise IntentflowError(f"outcomes production does not know: {', '.join(unknown)} (fix: run a full retrain, "
                              "mode full)")
    _check_val_labels([row.label for row in val], labels)


def _new_row_weights(new: int, replay: int, new_share: float | None) -> list[float] | None:
    """Loss weights for ``new`` rows followed by ``replay`` rows that give the new ones ``new_share`` of the total.

    None (plain mean) without a share, without replayed rows, or when the new rows already have that share.
    """
    if new_share is None or not replay or not 0.0 < new_share < 1.0:
        return None
    weight = new_share / (1.0 - new_share) * replay / new
    return [weight] * new + [1.0] * replay


def load_encoder(name: str, device: str, state: dict[str, torch.Tensor] | None = None,
                 serving: bool = False, layers: Sequence[int] = ()) -> SentenceEncoder:
    """The sentence encoder ``name`` (empty: the bundled all-MiniLM-L6-v2), ``layers`` appended to its vector.

    For training, vectors of a frozen encoder are cached on disk; ``serving`` keeps none, on disk or in memory.
    """
    from intentflow.encoder import SentenceEncoder

    cache = os.environ.get(CACHE_VARIABLE) or Path.home() / ".cache" / "intentflow" / "embeddings"
    return SentenceEncoder(name, device=device, cache_dir=None if state is not None else cache, state=state,
                           remember=not serving, layers=layers)


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


def _check_val_labels(val_labels: Sequence[str], labels: list[str]) -> None:
    unknown = sorted(set(val_labels) - set(labels))
    if unknown:
        raise IntentflowError(f"validation labels not in the training set: {', '.join(unknown)} "
                              "(fix: re-run prepare so every outcome has training rows)")


def _fit(result: TrainedModel, train_texts: Sequence[str], train_labels: Sequence[str], val_texts: Sequence[str],
         val_labels: Sequence[str], *, epochs: int, lr: float,
         on_epoch: Callable[[EpochStats, int], None] | None, keep_best: bool = True,
         val_is_original: Sequence[bool] | None = None, learn_rows_from: int | None = None,
         row_weights: Sequence[float] | None = None, total_epochs: int | None = None,
         calibrate: bool = True,
         linear_rows: tuple[Sequence[str], Sequence[str]] | None = None) -> TrainedModel:
    """The loop both kinds of training share: epochs of shuffled batches, validate, stop early, keep the best.

    With ``keep_best`` off, every epoch runs and the last one is kept. Epochs are appended to ``result.history``
    (``total_epochs``: how many all calls will run, for ``on_epoch``). ``learn_rows_from``: only the first layer's
    rows from this index on learn, without weight decay; every other weight stays as it is. ``row_weights``: the
    loss weight of each training row (None: all equal). ``calibrate`` off leaves ``result.oos_threshold`` alone
    (a refit takes its held-out run's). ``linear_rows``: texts and labels a linear model learns from once the
    epochs are done, to be folded into a bag-of-words network at ``config.linear_share`` (``intentflow.linear``),
    before the out-of-scope threshold is calibrated on the folded network.
    """
    model, config = result.model, result.config
    device = torch.device(result.device)
    label_index = {label: index for index, label in enumerate(result.labels)}

    # The whole data set lives on the device; batches are drawn by index, with no per-row Python. Bag-of-words
    # rows are kept end to end, without padding (_Bags).
    bags = (None if model.dense_input
            else _Bags(*(tensor.to(device) for tensor in result.vocab.encode_flat(list(train_texts)))))
    train_x = [tensor.to(device) for tensor in result.inputs(train_texts)] if bags is None else []
    train_y = torch.tensor([label_index[label] for label in train_labels], device=device)
    has_val = len(val_texts) > 0
    if has_val:
        val_x = [tensor.to(device) for tensor in result.inputs(val_texts)]
        val_y = torch.tensor([label_index[label] for label in val_labels], device=device)
    elif keep_best:
        logger.warning("no validation rows: early stopping is off; the epoch with the lowest training loss is kept")

    weights = torch.tensor(row_weights, device=device) if row_weights is not None else None
    model.to(device)
    learning = [model.input.weight] if learn_rows_from is not None else list(model.parameters())
    frozen = [parameter for parameter in model.parameters() if all(parameter is not p for p in learning)]
    for parameter in frozen:
        parameter.requires_grad_(False)
    # No weight decay where only some rows learn: it would shrink the frozen rows too.
    decay = config.weight_decay if learn_rows_from is None else 0.0
    rows_adam = (_RowAdam(model.input.weight, lr, decay, learn_rows_from)
                 if _update_rows_only(model, device, bags, config.batch_size) else None)
    if rows_adam is not None:
        learning = [parameter for parameter in learning if parameter is not model.input.weight]
    # The fused kernel updates all parameters in one pass: ten times faster per step than the default on a CPU.
    optimizer = _FusedAdamW(learning, lr=lr, weight_decay=decay) if learning else None
    generator = torch.Generator(device=device).manual_seed(config.seed)
    rows = len(train_y)
    best_loss = float("inf")
    best_state: dict[str, torch.Tensor] | None = None
    epochs_without_gain = 0
    steps = 0

    first = len(result.history) + 1
    total = total_epochs if total_epochs is not None else first - 1 + epochs
    for epoch in range(first, first + epochs):
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        order = torch.randperm(rows, generator=generator, device=device)
        batches = bags.batches(order, config.batch_size) if bags is not None else None
        for start in range(0, rows, config.batch_size):
            batch = order[start:start + config.batch_size]
            if batches is None:
                logits = model(*(tensor[batch] for tensor in train_x))
            else:
                indices, bag_weights, offsets = next(batches)
                rows_used = None
                if rows_adam is not None:
                    used, indices, rows_used = rows_adam.rows(indices)
                logits = model(indices, bag_weights, offsets=offsets, input_rows=rows_used)
            if weights is None:
                loss = F.cross_entropy(logits, train_y[batch], label_smoothing=config.label_smoothing)
            else:
                per_row = F.cross_entropy(logits, train_y[batch], label_smoothing=config.label_smoothing,
                                          reduction="none")
                loss = (per_row * weights[batch]).sum() / weights[batch].sum()
            if optimizer is not None:
                optimizer.zero_grad()
            loss.backward()
            if rows_adam is not None:
                rows_adam.step(used, rows_used)
            elif learn_rows_from is not None:
                # Adam moves a row with zero gradient (and no history) by exactly nothing.
                model.input.weight.grad[:learn_rows_from] = 0
            if optimizer is not None:
                optimizer.step()
                steps += 1
                if steps % SCRUB_EVERY == 0:
                    _scrub_moments(optimizer)
            # Accumulated on the device and read once per epoch: no host sync inside the loop.
            loss_sum += loss.detach() * len(batch)
            correct += (logits.argmax(dim=1) == train_y[batch]).sum()
        if rows_adam is not None:
            rows_adam.decay(math.ceil(rows / config.batch_size))
        summary = [loss_sum / rows, correct / rows]
        if has_val:
            model.eval()
            with torch.no_grad():
                val_logits = model(*val_x)
                summary += [F.cross_entropy(val_logits, val_y, label_smoothing=config.label_smoothing),
                            (val_logits.argmax(dim=1) == val_y).float().mean()]
        values = torch.stack([value.float() for value in summary]).tolist()
        stats = EpochStats(epoch, values[0], values[1], values[2] if has_val else None,
                           values[3] if has_val else None)
        result.history.append(stats)
        logger.info("epoch %d/%d train loss %.4f acc %.4f%s", epoch, total, stats.train_loss,
                    stats.train_accuracy,
                    f" val loss {stats.val_loss:.4f} acc {stats.val_accuracy:.4f}" if has_val else "")
        if on_epoch is not None:
            on_epoch(stats, total)
        monitored = stats.val_loss if has_val else stats.train_loss
        if not keep_best:
            result.best_epoch = epoch
        elif monitored < best_loss * (1 - config.min_delta):
            best_loss = monitored
            result.best_epoch = epoch
            best_state = {name: value.detach().clone() for name, value in model.state_dict().items()}
            epochs_without_gain = 0
        else:
            epochs_without_gain += 1
            if has_val and config.patience and epochs_without_gain >= config.patience:
                result.stopped_early = True
                logger.info("early stop at epoch %d: no better validation loss for %d epochs; keeping epoch %d",
                            epoch, config.patience, result.best_epoch)
                break
    for parameter in frozen:
        parameter.requires_grad_(True)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    if linear_rows is not None:
        _fold_linear(result, *linear_rows, label_index, (val_x, val_y) if has_val else None)
    if calibrate:
        _calibrate(result, (val_x, val_y) if has_val else None, val_is_original)
    return result


def _calibrate(result: TrainedModel, val: tuple[list[torch.Tensor], torch.Tensor] | None,
               val_is_original: Sequence[bool] | None) -> None:
    """``result.oos_threshold`` from the validation rows ``val`` (inputs, targets), the originals among them alone."""
    if val is not None and val_is_original is not None and any(val_is_original):
        keep = torch.tensor(list(val_is_original), device=val[1].device)
        val = [tensor[keep] for tensor in val[0]], val[1][keep]
    result.oos_threshold = _oos_threshold(result, *(val if val is not None else (None, None)))


def _merge_more_heads(result: TrainedModel, heads: int, fit: Callable[[TrainedModel, int], Any]) -> None:
    """Networks 2 to ``heads`` beside the trained ``result.model``, all merged into it (``merge_heads``).

    Network i is a fresh one of seed ``config.seed`` + i (its initialisation, dropout and row order), trained by
    ``fit(network, i)`` on the same sentence vectors (the encoder is shared, its vectors computed once). The merged
    network answers with their mean logits: it keeps what they agree on and averages away each one's own noise.
    """
    config = result.config
    networks, epochs = [result.model], [result.best_epoch]
    for index in range(1, heads):
        head_config = config.model_copy(update={"seed": config.seed + index})
        torch.manual_seed(head_config.seed)
        head = TrainedModel(model=_network(result.vocab, result.labels, config, result.encoder), vocab=result.vocab,
                            labels=result.labels, config=head_config, device=result.device, encoder=result.encoder)
        logger.info("network %d of %d, seed %d", index + 1, heads, head_config.seed)
        fit(head, index)
        networks.append(head.model)
        epochs.append(head.best_epoch)
    result.model = merge_heads(networks)
    result.head_epochs = epochs


def _score_merged(result: TrainedModel, val_texts: Sequence[str], val_labels: Sequence[str],
                  val_is_original: Sequence[bool] | None) -> None:
    """The merged network's validation loss and accuracy (``folded_scores``) and its out-of-scope threshold."""
    if not val_texts:
        _calibrate(result, None, None)
        return
    device = torch.device(result.device)
    label_index = {label: index for index, label in enumerate(result.labels)}
    val_x = [tensor.to(device) for tensor in result.inputs(val_texts)]
    val_y = torch.tensor([label_index[label] for label in val_labels], device=device)
    result.folded_scores = _val_scores(result.model, (val_x, val_y), result.config.label_smoothing)
    _calibrate(result, (val_x, val_y), val_is_original)


def _val_scores(model: IntentMLP, val: tuple[list[torch.Tensor], torch.Tensor],
                label_smoothing: float) -> dict[str, float]:
    """Validation loss and accuracy of ``model`` (in evaluation mode) on ``val`` (inputs, targets)."""
    with torch.no_grad():
        logits = model(*val[0])
    return {"val_loss": float(F.cross_entropy(logits, val[1], label_smoothing=label_smoothing)),
            "val_accuracy": float((logits.argmax(dim=1) == val[1]).float().mean())}


def _originals(texts: Sequence[str], labels: Sequence[str],
               is_original: Sequence[bool] | None) -> tuple[list[str], list[str]]:
    """The rows people wrote (all rows where ``is_original`` is None)."""
    keep = is_original if is_original is not None else [True] * len(texts)
    pairs = [(text, label) for text, label, original in zip(texts, labels, keep, strict=True) if original]
    return [text for text, _ in pairs], [label for _, label in pairs]


def _fold_linear(result: TrainedModel, texts: Sequence[str], labels: Sequence[str], label_index: dict[str, int],
                 val: tuple[list[torch.Tensor], torch.Tensor] | None) -> None:
    """Fit the linear model of ``texts`` and fold it into ``result.model`` at ``linear_share`` (bag-of-words only).

    With validation rows the folded network is scored on them, and kept only if it scores at least the MLP's
    validation accuracy; its loss and accuracy then become the model's (``metrics``), ``history`` keeps the MLP's.
    Otherwise the MLP stays alone and ``result.linear`` None. On CLINC150 the mixture gained 1.7 points; on the
    bundled outcomes, whose validation rows are mostly paraphrases with synonyms the examples never held, it cost 13
    (0.5687 against 0.6985), and the gate rejected the main job (docs/decisions.md).
    """
    share = result.config.linear_share
    if not share or result.model.dense_input or not texts:
        return
    device = torch.device(result.device)
    targets = torch.tensor([label_index[label] for label in labels], device=device)
    weight, bias = fit_linear(result.vocab, texts, targets, len(result.labels), device)
    alone = result.model
    folded = fold_linear(alone, weight, bias, share).eval()
    if val is not None and result.history:
        scores = _val_scores(folded, val, result.config.label_smoothing)
        mlp_accuracy = result.history[result.best_epoch - 1].val_accuracy
        if mlp_accuracy is not None and scores["val_accuracy"] < mlp_accuracy:
            logger.info("linear model of %d examples not folded in: validation accuracy %.4f with it at share %.2f, "
                        "%.4f without", len(texts), scores["val_accuracy"], share, mlp_accuracy)
            return
        result.folded_scores = scores
    result.model = folded
    result.linear = {"share": share, "c": LINEAR_C, "examples": len(texts),
                     "hidden_units": folded.input_bias.shape[0] - alone.input_bias.shape[0]}
    logger.info("linear model of %d examples folded in at share %.2f (%d hidden units more)", len(texts), share,
                result.linear["hidden_units"])


class _Bags:
    """The training rows' index bags laid end to end without padding, drawn batch by batch in an epoch's order.

    The first layer's fast kernel takes bags this way: a padded batch of the bundled outcomes has twice as many
    slots as features, and needs ``padding_idx``, which turns that kernel off (docs/decisions.md). A
    batch's entries are gathered on the device when it is drawn; the batches' sizes are read once an epoch, so no
    step waits on the host.
    """

    def __init__(self, indices: torch.Tensor, weights: torch.Tensor, lengths: torch.Tensor):
        """``Vocabulary.encode_flat``'s tensors: every row's indices and weights end to end, and the rows' lengths."""
        self.indices, self.weights, self.lengths = indices, weights, lengths
        self.starts = torch.cumsum(lengths, dim=0) - lengths
        self.entries = int(indices.numel())

    def entries_per_row(self) -> float:
        return self.entries / max(len(self.lengths), 1)

    def batches(self, order: torch.Tensor,
                batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``(indices, weights, offsets)`` of each batch of ``order``'s rows, ``batch_size`` rows a batch.

        Gathered batch by batch, so memory holds one batch's entries at a time, not an epoch's.
        """
        lengths = self.lengths[order]
        ends = torch.cumsum(lengths, dim=0)
        # Where each batch's entries end, read once an epoch: it sizes the gathers without a sync in the steps.
        highs = ends[batch_size - 1::batch_size].tolist() + ([int(ends[-1])] if len(order) % batch_size else [])
        low = 0
        for start, high in zip(range(0, len(order), batch_size), highs, strict=True):
            rows, counts = order[start:start + batch_size], lengths[start:start + batch_size]
            offsets = torch.cumsum(counts, dim=0) - counts
            # Entry j of the batch is entry j - offsets[r] of its row r, which starts at starts[r] in the data.
            places = torch.repeat_interleave(self.starts[rows] - offsets, counts, output_size=high - low)
            places += torch.arange(high - low, device=places.device)
            yield self.indices[places], self.weights[places], offsets
            low = high


# Adam's moments of a weight whose gradient stays zero (a word no batch holds, padding, a unit ReLU has switched off)
# decay by 0.9 and 0.999 a step, and within a few hundred steps reach denormal floats (below 1.2e-38), which x86 CPUs
# handle a hundred times slower: in the playbook recipe the fused AdamW step took 2.4 ms instead of 0.4 ms by epoch 10
# (docs/decisions.md). Moments below SCRUB_BELOW are zeroed every SCRUB_EVERY steps, which keeps them out
# (1e-30 x 0.9^100 is still 3e-35). Such a moment moves its weight by about lr x 1e-30 / eps (3e-25 at lr 0.003).
# (torch.set_flush_denormal would do it only for the calling thread, not the threads that run the kernels.)
SCRUB_EVERY = 100
SCRUB_BELOW = 1e-30


class _FusedAdamW:
    """``torch.optim.AdamW(fused=True)``'s update, one call of the same kernel a step without the optimiser's
    Python around it (0.16 ms of a 0.69 ms step of the playbook recipe's optimiser, docs/decisions.md).

    The same arithmetic on the same state (``state[parameter]["exp_avg"]``, ``["exp_avg_sq"]``, ``["step"]``), so a
    run is bit for bit what ``torch.optim.AdamW(fused=True)`` gives (tests/core/test_train.py).
    """

    def __init__(self, parameters: Sequence[torch.Tensor], lr: float, weight_decay: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.parameters = list(parameters)
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps
        self.state = {parameter: {"step": torch.zeros((), dtype=torch.float32, device=parameter.device),
                                  "exp_avg": torch.zeros_like(parameter, memory_format=torch.preserve_format),
                                  "exp_avg_sq": torch.zeros_like(parameter, memory_format=torch.preserve_format)}
                      for parameter in self.parameters}

    def zero_grad(self) -> None:
        for parameter in self.parameters:
            parameter.grad = None

    @torch.no_grad()
    def step(self) -> None:
        learning = [parameter for parameter in self.parameters if parameter.grad is not None]
        if not learning:
            return
        states = [self.state[parameter] for parameter in learning]
        steps = [state["step"] for state in states]
        torch._foreach_add_(steps, 1)
        torch._fused_adamw_(learning, [parameter.grad for parameter in learning],
                            [state["exp_avg"] for state in states], [state["exp_avg_sq"] for state in states], [],
                            steps, amsgrad=False, lr=self.lr, beta1=self.betas[0], beta2=self.betas[1],
                            weight_decay=self.weight_decay, eps=self.eps, maximize=False)


def _scrub_moments(optimizer: _FusedAdamW) -> None:
    """Zero the optimiser's moments too small to matter, before they decay into denormals."""
    with torch.no_grad():
        for state in optimizer.state.values():
            for key in ("exp_avg", "exp_avg_sq"):
                moment = state.get(key)
                if moment is not None:
                    moment.masked_fill_(moment.abs() < SCRUB_BELOW, 0.0)


# _RowAdam pays where the vocabulary has more rows than this many times a batch's bag entries. CLINC150's 10-shot set
# augmented x500, with word pairs: 20,395 features, 7,819 entries a batch, 15.8 s an epoch against AdamW's 32.3 s;
# the bundled outcomes: 5,813 features, 6,836 entries, 1.35 s against 0.87 s (docs/decisions.md).
ROWS_ONLY_ABOVE = 2.0


def _update_rows_only(model: IntentMLP, device: torch.device, bags: _Bags | None, batch_size: int) -> bool:
    """Whether the first layer learns through ``_RowAdam``: a bag-of-words network on the CPU, large vocabulary.

    On a CPU AdamW's pass over every row of a large vocabulary is most of a step's time. On a GPU that pass is
    cheap, and finding a batch's rows (``torch.unique``) would stop the host for every step, so the whole weight
    learns there. Deterministic: the choice depends on the data's shape alone, never on timings.
    """
    if model.dense_input or device.type != "cpu" or bags is None or len(bags.lengths) == 0:
        return False
    return model.input.weight.shape[0] > ROWS_ONLY_ABOVE * bags.entries_per_row() * batch_size


class _RowAdam:
    """AdamW for a bag-of-words first layer that reads and writes only the rows a batch uses.

    The rows of the batch's features are gathered into a small leaf tensor the forward pass reads, so the backward
    pass makes a gradient of those rows only, and Adam's moments and the weights are updated there (lazy Adam, as
    TensorFlow's LazyAdam and PyTorch's SparseAdam do: a row's moments advance when its feature occurs). Weight
    decay is decoupled, as AdamW's, and applied to every row once per epoch for the epoch's steps. Row 0 is padding
    and never moves; with ``learn_from``, neither do the rows before it.
    """

    def __init__(self, weight: torch.Tensor, lr: float, weight_decay: float, learn_from: int | None,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.weight, self.lr, self.weight_decay, self.learn_from = weight, lr, weight_decay, learn_from
        self.betas, self.eps, self.steps = betas, eps, 0
        self.first = torch.zeros_like(weight, requires_grad=False)
        self.second = torch.zeros_like(weight, requires_grad=False)
        self.padding = torch.zeros(1, dtype=torch.long, device=weight.device)

    def rows(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The rows ``indices`` use (padding first), the indices renumbered into them, and those rows to learn."""
        used, renumbered = torch.unique(torch.cat([self.padding, indices.flatten()]), return_inverse=True)
        rows = self.weight.detach().index_select(0, used).requires_grad_(True)
        return used, renumbered[1:].view_as(indices), rows

    @torch.no_grad()
    def step(self, used: torch.Tensor, rows: torch.Tensor) -> None:
        grad = rows.grad
        if self.learn_from is not None:
            grad[used < self.learn_from] = 0
        self.steps += 1
        beta1, beta2 = self.betas
        first = self.first.index_select(0, used).mul_(beta1).add_(grad, alpha=1 - beta1)
        second = self.second.index_select(0, used).mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        self.first.index_copy_(0, used, first)
        self.second.index_copy_(0, used, second)
        denominator = (second / (1 - beta2 ** self.steps)).sqrt_().add_(self.eps)
        self.weight.index_add_(0, used, first.div_(denominator), alpha=-self.lr / (1 - beta1 ** self.steps))

    @torch.no_grad()
    def decay(self, steps: int) -> None:
        if self.weight_decay:
            self.weight.mul_((1 - self.lr * self.weight_decay) ** steps)


def _oos_threshold(result: TrainedModel, val_x: list[torch.Tensor] | None, val_y: torch.Tensor | None) -> float | None:
    setting = result.config.oos_threshold
    if setting == "off":
        return None
    if setting != "auto":
        return float(setting)
    if result.encoder is None:
        # Bag-of-words confidences do not separate out-of-scope sentences: on CLINC150 10-shot a threshold calibrated
        # this way caught 50% of them but cost 10.8 points of in-scope accuracy (docs/decisions.md).
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
    threshold = calibrate_oos(probabilities.cpu(), val_y.cpu())
    logger.info("out-of-scope threshold %s, calibrated on %d validation rows", threshold, len(val_y))
    return threshold
