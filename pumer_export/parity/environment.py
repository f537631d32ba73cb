"""The exact software and hardware a report was made with."""

from __future__ import annotations

import importlib
import os
import platform
import sys
from typing import Any


def _version(module: str) -> str | None:
    try:
        return getattr(importlib.import_module(module), "__version__", "unknown")
    except Exception:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """Versions, CPU / GPU and thread settings (what a benchmark or parity result depends on)."""
    from .. import __version__
    from ..ops import op_spec_hash

    env: dict[str, Any] = {
        "pumer_export": __version__,
        "op_spec_hash": op_spec_hash(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "versions": {name: _version(name) for name in
                     ("torch", "transformers", "onnx", "onnxruntime", "polygraphy", "numpy", "tensorrt")},
    }
    try:
        import torch

        env["torch_threads"] = torch.get_num_threads()
        env["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
            env["cuda"] = torch.version.cuda
    except Exception:  # pragma: no cover
        pass
    try:
        import onnxruntime as ort

        env["onnxruntime_providers"] = ort.get_available_providers()
    except Exception:  # pragma: no cover
        pass
    return env
