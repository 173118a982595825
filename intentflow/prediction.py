"""What a classifier answers, shared by PyTorch (``intentflow.inference``) and ONNX Runtime
(``intentflow.onnx_serving``) inference; here so that the ONNX Runtime path needs no torch."""

from __future__ import annotations

from typing import NamedTuple


class Prediction(NamedTuple):
    label: str
    confidence: float
