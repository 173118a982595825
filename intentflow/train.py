"""The training loop: forward, loss, backward, step, validate, stop early, keep the best epoch.

``train_model`` starts from random weights, ``refit.refit_model`` trains again on every row, and
``incremental.continue_training`` starts from production's weights; all run the same loop, ``fit``. What it returns
(``trained``), its fast paths (``kernels``), the out-of-scope threshold (``calibration``), the linear model folded
into a bag-of-words network (``linear``) and several heads on one encoder (``heads``) live in their own modules.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from intentflow import calibration
from intentflow.config import TrainConfig
from intentflow.encoder import load_encoder
from intentflow.errors import IntentflowError
from intentflow.features import Vocabulary, build_vocabulary
from intentflow.heads import head_count, merge_more_heads, score_merged
from intentflow.kernels import Bags, Steps
from intentflow.linear import fold_into
from intentflow.model import IntentMLP, network
from intentflow.split import Split
from intentflow.trained import EpochStats, TrainedModel

logger = logging.getLogger(__name__)



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
    result = new_model(train_texts, train_labels, labels, config, pair_texts)
    result.out_of_scope = [label for label in labels if label in set(out_of_scope)]
    heads = head_count(config.embedding_heads, len(train_texts)) if result.encoder is not None else 1
    written = originals(train_texts, train_labels, train_is_original)
    fit(result, train_texts, train_labels, val_texts, val_labels, epochs=config.epochs, lr=config.lr,
        on_epoch=on_epoch, val_is_original=val_is_original, calibrate=heads == 1, linear_rows=written)
    if heads > 1:
        merge_more_heads(result, heads, lambda head, _: fit(head, train_texts, train_labels, val_texts, val_labels,
                                                            epochs=config.epochs, lr=config.lr, on_epoch=None,
                                                            calibrate=False))
        score_merged(result, val_texts, val_labels, val_is_original)
    calibration.remember_examples(result, written[0])
    calibration.calibrate_similarity(result, originals(val_texts, val_labels, val_is_original)[0])
    return result


def new_model(train_texts: Sequence[str], train_labels: Sequence[str], labels: list[str],
              config: TrainConfig, pair_texts: Sequence[str] | None = None) -> TrainedModel:
    """Random weights, and the features of ``train_texts``: their vocabulary, or an encoder (fine-tuned on them)."""
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    if config.featurizer == "embeddings":
        encoder = load_encoder(config.embedding_model, str(device), layers=config.embedding_layers)
        if config.finetune_epochs:
            encoder.finetune(train_texts, train_labels, config.finetune_epochs, config.finetune_lr, config.seed,
                             max_pairs=config.finetune_pairs)
        torch.manual_seed(config.seed)
        vocab = Vocabulary([], word_ngrams=1)
    else:
        encoder = None
        vocab = build_vocabulary(train_texts, word_ngrams=config.word_ngrams, char_ngrams=config.char_ngrams,
                                 pair_texts=pair_texts)
    return TrainedModel(model=network(vocab, labels, config, encoder), vocab=vocab, labels=labels, config=config,
                        device=str(device), encoder=encoder)


def train_split(split: Split, config: TrainConfig,
                on_epoch: Callable[[EpochStats, int], None] | None = None) -> TrainedModel:
    """``train_model`` on a split's rows, the out-of-scope threshold calibrated on its validation originals."""
    return train_model([row.text for row in split.train], [row.label for row in split.train],
                       [row.text for row in split.val], [row.label for row in split.val], config,
                       on_epoch=on_epoch, val_is_original=[not row.synthetic for row in split.val],
                       pair_texts=[row.text for row in split.train if not row.synthetic],
                       train_is_original=[not row.synthetic for row in split.train], out_of_scope=split.out_of_scope)


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


def originals(texts: Sequence[str], labels: Sequence[str],
              is_original: Sequence[bool] | None) -> tuple[list[str], list[str]]:
    """The rows people wrote (all rows where ``is_original`` is None)."""
    keep = is_original if is_original is not None else [True] * len(texts)
    pairs = [(text, label) for text, label, original in zip(texts, labels, keep, strict=True) if original]
    return [text for text, _ in pairs], [label for _, label in pairs]


