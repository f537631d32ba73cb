"""The backends pumer-export runs and the precisions each measures (light: read by the CLI parser)."""

from __future__ import annotations

BACKENDS = ("torch", "ort", "trt")
#: Precisions per backend; every command checks a requested pair against this before any work.
BACKEND_DTYPES = {"torch": ("fp32", "fp16", "bf16"), "ort": ("fp32", "fp16"), "trt": ("fp32", "fp16")}
