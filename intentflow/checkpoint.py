"""Self-describing checkpoints: weights, the config that built them, vocabulary, labels, metrics.

Everything is plain tensors, strings, numbers, lists and dicts, so ``torch.load(path,
weights_only=True)`` reads it and a checkpoint can never run code when loaded.
"""

from __future__ import annotations

import io
import pickle
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from intentflow import __version__
from intentflow.config import MAX_CHAR_NGRAMS, MAX_WORD_NGRAMS
from intentflow.errors import IntentflowError, display_path
from intentflow.fileio import atomic_write, write_json
from intentflow.model import parameter_shapes
from intentflow.storage import Location, is_url, read_bytes, sibling
from intentflow.trained import TrainedModel

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
FORMAT = "intentflow-checkpoint"
FORMAT_VERSION = 1
HELD_OUT_SUFFIX = ".heldout.pt"
REQUIRED = {"format": str, "format_version": int, "state_dict": dict, "config": dict, "vocab": list,
            "labels": list, "metrics": dict}


def build_payload(trained: TrainedModel, *, outcome_hash: str, prepare: dict[str, Any],
                  val_texts: list[str], val_labels: list[str], val_originals: list[str] | None = None,
                  train_originals: list[str] | None = None,
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    config = trained.config
    encoder = trained.encoder
    features: dict[str, Any] = {"featurizer": config.featurizer}
    if encoder is not None:
        features["input_dim"] = encoder.dimension
        extra = {**(extra or {}), "encoder": {"model": encoder.name, "dimension": encoder.dimension,
                                              "tuned": encoder.tuned, "layers": list(encoder.layers)}}
        if encoder.tuned:
            extra["encoder_state"] = encoder.state()
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "state_dict": {name: value.detach().cpu() for name, value in trained.model.state_dict().items()},
        "config": {
            # The playbook's evaluate step rebuilds the architecture from these keys.
            "vocab_size": len(trained.vocab),
            "num_labels": len(trained.labels),
            # The network's width: config.hidden_size, plus the units a folded linear model added.
            "hidden_size": trained.model.input_bias.shape[0],
            "hidden_layers": config.hidden_layers,
            "dropout": config.dropout,
            "word_ngrams": trained.vocab.word_ngrams,
            "char_ngrams": trained.vocab.char_ngrams,
            # How a bag's weights split between words and character n-grams (None: 1/sqrt(n) each, as before it).
            "word_share": trained.vocab.word_share,
            **features,
            **({"linear": dict(trained.linear)} if trained.linear else {}),
            "train": config.model_dump(),
            "prepare": prepare,
        },
        "vocab": trained.vocab.features,
        "labels": list(trained.labels),
        "metrics": trained.metrics,
        # Predictions less confident than this are the unknown label (threshold None: never).
        "oos": {"threshold": trained.oos_threshold, "label": config.unknown_label,
                "setting": config.oos_threshold, "outcomes": list(trained.out_of_scope),
                # An embeddings model: sentences less similar than this to every one of these example vectors.
                "similarity": trained.oos_similarity,
                "examples": trained.examples.detach().cpu() if trained.examples is not None else None},
        "history": [stats.to_dict() for stats in trained.history],
        "outcome_hash": outcome_hash,
        "validation": {"text": list(val_texts), "label": list(val_labels),
                       "original": list(val_originals) if val_originals is not None else list(val_texts)},
        # What it learnt from, so a later gate can re-score it only on sentences it has not seen.
        "train_originals": sorted(set(train_originals or [])),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "intentflow_version": __version__,
        **(extra or {}),
    }


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """Write the checkpoint and ``PATH.metrics.json`` beside it, each atomically."""
    path = Path(path)
    atomic_write(path, lambda stream: torch.save(payload, stream))
    write_json(metrics_path(path), metrics_record(payload, path.name))
    return path


def checkpoint_bytes(payload: dict[str, Any]) -> bytes:
    """The checkpoint file's content, for a store written object by object."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def metrics_record(payload: dict[str, Any], name: str) -> dict[str, Any]:
    """What ``NAME.metrics.json`` beside checkpoint ``NAME`` holds: its metrics, labels and outcome hash."""
    return {**payload["metrics"], "outcome_hash": payload.get("outcome_hash"), "labels": payload["labels"],
            "checkpoint": name}


def metrics_path(path: Path) -> Path:
    return path.with_name(path.name + ".metrics.json")


def held_out_path(checkpoint: Location) -> Location:
    """Where the held-out model a checkpoint was judged as is kept, beside it: ``model.pt`` -> ``model.heldout.pt``."""
    if not is_url(checkpoint):
        checkpoint = Path(checkpoint)
    name = str(checkpoint).rstrip("/").rsplit("/", 1)[-1]
    return sibling(checkpoint, name.removesuffix(".pt") + HELD_OUT_SUFFIX)


def load_checkpoint(path: Location) -> dict[str, Any]:
    """Read and check a checkpoint (a file, or an object-store URL); anything unexpected is refused with the file
    named."""
    source: Path | io.BytesIO | None
    if is_url(path):
        shown = str(path)
        try:
            source = io.BytesIO(read_bytes(path, "checkpoint"))
        except FileNotFoundError:
            source = None
    else:
        path = Path(path)
        shown = display_path(path)
        source = path if path.is_file() else None
    if source is None:
        raise IntentflowError(f"checkpoint {shown} does not exist (fix: train one with `intentflow train`, "
                              "or if it is a registry's production model, `intentflow rollback`)")
    try:
        payload = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        text = _ANSI.sub("", str(error))
        if "weights_only" not in text.lower() and "global" not in text.lower():
            raise IntentflowError(f"checkpoint {shown} is unreadable or corrupt (not a PyTorch file) "
                                  "(fix: `intentflow rollback` to the previous version, or retrain)") from None
        detail = next((line.strip() for line in text.splitlines() if "global" in line.lower()), "unsupported content")
        raise IntentflowError(f"checkpoint {shown} was refused: it holds objects that are not plain data "
                              f"({detail}); nothing in it was run (fix: use a checkpoint made by intentflow, "
                              "or `intentflow rollback` to the previous version)") from None
    except Exception as error:  # noqa: BLE001 - torch.load raises many types for a damaged file
        raise IntentflowError(f"checkpoint {shown} is unreadable or corrupt ({type(error).__name__}) "
                              "(fix: `intentflow rollback` to the previous version, or retrain)") from None
    _check_payload(payload, shown)
    return payload


def _check_payload(payload: Any, shown: str) -> None:
    """Refuse anything ``build_model`` and the commands could trip over, before a network is built."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise IntentflowError(f"checkpoint {shown} is not an intentflow checkpoint "
                              "(fix: pass a file written by `intentflow train` or a registry folder)")
    for key, kind in REQUIRED.items():
        if not isinstance(payload.get(key), kind):
            raise IntentflowError(f"checkpoint {shown} lacks a valid '{key}' entry "
                                  "(fix: `intentflow rollback` to the previous version, or retrain)")
    if payload["format_version"] > FORMAT_VERSION:
        raise IntentflowError(f"checkpoint {shown} has format version {payload['format_version']}, newer than "
                              f"this intentflow ({FORMAT_VERSION}) (fix: upgrade intentflow)")
    config = payload["config"]
    for key in ("vocab_size", "num_labels", "hidden_size", "hidden_layers"):
        if not _positive_whole(config.get(key)):
            raise IntentflowError(f"checkpoint {shown}: config.{key} is missing or not a positive whole number "
                                  "(fix: retrain, or `intentflow rollback`)")
    config.setdefault("word_ngrams", 1)  # checkpoints from before it was recorded held single words
    if not _positive_whole(config["word_ngrams"]) or config["word_ngrams"] > MAX_WORD_NGRAMS:
        _refuse(shown, f"config.word_ngrams must be a whole number from 1 to {MAX_WORD_NGRAMS}")
    config.setdefault("char_ngrams", 0)  # checkpoints from before character n-grams
    if (isinstance(config["char_ngrams"], bool) or not isinstance(config["char_ngrams"], int)
            or not (config["char_ngrams"] == 0 or 2 <= config["char_ngrams"] <= MAX_CHAR_NGRAMS)):
        _refuse(shown, f"config.char_ngrams must be 0 or a whole number from 2 to {MAX_CHAR_NGRAMS}")
    dropout = config.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0.0 <= dropout < 1.0:
        _refuse(shown, "config.dropout must be a number from 0 to below 1")
    if config["vocab_size"] != len(payload["vocab"]) + 1 or config["num_labels"] != len(payload["labels"]):
        raise IntentflowError(f"checkpoint {shown}: vocabulary or labels do not match its config "
                              "(fix: retrain, or `intentflow rollback`)")
    if not all(isinstance(feature, str) for feature in payload["vocab"]) or len(set(payload["vocab"])) != len(
            payload["vocab"]):
        _refuse(shown, "the vocabulary must be distinct strings")
    labels = payload["labels"]
    if not all(isinstance(label, str) and label.strip() for label in labels) or len(set(labels)) != len(labels):
        _refuse(shown, "labels must be distinct, non-blank strings")
    input_dim = _check_featurizer(payload, shown)
    expected = parameter_shapes(config["vocab_size"], config["num_labels"], config["hidden_size"],
                                config["hidden_layers"], input_dim)
    weights = payload["state_dict"]
    if set(weights) != set(expected):
        missing = ", ".join(sorted(set(expected) - set(weights))) or "none"
        unexpected = ", ".join(sorted(map(str, set(weights) - set(expected)))) or "none"
        raise IntentflowError(f"checkpoint {shown}: weights do not match its config (missing: {missing}; "
                              f"unexpected: {unexpected}) (fix: retrain, or `intentflow rollback`)")
    for name, shape in expected.items():
        tensor = weights[name]
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point() or tuple(tensor.shape) != shape:
            found = (f"a {tensor.dtype} tensor of shape {tuple(tensor.shape)}" if isinstance(tensor, torch.Tensor)
                     else type(tensor).__name__)
            raise IntentflowError(f"checkpoint {shown}: weights do not match its config ({name}: expected a float "
                                  f"tensor of shape {shape}, found {found}) (fix: retrain, or `intentflow rollback`)")
    _check_optional(payload, shown)


def _check_featurizer(payload: dict[str, Any], shown: str) -> int | None:
    """The dense input width of an embeddings model (None for bag-of-words), after checking what it needs."""
    config = payload["config"]
    featurizer = config.setdefault("featurizer", "bow")
    if featurizer == "bow":
        return None
    if featurizer != "embeddings":
        _refuse(shown, f"config.featurizer {featurizer!r} is not 'bow' or 'embeddings'")
    encoder = payload.get("encoder")
    if not _positive_whole(config.get("input_dim")) or not isinstance(encoder, dict) \
            or not isinstance(encoder.get("model"), str) or encoder.get("dimension") != config["input_dim"]:
        _refuse(shown, "an embeddings model needs config.input_dim and an 'encoder' entry naming its model and "
                       "dimension")
    layers = encoder.get("layers", [])
    if not (isinstance(layers, list) and all(_whole(layer) and layer >= 0 for layer in layers)):
        _refuse(shown, "'encoder.layers' must be a list of layer numbers")
    state = payload.get("encoder_state")
    if state is not None and not (isinstance(state, dict) and all(
            isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items())):
        _refuse(shown, "'encoder_state' must map weight names to tensors")
    return int(config["input_dim"])


def _check_optional(payload: dict[str, Any], shown: str) -> None:
    # Not needed to predict, but `evaluate` and the gate read them: wrong types would fail there, far from the file.
    validation = payload.get("validation")
    if validation is not None:
        if not isinstance(validation, dict):
            _refuse(shown, "'validation' must be an object of text and label lists")
        columns = [validation.get(key) for key in ("text", "label", "original") if key in validation]
        if not all(isinstance(column, list) and all(isinstance(item, str) for item in column) for column in columns) \
                or len({len(column) for column in columns}) > 1:
            _refuse(shown, "'validation' must hold lists of strings of one length")
    originals = payload.get("train_originals")
    if originals is not None and not (isinstance(originals, list) and all(isinstance(t, str) for t in originals)):
        _refuse(shown, "'train_originals' must be a list of strings")
    oos = payload.get("oos")
    if oos is not None:
        threshold = oos.get("threshold") if isinstance(oos, dict) else "missing"
        if not isinstance(oos, dict) or not (isinstance(oos.get("label"), str) and oos["label"].strip()) or not (
                threshold is None or (isinstance(threshold, int | float) and not isinstance(threshold, bool)
                                      and 0.0 <= threshold <= 1.0)):
            _refuse(shown, "'oos' must hold a threshold from 0 to 1 (or null) and a non-blank label")
        _check_similarity(oos, payload, shown)
    for key, kind in (("history", list), ("outcome_hash", str), ("created_at", str)):
        if payload.get(key) is not None and not isinstance(payload[key], kind):
            _refuse(shown, f"'{key}' has the wrong type")


def _check_similarity(oos: dict[str, Any], payload: dict[str, Any], shown: str) -> None:
    similarity, examples = oos.get("similarity"), oos.get("examples")
    if similarity is None and examples is None:
        return
    width = payload["config"].get("input_dim")
    if not (isinstance(similarity, int | float) and not isinstance(similarity, bool) and -1.0 <= similarity <= 1.0) \
            or not isinstance(examples, torch.Tensor) or not examples.is_floating_point() or examples.dim() != 2 \
            or examples.shape[1] != width:
        _refuse(shown, "'oos.similarity' must be a cosine from -1 to 1 with 'oos.examples' a float tensor of one "
                       "row per example, as wide as the encoder's vectors")


def _positive_whole(value: Any) -> bool:
    return _whole(value) and value >= 1


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _refuse(shown: str, what: str) -> None:
    raise IntentflowError(f"checkpoint {shown} was refused: {what} (fix: retrain, or `intentflow rollback`)")
