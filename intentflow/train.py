"""The training loop: forward, loss, backward, step, validate, stop early, keep the best epoch.

``train_model`` starts from random weights, ``refit_model`` trains again on every row, and
``incremental.continue_training`` starts from production's weights; all run the same loop, ``fit``. Its fast paths
(``kernels``), the out-of-scope threshold (``calibration``) and the linear model folded into a bag-of-words network
(``linear``) live in their own modules.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from intentflow import calibration
from intentflow.config import TrainConfig
from intentflow.errors import IntentflowError
from intentflow.features import Vocabulary, build_vocabulary
from intentflow.kernels import Bags, Steps
from intentflow.linear import fold_into
from intentflow.model import IntentMLP, merge_heads, val_scores
from intentflow.split import Split

if TYPE_CHECKING:
    from intentflow.encoder import SentenceEncoder

logger = logging.getLogger(__name__)

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
    check_val_labels(val_labels, labels)
    if config.oos_threshold != "off" and config.unknown_label in labels:
        raise IntentflowError(f"an outcome is named {config.unknown_label!r}, the label of out-of-scope predictions "
                              "(fix: rename the outcome, or set [train] unknown_label to another name)")
    result = _new_model(train_texts, train_labels, labels, config, pair_texts)
    result.out_of_scope = [label for label in labels if label in set(out_of_scope)]
    heads = config.embedding_heads if result.encoder is not None else 1
    fit(result, train_texts, train_labels, val_texts, val_labels, epochs=config.epochs, lr=config.lr,
        on_epoch=on_epoch, val_is_original=val_is_original, calibrate=heads == 1,
        linear_rows=_originals(train_texts, train_labels, train_is_original))
    if heads > 1:
        _merge_more_heads(result, heads, lambda head, _: fit(head, train_texts, train_labels, val_texts, val_labels,
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
    # The linear model is folded in where the held-out run's validation kept it (``linear.fold_into``).
    linear_rows = (_originals(texts, targets, [not row.synthetic for row in rows]) if held_out.linear is not None
                   else None)
    fit(result, texts, targets, [], [], epochs=epochs, lr=held_out.config.lr, on_epoch=on_epoch, keep_best=False,
        calibrate=False, linear_rows=linear_rows)
    if held_out.head_epochs:
        head_epochs = held_out.head_epochs
        _merge_more_heads(result, len(head_epochs), lambda head, index: fit(
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


def load_encoder(name: str, device: str, state: dict[str, torch.Tensor] | None = None,
                 serving: bool = False, layers: Sequence[int] = ()) -> SentenceEncoder:
    """The sentence encoder ``name`` (empty: the bundled all-MiniLM-L6-v2), ``layers`` appended to its vector.

    For training, vectors of a frozen encoder are cached on disk; ``serving`` keeps none, on disk or in memory.
    """
    from intentflow.encoder import SentenceEncoder

    cache = os.environ.get(CACHE_VARIABLE) or Path.home() / ".cache" / "intentflow" / "embeddings"
    return SentenceEncoder(name, device=device, cache_dir=None if state is not None else cache, state=state,
                           remember=not serving, layers=layers)


def check_val_labels(val_labels: Sequence[str], labels: list[str]) -> None:
    unknown = sorted(set(val_labels) - set(labels))
    if unknown:
        raise IntentflowError(f"validation labels not in the training set: {', '.join(unknown)} "
                              "(fix: re-run prepare so every outcome has training rows)")


def fit(result: TrainedModel, train_texts: Sequence[str], train_labels: Sequence[str], val_texts: Sequence[str],
        val_labels: Sequence[str], *, epochs: int, lr: float,
        on_epoch: Callable[[EpochStats, int], None] | None, keep_best: bool = True,
        val_is_original: Sequence[bool] | None = None, learn_rows_from: int | None = None,
        row_weights: Sequence[float] | None = None, total_epochs: int | None = None, calibrate: bool = True,
        linear_rows: tuple[Sequence[str], Sequence[str]] | None = None) -> TrainedModel:
    """The loop every kind of training shares: epochs of shuffled batches, validate, stop early, keep the best.

    With ``keep_best`` off, every epoch runs and the last one is kept. Epochs are appended to ``result.history``
    (``total_epochs``: how many all calls will run, for ``on_epoch``). ``learn_rows_from``: only the first layer's
    rows from this index on learn (``kernels.Steps``). ``row_weights``: the loss weight of each training row (None:
    all equal). ``calibrate`` off leaves ``result.oos_threshold`` alone (a refit takes its held-out run's).
    ``linear_rows``: texts and labels of a linear model folded into a bag-of-words network once the epochs are done
    (``linear.fold_into``), before the out-of-scope threshold is calibrated on the folded network.
    """
    model, config = result.model, result.config
    device = torch.device(result.device)
    label_index = {label: index for index, label in enumerate(result.labels)}
    model.to(device)
    # The whole data set lives on the device; batches are drawn by index, with no per-row Python.
    if model.dense_input:
        train_inputs: list[torch.Tensor] | Bags = [tensor.to(device) for tensor in result.inputs(train_texts)]
    else:
        train_inputs = Bags(*(tensor.to(device) for tensor in result.vocab.encode_flat(list(train_texts))))
    train_y = torch.tensor([label_index[label] for label in train_labels], device=device)
    weights = torch.tensor(row_weights, device=device) if row_weights is not None else None
    val = None
    if val_texts:
        val = ([tensor.to(device) for tensor in result.inputs(val_texts)],
               torch.tensor([label_index[label] for label in val_labels], device=device))
    elif keep_best:
        logger.warning("no validation rows: early stopping is off; the epoch with the lowest training loss is kept")
    generator = torch.Generator(device=device).manual_seed(config.seed)
    best_loss, best_state, epochs_without_gain = float("inf"), None, 0
    first = len(result.history) + 1
    total = total_epochs if total_epochs is not None else first - 1 + epochs

    with Steps(model, train_inputs, lr, config.weight_decay, config.batch_size, learn_rows_from) as steps:
        for epoch in range(first, first + epochs):
            model.train()
            # Summed on the device and read once an epoch: no host sync inside the loop.
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            order = torch.randperm(len(train_y), generator=generator, device=device)
            for batch, inputs in steps.batches(order):
                logits = model(*inputs)
                loss = _loss(logits, train_y[batch], config.label_smoothing,
                             weights[batch] if weights is not None else None)
                steps.learn(loss)
                loss_sum += loss.detach() * len(batch)
                correct += (logits.argmax(dim=1) == train_y[batch]).sum()
            steps.end_epoch()
            stats = _epoch_stats(epoch, loss_sum, correct, len(train_y), model, val, config.label_smoothing)
            result.history.append(stats)
            logger.info("epoch %d/%d train loss %.4f acc %.4f%s", epoch, total, stats.train_loss,
                        stats.train_accuracy,
                        f" val loss {stats.val_loss:.4f} acc {stats.val_accuracy:.4f}" if val is not None else "")
            if on_epoch is not None:
                on_epoch(stats, total)
            monitored = stats.val_loss if stats.val_loss is not None else stats.train_loss
            if not keep_best:
                result.best_epoch = epoch
            elif monitored < best_loss * (1 - config.min_delta):
                best_loss, result.best_epoch, epochs_without_gain = monitored, epoch, 0
                best_state = {name: value.detach().clone() for name, value in model.state_dict().items()}
            else:
                epochs_without_gain += 1
                if val is not None and config.patience and epochs_without_gain >= config.patience:
                    result.stopped_early = True
                    logger.info("early stop at epoch %d: no better validation loss for %d epochs; keeping epoch %d",
                                epoch, config.patience, result.best_epoch)
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    if linear_rows is not None:
        fold_into(result, *linear_rows, label_index, val)
    if calibrate:
        calibration.calibrate(result, val, val_is_original)
    return result


def _loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float,
          weights: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy, each row weighted by ``weights`` where given."""
    if weights is None:
        return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
    per_row = F.cross_entropy(logits, targets, label_smoothing=label_smoothing, reduction="none")
    return (per_row * weights).sum() / weights.sum()


def _epoch_stats(epoch: int, loss_sum: torch.Tensor, correct: torch.Tensor, rows: int, model: IntentMLP,
                 val: tuple[list[torch.Tensor], torch.Tensor] | None, label_smoothing: float) -> EpochStats:
    """The epoch's training loss and accuracy, and the network's on the validation rows (one host sync)."""
    summary = [loss_sum / rows, correct / rows]
    if val is not None:
        model.eval()
        with torch.no_grad():
            val_logits = model(*val[0])
        summary += [F.cross_entropy(val_logits, val[1], label_smoothing=label_smoothing),
                    (val_logits.argmax(dim=1) == val[1]).float().mean()]
    values = torch.stack([value.float() for value in summary]).tolist()
    return EpochStats(epoch, values[0], values[1], *(values[2:] if val is not None else (None, None)))


def _merge_more_heads(result: TrainedModel, heads: int, train_head: Callable[[TrainedModel, int], Any]) -> None:
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
        head = TrainedModel(model=_network(result.vocab, result.labels, config, result.encoder), vocab=result.vocab,
                            labels=result.labels, config=head_config, device=result.device, encoder=result.encoder)
        logger.info("network %d of %d, seed %d", index + 1, heads, head_config.seed)
        train_head(head, index)
        networks.append(head.model)
        epochs.append(head.best_epoch)
    result.model = merge_heads(networks)
    result.head_epochs = epochs


def _score_merged(result: TrainedModel, val_texts: Sequence[str], val_labels: Sequence[str],
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


def _originals(texts: Sequence[str], labels: Sequence[str],
               is_original: Sequence[bool] | None) -> tuple[list[str], list[str]]:
    """The rows people wrote (all rows where ``is_original`` is None)."""
    keep = is_original if is_original is not None else [True] * len(texts)
    pairs = [(text, label) for text, label, original in zip(texts, labels, keep, strict=True) if original]
    return [text for text, _ in pairs], [label for _, label in pairs]


