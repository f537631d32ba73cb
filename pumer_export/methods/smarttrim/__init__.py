"""SmartTrim-style token and head trimming (pumer-export design).

SmartTrim (Wang et al., LREC-COLING 2024, arXiv 2305.15033) trims tokens and attention heads with small learned
modules whose decisions depend on the input. No official code exists and the paper's method section could not be
read, so this is **SmartTrim-style, the design of pumer-export**, never the paper's: every choice not stated in the
paper's abstract is this project's and is named as such where it is made (:mod:`.config`, :mod:`.reference`).

Where it lives: settings :class:`.config.SmartTrimConfig` (config.json key ``"smarttrim"``); the trimmers and the
decision and compaction rules :mod:`.reference` (the one definition every backend is held to); the METER hook
:mod:`pumer_export.models.meter.smarttrim`. Runs on PyTorch so far (ONNX / TensorRT export: not yet).
"""

from __future__ import annotations

from typing import Any

from .config import CONFIG_KEY, SmartTrimConfig, get_smarttrim_config  # noqa: F401  (CONFIG_KEY: part of the interface)

NAME = "smarttrim"
TITLE = "SmartTrim-style (pumer-export design)"
PROVENANCE = ("pumer-export's design after the paper's abstract (no official code; the method section could not be "
              "read)")
FAMILIES = ("meter",)
BACKENDS = ("torch",)
SETTINGS = SmartTrimConfig


def settings(model_config: Any) -> SmartTrimConfig | None:
    return get_smarttrim_config(model_config)


def build_model(family, config):
    import importlib

    hook = importlib.import_module(f"{family.__name__}.{NAME}")
    return hook.build_model(config)


def attach(model, settings: SmartTrimConfig):
    """``model`` (a checkpoint of a supported family) with untrained trimmers at ``settings``' locations; they keep
    every token and head until trained. PuMer's reducers are turned off."""
    import importlib

    from ... import methods, models

    family = models.for_model(model)
    methods.require_family(importlib.import_module(__name__), family)
    return importlib.import_module(f"{family.__name__}.{NAME}").attach(model, settings)
