"""``OnnxClassifier``: an exported model (``intentflow.onnx_export``) served by ONNX Runtime, without torch.

An export is ``model.onnx`` plus ``model.onnx.json`` beside it (labels, out-of-scope threshold, and what turns text
into the graph's inputs), and for an embeddings model ``model.tokenizer.json``, the encoder's tokenizer as the
``tokenizers`` library loads it. An embeddings model is served without importing torch; a bag-of-words model is
featurized by ``Vocabulary.encode``, the code PyTorch inference uses (so the two paths cannot drift apart), which
does import it.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from intentflow.errors import IntentflowError, display_path
from intentflow.prediction import Prediction, Refusal
from intentflow.storage import Location, is_file, is_url, local_path, name_of, read_bytes, sibling

FORMAT = "intentflow-onnx"
# 1: bag-of-words; 2: embeddings too (an intentflow that reads only 1 refuses it, saying to upgrade).
FORMAT_VERSION = 2
BOW_FORMAT_VERSION = 1
KINDS = ("bow", "embeddings")
INPUTS = ("indices", "weights")
TOKEN_INPUTS = ("input_ids", "attention_mask")
OUTPUT = "probabilities"
# An embeddings model with the similarity rule: each sentence's cosine similarity to the nearest example it learnt.
SIMILARITY = "similarity"
# Sentences per ONNX Runtime call for bag-of-words: the graph materialises [rows, width, hidden] floats.
PREDICT_CHUNK = 512
# Padded tokens per ONNX Runtime call for embeddings: bounds memory (attention holds rows x heads x tokens^2 floats)
# while short sentences still go about 180 at a time. 2,048 rather than 4,096: a chunk's activations stay nearer the
# cache, 6-9% more sentences a second in float32 and int8 (4 of 4 alternated runs each; benchmarks/RESULTS.md).
TOKEN_BUDGET = 2048
INSTALL_HINT = "pip install 'intentflow[onnx]'"


def metadata_path(path: Location) -> Location:
    """``model.onnx`` -> ``model.onnx.json``."""
    return sibling(path, name_of(path) + ".json")


def tokenizer_path(path: Location) -> Location:
    """``model.onnx`` -> ``model.tokenizer.json``: an embeddings model's tokenizer."""
    return sibling(path, name_of(path).removesuffix(".onnx") + ".tokenizer.json")


class OnnxClassifier:
    """An exported model run by ONNX Runtime: ``predict(text)`` and ``predict_batch(texts)``, as ``Classifier``."""

    def __init__(self, session: Any, labels: list[str], metadata: dict[str, Any], vocab: Any = None,
                 tokenizer: Any = None):
        self.session = session
        self.labels = labels
        self.metadata = metadata
        self.kind: str = metadata.get("kind", "bow")
        self.vocab = vocab  # bag-of-words: the Vocabulary that featurizes
        self.tokenizer = tokenizer  # embeddings: a tokenizers.Tokenizer that truncates and never pads
        oos = metadata.get("oos") or {}
        self.unknown_label: str = oos.get("label", "unknown")
        self.refusal = Refusal.of(labels, oos.get("threshold"), oos.get("similarity"), oos.get("outcomes") or [])

    @classmethod
    def load(cls, path: Location, threads: int | None = None) -> OnnxClassifier:
        """Load ``model.onnx`` (with ``model.onnx.json`` beside it), or a registry's production version: a folder, or
        a URL such as ``s3://bucket/prefix``.

        ``threads`` caps ONNX Runtime's threads per call (default: its own choice, one per core).
        """
        onnxruntime = require("onnxruntime", "ONNX inference")
        path = _resolve_model(path if is_url(path) else local_path(path))
        shown = display_path(path)
        if not is_file(path):
            raise IntentflowError(f"ONNX model {shown} does not exist "
                                  "(fix: write one with `intentflow export-onnx --checkpoint PATH --out FILE`)")
        metadata = _read_metadata(path)
        model_bytes = read_bytes(path, "ONNX model")
        if hashlib.sha256(model_bytes).hexdigest() != metadata.get("sha256"):
            raise IntentflowError(f"ONNX model {shown} does not match {display_path(metadata_path(path))} "
                                  "(fix: export both again with `intentflow export-onnx`)")
        vocab = tokenizer = None
        if metadata["kind"] == "embeddings":
            tokenizer = _load_tokenizer(path, metadata)
        else:
            from intentflow.features import Vocabulary

            vocab = Vocabulary(metadata["vocab"], word_ngrams=int(metadata["word_ngrams"]),
                               char_ngrams=int(metadata.get("char_ngrams", 0)), word_share=metadata.get("word_share"))
        options = onnxruntime.SessionOptions()
        # Constant folding and node fusions (layer normalisation, GELU, ...): fewer, larger kernels per call.
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
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
        return cls(session, list(metadata["labels"]), metadata, vocab=vocab, tokenizer=tokenizer)

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """Softmax over labels, one row per text."""
        return self.scores(texts)[0]

    def scores(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """Softmax over labels, one row per text, and each text's similarity to the nearest example the model
        learnt where it has the similarity rule (else None)."""
        if self.kind == "embeddings":
            return self._token_scores(texts)
        return self._bag_probabilities(texts), None

    def _token_scores(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """Sentences are tokenized together, ordered by length and run in chunks of similar length, each padded to
        its own longest and at most ``TOKEN_BUDGET`` padded tokens, so the encoder spends little on padding."""
        outputs = [output.name for output in self.session.get_outputs()]
        if len(texts) == 1:  # one sentence (predict): no padding, no sort or scatter
            ids = np.asarray([self.tokenizer.encode(texts[0]).ids], dtype=np.int64)
            got = self.session.run(outputs, {TOKEN_INPUTS[0]: ids, TOKEN_INPUTS[1]: np.ones_like(ids)})
            return got[0], got[1] if len(got) > 1 else None
        probabilities = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        similarity = np.zeros(len(texts), dtype=np.float32) if SIMILARITY in outputs else None
        if not texts:
            return probabilities, similarity
        tokens = [encoding.ids for encoding in self.tokenizer.encode_batch(list(texts))]
        lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
        order = np.argsort(lengths, kind="stable")
        first = 0
        while first < len(order):
            # Ascending lengths: the chunk's last sentence is its longest.
            end = first + 1
            while end < len(order) and (end + 1 - first) * lengths[order[end]] <= TOKEN_BUDGET:
                end += 1
            rows = order[first:end]
            ids = np.zeros((len(rows), int(lengths[rows[-1]])), dtype=np.int64)
            for row, sentence in enumerate(rows):
                ids[row, :lengths[sentence]] = tokens[sentence]
            mask = (np.arange(ids.shape[1]) < lengths[rows][:, None]).astype(np.int64)
            got = self.session.run(outputs, {TOKEN_INPUTS[0]: ids, TOKEN_INPUTS[1]: mask})
            probabilities[rows] = got[0]
            if similarity is not None:
                similarity[rows] = got[1]
            first = end
        return probabilities, similarity

    def _bag_probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """The graph's work is a chunk's rows times its longest bag, so chunks are made of sentences of similar bag
        length (the batch ordered by it) and each is padded to its own longest: padding was over 40% of the work
        when chunks came in the batch's order (benchmarks/RESULTS.md).
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
        probabilities, similarity = self.scores(texts)
        best = probabilities.argmax(axis=1)
        confidence = probabilities[np.arange(len(best)), best]
        refuse = self.refusal.refused(best, confidence, similarity)
        return [Prediction(self.unknown_label if no else self.labels[i], c)
                for i, c, no in zip(best.tolist(), confidence.tolist(), refuse.tolist(), strict=True)]

    def predict(self, text: str) -> Prediction:
        return self.predict_batch([text])[0]


def _resolve_model(path: Location) -> Location:
    if (is_url(path) and str(path).endswith(".onnx")) or (not is_url(path) and not Path(path).is_dir()):
        return path
    from intentflow.registry import resolve_checkpoint

    checkpoint = resolve_checkpoint(path)
    model = sibling(checkpoint, name_of(checkpoint).removesuffix(".pt") + ".onnx")
    if not is_file(model):
        version = name_of(checkpoint).removesuffix(".pt")
        raise IntentflowError(f"production version {version} of {display_path(path)} has no ONNX "
                              f"model ({display_path(model)} is missing) (fix: set onnx = true under [publish] in "
                              "config/training.toml for later versions, or `intentflow export-onnx --checkpoint "
                              f"{display_path(path)} --out FILE`)")
    return model


def _load_tokenizer(path: Location, metadata: dict[str, Any]) -> Any:
    tokenizers = require("tokenizers", "ONNX inference of an embeddings model")
    source = sibling(path, metadata["tokenizer"]["file"])
    shown = display_path(source)
    try:
        text = read_bytes(source, "tokenizer")
    except FileNotFoundError:
        raise IntentflowError(f"{shown} is missing: an embeddings model needs its tokenizer beside "
                              f"{display_path(path)} (fix: export all three files again with `intentflow "
                              "export-onnx`)") from None
    except OSError as error:
        raise IntentflowError(f"{shown} cannot be read ({error.strerror}) (fix: check its permissions)") from None
    if hashlib.sha256(text).hexdigest() != metadata["tokenizer"]["sha256"]:
        raise IntentflowError(f"{shown} is not the tokenizer {display_path(path)} was exported with "
                              "(fix: export all three files again with `intentflow export-onnx`)")
    try:
        tokenizer = tokenizers.Tokenizer.from_str(text.decode("utf-8"))
    except Exception as error:  # noqa: BLE001 - tokenizers raises its own exception types
        raise IntentflowError(f"{shown} cannot be loaded by the tokenizers library: "
                              f"{str(error).splitlines()[0] if str(error) else type(error).__name__} "
                              "(fix: export it again with `intentflow export-onnx`)") from None
    # What the encoder saw in training: sentences cut at its longest, never padded (chunks are padded here).
    tokenizer.no_padding()
    tokenizer.enable_truncation(int(metadata["tokenizer"]["max_tokens"]))
    return tokenizer


def _read_metadata(path: Location) -> dict[str, Any]:
    sidecar = metadata_path(path)
    shown = display_path(sidecar)
    try:
        metadata = json.loads(read_bytes(sidecar, "ONNX metadata").decode("utf-8"))
    except FileNotFoundError:
        raise IntentflowError(f"{shown} is missing: an ONNX model needs its labels and featurizing beside it "
                              "(fix: export both with `intentflow export-onnx`)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise IntentflowError(f"{shown} is unreadable or not JSON ({type(error).__name__}) "
                              "(fix: export it again with `intentflow export-onnx`)") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise IntentflowError(f"{shown} is not intentflow ONNX metadata (fix: export with `intentflow export-onnx`)")
    if not isinstance(metadata.get("format_version"), int) or metadata["format_version"] > FORMAT_VERSION:
        raise IntentflowError(f"{shown} has format version {metadata.get('format_version')}, newer than this "
                              f"intentflow ({FORMAT_VERSION}) (fix: upgrade intentflow)")
    metadata.setdefault("kind", "bow")  # exported before embeddings models were
    if metadata["kind"] not in KINDS:
        raise IntentflowError(f"{shown} has kind {metadata['kind']!r}, not one of {', '.join(KINDS)} "
                              "(fix: export it again with `intentflow export-onnx`)")
    if metadata["kind"] == "embeddings":
        expected: tuple[tuple[str, type], ...] = (("labels", list), ("sha256", str), ("tokenizer", dict))
    else:
        metadata.setdefault("char_ngrams", 0)  # exported before character n-grams
        expected = (("vocab", list), ("labels", list), ("word_ngrams", int), ("char_ngrams", int), ("sha256", str))
    for key, kind in expected:
        if not isinstance(metadata.get(key), kind):
            raise IntentflowError(f"{shown} lacks a valid '{key}' entry (fix: export it again with "
                                  "`intentflow export-onnx`)")
    if metadata["kind"] == "embeddings":
        tokenizer = metadata["tokenizer"]
        if not (isinstance(tokenizer.get("file"), str) and Path(tokenizer["file"]).name == tokenizer["file"]
                and isinstance(tokenizer.get("sha256"), str) and isinstance(tokenizer.get("max_tokens"), int)):
            raise IntentflowError(f"{shown} has an invalid 'tokenizer' entry: it needs the file name beside the "
                                  "model, its sha256 and max_tokens (fix: export it again with `intentflow "
                                  "export-onnx`)")
    else:
        from intentflow.features import _TOKEN

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
    similarity = oos.get("similarity")
    if similarity is not None and (isinstance(similarity, bool) or not isinstance(similarity, int | float)
                                   or SIMILARITY not in metadata.get("output", {})):
        # A model that should refuse by similarity but cannot would answer every out-of-scope sentence.
        raise IntentflowError(f"{shown} has an invalid 'oos' entry: its similarity must be a number, with the "
                              f"graph's {SIMILARITY!r} output named under 'output' (fix: export it again with "
                              "`intentflow export-onnx`)")
    return metadata


def require(module: str, purpose: str) -> Any:
    """``module`` imported, or an error naming ``purpose`` and the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise IntentflowError(f"{purpose} needs the '{module}' package, which is not installed "
                              f"(fix: {INSTALL_HINT})") from None
