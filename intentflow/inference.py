"""Loading a checkpoint and predicting: ``Classifier`` and the playbook's ``load_classifier``/``predict``."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from intentflow.calibration import nearest_similarity
from intentflow.checkpoint import load_checkpoint
from intentflow.errors import IntentflowError
from intentflow.features import Vocabulary
from intentflow.model import IntentMLP
from intentflow.prediction import Prediction, Refusal

if TYPE_CHECKING:
    from intentflow.encoder import SentenceEncoder
    from intentflow.trained import TrainedModel

PRECISIONS = ("float32", "bfloat16")
# Sentences per forward pass in batch prediction; bounds memory for very large inputs.
PREDICT_CHUNK = 2048


def build_model(payload: dict[str, Any]) -> tuple[IntentMLP, Vocabulary, list[str]]:
    """Rebuild the network from the config inside a checkpoint and load its weights."""
    config = payload["config"]
    model = IntentMLP(config["vocab_size"], config["num_labels"], config["hidden_size"],
                      config["hidden_layers"], float(config.get("dropout", 0.0)),
                      input_dim=config.get("input_dim") if config.get("featurizer", "bow") == "embeddings" else None)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as error:
        raise IntentflowError(f"checkpoint weights do not match its config: {str(error).splitlines()[0]} "
                              "(fix: retrain, or `intentflow rollback`)") from None
    model.eval()
    vocab = Vocabulary(payload["vocab"], word_ngrams=int(config["word_ngrams"]),
                       char_ngrams=int(config.get("char_ngrams", 0)), word_share=config.get("word_share"))
    return model, vocab, list(payload["labels"])


def build_encoder(payload: dict[str, Any], device: str = "cpu") -> SentenceEncoder | None:
    """The sentence encoder an embeddings checkpoint was trained with (its fine-tuned weights included)."""
    if payload.get("config", {}).get("featurizer", "bow") != "embeddings":
        return None
    from intentflow.encoder import load_encoder

    entry = payload["encoder"]
    encoder = load_encoder(entry["model"], device, state=payload.get("encoder_state"), serving=True,
                           layers=entry.get("layers", []))
    if encoder.dimension != entry["dimension"]:
        raise IntentflowError(f"the checkpoint's encoder gives vectors of {entry['dimension']} numbers, "
                              f"{entry['model']} as installed gives {encoder.dimension} (fix: install the encoder "
                              "the model was trained with, or retrain)")
    return encoder


class Classifier:
    """A loaded intent model: ``predict(text)`` and ``predict_batch(texts)`` give label and confidence.

    A prediction less confident than ``oos_threshold``, of an outcome marked out of scope, or (an embeddings model)
    of a sentence less similar than ``oos_similarity`` to every example the model learnt is ``unknown_label``; its
    confidence is still the top label's.
    """

    def __init__(self, model: IntentMLP, vocab: Vocabulary, labels: list[str],
                 payload: dict[str, Any] | None = None, precision: str = "float32",
                 encoder: SentenceEncoder | None = None):
        if precision not in PRECISIONS:
            raise IntentflowError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        self.model = model.eval()
        self.vocab = vocab
        self.labels = labels
        self.payload = payload or {}
        self.precision = precision
        self.encoder = encoder if encoder is not None else build_encoder(self.payload)
        oos = self.payload.get("oos") or {}
        self.oos_threshold: float | None = oos.get("threshold")
        self.unknown_label: str = oos.get("label", "unknown")
        # Outcomes whose examples are things to refuse: predicting one answers the unknown label.
        self.out_of_scope: list[str] = [label for label in oos.get("outcomes") or [] if label in labels]
        # An embeddings model: a sentence less similar than this to every example vector is the unknown label.
        self.oos_similarity: float | None = oos.get("similarity") if self.encoder is not None else None
        self.examples: torch.Tensor | None = oos.get("examples") if self.oos_similarity is not None else None
        self._arrays: list[tuple[np.ndarray, np.ndarray]] | None = None
        self._refusal: tuple[tuple[Any, ...], Refusal] | None = None

    @classmethod
    def from_trained(cls, trained: TrainedModel) -> Classifier:
        """The classifier a training run made, as its checkpoint will load: encoder and unknown label included."""
        classifier = cls(trained.model, trained.vocab, trained.labels, encoder=trained.encoder)
        classifier.oos_threshold = trained.oos_threshold
        classifier.unknown_label = trained.config.unknown_label
        classifier.out_of_scope = list(trained.out_of_scope)
        classifier.oos_similarity, classifier.examples = trained.oos_similarity, trained.examples
        return classifier

    @classmethod
    def load(cls, path: str | Path, precision: str = "float32") -> Classifier:
        """Load a checkpoint file, or a registry folder's production version.

        ``precision="bfloat16"`` runs batches in bfloat16 on CPUs that support it (over twice the
        throughput; confidences then differ from float32 in the third decimal).
        """
        from intentflow.registry import resolve_checkpoint

        payload = load_checkpoint(resolve_checkpoint(path))
        model, vocab, labels = build_model(payload)
        return cls(model, vocab, labels, payload, precision)

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.payload.get("metrics", {}))

    def probabilities(self, texts: Sequence[str]) -> torch.Tensor:
        """Softmax over labels, one row per text.

        Bag-of-words input is featurised chunk by chunk in this thread while a second thread runs the network on
        the chunk before, so the two overlap on two cores (benchmarks/inference_speed.py).
        """
        return self.scores(texts)[0]

    def scores(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Softmax over labels, one row per text, and for a model with the similarity rule each text's cosine
        similarity to the nearest example it learnt (else None): one pass of the encoder for both."""
        chunks = [list(texts[start:start + PREDICT_CHUNK]) for start in range(0, len(texts), PREDICT_CHUNK)]
        if not chunks:
            return torch.zeros((0, len(self.labels))), None
        if self.encoder is not None:
            parts, similar = [], []
            for chunk in chunks:
                vectors = self.encoder.encode(chunk)
                parts.append(self._softmax(vectors))
                if self.examples is not None:
                    similar.append(nearest_similarity(vectors, self.examples))
            return torch.cat(parts), torch.cat(similar) if similar else None
        if len(chunks) == 1:
            return self._softmax(*self._bags(chunks[0])), None
        with ThreadPoolExecutor(1, thread_name_prefix="intentflow-predict") as network:
            parts = [network.submit(self._softmax, *self._bags(chunk)) for chunk in chunks]
            return torch.cat([part.result() for part in parts]), None

    def _bags(self, texts: list[str]) -> tuple[torch.Tensor, ...]:
        """Bags end to end, not padded: the first layer's fast kernel (docs/decisions.md#speed-of-the-training-step)."""
        device = self.model.input.weight.device
        indices, weights, lengths = (tensor.to(device) for tensor in self.vocab.encode_flat(texts))
        return indices, weights, torch.cumsum(lengths, 0) - lengths

    def _softmax(self, *inputs: torch.Tensor) -> torch.Tensor:
        # Inference mode and autocast hold per thread: set here, where the network runs.
        low_precision = torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bfloat16")
        with torch.inference_mode(), low_precision:
            logits = self.model(*inputs[:2], offsets=inputs[2]) if len(inputs) == 3 else self.model(*inputs)
            return torch.softmax(logits.float(), dim=1)

    @property
    def refusal(self) -> Refusal:
        """The rule that answers the unknown label, from this classifier's current settings (they may be changed)."""
        key = (self.oos_threshold, self.oos_similarity, tuple(self.out_of_scope))
        if self._refusal is None or self._refusal[0] != key:
            self._refusal = (key, Refusal.of(self.labels, *key))
        return self._refusal[1]

    def answers(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per text: the most probable label's index, its probability, and whether the answer is the unknown label
        (below the confidence threshold, near no example, or an outcome marked out of scope). One network pass."""
        probabilities, similarity = self.scores(texts)
        confidence, index = probabilities.max(dim=1)
        refuse = self.refusal.refused(index.cpu().numpy(), confidence.cpu().numpy(),
                                      None if similarity is None else similarity.cpu().numpy())
        return index, confidence, torch.from_numpy(np.asarray(refuse, dtype=bool)).to(index.device)

    def predict_batch(self, texts: Sequence[str], apply_oos: bool = True) -> list[Prediction]:
        """Label and confidence per text; ``apply_oos=False`` gives the top label even when it would be refused."""
        index, confidence, refuse = self.answers(texts)
        names = self.labels
        if apply_oos and bool(refuse.any()):
            index = torch.where(refuse, len(names), index)
            names = [*names, self.unknown_label]
        # tuple.__new__ builds the named tuples in C: one Python call per sentence was a sixth of a batch's time.
        return list(map(tuple.__new__, repeat(Prediction), zip(map(names.__getitem__, index.tolist()),
                                                               confidence.tolist(), strict=True)))

    def decide(self, index: int, confidence: float) -> Prediction:
        """The prediction for top label ``index`` at ``confidence`` (a sentence's similarity to the examples is not
        known here: ``predict`` comes here for bag-of-words models alone, which have no similarity rule)."""
        if self.refusal.refuses(index, confidence):
            return Prediction(self.unknown_label, confidence)
        return Prediction(self.labels[index], confidence)

    def predict(self, text: str) -> Prediction:
        if self.encoder is not None or self.precision != "float32" \
                or next(self.model.parameters()).device.type != "cpu":
            return self.predict_batch([text])[0]
        # One sentence: NumPy's matrix-vector product beats a batched torch call's fixed cost by half.
        bag = self.vocab.bag(text)
        arrays = self._numpy_arrays()
        embedding, bias = arrays[0]
        # The weighted sum of the bag's rows as one matrix-vector product: a third of the time of scaling them.
        if bag:
            columns = np.asarray(bag, dtype=np.intp)  # once, for the weights and the rows
            hidden = bias + self.vocab.bag_weights(columns) @ embedding[columns]
        else:
            hidden = bias
        for weight, layer_bias in arrays[1:]:
            hidden = np.maximum(hidden, 0.0, dtype=np.float32) @ weight + layer_bias
        hidden = np.exp(hidden - hidden.max())
        best = int(hidden.argmax())
        return self.decide(best, float(hidden[best] / hidden.sum()))

    def _numpy_arrays(self) -> list[tuple[np.ndarray, np.ndarray]]:
        if self._arrays is None:
            model = self.model
            layers = [*model.hidden, model.output]
            self._arrays = [(model.input.weight.detach().numpy(), model.input_bias.detach().numpy())]
            self._arrays += [(layer.weight.detach().numpy().T.copy(), layer.bias.detach().numpy()) for layer in layers]
        return self._arrays


def load_classifier(path: str | Path) -> tuple[IntentMLP, Vocabulary, dict[int, str]]:
    """The playbook's loader: ``model, vocab, idx_to_label = load_classifier(path)``."""
    classifier = Classifier.load(path)
    return classifier.model, classifier.vocab, dict(enumerate(classifier.labels))


def predict(text: str, model: IntentMLP, vocab: Vocabulary, idx_to_label: dict[int, str]) -> tuple[str, float]:
    """The playbook's predictor: ``label, confidence = predict(text, model, vocab, idx_to_label)``."""
    labels = [idx_to_label[index] for index in range(len(idx_to_label))]
    label, confidence = Classifier(model, vocab, labels).predict(text)
    return label, confidence
