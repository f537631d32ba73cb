"""PuMer (ACL 2023): text-informed pruning and modality-aware merging at fixed ratios in a few layers.

Official semantics (the official code's, quirks included). Where it lives: settings :class:`pumer_export.config.
PumerConfig` (config.json key ``"pumer"``); token counts :mod:`pumer_export.schedule`; the reference
:mod:`pumer_export.reduce`, called as the ``pumer`` ops (:mod:`pumer_export.ops`, with autograd); ONNX function
bodies :mod:`pumer_export.onnx.functions`; TensorRT plugins ``plugins/`` (``PumerPrune``, ``PumerMerge``); the
families' hooks in their modeling (ViLT: inside encoder layers; METER: the text-side cross layers).
"""

from __future__ import annotations

from typing import Any

from ...config import CONFIG_KEY, PumerConfig, get_pumer_config  # noqa: F401  (CONFIG_KEY: part of the interface)

NAME = "pumer"
TITLE = "PuMer"
PROVENANCE = "the official PuMer code (github.com/csarron/PuMer), reproduced at inference"
FAMILIES = ("vilt", "meter")
BACKENDS = ("torch", "ort", "trt")
SETTINGS = PumerConfig


def settings(model_config: Any) -> PumerConfig | None:
    return get_pumer_config(model_config)


def build_model(family, config):
    return family.build_model(config)
