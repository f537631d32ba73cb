"""ONNX opsets of exported models (no heavy imports: the CLI parser reads these)."""

from __future__ import annotations

#: Default ONNX opset of exported models (the PyTorch exporter's default).
DEFAULT_OPSET = 20
#: Opsets the bodies and the exporter support (checked with onnx 1.23 and ONNX Runtime 1.31).
MIN_OPSET = 18
MAX_OPSET = 23
SUPPORTED_OPSETS = tuple(range(MIN_OPSET, MAX_OPSET + 1))
