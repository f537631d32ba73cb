"""The backends pumer-export runs and the precisions each measures (light: read by the CLI parser)."""

from __future__ import annotations

BACKENDS = ("torch", "ort", "trt")
#: Precisions per backend; every command checks a requested pair against this before any work.
BACKEND_DTYPES = {"torch": ("fp32", "fp16", "bf16"), "ort": ("fp32", "fp16", "int8", "int8-static"),
                  "trt": ("fp32", "fp16")}
#: Quantized precisions (``pumer-export quantize``): ``int8`` = ONNX Runtime dynamic (bench and eval make it from
#: the fp32 export), ``int8-static`` = calibrated QDQ (only from a given export: it needs calibration data).
QUANTIZED = ("int8", "int8-static")
