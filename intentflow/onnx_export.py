"""ONNX export of a checkpoint, for ``intentflow.onnx_serving.OnnxClassifier``: the same predictions from ONNX Runtime.

A bag-of-words export is ``model.onnx`` (indices and weights in, softmax probabilities out) and ``model.onnx.json``
beside it, with the vocabulary, labels and n-gram size that turn text into those inputs. An embeddings export is
``model.onnx`` (token ids and attention mask in: the fine-tuned encoder, its pooling and layer means, the merged
head, softmax out), ``model.tokenizer.json`` (the encoder's tokenizer, for the ``tokenizers`` library) and
``model.onnx.json`` (labels, threshold, tokenizer's hash). Each graph is traced from the code PyTorch inference
runs and checked against it before it is written.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from intentflow import __version__
from intentflow.checkpoint import load_checkpoint
from intentflow.errors import IntentflowError
from intentflow.features import _TOKEN, Vocabulary
from intentflow.fileio import write_bytes, write_text
from intentflow.inference import Classifier, build_encoder, build_model
from intentflow.model import IntentMLP
from intentflow.onnx_serving import (  # noqa: F401 - OnnxClassifier re-exported: its home before onnx_serving
    BOW_FORMAT_VERSION,
    FORMAT,
    FORMAT_VERSION,
    INPUTS,
    OUTPUT,
    SIMILARITY,
    TOKEN_INPUTS,
    OnnxClassifier,
    metadata_path,
    require,
    tokenizer_path,
)

if TYPE_CHECKING:
    from intentflow.encoder import SentenceEncoder

OPSET = 17
# Probabilities of the exported graph against PyTorch's on sample sentences; export refuses a graph further apart.
EXPORT_TOLERANCE = 1e-5
# Under int8 only the encoder's nodes (named by _EmbeddingsGraph's attribute) are quantized: the encoder is where
# the time goes, and the merged head is small.
ENCODER_SCOPE = "/encoder/"


@dataclass(frozen=True)
class OnnxExport:
    """An exported model: the graph's bytes, the metadata of its ``.json`` and (embeddings) the tokenizer's JSON."""

    model: bytes
    metadata: dict[str, Any]
    tokenizer: str | None = None

    def files(self, model_name: str) -> dict[str, str | bytes]:
        """File name -> content for a model file called ``model_name``, the ``.json`` last (it names the others)."""
        model = Path(model_name)
        files: dict[str, str | bytes] = {model.name: self.model}
        metadata = self.metadata
        if self.tokenizer is not None:
            files[tokenizer_path(model).name] = self.tokenizer
            metadata = {**metadata, "tokenizer": {"file": tokenizer_path(model).name, **metadata["tokenizer"]}}
        files[metadata_path(model).name] = json.dumps(metadata, indent=2, ensure_ascii=False) + "\n"
        return files


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


class _EmbeddingsGraph(nn.Module):
    """Token ids and attention mask -> softmax over labels: ``layer_vectors`` (the function the PyTorch encoder
    runs) of the fine-tuned encoder, then the merged head. Dropout is the identity at inference."""

    def __init__(self, encoder: SentenceEncoder, head: IntentMLP, token_types: bool,
                 examples: torch.Tensor | None = None):
        super().__init__()
        self.encoder = encoder.model
        self.layers = encoder.layers
        self.head = head
        self.token_types = token_types
        # The similarity rule's example vectors (unit rows): a second output, each sentence's similarity to the
        # nearest of them, as ``calibration.nearest_similarity`` computes it.
        self.examples = examples.float() if examples is not None else None

    def forward(self, input_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        from intentflow.encoder import layer_vectors

        features = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.token_types:  # one sentence a row: every token of type 0, as the tokenizer gives
            features["token_type_ids"] = torch.zeros_like(input_ids)
        vectors = layer_vectors(self.encoder, features, self.layers)
        probabilities = torch.softmax(self.head(vectors), dim=1)
        if self.examples is None:
            return probabilities
        nearest = (torch.nn.functional.normalize(vectors.float(), dim=1) @ self.examples.T).max(dim=1).values
        return probabilities, nearest


def export_payload(payload: dict[str, Any], int8: bool = False) -> OnnxExport:
    """The ONNX model of a loaded checkpoint. ``int8``: an embeddings model's encoder quantized to 8-bit integer
    weights (``_quantize``), offered as `export-onnx --int8` and ``publish.onnx_precision``: it moves CLINC150
    10-shot test accuracy by less than the 0.3 points issue 38 allows (benchmarks/RESULTS.md)."""
    require_exporter()
    if payload["config"].get("featurizer", "bow") == "embeddings":
        return _export_embeddings(payload, int8)
    if int8:
        raise IntentflowError("int8 quantizes an embeddings model's sentence encoder; this checkpoint is a "
                              "bag-of-words model, which has none (fix: export it without int8)")
    model, vocab, labels = build_model(payload)
    graph = _ExportGraph(model).eval()
    _check_same_function(model, graph, vocab, payload)
    model_bytes = _export_graph(graph, vocab.encode(["", *vocab.features[:2]]), INPUTS, "width")
    metadata = {
        "format": FORMAT,
        "format_version": BOW_FORMAT_VERSION,
        "kind": "bow",
        "sha256": hashlib.sha256(model_bytes).hexdigest(),
        "inputs": {INPUTS[0]: "int64 [batch, width]", INPUTS[1]: "float32 [batch, width]"},
        "output": {OUTPUT: "float32 [batch, labels], softmax"},
        "labels": list(labels),
        "word_ngrams": vocab.word_ngrams,
        "char_ngrams": vocab.char_ngrams,
        "word_share": vocab.word_share,
        # How Vocabulary.encode turns text into inputs, for readers outside Python; OnnxClassifier calls it.
        "featurizer": {"token_pattern": _TOKEN.pattern, "casefold": True, "padding_index": 0,
                       "weights": "a sentence's distinct known features, unit L2 norm: with word_share null, or "
                                  "features of one kind only, 1/sqrt(n) each; else sqrt(word_share / w) on each of "
                                  "its w word features and sqrt((1 - word_share) / c) on each of its c '#' "
                                  "character n-grams",
                       "features": "words, then runs of up to word_ngrams words joined by a space, then (char_ngrams "
                                   "> 0) '#' + each run of 2 to char_ngrams characters of '<word>'"},
        "vocab": vocab.features,
        **_common_metadata(payload),
    }
    return OnnxExport(model_bytes, metadata)


def _export_embeddings(payload: dict[str, Any], int8: bool) -> OnnxExport:
    from intentflow.encoder import all_layer_states

    head, vocab, labels = build_model(payload)
    encoder = build_encoder(payload)
    tokenizer, max_tokens = _serving_tokenizer(encoder)
    classifier = Classifier(head, vocab, labels, payload, encoder=encoder)
    graph = _EmbeddingsGraph(encoder, head, "token_type_ids" in encoder._features([""]), classifier.examples).eval()
    outputs = [OUTPUT] if classifier.examples is None else [OUTPUT, SIMILARITY]
    texts = ["", "wake me up at seven", *list(payload.get("validation", {}).get("text", []))[:64],
             " ".join(["a long sentence, cut where the encoder stops reading"] * 60)]
    inputs = _token_inputs(tokenizer, texts)
    with all_layer_states(encoder.model):
        with torch.inference_mode():
            probabilities, similarity = classifier.scores(texts)
            expected = [probabilities] + ([similarity] if similarity is not None else [])
            traced = graph(*inputs)
            traced = list(traced) if isinstance(traced, tuple) else [traced]
        # Compared with the classifier's own tokenizing and batching, so the tokenizer file is checked too.
        if not all(torch.allclose(want, got, rtol=0.0, atol=EXPORT_TOLERANCE)
                   for want, got in zip(expected, traced, strict=True)):
            raise RuntimeError("intentflow.onnx_export._EmbeddingsGraph no longer computes what Classifier does for "
                               "an embeddings model; update it to match intentflow/encoder.py and inference.py")
        # Traced on two sentences of different lengths, so the graph keeps the attention mask's padding path.
        model_bytes = _export_graph(graph, _token_inputs(tokenizer, texts[1:3]), TOKEN_INPUTS, "tokens", outputs)
    _check_runtime(model_bytes, inputs, [tensor.numpy() for tensor in expected], outputs)
    if int8:
        model_bytes = _quantize(model_bytes)
    tokenizer_json = tokenizer.to_str()
    entry = payload["encoder"]
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": "embeddings",
        "sha256": hashlib.sha256(model_bytes).hexdigest(),
        "precision": "int8" if int8 else "float32",
        "inputs": {TOKEN_INPUTS[0]: "int64 [batch, tokens]: the tokenizer's ids, padded with 0",
                   TOKEN_INPUTS[1]: "int64 [batch, tokens]: 1 for a token, 0 for padding"},
        "output": {OUTPUT: "float32 [batch, labels], softmax",
                   **({SIMILARITY: "float32 [batch]: cosine similarity to the nearest example the model learnt"}
                      if similarity is not None else {})},
        "labels": list(labels),
        "encoder": {"model": entry["model"], "layers": list(entry.get("layers", [])),
                    "tuned": bool(entry.get("tuned"))},
        # The tokenizer file beside the model (its name is added when the files are named): ids as the encoder
        # was trained on, sentences cut at max_tokens.
        "tokenizer": {"sha256": hashlib.sha256(tokenizer_json.encode("utf-8")).hexdigest(), "max_tokens": max_tokens},
        **_common_metadata(payload),
    }
    return OnnxExport(model_bytes, metadata, tokenizer_json)


def _common_metadata(payload: dict[str, Any]) -> dict[str, Any]:
    return {
        # Answers less confident than threshold are label (threshold null: never), and so are sentences whose output
        # similarity is below similarity; OnnxClassifier applies both. The example vectors are inside the graph.
        "oos": {key: value for key, value in (payload.get("oos") or {"threshold": None, "label": "unknown"}).items()
                if key != "examples"},
        "outcome_hash": payload.get("outcome_hash"),
        "checkpoint_created_at": payload.get("created_at"),
        "intentflow_version": __version__,
    }


def _export_graph(graph: nn.Module, sample: tuple[torch.Tensor, ...], inputs: tuple[str, str], width: str,
                  outputs: Sequence[str] = (OUTPUT,)) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of the dynamo one, but it still exports these graphs and
        # needs only the onnx package (the dynamo one also needs onnxscript); its tracer warns about the transformer's
        # shape checks, which hold for every input the tokenizer gives, and would print on every publish.
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(graph, sample, buffer, dynamo=False, opset_version=OPSET, input_names=list(inputs),
                              output_names=list(outputs), dynamic_axes={
                                  inputs[0]: {0: "batch", 1: width},
                                  inputs[1]: {0: "batch", 1: width},
                                  **{output: {0: "batch"} for output in outputs},
                              })
        except Exception as error:  # noqa: BLE001 - the exporter raises many types
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise IntentflowError(f"ONNX export failed: {first} (fix: check the installed onnx and torch "
                                  f"versions against constraints.txt)") from None
    return buffer.getvalue()


def _serving_tokenizer(encoder: SentenceEncoder) -> tuple[Any, int]:
    """The encoder's tokenizer as a ``tokenizers.Tokenizer`` that cuts at the encoder's longest input and never
    pads, and that length."""
    tokenizers = require("tokenizers", "ONNX export of an embeddings model")
    backend = getattr(encoder.model[0].tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise IntentflowError(f"sentence encoder {encoder.name!r} has no tokenizer that the tokenizers library "
                              "loads, so ONNX Runtime could not turn text into its inputs (fix: serve this model "
                              "with intentflow.inference.Classifier, or train with an encoder that has a "
                              "tokenizer.json)")
    max_tokens = encoder.model.max_seq_length or encoder.model[0].auto_model.config.max_position_embeddings
    tokenizer = tokenizers.Tokenizer.from_str(backend.to_str())
    tokenizer.no_padding()
    tokenizer.enable_truncation(int(max_tokens))
    return tokenizer, int(max_tokens)


def _token_inputs(tokenizer: Any, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask of ``texts``, padded to the longest."""
    tokens = [encoding.ids for encoding in tokenizer.encode_batch(texts)]
    ids = torch.zeros((len(tokens), max(map(len, tokens))), dtype=torch.int64)
    mask = torch.zeros_like(ids)
    for row, sentence in enumerate(tokens):
        ids[row, :len(sentence)] = torch.tensor(sentence)
        mask[row, :len(sentence)] = 1
    return ids, mask


def _check_runtime(model_bytes: bytes, inputs: tuple[torch.Tensor, ...], expected: list[np.ndarray],
                   outputs: list[str]) -> None:
    """The exported graph run by ONNX Runtime, where it is installed, against PyTorch: tracing freezes Python
    branches of the transformer's code, and one taken for another shape of input would show here."""
    try:
        import onnxruntime
    except ImportError:
        return
    session = onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    got = session.run(outputs, {name: tensor.numpy() for name, tensor in zip(TOKEN_INPUTS, inputs, strict=True)})
    for name, found, want in zip(outputs, got, expected, strict=True):
        if not np.allclose(found, want, rtol=0.0, atol=EXPORT_TOLERANCE):
            raise RuntimeError(f"the exported embeddings graph's {name} are {np.abs(found - want).max():.2e} away "
                               "from PyTorch's on ONNX Runtime; the tracer kept a branch that does not hold for every "
                               "input (see intentflow/onnx_export.py)")


def _quantize(model_bytes: bytes) -> bytes:
    """The encoder's matrix products by weights with 8-bit integer weights, activations quantized per call (dynamic).
    The head (small) and the attention's products of two activations stay float32. One scale per output column
    (``per_channel``): with one scale per matrix the int8 model lost 0.49-0.60 points of CLINC150 10-shot accuracy,
    with one per column 0.01 on the mean of 3 seeds (benchmarks/RESULTS.md, issue 38)."""
    require("onnxruntime", "int8 quantization")
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    encoder = [node.name for node in onnx.load_from_string(model_bytes).graph.node
               if node.op_type == "MatMul" and node.name.startswith(ENCODER_SCOPE)]
    # The quantizer advises pre-processing on the root logger; its symbolic shape inference fails on this graph.
    advice = _Without("Please consider to run pre-processing")
    logging.getLogger().addFilter(advice)
    try:
        with tempfile.TemporaryDirectory(prefix="intentflow-int8-") as folder:
            source, target = Path(folder) / "float32.onnx", Path(folder) / "int8.onnx"
            source.write_bytes(model_bytes)
            quantize_dynamic(source, target, weight_type=QuantType.QInt8, per_channel=True, nodes_to_quantize=encoder,
                             extra_options={"MatMulConstBOnly": True})
            return target.read_bytes()
    finally:
        logging.getLogger().removeFilter(advice)


class _Without(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def onnx_files(payload: dict[str, Any], stem: str, int8: bool = False) -> dict[str, str | bytes]:
    """``{stem}.onnx``, ``{stem}.onnx.json`` and (embeddings) ``{stem}.tokenizer.json`` as file name -> content, for
    a registry version folder."""
    return export_payload(payload, int8).files(f"{stem}.onnx")


def export_onnx(checkpoint_path: str | Path, out_path: str | Path, int8: bool = False) -> Path:
    """Export a checkpoint (or a registry folder's production version) to ``out_path``, with ``out_path.json`` and
    (embeddings) the tokenizer beside it."""
    from intentflow.registry import resolve_checkpoint

    out_path = Path(out_path)
    files = export_payload(load_checkpoint(resolve_checkpoint(checkpoint_path)), int8).files(out_path.name)
    # The .json last: a crash before it leaves a .json whose hashes the new model and tokenizer do not match.
    for name, content in files.items():
        (write_bytes if isinstance(content, bytes) else write_text)(out_path.with_name(name), content)
    return out_path


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


def require_exporter() -> None:
    """Refuse early, before training, when ONNX publishing is asked for but cannot run."""
    require("onnx", "ONNX export")
