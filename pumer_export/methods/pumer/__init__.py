"""PuMer (ACL 2023): text-informed pruning and modality-aware merging at fixed ratios in a few layers.

Official semantics (the official code's, quirks included). Where it lives: settings :class:`pumer_export.config.
PumerConfig` (config.json key ``"pumer"``); token counts :mod:`pumer_export.schedule`; the reference
:mod:`pumer_export.reduce`, called as the ``pumer`` ops (:mod:`pumer_export.ops`, with autograd); ONNX function
bodies :mod:`pumer_export.onnx.functions`; TensorRT plugins ``plugins/`` (``PumerPrune``, ``PumerMerge``); the
families' hooks in their modeling (ViLT: inside encoder layers; METER: the text-side cross layers).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from ...config import CONFIG_KEY, PumerConfig, get_pumer_config  # noqa: F401  (CONFIG_KEY: part of the interface)

NAME = "pumer"
TITLE = "PuMer"
PROVENANCE = "the official PuMer code (github.com/csarron/PuMer), reproduced at inference"
FAMILIES = ("vilt", "meter")
BACKENDS = ("torch", "ort", "trt")
STATIC_COUNTS = True  # the token counts follow from the settings and the input size alone
SETTINGS = PumerConfig


def settings(model_config: Any) -> PumerConfig | None:
    return get_pumer_config(model_config)


def build_model(family, config):
    return family.build_model(config)


def for_training(model, options):
    """The model ``finetune`` trains (PuMer's reducers in place or not, as ``options.reduction`` says)."""
    from ... import methods
    from ...errors import PumerExportError

    own = methods.for_model(model)
    if own.NAME != NAME:
        raise PumerExportError(f"the checkpoint is a {own.TITLE} one; finetune it with --method {own.NAME}")
    return model


def objective(model, options, total_steps):
    """PuMer trains on the task loss alone (None: ``finetune``'s own); its reducers carry the reference's
    gradient."""
    return None


@contextlib.contextmanager
def reduction_set(model, enabled: bool) -> Iterator[None]:
    """``model`` with its reducers (``enabled``) or without them (the same weights: the baseline), restored after."""
    original = model.pumer_config
    if not enabled:
        model.set_pumer_config(original.without_reduction())
    try:
        yield
    finally:
        model.set_pumer_config(original)
