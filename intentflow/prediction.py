"""What a classifier answers, shared by PyTorch (``intentflow.inference``) and ONNX Runtime
(``intentflow.onnx_serving``) inference; here so that the ONNX Runtime path needs no torch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np


class Prediction(NamedTuple):
    label: str
    confidence: float


class Refusal(NamedTuple):
    """When a model answers its unknown label instead of its top outcome: the one rule PyTorch, the one-sentence
    NumPy path and ONNX Runtime all apply (``refused``), so the three cannot drift apart.

    ``threshold``: confidence below which the top label is refused (None: never). ``similarity``: cosine similarity
    to the nearest learnt example below which a sentence is refused (None: never). ``marked``: per label, whether it
    is an outcome marked out of scope (its examples are things to refuse).
    """

    threshold: float | None
    similarity: float | None
    marked: np.ndarray

    @classmethod
    def of(cls, labels: Sequence[str], threshold: float | None, similarity: float | None,
           out_of_scope: Sequence[str]) -> Refusal:
        marked = set(out_of_scope)
        return cls(threshold, similarity, np.fromiter((label in marked for label in labels), dtype=bool,
                                                      count=len(labels)))

    def refused(self, index: Any, confidence: Any, similarity: Any = None) -> Any:
        """Whether each answer is refused, from its top label ``index``, that label's ``confidence`` and (where the
        model has the similarity rule) its ``similarity`` to the nearest example: NumPy arrays or one number each.

        Compared in float64: a float32 confidence converts exactly, so a value at the threshold is refused or kept
        alike in every runtime.
        """
        refuse = self.marked[index]
        if self.threshold is not None:
            refuse = refuse | (np.asarray(confidence, dtype=np.float64) < self.threshold)
        if self.similarity is not None and similarity is not None:
            refuse = refuse | (np.asarray(similarity, dtype=np.float64) < self.similarity)
        return refuse

    def refuses(self, index: int, confidence: float) -> bool:
        """``refused`` for one answer without a similarity (a bag-of-words sentence), in plain Python: the
        one-sentence path is tens of microseconds, and NumPy's scalar calls were several of them. Python floats are
        float64, so the comparison is ``refused``'s."""
        return bool(self.marked[index]) or (self.threshold is not None and confidence < self.threshold)
