"""ONNX export of a checkpoint, and ``OnnxClassifier``: the same predictions from ONNX Runtime.

An export is two files: ``model.onnx`` (indices and weights in, softmax probabilities out) and
``model.onnx.json`` beside it, with the vocabulary, labels and n-gram size that turn text into those
inputs. Text is featurized by ``Vocabulary.encode``, the code PyTorch inference uses, so the two
paths cannot drift apart.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from intentflow import __version__
from intentflow.checkpoint import load_checkpoint
from intentflow.errors import IntentflowError, display_path
from intentflow.features import _TOKEN, Vocabulary
from intentflow.fileio import write_bytes, write_json
from intentflow.inference import Prediction, build_model
from intentflow.model import IntentMLP

FORMAT = "intentflow-onnx"
FORMAT_VERSION = 1
OPSET = 17
INPUTS = ("indices", "weights")
OUTPUT = "probabilities"
# Sentences per ONNX Runtime call: the graph materialises [rows, width, hidden] floats, so chunks stay small.
PREDICT_CHUNK = 512
INSTALL_HINT = "pip install 'intentflow[onnx]'"


class _ExportGraph(nn.Module):
    """``softmax(IntentMLP(indices, weights))`` in operators ONNX has.

    ``EmbeddingBag`` with ``padding_idx`` has no ONNX export; gathering the rows and summing them
    weighted is the same function, since padding positions carry weight 0. Dropout is the identity
    at inference, so it is left out.
    """

    def __init__(self, model: IntentMLP):
        super().__init__()
        self.model = model

    def forward(self, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        model = self.model
        hidden = (model.input.weight[indices] * weights.unsqueeze(-1)).sum(1) + model.input_bias
        hidden = torch.relu(hidden)
        for layer in model.hidden:
            hidden = torch.relu(layer(hidden))
        return torch.softmax(model.output(hidden), dim=1)


def export_payload(payload: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """The ONNX model of a loaded checkpoint as bytes, and the metadata its ``.json`` holds."""
    require_exporter()
    if payload["config"].get("featurizer", "bow") != "bow":
        raise IntentflowError("ONNX export covers bag-of-words models; this one reads sentence embeddings, whose "
                              "encoder is not exported (fix: serve it with intentflow.inference.Classifier, or train "
                              "with featurizer = \"bow\" to export)")
    model, vocab, labels = build_model(payload)
    graph = _ExportGraph(model).eval()
    _check_same_function(model, graph, vocab, payload)
    sample = vocab.encode(["", *vocab.features[:2]])
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of the dynamo one, but it still exports this graph,
        # needs only the onnx package (the dynamo one also needs onnxscript) and prints nothing.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            torch.onnx.export(graph, sample, buffer, dynamo=False, opset_version=OPSET, input_names=list(INPUTS),
                              output_names=[OUTPUT], dynamic_axes={
                                  INPUTS[0]: {0: "batch", 1: "width"},
                                  INPUTS[1]: {0: "batch", 1: "width"},
                                  OUTPUT: {0: "batch"},
                              })
        except Exception as error:  # noqa: BLE001 - the exporter raises many types
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise IntentflowError(f"ONNX export failed: {first} (fix: check the installed onnx and torch "
                                  f"versions against constraints.txt)") from None
    model_bytes = buffer.getvalue()
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "sha256": hashlib.sha256(model_bytes).hexdigest(),
        "inputs": {INPUTS[0]: "int64 [batch, width]", INPUTS[1]: "float32 [batch, width]"},
        "output": {OUTPUT: "float32 [batch, labels], softmax"},
        "labels": list(labels),
        "word_ngrams": vocab.word_ngrams,
        "char_ngrams": vocab.char_ngrams,
        # How Vocabulary.encode turns text into inputs, for readers outside Python; OnnxClassifier calls it.
        "featurizer": {"token_pattern": _TOKEN.pattern, "casefold": True, "padding_index": 0,
                       "weights": "1/sqrt(n) on each of a sentence's n distinct known features",
                       "features": "words, then runs of up to word_ngrams words joined by a space, then (char_ngrams "
                                   "> 0) '#' + each run of 2 to char_ngrams characters of '<word>'"},
        "vocab": vocab.features,
        # Answers less confident than threshold are label (threshold null: never); OnnxClassifier applies it.
        "oos": payload.get("oos") or {"threshold": None, "label": "unknown"},
        "outcome_hash": payload.get("outcome_hash"),
        "checkpoint_created_at": payload.get("created_at"),
        "intentflow_version": __version__,
    }
    return model_bytes, metadata


def onnx_files(payload: dict[str, Any], stem: str) -> dict[str, str | bytes]:
    """``{stem}.onnx`` and ``{stem}.onnx.json`` as file name -> content, for a registry version folder."""
    model_bytes, metadata = export_payload(payload)
    return {f"{stem}.onnx": model_bytes,
            f"{stem}.onnx.json": json.dumps(metadata, indent=2, ensure_ascii=False) + "\n"}


def export_onnx(checkpoint_path: str | Path, out_path: str | Path) -> Path:
    """Export a checkpoint (or a registry folder's production version) to ``out_path`` and ``out_path.json``."""
    from intentflow.registry import resolve_checkpoint

    out_path = Path(out_path)
    model_bytes, metadata = export_payload(load_checkpoint(resolve_checkpoint(checkpoint_path)))
    # The model first: a crash between the two leaves a .json whose hash the new model does not match.
    write_bytes(out_path, model_bytes)
    write_json(metadata_path(out_path), metadata)
    return out_path


def metadata_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


class OnnxClassifier:
    """An exported model run by ONNX Runtime: ``predict(text)`` and ``predict_batch(texts)``, as ``Classifier``."""

    def __init__(self, session: Any, vocab: Vocabulary, labels: list[str], metadata: dict[str, Any]):
        self.session = session
        self.vocab = vocab
        self.labels = labels
        self.metadata = metadata

    @classmethod
    def load(cls, path: str | Path, threads: int | None = None) -> OnnxClassifier:
        """Load ``model.onnx`` (with ``model.onnx.json`` beside it), or a registry folder's production version.

        ``threads`` caps ONNX Runtime's threads per call (default: its own choice, one per core).
        """
        onnxruntime = _require("onnxruntime", "ONNX inference")
        path = _resolve_model(Path(path))
        shown = display_path(path)
        if not path.is_file():
            raise IntentflowError(f"ONNX model {shown} does not exist "
                                  "(fix: write one with `intentflow export-onnx --checkpoint PATH --out FILE`)")
        metadata = _read_metadata(path)
        model_bytes = path.read_bytes()
        if hashlib.sha256(model_bytes).hexdigest() != metadata.get("sha256"):
            raise IntentflowError(f"ONNX model {shown} does not match {display_path(metadata_path(path))} "
                                  "(fix: export both again with `intentflow export-onnx`)")
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            session = onnxruntime.InferenceSession(model_bytes, sess_options=options,
                                                   providers=["CPUExecutionProvider"])
        except Exception as error:  # noqa: BLE001 - onnxruntime raises its own exception types
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise IntentflowError(f"ONNX model {shown} cannot be loaded: {first} "
                                  "(fix: export it again with `intentflow export-onnx`)") from None
        vocab = Vocabulary(metadata["vocab"], word_ngrams=int(metadata["word_ngrams"]),
                           char_ngrams=int(metadata.get("char_ngrams", 0)))
        return cls(session, vocab, list(metadata["labels"]), metadata)

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """Softmax over labels, one row per text.

        The graph's work is a chunk's rows times its longest bag, so chunks are made of sentences of similar bag
        length (the batch ordered by it) and each is padded to its own longest: in the batch's order padding was
        much of the work (docs/decisions.md#speed-of-batch-prediction).
        """
        if len(texts) == 1:  # one sentence (predict): the vocabulary's one-sentence path, no sort or scatter
            indices, weights = self.vocab.encode(list(texts))
            return self.session.run([OUTPUT], {INPUTS[0]: indices.numpy(), INPUTS[1]: weights.numpy()})[0]
        probabilities = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        if not texts:
            return probabilities
        flat_indices, flat_weights, lengths = (tensor.numpy() for tensor in self.vocab.encode_flat(list(texts)))
        starts = np.cumsum(lengths) - lengths
        order = np.argsort(lengths, kind="stable")
        for first in range(0, len(order), PREDICT_CHUNK):
            rows = order[first:first + PREDICT_CHUNK]
            counts = lengths[rows]
            # Row r's features go to columns 0 .. counts[r] - 1; the rest is index 0 at weight 0 (no feature).
            row_of = np.repeat(np.arange(len(rows)), counts)
            column = np.arange(len(row_of)) - np.repeat(np.cumsum(counts) - counts, counts)
            source = np.repeat(starts[rows], counts) + column
            indices = np.zeros((len(rows), max(int(counts.max()), 1)), dtype=np.int64)
            weights = np.zeros(indices.shape, dtype=np.float32)
            indices[row_of, column], weights[row_of, column] = flat_indices[source], flat_weights[source]
            probabilities[rows] = self.session.run([OUTPUT], {INPUTS[0]: indices, INPUTS[1]: weights})[0]
        return probabilities

    def predict_batch(self, texts: Sequence[str]) -> list[Prediction]:
        probabilities = self.probabilities(texts)
        best = probabilities.argmax(axis=1)
        confidence = probabilities[np.arange(len(best)), best]
        oos = self.metadata.get("oos") or {}
        threshold, unknown = oos.get("threshold"), oos.get("label", "unknown")
        refused = set(oos.get("outcomes") or [])  # outcomes marked out of scope answer unknown too
        return [Prediction(unknown if (threshold is not None and c < threshold) or self.labels[i] in refused
                           else self.labels[i], c)
                for i, c in zip(best.tolist(), confidence.tolist(), strict=True)]

    def predict(self, text: str) -> Prediction:
        return self.predict_batch([text])[0]


def _check_same_function(model: IntentMLP, graph: _ExportGraph, vocab: Vocabulary, payload: dict[str, Any]) -> None:
    # Guards against IntentMLP.forward changing without _ExportGraph following it.
    texts = ["", *list(payload.get("validation", {}).get("text", []))[:256], *vocab.features[:64]]
    indices, weights = vocab.encode(texts)
    with torch.inference_mode():
        expected = torch.softmax(model(indices, weights), dim=1)
        exported = graph(indices, weights)
    if not torch.allclose(expected, exported, rtol=0.0, atol=1e-5):
        raise RuntimeError("intentflow.onnx_export._ExportGraph no longer computes IntentMLP.forward; "
                           "update it to match intentflow/model.py")


def _resolve_model(path: Path) -> Path:
    if not path.is_dir():
        return path
    from intentflow.registry import resolve_checkpoint

    checkpoint = resolve_checkpoint(path)
    model = checkpoint.with_suffix(".onnx")
    if not model.is_file():
        raise IntentflowError(f"production version {checkpoint.parent.name} of {display_path(path)} has no ONNX "
                              f"model ({display_path(model)} is missing) (fix: set onnx = true under [publish] in "
                              "config/training.toml for later versions, or `intentflow export-onnx --checkpoint "
                              f"{display_path(path)} --out FILE`)")
    return model


def _read_metadata(path: Path) -> dict[str, Any]:
    sidecar = metadata_path(path)
    shown = display_path(sidecar)
    try:
        metadata = json.loads(sidecar.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IntentflowError(f"{shown} is missing: an ONNX model needs its vocabulary and labels beside it "
                              "(fix: export both with `intentflow export-onnx`)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise IntentflowError(f"{shown} is unreadable or not JSON ({type(error).__name__}) "
                              "(fix: export it again with `intentflow export-onnx`)") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise IntentflowError(f"{shown} is not intentflow ONNX metadata (fix: export with `intentflow export-onnx`)")
    if not isinstance(metadata.get("format_version"), int) or metadata["format_version"] > FORMAT_VERSION:
        raise IntentflowError(f"{shown} has format version {metadata.get('format_version')}, newer than this "
                              f"intentflow ({FORMAT_VERSION}) (fix: upgrade intentflow)")
    metadata.setdefault("char_ngrams", 0)  # exported before character n-grams
    for key, kind in (("vocab", list), ("labels", list), ("word_ngrams", int), ("char_ngrams", int),
                      ("sha256", str)):
        if not isinstance(metadata.get(key), kind):
            raise IntentflowError(f"{shown} lacks a valid '{key}' entry (fix: export it again with "
                                  "`intentflow export-onnx`)")
    if metadata.get("featurizer", {}).get("token_pattern") != _TOKEN.pattern:
        # Featurizing with a tokenizer the model was not trained with would give quietly wrong answers.
        raise IntentflowError(f"{shown} was exported by an intentflow that splits words differently "
                              "(fix: export it again from its checkpoint with this version)")
    oos = metadata.get("oos", {"threshold": None, "label": "unknown"})
    threshold = oos.get("threshold") if isinstance(oos, dict) else "missing"
    if not isinstance(oos, dict) or not isinstance(oos.get("label"), str) or not (
            threshold is None or (isinstance(threshold, int | float) and not isinstance(threshold, bool))):
        raise IntentflowError(f"{shown} has an invalid 'oos' entry: it needs a threshold (a number or null) and a "
                              "label (fix: export it again with `intentflow export-onnx`)")
    return metadata


def require_exporter() -> None:
    """Refuse early, before training, when ONNX publishing is asked for but cannot run."""
    _require("onnx", "ONNX export")


def _require(module: str, purpose: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise IntentflowError(f"{purpose} needs the '{module}' package, which is not installed "
                              f"(fix: {INSTALL_HINT})") from None
