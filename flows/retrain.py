"""The ``retrain`` flow: outcomes -> augment -> split -> train -> evaluate -> gate -> publish."""

# No `from __future__ import annotations` here: `intentflow serve` sends the flow function to each run's process by
# value (cloudpickle), without this module's globals, so a string annotation "RetrainParameters" could not be resolved
# there and every served run would fail parameter validation. Real annotations are pickled by reference.
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run
from prefect.states import Completed, State
from prefect.utilities.annotations import opaque
from pydantic import BaseModel, ConfigDict, Field, create_model

from flows.verdict import failed_state, rejected_state
from intentflow.checkpoint import build_payload
from intentflow.config import Settings, apply_flat, flat_settings, load_settings, resolve_featurizer
from intentflow.errors import IntentflowError
from intentflow.evaluate import Evaluation
from intentflow.gate import GateDecision
from intentflow.golden import GoldenSet, golden_folder
from intentflow.incremental import OUTCOMES_KEY, ModeDecision, outcome_record, train_in_mode
from intentflow.inference import Classifier, build_model
from intentflow.onnx_export import require_exporter
from intentflow.outcomes import OutcomeSet
from intentflow.outcomes import load_outcomes as read_outcomes
from intentflow.refit import HELD_OUT_ROLE, ServedModel, continue_served, refit_or_keep
from intentflow.registry import Registry, open_registry
from intentflow.report import release_notes
from intentflow.split import Split
from intentflow.storage import Location, http_url, is_url
from intentflow.trained import TrainedModel
from tasks.augment import augment_outcomes
from tasks.evaluate import evaluate_model
from tasks.gate import gate_candidate
from tasks.golden import load_golden
from tasks.incremental import choose_mode, continue_training, select_incremental_rows
from tasks.outcomes import load_outcomes
from tasks.publish import publish_version
from tasks.refit import refit_model
from tasks.split import split_rows
from tasks.train import train_split

VERSIONS_ARTIFACT_KEY = "intent-model-versions"
REPORT_ARTIFACT_KEY = "intent-model-report"
CHECKPOINT_ARTIFACT_KEY = "intent-model-checkpoint"
# The tag Prefect's scheduler gives every run it creates from a deployment's schedule.
SCHEDULED_TAG = "auto-scheduled"
# Where every setting's default in the form comes from.
FROM_FILE = "default: config/training.toml's value when this deployment was made"


def _parameter_fields() -> dict[str, Any]:
    """The form's fields: where to read and write, then every setting of ``intentflow.config.flat_settings`` with
    the value ``config/training.toml`` gives it (read when this module is imported, i.e. when the deployment is
    made, and again by the worker for runs that leave it unset), its limits and its one-line help."""
    fields: dict[str, Any] = {
        "outcomes": (str, Field("config/outcomes", description="Folder of outcome definition files")),
        "evaluation": (str, Field("", description="Folder of the golden set (*.jsonl of labelled real utterances no "
                                  "model trains on); empty = the folder evaluation beside the outcomes folder; "
                                  "absent = none")),
        "registry": (str, Field("artifacts", description="Model registry: a folder on the worker, or a URL "
                                 "(s3://bucket/prefix) every machine reaches")),
        "config": (str, Field("", description="Settings file; empty = config/training.toml. The settings below "
                              "override it only where a run sets them")),
    }
    try:
        defaults = load_settings()
    except IntentflowError:
        defaults = Settings()  # a broken settings file is reported by the run that reads it, not at import
    for name, (_, annotation, info) in flat_settings(defaults).items():
        info.description = f"{info.description}{_limits(info)} ({FROM_FILE})"
        fields[name] = (annotation, info)
    fields.update({
        "force": (bool, Field(False, description="Retrain even when production already matches outcomes and "
                              "config")),
        "mode": (Literal["auto", "full", "incremental"], Field(
            "auto", description="auto: incremental (from production's weights) when only examples or teach hints "
            "were added, else full; full or incremental force one")),
        "changed_paths": (list[str], Field(default_factory=list, description="Filled in by the outcome-change "
                                           "trigger: the outcome files whose change started this run; leave empty")),
    })
    return fields


def _limits(info: Any) -> str:
    """A field's bounds in words, as the form shows no bounds it does not enforce: "; from 0 to 1"."""
    bounds = {type(item).__name__: getattr(item, type(item).__name__.lower()) for item in info.metadata
              if type(item).__name__ in ("Ge", "Gt", "Le", "Lt")}
    if not bounds:
        return ""
    low = (f"from {bounds['Ge']}" if "Ge" in bounds else f"above {bounds['Gt']}" if "Gt" in bounds else "")
    high = (f"to {bounds['Le']}" if "Le" in bounds else f"below {bounds['Lt']}" if "Lt" in bounds else "")
    return "; " + " ".join(part for part in (low, high) if part)


class _Parameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def settings(self) -> Settings:
        """``config`` (or config/training.toml) with the settings this run set explicitly."""
        chosen = {name: getattr(self, name) for name in self.model_fields_set if name in SETTING_NAMES}
        return apply_flat(load_settings(self.config or None), chosen)


SETTING_NAMES = frozenset(flat_settings(Settings()))
# Everything a retrain run can be told; built from the settings model, so a new setting is a new field here too.
RetrainParameters = create_model("RetrainParameters", __base__=_Parameters, __module__=__name__,
                                 __doc__="Everything a retrain run can be told.", **_parameter_fields())


def whole(task_function: Callable[..., Any]) -> Callable[..., Any]:
    """``task_function`` with each argument passed as Prefect's ``opaque``: Prefect still links the task to the task
    whose result an argument is, but does not walk into it. Walking a split's 9,000 rows to look for futures took
    0.4 s, and rebuilding them 0.4 s more, at every task call that took them (the augmented rows 1.1 s)."""
    def call(*args: Any, **kwargs: Any) -> Any:
        return task_function(*map(opaque, args), **{name: opaque(value) for name, value in kwargs.items()})

    return call


def run_name() -> str:
    """``retrain-2026-11-24-031245-<hash>``: when the run started (UTC) and the outcome content it trains on."""
    parameters = flow_run.parameters or {}
    params = parameters.get("params") or {}
    folder = params.get("outcomes") if isinstance(params, dict) else getattr(params, "outcomes", None)
    try:
        content = read_outcomes(folder or "config/outcomes").content_hash[:8]
    except IntentflowError:
        content = "invalid-outcomes"
    return f"retrain-{datetime.now(UTC):%Y-%m-%d-%H%M%S}-{content}"


@flow(name="retrain", flow_run_name=run_name, validate_parameters=True, persist_result=False)
def retrain(params: RetrainParameters = RetrainParameters()) -> State:  # noqa: B008 - the UI form's defaults
    """Retrain the intent classifier and publish it if it passes the gate."""
    logger = get_run_logger()
    try:
        return _retrain(params, logger)
    except IntentflowError as error:
        return failed_state(str(error), logger)


def scheduled_run() -> bool:
    """Whether this run was created by the deployment's schedule (the monthly run), not by a trigger or a person."""
    return SCHEDULED_TAG in (flow_run.tags or [])


@dataclass(frozen=True)
class _Production:
    """Production as a run sees it: the model it serves, and the held-out model it was judged as (the same model
    where it keeps none apart)."""

    name: str
    served_payload: dict[str, Any]
    served: Classifier
    held_out_payload: dict[str, Any]
    held_out: Classifier

    @property
    def keeps_held_out(self) -> bool:
        return self.held_out_payload is not self.served_payload


def _load_production(registry: Registry, logger: Any) -> _Production | None:
    version = registry.production()
    if version is None:
        return None
    try:
        served = Classifier.load(version.checkpoint)
        held_out = (Classifier.load(version.held_out_checkpoint)
                    if version.held_out_checkpoint != version.checkpoint else served)
    except IntentflowError as error:
        logger.warning("production %s cannot be loaded, so it is neither compared nor continued from: %s",
                       version.name, error)
        return None
    return _Production(version.name, served.payload, served, held_out.payload, held_out)


def _retrain(params: RetrainParameters, logger: Any) -> State:
    settings, picked = resolve_featurizer(params.settings())
    if picked:
        logger.info(picked)
    if settings.publish.onnx:
        require_exporter()
        if settings.publish.onnx_precision == "int8" and settings.train.featurizer != "embeddings":
            # Refused before training, so a run that could not publish what was asked trains nothing.
            raise IntentflowError("publish.onnx_precision = \"int8\" quantizes an embeddings model's sentence "
                                  "encoder; this run trains a bag-of-words model, which has none "
                                  "(fix: set onnx_precision = \"float32\", or featurizer = \"embeddings\")")
    if params.changed_paths:
        logger.info("triggered by changes to: %s", ", ".join(params.changed_paths))
    scheduled = scheduled_run()
    outcome_set = load_outcomes(params.outcomes)
    for warning in outcome_set.warnings:
        logger.warning("%s", warning)
    golden = load_golden(str(golden_folder(params.outcomes, params.evaluation)), outcome_set,
                             settings.train.unknown_label)
    registry = open_registry(params.registry)
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
                              settings.prepare.seed, frozenset(outcome_set.teach_hints), outcome_set.out_of_scope)
    for label in split.leaky_labels:
        logger.warning("%s has a single original: its validation rows paraphrase training rows", label)
    split = split.for_featurizer(settings.train.featurizer)

    production = _load_production(registry, logger)
    # Modes are chosen, and incremental runs continue, from the model production was judged as.
    chosen = whole(choose_mode)(params.mode, outcome_set, config, production and production.held_out_payload, split,
                                scheduled=scheduled)
    logger.info("training mode %s: %s", chosen.mode, chosen.reason)
    attempt = _train_and_gate(chosen, outcome_set, split, settings, production, golden)
    if chosen.mode == "incremental" and chosen.requested == "auto" and not attempt.decision.promote:
        # An incremental run inherits production's weights; when the gate turns it down, a full retrain (new
        # weights, every row) still ships what was taught if it passes. The rejected attempt is recorded, not
        # published.
        logger.warning("the incremental candidate was rejected (%s); retraining in full", attempt.decision.reason)
        fallback = ModeDecision("full", chosen.requested, f"the incremental candidate was rejected "
                                f"({attempt.decision.reason}), so this run retrained in full", chosen.scheduled)
        rejected = {"val_accuracy": attempt.evaluation.accuracy, "gate": attempt.decision.reason,
                    "new_rows": attempt.training.get("new_rows"), "replay_rows": attempt.training.get("replay_rows")}
        attempt = _train_and_gate(fallback, outcome_set, split, settings, production, golden,
                                  extra_training={"incremental_attempt": rejected})
        chosen = fallback
    payload, evaluation, decision = attempt.payload, attempt.evaluation, attempt.decision
    notes = release_notes(payload, production and production.served_payload, production and production.name,
                          mode=_mode_line(chosen, attempt.training), decision=decision.to_dict())
    run = {"flow_run_id": str(flow_run.id), "flow_run_name": flow_run.name, "changed_paths": params.changed_paths}
    publication = whole(publish_version)(params.registry, payload, evaluation, decision, notes, run,
                                         onnx=settings.publish.onnx, int8=settings.publish.onnx_precision == "int8",
                                         held_out=attempt.held_out_payload, golden=attempt.golden_evaluation)

    verdict = "promoted" if decision.promote else "rejected"
    create_markdown_artifact(key=REPORT_ARTIFACT_KEY, markdown=publication.report,
                             description=f"{publication.version}: {verdict} ({chosen.mode} training)")
    link, description = checkpoint_link(publication.version, publication.checkpoint)
    create_link_artifact(key=CHECKPOINT_ARTIFACT_KEY, link=link, link_text=f"{publication.version} checkpoint",
                         description=description)
    _versions_table(registry)
    if not decision.promote:
        message = (f"gate rejected {publication.version}: {decision.reason}; production "
                   f"{publication.production or '(none)'} is unchanged")
        return rejected_state(message, logger)
    message = f"promoted {publication.version} to production: {decision.reason}"
    logger.info(message)
    return Completed(message=message)


def checkpoint_link(version: str, checkpoint: Location) -> tuple[str, str]:
    """The checkpoint artifact's link and description: for a bucket, the object's http(s) address (it opens where the
    store serves the bucket to the viewer) and its s3:// URL; for a folder, a file:// link that only opens on the
    worker, and a description that says so."""
    if is_url(checkpoint):
        address = http_url(str(checkpoint)) or str(checkpoint)
        return address, (f"Checkpoint of {version}: `{checkpoint}` (load it anywhere with `intentflow predict "
                         f"--checkpoint {checkpoint}` or `Classifier.load`; the link opens where the store serves "
                         "the bucket to you)")
    path = Path(checkpoint).resolve()
    return path.as_uri(), (f"Checkpoint of {version}: a file on the worker {socket.gethostname()} ({path}), not "
                           "reachable from other machines; publish to an s3:// registry to open it from anywhere")


def _mode_line(chosen: ModeDecision, training: dict[str, Any]) -> str:
    mode = f"{chosen.mode} ({chosen.reason})"
    served = training.get("refit")
    if served and served.get("published") and served.get("mode") == "incremental":
        mode += "; production's served model continued on the same new sentences is served, the figures being the "
        mode += "held-out model's"
    elif served and served.get("published"):
        mode += (f"; then refit on all {served['rows']} rows for {served['epochs']} epochs and served, the figures "
                 "being the held-out model's")
    elif served:
        mode += ("; the refit on all rows scored below the held-out model on its own rows, so the held-out model "
                 "is served")
    return mode


@dataclass(frozen=True)
class _Attempt:
    payload: dict[str, Any]
    evaluation: Evaluation
    decision: GateDecision
    training: dict[str, Any]
    # The held-out model's payload where the version serves another model; None where it serves the held-out one.
    held_out_payload: dict[str, Any] | None
    golden_evaluation: Evaluation | None


def _train_and_gate(chosen: ModeDecision, outcome_set: OutcomeSet, split: Split, settings: Settings,
                    production: _Production | None, golden: GoldenSet | None,
                    extra_training: dict[str, Any] | None = None) -> _Attempt:
    """Train the held-out model in ``chosen``'s mode, derive the model to serve, evaluate, and let the gate decide.

    The held-out model never sees the validation originals; it is what the figures and the gate's held-out
    comparison measure. The served model (a refit, or production's served model continued) is held to the golden
    set, which no model trains on.
    """
    base = production.held_out_payload if production else None
    mode_training = train_in_mode(chosen, split, base, settings, production and production.name,
                                  select=whole(select_incremental_rows), resume=whole(continue_training),
                                  full=whole(train_split))
    held_out, training = mode_training.trained, {**mode_training.record, **(extra_training or {})}
    val_texts = [row.text for row in split.val]
    val_labels = [row.label for row in split.val]
    held_payload, held_classifier = _version(held_out, split, outcome_set, settings, mode_training.train_originals,
                                             training)
    evaluation = whole(evaluate_model)(held_classifier, val_texts, val_labels)
    served = ServedModel(held_out, mode_training.train_originals)
    # A candidate already below the threshold is rejected whatever it serves: no second training for it.
    if split.val and evaluation.accuracy >= settings.gate.threshold:
        if chosen.mode == "full" and settings.train.refit:
            served = refit_or_keep(held_out, split, evaluation.accuracy, refit=whole(refit_model))
        elif chosen.mode == "incremental" and production is not None and production.keeps_held_out:
            served = continue_served(production.served_payload, held_out, split, settings,
                                     select=whole(select_incremental_rows), resume=whole(continue_training))
    if served.record is not None:
        # "refit": the served model also learnt the validation rows (retrained on every row, or production's
        # served model continued); the version's figures stay the held-out model's.
        training["refit"] = served.record
    payload, served_classifier = held_payload, held_classifier
    if not served.is_held_out:
        payload, served_classifier = _version(served.trained, split, outcome_set, settings, served.train_originals,
                                              training)
        payload["keeps_held_out"] = True
        held_payload["role"] = HELD_OUT_ROLE
    decision = whole(gate_candidate)(evaluation.accuracy, held_out.labels, val_texts, val_labels, settings.gate,
                                     production and production.held_out, production and production.name,
                                     candidate=held_classifier, val_originals=[row.original for row in split.val],
                                     candidate_trained_on=held_payload["train_originals"], golden=golden,
                                     candidate_served=served_classifier,
                                     production_served=production and production.served)
    golden_evaluation = golden.evaluate(served_classifier) if golden is not None else None
    return _Attempt(payload, evaluation, decision, training, None if served.is_held_out else held_payload,
                    golden_evaluation)


def _version(trained: TrainedModel, split: Split, outcome_set: OutcomeSet, settings: Settings,
             train_originals: list[str], training: dict[str, Any]) -> tuple[dict[str, Any], Classifier]:
    """The payload a version of ``trained`` is published as, and a classifier of it to evaluate."""
    payload = build_payload(trained, outcome_hash=outcome_set.content_hash, prepare=settings.prepare.model_dump(),
                            val_texts=[row.text for row in split.val], val_labels=[row.label for row in split.val],
                            val_originals=[row.original for row in split.val], train_originals=train_originals,
                            extra={OUTCOMES_KEY: outcome_record(outcome_set), "training": training})
    # The encoder of an embeddings model is the one just trained with, not a second copy loaded from the payload.
    return payload, Classifier(*build_model(payload), payload=payload, encoder=trained.encoder)


def _versions_table(registry: Registry) -> None:
    rows: list[dict[str, Any]] = [
        {
            "version": version.name,
            "status": registry.status(version),
            "val_accuracy": round(float(version.info.get("val_accuracy", 0.0)), 4),
            "golden_accuracy": _rounded((version.info.get("golden") or {}).get("accuracy")),
            "macro_f1": round(float(version.info.get("macro_f1", 0.0)), 4),
            "outcomes": len(version.info.get("labels", [])),
            "outcome_hash": str(version.info.get("outcome_hash", ""))[:12],
            "created_at": version.info.get("created_at", ""),
        }
        for version in reversed(registry.versions())
    ]
    create_table_artifact(key=VERSIONS_ARTIFACT_KEY, table=rows, description="Every intent model version, newest "
                          "first; accuracies are measured on sentences the model never learnt")


def _rounded(value: Any) -> float | None:
    return round(float(value), 4) if isinstance(value, int | float) else None
