"""Incremental retraining: when to continue from production's weights, and which rows to train on then.

A full retrain starts from random weights on every row. When users only added utterances (``intentflow teach``,
new examples), production already knows everything else: training can start from its weights, on the rows of the
new utterances mixed with a replayed sample of the old ones, for a few epochs (first only the weights of new words,
then all of them: ``continue_training``). ``choose_mode`` decides; the
validation set and the gate are the same in both modes.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch

from intentflow import calibration
from intentflow.augment import Row
from intentflow.config import IncrementalConfig, TrainConfig
from intentflow.errors import IntentflowError
from intentflow.features import Vocabulary, build_vocabulary
from intentflow.model import IntentMLP
from intentflow.outcomes import OutcomeSet, normalise_text
from intentflow.report import config_changes
from intentflow.split import Split
from intentflow.train import check_val_labels, fit, resolve_device, train_split
from intentflow.trained import EpochStats, TrainedModel

if TYPE_CHECKING:
    from intentflow.config import Settings

logger = logging.getLogger(__name__)

MODES = ("auto", "full", "incremental")
# What a checkpoint records of the outcomes it was trained on, so the next run can tell what changed.
OUTCOMES_KEY = "outcomes"
# Where a model trained does not change what it is (as in the registry's up-to-date check).
_WHERE_ONLY = ("device",)
_SHOWN = 3


@dataclass(frozen=True)
class ModeDecision:
    mode: Literal["full", "incremental"]
    requested: str
    reason: str
    scheduled: bool = False
    new_originals: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class IncrementalRows:
    """The rows of an incremental run: those of originals production never trained on, and a replayed sample."""

    new: tuple[Row, ...]
    replay: tuple[Row, ...]
    new_originals: tuple[str, ...]
    # The new rows' share of all training rows: the weight of their loss in an incremental run.
    new_share: float = 1.0


def outcome_record(outcomes: OutcomeSet) -> list[dict[str, Any]]:
    """The outcome definitions a model is trained on, as plain data for its checkpoint."""
    return [outcome.to_dict() for outcome in outcomes.outcomes]


def choose_mode(requested: str, outcomes: OutcomeSet, config: dict[str, Any], production: dict[str, Any] | None,
                split: Split, *, scheduled: bool = False) -> ModeDecision:
    """``full`` or ``incremental`` for a run on ``outcomes`` and ``split`` with ``config``, and why.

    ``production`` is the payload of the model production was judged as, its held-out model (None without one).
    ``auto`` is ``incremental`` only when production has the same outcomes, synonyms and config, every original it
    knew is still there under the same outcome, at least one original is new and on the training side of ``split``,
    no original production trained on is in validation, and the run is not scheduled (``scheduled``: the monthly
    run is always full); otherwise ``full``. ``full`` and ``incremental`` force the mode; ``incremental`` is
    refused (``IntentflowError``) when it cannot be done: no production, other outcomes, another network size, or
    nothing new to train on.
    """
    if requested not in MODES:
        raise IntentflowError(f"mode {requested!r} is not one of {', '.join(MODES)}")
    if requested == "full":
        return ModeDecision("full", requested, "full retrain asked for (mode full)", scheduled)
    blocker = _blocker(outcomes, config, production)
    new = _new_originals(outcomes, production) if production is not None else []
    unseen = _unseen_training(split, production) if production is not None else []
    if requested == "incremental":
        if blocker is None and not unseen:
            blocker = "no training sentence is new to production"
        if blocker is None:
            # Forced or not, a candidate is never judged on sentences the model it continues from learnt.
            blocker = _learnt_validation(split, production)
        if blocker is not None:
            raise IntentflowError(f"cannot train incrementally: {blocker} (fix: use mode full or auto)")
        return ModeDecision("incremental", requested, f"incremental asked for (mode incremental); "
                            f"{_count(len(unseen), 'original')} new to training", scheduled, len(unseen))
    if scheduled:
        return ModeDecision("full", requested, "scheduled run: a full retrain every month keeps incremental steps "
                            "from drifting", scheduled)
    reason = blocker or _auto_reason(outcomes, config, production, new, unseen, split)
    if reason is not None:
        return ModeDecision("full", requested, reason, scheduled)
    return ModeDecision("incremental", requested, f"only examples or teach hints were added "
                        f"({_count(len(new), 'new original')}: {_sample(new)}) and production has the same "
                        "outcomes", scheduled, len(new))


def select_incremental_rows(train: Sequence[Row], production: dict[str, Any], replay_ratio: float,
                            seed: int) -> IncrementalRows:
    """Training rows of originals production did not train on, plus ``replay_ratio`` old rows per new row.

    The replay sample takes the same share of every outcome's old rows, so each outcome is rehearsed in proportion.
    """
    trained_on = {normalise_text(text) for text in production.get("train_originals", [])}
    new = tuple(row for row in train if normalise_text(row.original) not in trained_on)
    old = [row for row in train if normalise_text(row.original) in trained_on]
    wanted = min(len(old), round(replay_ratio * len(new)))
    by_label: dict[str, list[Row]] = defaultdict(list)
    for row in old:
        by_label[row.label].append(row)
    rng = random.Random(f"{seed}:replay")
    replay: list[Row] = []
    share = wanted / len(old) if old else 0.0
    for label in sorted(by_label):
        rows = by_label[label]
        # At least one row of every outcome, so none goes unrehearsed.
        count = max(1, round(share * len(rows))) if wanted else 0
        replay.extend(rng.sample(rows, min(len(rows), count)))
    originals = tuple(dict.fromkeys(row.original for row in new))
    return IncrementalRows(new=new, replay=tuple(replay), new_originals=originals,
                           new_share=len(new) / len(train) if train else 1.0)


def _blocker(outcomes: OutcomeSet, config: dict[str, Any], production: dict[str, Any] | None) -> str | None:
    """Why training cannot continue from production at all, or None."""
    if production is None:
        return "there is no production model to start from"
    added = sorted(set(outcomes.labels) - set(production.get("labels", [])))
    removed = sorted(set(production.get("labels", [])) - set(outcomes.labels))
    if added or removed:
        return (f"the outcome set changed (added: {', '.join(added) or 'none'}; removed: "
                f"{', '.join(removed) or 'none'})")
    recorded = production.get("config", {}).get("train", {})
    train = config.get("train", {})
    if recorded.get("featurizer", "bow") != train.get("featurizer", "bow"):
        return (f"the featurizer changed (train.featurizer {recorded.get('featurizer', 'bow')!r} -> "
                f"{train.get('featurizer', 'bow')!r})")
    if train.get("featurizer") == "embeddings" and recorded.get("embedding_model") != train.get("embedding_model"):
        return "the sentence encoder changed (train.embedding_model)"
    for key in ("hidden_size", "hidden_layers"):
        if recorded.get(key) != train.get(key):
            return f"the network changed (train.{key} {recorded.get(key)!r} -> {train.get(key)!r})"
    return None


def _auto_reason(outcomes: OutcomeSet, config: dict[str, Any], production: dict[str, Any],
                 new: list[tuple[str, str]], unseen: list[str], split: Split) -> str | None:
    """Why ``auto`` picks a full retrain although an incremental one is possible (from production), or None."""
    changes = config_changes(_comparable(production.get("config", {})), _comparable(config))
    if changes:
        return f"the config changed ({', '.join(changes)})"
    before = _recorded_outcomes(production)
    if before is None:
        return "production does not record the outcomes it was trained on (made before incremental retraining)"
    changed = [outcome.name for outcome in outcomes.outcomes
               if (before.get(outcome.name) or {}).get("synonyms", {}) != outcome.to_dict().get("synonyms", {})]
    if changed:
        return f"synonyms changed in {', '.join(changed)}: every paraphrase of those outcomes changes"
    now = {(normalise_text(text), outcome.name) for outcome in outcomes.outcomes for text in outcome.originals}
    gone = sorted(text for name, item in before.items() for key in ("examples", "teach_hints")
                  for text in item.get(key, []) if (normalise_text(text), name) not in now)
    if gone:
        return (f"{_count(len(gone), 'original')} removed or moved to another outcome ({_sample(gone)}): a model "
                "cannot unlearn incrementally")
    if not new:
        return "no utterance is new to production (nothing for an incremental run to learn)"
    if not unseen:
        return (f"every new original landed in validation ({_sample(new)}), so an incremental run would have "
                "nothing new to train on")
    return _learnt_validation(split, production)


def _learnt_validation(split: Split, production: dict[str, Any]) -> str | None:
    """Why continuing from ``production`` would be scored on sentences it learnt, or None."""
    if _refit(production):
        # Versions keep their held-out model for this (``production`` is then that one); older ones do not.
        return ("production was refit on its validation rows and keeps no held-out model (it was published before "
                "versions kept one), so an incremental run could not be judged on sentences it never learnt")
    trained_on = {normalise_text(text) for text in production.get("train_originals", [])}
    seen = sorted({row.original for row in split.val if normalise_text(row.original) in trained_on})
    if seen:
        return (f"the split moved {_count(len(seen), 'original')} production trained on into validation "
                f"({_sample(seen)}): starting from production would score it on sentences it learnt")
    return None


def _refit(production: dict[str, Any]) -> bool:
    """Whether production is a model refit on its validation rows after the gate (``[train] refit``)."""
    metrics = production.get("metrics")
    return isinstance(metrics, dict) and bool(metrics.get("refit"))


def _unseen_training(split: Split, production: dict[str, Any]) -> list[str]:
    """Originals on the training side of ``split`` that production did not train on."""
    trained_on = {normalise_text(text) for text in production.get("train_originals", [])}
    return list(dict.fromkeys(row.original for row in split.train if normalise_text(row.original) not in trained_on))


def _recorded_outcomes(production: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    """Production's record of its outcome definitions by name, or None when it has none or it is malformed."""
    recorded = production.get(OUTCOMES_KEY)
    if not isinstance(recorded, list):
        return None
    outcomes = {}
    for item in recorded:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            return None
        lists = [item.get("examples", []), item.get("teach_hints", [])]
        if not isinstance(item.get("synonyms", {}), dict) or not all(
                isinstance(texts, list) and all(isinstance(text, str) for text in texts) for texts in lists):
            return None
        outcomes[item["name"]] = item
    return outcomes


def _new_originals(outcomes: OutcomeSet, production: dict[str, Any]) -> list[tuple[str, str]]:
    """(text, outcome) of every original production neither trained nor validated on."""
    validation = production.get("validation", {}) or {}
    known = {normalise_text(text) for text in [*production.get("train_originals", []),
                                               *validation.get("original", [])]}
    return [(text, outcome.name) for outcome in outcomes.outcomes for text in outcome.originals
            if normalise_text(text) not in known]


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    return {"prepare": config.get("prepare") or {},
            "train": {key: value for key, value in (config.get("train") or {}).items() if key not in _WHERE_ONLY}}


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _sample(items: Sequence[Any]) -> str:
    shown = [f"'{item[0]}'" if isinstance(item, tuple) else f"'{item}'" for item in items[:_SHOWN]]
    return ", ".join(shown) + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


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

    Stage 2 alone, unweighted, loses accuracy against a full retrain; both stages, weighted, do not
    (docs/decisions.md). The labels must be production's; the architecture is production's and must
    match ``config``.
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
    vocab = Vocabulary([*production["vocab"], *added], word_ngrams=word_ngrams, char_ngrams=char_ngrams,
                       word_share=architecture.get("word_share"))
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
        fit(result, texts, targets, val_texts, val_labels, epochs=stage_one, lr=incremental.new_feature_lr,
            on_epoch=on_epoch, keep_best=False, val_is_original=val_is_original, learn_rows_from=old_rows.shape[0],
            total_epochs=total)
    if incremental.epochs:
        weights = _new_row_weights(len(new_train), len(replay_train), new_share)
        fit(result, texts, targets, val_texts, val_labels, epochs=incremental.epochs, lr=incremental.lr,
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
    fit(result, [row.text for row in rows], [row.label for row in rows], [row.text for row in val],
        [row.label for row in val], epochs=incremental.epochs, lr=incremental.lr, on_epoch=on_epoch, keep_best=False,
        val_is_original=[not row.synthetic for row in val],
        row_weights=_new_row_weights(len(new_train), len(replay_train), new_share))
    # The encoder is production's, frozen: production's example vectors stay right, and the new sentences join them.
    oos = production.get("oos") or {}
    known = oos.get("examples")
    new = [row.text for row in new_train if not row.synthetic]
    calibration.remember_examples(result, new if known is not None else [*production.get("train_originals", []), *new],
                                  known=known)
    # Production's similarity threshold, chosen on validation originals its held-out run never saw; a continued
    # run's validation rows are few and mostly replayed.
    chosen = oos.get("similarity")
    if result.examples is not None and chosen is not None:
        result.oos_similarity = min(float(chosen), float(config.oos_similarity))
    return result


def _check_continuable(rows: Sequence[Row], val: Sequence[Row], labels: list[str]) -> None:
    """Training and validation rows of production's outcomes only: continuing cannot add an output."""
    unknown = sorted({row.label for row in rows} - set(labels))
    if unknown:
        raise IntentflowError(f"outcomes production does not know: {', '.join(unknown)} (fix: run a full retrain, "
                              "mode full)")
    check_val_labels([row.label for row in val], labels)


def _new_row_weights(new: int, replay: int, new_share: float | None) -> list[float] | None:
    """Loss weights for ``new`` rows followed by ``replay`` rows that give the new ones ``new_share`` of the total.

    None (plain mean) without a share, without replayed rows, or when the new rows already have that share.
    """
    if new_share is None or not replay or not 0.0 < new_share < 1.0:
        return None
    weight = new_share / (1.0 - new_share) * replay / new
    return [weight] * new + [1.0] * replay


@dataclass(frozen=True)
class ModeTraining:
    """What training in the chosen mode made, and what the version records about it."""

    trained: TrainedModel
    # Every original the new weights have learnt from, so a later gate does not score them on those.
    train_originals: list[str]
    # The run's record of its training: the mode decision, plus the base version and rows when incremental.
    record: dict[str, Any]


def train_in_mode(chosen: ModeDecision, split: Split, production: dict[str, Any] | None, settings: Settings,
                  production_name: str | None = None, *,
                  select: Callable[..., IncrementalRows] = select_incremental_rows,
                  resume: Callable[..., TrainedModel] = continue_training,
                  full: Callable[..., TrainedModel] = train_split) -> ModeTraining:
    """Train as ``chosen`` says: from production's weights on new and replayed rows, or from scratch on ``split``.

    The steps are parameters so the flow can pass its Prefect tasks (each shown in the UI) and the benchmark the
    plain functions, and both run exactly this.
    """
    record: dict[str, Any] = chosen.to_dict()
    train_originals = [row.original for row in split.train]
    if chosen.mode != "incremental":
        return ModeTraining(full(split, settings.train), train_originals, record)
    if production is None:
        raise IntentflowError("cannot train incrementally: there is no production model (fix: use mode full)")
    rows = select(split.train, production, settings.incremental.replay_ratio, settings.prepare.seed)
    trained = resume(production, rows.new, rows.replay, split.val, settings.train, settings.incremental,
                     new_share=rows.new_share)
    # Everything production learnt is in the new weights too.
    train_originals += production.get("train_originals", [])
    record.update(base_version=production_name, new_rows=len(rows.new), replay_rows=len(rows.replay),
                  new_share=round(rows.new_share, 4), incremental=settings.incremental.model_dump())
    return ModeTraining(trained, train_originals, record)

