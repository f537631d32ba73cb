"""pumer-export: take a finetuned PuMer vision-language model to deployment.

Top-level names are imported lazily so that ``pumer-export --help`` stays fast.
Importing :mod:`pumer_export.ops` (done by the model module) registers the
``torch.ops.pumer`` custom operators.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "PumerConfig": "config",
    "TokenSchedule": "schedule",
    "token_schedule": "schedule",
    "PumerViltModel": "models.vilt.modeling",
    "PumerViltForQuestionAnswering": "models.vilt.modeling",
    "PumerViltForImageAndTextRetrieval": "models.vilt.modeling",
    "PumerViltForImagesAndTextClassification": "models.vilt.modeling",
    "load_pumer_model": "checkpoints",
    "convert_official": "checkpoints",
    "apply_pumer": "checkpoints",
    "tiny_vilt_model": "models.vilt.presets",
    "MeterConfig": "models.meter.modeling",
    "PumerMeterModel": "models.meter.modeling",
    "PumerMeterForQuestionAnswering": "models.meter.modeling",
    "tiny_meter_model": "models.meter.presets",
    "PumerExportError": "errors",
    "pretrained": "zoo",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
