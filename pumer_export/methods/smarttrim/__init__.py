"""SmartTrim-style token and head trimming (pumer-export design).

SmartTrim (Wang et al., LREC-COLING 2024, arXiv 2305.15033) trims tokens and attention heads with small learned
modules whose decisions depend on the input. No official code exists and the paper's method section could not be
read, so this is **SmartTrim-style, the design of pumer-export**, never the paper's: every choice not stated in the
paper's abstract is this project's and is named as such where it is made (:mod:`.config`, :mod:`.reference`).

Where it lives: settings :class:`.config.SmartTrimConfig` (config.json key ``"smarttrim"``); the trimmers and the
decision and compaction rules :mod:`.reference` (the one definition every backend is held to); training (the
relaxation, cost, curriculum, self-distillation) :mod:`.training`; the METER hook
:mod:`pumer_export.models.meter.smarttrim`; the compaction op ``pumer::compact`` (:mod:`pumer_export.ops`), its
ONNX node ``pumer::PumerCompact`` and function body (:mod:`pumer_export.onnx.functions`). Runs on PyTorch and ONNX
Runtime (one export serves batch 1 and batched inputs, the token counts data-dependent) and TensorRT (the compaction
as the ``PumerCompact`` plugin, its count a size tensor; Polygraphy's runner takes the data-dependent output shapes):
offered like PuMer's engines, but no engine of it has run yet (no TensorRT where this was built), so an engine is to
be checked with ``validate --engine`` before it is trusted.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from .config import CONFIG_KEY, SmartTrimConfig, get_smarttrim_config  # noqa: F401  (CONFIG_KEY: part of the interface)

NAME = "smarttrim"
TITLE = "SmartTrim-style (pumer-export design)"
PROVENANCE = ("pumer-export's design after the paper's abstract (no official code; the method section could not be "
              "read)")
FAMILIES = ("meter",)
BACKENDS = ("torch", "ort", "trt")
STATIC_COUNTS = False  # the token counts depend on the input: exports carry data-dependent lengths
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


def for_training(model, options):
    """The model ``finetune`` trains: a SmartTrim checkpoint as it is, or a plain one with untrained trimmers where
    ``options.trim_settings`` puts them (default: tokens and heads in every co-attention block, no image-tower
    trimmers)."""
    from ... import methods
    from ...errors import PumerExportError

    if methods.for_model(model).NAME == NAME:
        if options.trim_settings:
            raise PumerExportError("the checkpoint already has trimmers, whose locations its weights fix; leave out "
                                   "--cross-layers / --vit-layers / --head-layers")
        return model
    every = tuple(range(model.config.num_hidden_layers))
    given = options.trim_settings or {}
    return attach(model, SmartTrimConfig(cross_layers=given.get("cross_layers", every),
                                         vit_layers=given.get("vit_layers", ()),
                                         head_layers=given.get("head_layers", every)))


def objective(model, options, total_steps):
    from .training import Objective, TrainOptions

    return Objective(model, options.trim_training or TrainOptions(), total_steps, options.seed)


@contextlib.contextmanager
def reduction_set(model, enabled: bool) -> Iterator[None]:
    """``model`` with its trimmers (``enabled``) or without any (the same backbone weights, no trimmer runs: the
    untrimmed baseline), restored after."""
    original = model.trimming_enabled
    model.trimming_enabled = enabled
    try:
        yield
    finally:
        model.trimming_enabled = original
