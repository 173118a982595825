"""The ``retrain`` flow: outcomes -> augment -> split -> train -> evaluate -> gate -> publish."""

# No `from __future__ import annotations` here: `intentflow serve` sends the flow function to each run's process by
# value (cloudpickle), without this module's globals, so a string annotation "RetrainParameters" could not be resolved
# there and every served run would fail parameter validation. Real annotations are pickled by reference.
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State
from prefect.utilities.annotations import opaque
from pydantic import BaseModel, ConfigDict, Field

from intentflow.checkpoint import build_payload, load_checkpoint
from intentflow.config import MAX_CHAR_NGRAMS, MAX_WORD_NGRAMS, Settings, load_settings
from intentflow.errors import IntentflowError
from intentflow.evaluate import Evaluation
from intentflow.gate import GateDecision
from intentflow.incremental import OUTCOMES_KEY, ModeDecision, outcome_record, train_in_mode
from intentflow.inference import Classifier, build_model
from intentflow.onnx_export import require_exporter
from intentflow.outcomes import OutcomeSet
from intentflow.outcomes import load_outcomes as read_outcomes
from intentflow.registry import Registry
from intentflow.report import release_notes
from intentflow.split import Split
from intentflow.train import TrainedModel
from tasks.augment import augment_outcomes
from tasks.evaluate import evaluate_model
from tasks.gate import gate_candidate
from tasks.incremental import choose_mode, select_incremental_rows
from tasks.outcomes import load_outcomes
from tasks.publish import publish_version
from tasks.split import split_rows
from tasks.train import continue_training, refit_model, train_model

VERSIONS_ARTIFACT_KEY = "intent-model-versions"
REPORT_ARTIFACT_KEY = "intent-model-report"
CHECKPOINT_ARTIFACT_KEY = "intent-model-checkpoint"
FROM_FILE = "empty = the value in config/training.toml"
# The tag Prefect's scheduler gives every run it creates from a deployment's schedule.
SCHEDULED_TAG = "auto-scheduled"


class RetrainParameters(BaseModel):
    """Everything a retrain run can be told. Empty overrides keep the value in ``config/training.toml``."""

    model_config = ConfigDict(extra="forbid")

    outcomes: str = Field("config/outcomes", description="Folder of outcome definition files")
    registry: str = Field("artifacts", description="Model registry folder")
    config: str | None = Field(None, description="Settings file; empty = config/training.toml")
    augment_factor: int | None = Field(None, ge=0, le=100_000, description=f"Synthetic sentences per outcome "
                                       f"(playbook 500); {FROM_FILE}")
    epochs: int | None = Field(None, ge=1, le=100_000, description=f"Most epochs (playbook 1000); {FROM_FILE}")
    lr: float | None = Field(None, gt=0, le=1, description=f"AdamW learning rate (playbook 0.003); {FROM_FILE}")
    batch_size: int | None = Field(None, ge=1, le=1_000_000, description=f"Rows per step (playbook 64); {FROM_FILE}")
    hidden_size: int | None = Field(None, ge=1, le=16_384, description=f"Hidden width (playbook 512); {FROM_FILE}")
    hidden_layers: int | None = Field(None, ge=1, le=32, description=f"Hidden layers (1; playbook 4); {FROM_FILE}")
    dropout: float | None = Field(None, ge=0, lt=1, description=f"Dropout (playbook 0.45); {FROM_FILE}")
    weight_decay: float | None = Field(None, ge=0, le=1, description=f"Weight decay (playbook 1e-4); {FROM_FILE}")
    patience: int | None = Field(None, ge=0, description=f"Early-stopping patience, 0 = off (20); {FROM_FILE}")
    min_delta: float | None = Field(None, ge=0, lt=1, description=f"Early stopping: share by which a validation "
                                    f"loss must beat the best (0.01); {FROM_FILE}")
    seed: int | None = Field(None, ge=0, description=f"Seed of data and training (playbook 2025); {FROM_FILE}")
    device: Literal["auto", "cpu", "cuda"] | None = Field(None, description=f"Where to train; {FROM_FILE}")
    threshold: float | None = Field(None, ge=0, le=2, description=f"Validation accuracy to promote (0.60); above 1 "
                                     f"never promotes (a dry run); {FROM_FILE}")
    label_smoothing: float | None = Field(None, ge=0, lt=1, description=f"Label smoothing (0.1); {FROM_FILE}")
    featurizer: Literal["bow", "embeddings"] | None = Field(
        None, description=f"bow, or embeddings from a sentence encoder (needs intentflow[embeddings]); {FROM_FILE}")
    word_ngrams: int | None = Field(None, ge=1, le=MAX_WORD_NGRAMS, description=f"Bag-of-words: single words and "
                                    f"runs of up to this many words, 1 = single words only (2); {FROM_FILE}")
    char_ngrams: int | None = Field(None, ge=0, le=MAX_CHAR_NGRAMS, description=f"Bag-of-words: also character "
                                    f"n-grams of 2 to this many characters inside each word, 0 = words only (5); "
                                    f"{FROM_FILE}")
    linear_share: float | None = Field(None, ge=0, le=1, description=f"Bag-of-words: share of the logits from a "
                                       f"logistic regression on the examples, 0 = MLP alone (0.5); {FROM_FILE}")
    embedding_model: str | None = Field(None, max_length=1000, description=f"Sentence encoder, hub name or folder "
                                        f"(bundled all-MiniLM-L6-v2); {FROM_FILE}")
    finetune_epochs: int | None = Field(None, ge=0, le=1000, description=f"Contrastive fine-tuning epochs of the "
                                        f"encoder, 0 = frozen (6); {FROM_FILE}")
    finetune_lr: float | None = Field(None, gt=0, le=1, description=f"Learning rate of the encoder's fine-tuning "
                                      f"(5e-05); {FROM_FILE}")
    embedding_layers: list[int] | None = Field(None, max_length=64, description=f"Hidden layers of the encoder "
                                               f"(0 = word embeddings) whose averaged token states are appended to "
                                               f"its sentence vector, [] = none ([4]); {FROM_FILE}")
    embedding_heads: int | None = Field(None, ge=1, le=32, description=f"Networks trained from consecutive seeds on "
                                        f"the same sentence vectors, merged to average their logits (5); {FROM_FILE}")
    refit: bool | None = Field(None, description=f"After the gate passes, train again on the training and validation "
                               f"rows for the chosen epoch count and publish that model (true); {FROM_FILE}")
    oos_threshold: Literal["auto", "off"] | float | None = Field(
        None, description=f"Confidence below which the answer is unknown: auto (calibrated), off, or 0-1; {FROM_FILE}")
    unknown_label: str | None = Field(None, min_length=1, max_length=200, description=f"Label of out-of-scope "
                                      f"answers (unknown); {FROM_FILE}")
    onnx: bool | None = Field(None, description=f"Also publish <version>.onnx with each version (needs "
                              f"intentflow[onnx]); {FROM_FILE}")
    force: bool = Field(False, description="Retrain even when production already matches outcomes and config")
    mode: Literal["auto", "full", "incremental"] = Field(
        "auto", description="auto: incremental (from production's weights) when only examples or teach hints were "
        "added, else full; full or incremental force one")
    changed_paths: list[str] = Field(default_factory=list, description="Outcome files whose change triggered "
                                     "this run (filled in by the outcome-change trigger)")

    def settings(self) -> Any:
        train_keys = ("epochs", "lr", "batch_size", "hidden_size", "hidden_layers", "dropout", "weight_decay",
                      "patience", "min_delta", "seed", "device", "label_smoothing", "featurizer", "word_ngrams",
                      "char_ngrams", "linear_share", "embedding_model", "finetune_epochs", "finetune_lr",
                      "embedding_layers", "embedding_heads", "refit", "oos_threshold", "unknown_label")
        return load_settings(self.config).with_overrides(
            prepare={"augment_factor": self.augment_factor, "seed": self.seed},
            train={key: getattr(self, key) for key in train_keys},
            gate={"threshold": self.threshold},
            publish={"onnx": self.onnx},
        )


def whole(task_function: Callable[..., Any]) -> Callable[..., Any]:
    """``task_function`` with each argument passed as Prefect's ``opaque``: Prefect still links the task to the task
    whose result an argument is, but does not walk into it. Walking a split's 9,000 rows to look for futures took
    0.4 s, and rebuilding them 0.4 s more, at every task call that took them (the augmented rows 1.1 s)."""
    def call(*args: Any, **kwargs: Any) -> Any:
        return task_function(*map(opaque, args), **{name: opaque(value) for name, value in kwargs.items()})

    return call


def run_name() -> str:
    """``retrain-2026-11-24-<hash>``: the date and the outcome content the run trains on."""
    parameters = flow_run.parameters or {}
    params = parameters.get("params") or {}
    folder = params.get("outcomes") if isinstance(params, dict) else getattr(params, "outcomes", None)
    try:
        content = read_outcomes(folder or "config/outcomes").content_hash[:8]
    except IntentflowError:
        content = "invalid-outcomes"
    return f"retrain-{datetime.now(UTC):%Y-%m-%d}-{content}"


@flow(name="retrain", flow_run_name=run_name, validate_parameters=True, persist_result=False)
def retrain(params: RetrainParameters = RetrainParameters()) -> State:  # noqa: B008 - the UI form's defaults
    """Retrain the intent classifier and publish it if it passes the gate."""
    logger = get_run_logger()
    try:
        return _retrain(params, logger)
    except IntentflowError as error:
        logger.error("%s", error)
        return Failed(message=str(error))


def scheduled_run() -> bool:
    """Whether this run was created by the deployment's schedule (the monthly run), not by a trigger or a person."""
    return SCHEDULED_TAG in (flow_run.tags or [])


def _retrain(params: RetrainParameters, logger: Any) -> State:
    settings = params.settings()
    if settings.publish.onnx:
        require_exporter()
    if params.changed_paths:
        logger.info("triggered by changes to: %s", ", ".join(params.changed_paths))
    scheduled = scheduled_run()
    outcome_set = load_outcomes(params.outcomes)
    for warning in outcome_set.warnings:
        logger.warning("%s", warning)
    registry = Registry(params.registry)
    config = {"prepare": settings.prepare.model_dump(), "train": settings.train.model_dump()}
    current = registry.up_to_date(outcome_set.content_hash, config)
    # The monthly run (and mode full) consolidates: production trained incrementally is retrained in full even when
    # nothing changed since.
    trained_as = (current.info.get("training") if current is not None else None) or {}
    consolidate = (isinstance(trained_as, dict) and trained_as.get("mode") == "incremental"
                   and (params.mode == "full" or (scheduled and params.mode == "auto")))
    if current is not None and not params.force and not consolidate:
        message = (f"up to date: production {current.name} was trained on these outcomes "
                   f"({outcome_set.content_hash[:12]}) with this config; pass force to retrain")
        logger.info(message)
        _versions_table(registry)
        return Completed(message=message)

    augmented = augment_outcomes(outcome_set, settings.prepare.augment_factor, settings.prepare.seed)
    for label, made in augmented.shortfalls.items():
        logger.warning("%s: %d unique synthetic sentences of %d asked", label, made, augmented.requested)
    split = whole(split_rows)(augmented, settings.prepare.train_fraction, settings.prepare.min_val_per_label,
                       settings.prepare.seed, frozenset(outcome_set.teach_hints))
    for label in split.leaky_labels:
        logger.warning("%s has a single original: its validation rows paraphrase training rows", label)
    split = split.for_featurizer(settings.train.featurizer)

    production_version = registry.production()
    production = production_payload = None
    if production_version is not None:
        try:
            production_payload = load_checkpoint(production_version.checkpoint)
            production = Classifier(*build_model(production_payload), payload=production_payload)
        except IntentflowError as error:
            logger.warning("production %s cannot be loaded, so it is neither compared nor continued from: %s",
                           production_version.name, error)
    chosen = whole(choose_mode)(params.mode, outcome_set, config, production_payload, split, scheduled=scheduled)
    logger.info("training mode %s: %s", chosen.mode, chosen.reason)
    production_name = production_version.name if production_version else None
    attempt = _train_and_gate(chosen, outcome_set, split, settings, production_payload, production, production_name)
    if chosen.mode == "incremental" and chosen.requested == "auto" and not attempt.decision.promote:
        # An incremental run inherits production's weights; when the gate turns it down, a full retrain (new
        # weights, every row) still ships what was taught if it passes. The rejected attempt is recorded, not
        # published.
        logger.warning("the incremental candidate was rejected (%s); retraining in full", attempt.decision.reason)
        fallback = ModeDecision("full", chosen.requested, f"the incremental candidate was rejected "
                                f"({attempt.decision.reason}), so this run retrained in full", chosen.scheduled)
        rejected = {"val_accuracy": attempt.evaluation.accuracy, "gate": attempt.decision.reason,
                    "new_rows": attempt.training.get("new_rows"), "replay_rows": attempt.training.get("replay_rows")}
        attempt = _train_and_gate(fallback, outcome_set, split, settings, production_payload, production,
                                  production_name, extra_training={"incremental_attempt": rejected})
        chosen = fallback
    payload, evaluation, decision = attempt.payload, attempt.evaluation, attempt.decision
    mode = f"{chosen.mode} ({chosen.reason})"
    refit = (payload.get("training") or {}).get("refit")
    if refit:
        mode += (f"; then refit on all {refit['rows']} rows for {refit['epochs']} epochs, the validation accuracy "
                 "being the held-out model's" if refit["published"] else
                 "; the refit on all rows scored below the held-out model on its own rows, so the held-out model "
                 "is published")
    notes = release_notes(payload, production_payload, production_name, mode=mode)
    run = {"flow_run_id": str(flow_run.id), "flow_run_name": flow_run.name, "changed_paths": params.changed_paths}
    publication = whole(publish_version)(params.registry, payload, evaluation, decision, notes, run,
                                  onnx=settings.publish.onnx)

    verdict = "promoted" if decision.promote else "rejected"
    create_markdown_artifact(key=REPORT_ARTIFACT_KEY, markdown=publication.report,
                             description=f"{publication.version}: {verdict} ({chosen.mode} training)")
    create_link_artifact(key=CHECKPOINT_ARTIFACT_KEY, link=publication.checkpoint.resolve().as_uri(),
                         link_text=f"{publication.version} checkpoint",
                         description=f"Checkpoint of {publication.version}")
    _versions_table(registry)
    if not decision.promote:
        return Failed(message=f"gate rejected {publication.version}: {decision.reason}; production "
                              f"{publication.production or '(none)'} is unchanged")
    return Completed(message=f"promoted {publication.version} to production: {decision.reason}")


@dataclass(frozen=True)
class _Attempt:
    payload: dict[str, Any]
    evaluation: Evaluation
    decision: GateDecision
    training: dict[str, Any]


def _train_and_gate(chosen: ModeDecision, outcome_set: OutcomeSet, split: Split, settings: Settings,
                    production_payload: dict[str, Any] | None, production: Classifier | None,
                    production_name: str | None, extra_training: dict[str, Any] | None = None) -> _Attempt:
    """Train in ``chosen``'s mode, build the version's payload, evaluate it and let the gate decide."""
    mode_training = train_in_mode(chosen, split, production_payload, settings, production_name,
                                  select=whole(select_incremental_rows), resume=whole(continue_training),
                                  full=whole(train_model))
    trained, training = mode_training.trained, {**mode_training.record, **(extra_training or {})}
    val_texts = [row.text for row in split.val]
    val_labels = [row.label for row in split.val]
    payload, candidate = _version(trained, split, outcome_set, settings, mode_training.train_originals, training)
    evaluation = whole(evaluate_model)(candidate, val_texts, val_labels)
    decision = whole(gate_candidate)(evaluation.accuracy, trained.labels, val_texts, val_labels, settings.gate,
                              production, production_name, candidate=candidate,
                              val_originals=[row.original for row in split.val],
                              candidate_trained_on=payload["train_originals"])
    if chosen.mode == "full" and settings.train.refit and decision.promote and split.val:
        payload = _refit(trained, split, evaluation, payload, outcome_set, settings, training)
    return _Attempt(payload, evaluation, decision, training)


def _version(trained: TrainedModel, split: Split, outcome_set: OutcomeSet, settings: Settings,
             train_originals: list[str], training: dict[str, Any]) -> tuple[dict[str, Any], Classifier]:
    """The payload a version of ``trained`` is published as, and a classifier of it to evaluate."""
    payload = build_payload(trained, outcome_hash=outcome_set.content_hash, prepare=settings.prepare.model_dump(),
                            val_texts=[row.text for row in split.val], val_labels=[row.label for row in split.val],
                            val_originals=[row.original for row in split.val], train_originals=train_originals,
                            extra={OUTCOMES_KEY: outcome_record(outcome_set), "training": training})
    # The encoder of an embeddings model is the one just trained with, not a second copy loaded from the payload.
    return payload, Classifier(*build_model(payload), payload=payload, encoder=trained.encoder)


def _refit(held_out: TrainedModel, split: Split, evaluation: Evaluation, payload: dict[str, Any],
           outcome_set: OutcomeSet, settings: Settings, training: dict[str, Any]) -> dict[str, Any]:
    """The payload of the model refit on every row, or ``payload`` (the held-out model's) if the refit is worse.

    The gate judged the held-out model; the refit trains the same way on the validation rows too. It must score at
    least as well as the held-out model on those rows (it has learnt them), or something went wrong and the
    held-out model is published instead. Either way ``training["refit"]`` says what happened.
    """
    logger = get_run_logger()
    refitted = whole(refit_model)(held_out, split)
    refit_payload, refit_classifier = _version(refitted, split, outcome_set, settings,
                                               [row.original for row in [*split.train, *split.val]], training)
    check = whole(evaluate_model)(refit_classifier, [row.text for row in split.val], [row.label for row in split.val])
    training["refit"] = {**(refitted.refit or {}), "val_accuracy_trained_on": check.accuracy}
    if check.accuracy < evaluation.accuracy:
        training["refit"]["published"] = False
        logger.warning("the refit model scores %.4f on the validation rows it trained on, below the held-out "
                       "model's %.4f; publishing the held-out model", check.accuracy, evaluation.accuracy)
        return payload
    training["refit"]["published"] = True
    logger.info("publishing the model refit on all %d rows for %d epochs (the gate judged the held-out model)",
                training["refit"]["rows"], training["refit"]["epochs"])
    return refit_payload


def _versions_table(registry: Registry) -> None:
    rows: list[dict[str, Any]] = [
        {
            "version": version.name,
            "status": registry.status(version),
            "val_accuracy": round(float(version.info.get("val_accuracy", 0.0)), 4),
            "macro_f1": round(float(version.info.get("macro_f1", 0.0)), 4),
            "outcomes": len(version.info.get("labels", [])),
            "outcome_hash": str(version.info.get("outcome_hash", ""))[:12],
            "created_at": version.info.get("created_at", ""),
        }
        for version in reversed(registry.versions())
    ]
    create_table_artifact(key=VERSIONS_ARTIFACT_KEY, table=rows, description="Every intent model version, newest first")
