"""Token-reduction methods: one package per method, found through one registry (as :mod:`pumer_export.models` finds
families).

A method package (``pumer_export.methods.pumer``, ``pumer_export.methods.smarttrim``) declares, under the same names:

* ``NAME``, ``TITLE``, ``PROVENANCE`` (whose semantics the reference follows: the official code, or this project's
  design where no official code exists), ``CONFIG_KEY`` (the key of its settings in a checkpoint's config.json),
  ``FAMILIES`` (the model families it supports), ``BACKENDS`` (the backends it runs on so far), ``STATIC_COUNTS``
  (whether its token counts follow from its settings and the input size alone, or depend on the input);
* ``settings(model_config)`` (its settings stored in a model config, or None) and ``build_model(family, config)``
  (the family's model with the method attached; a family's hooks for a method live in
  ``models/<family>/<method>.py``);
* ``for_training(model, finetune_options)`` (the model ``finetune`` trains) and ``objective(model,
  finetune_options, total_steps)`` (its training objective, or None for the task loss alone);
* ``reduction_set(model, enabled)``: a context manager running the model with its reduction or without (the same
  weights: the baseline every speedup and accuracy cost is measured against).

LLaVA's decoder methods (``victor``, ``fastv``) live here too (their settings and rules), but a LLaVA checkpoint names
its method by the settings it carries (:func:`pumer_export.models.llava.checkpoint.method_of`): the interface above
is the classification families' ("vqa" task), and the generation task's pipeline is :mod:`pumer_export.generation`.

The reduction semantics of each method are defined once, in its reference (PuMer: :mod:`pumer_export.reduce` through
the ``pumer`` ops; SmartTrim: :mod:`pumer_export.methods.smarttrim.reference`); every backend is tested against it.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Mapping

from ..errors import PumerExportError

#: Method name -> package; the order is the order of help texts. A checkpoint names its method by the settings it
#: carries: SmartTrim's key wins over PuMer's (a SmartTrim checkpoint keeps PuMer's settings, reducers off).
METHODS = {"pumer": "pumer_export.methods.pumer", "smarttrim": "pumer_export.methods.smarttrim"}
INTERFACE = ("NAME", "TITLE", "PROVENANCE", "CONFIG_KEY", "FAMILIES", "BACKENDS", "STATIC_COUNTS", "settings",
             "build_model",
             "for_training", "objective", "reduction_set")


def get(name: str) -> ModuleType:
    """The method package called ``name`` (one line naming the known ones otherwise)."""
    if name not in METHODS:
        raise PumerExportError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    return importlib.import_module(METHODS[name])


def names() -> list[str]:
    return list(METHODS)


def for_config(data: Mapping[str, Any] | Any) -> ModuleType:
    """The method of a checkpoint: its config.json's contents (a mapping) or a loaded model config."""
    keys = data.keys() if isinstance(data, Mapping) else vars(data)
    for name in reversed(METHODS):  # the most specific method first
        method = get(name)
        if method.CONFIG_KEY in keys and (isinstance(data, Mapping) or getattr(data, method.CONFIG_KEY) is not None):
            return method
    return get("pumer")


def for_model(model: Any) -> ModuleType:
    return for_config(getattr(model, "config", model))


def require_backend(model_or_config: Any, backend: str, what: str) -> None:
    """One line when the checkpoint's method does not run on ``backend`` yet (before any work)."""
    method = for_model(model_or_config)
    if backend not in method.BACKENDS:
        raise PumerExportError(f"{what}: {method.TITLE} checkpoints run on {', '.join(method.BACKENDS)} so far; "
                               f"{backend} is not implemented for them yet")


def require_family(method: ModuleType, family: ModuleType) -> None:
    if family.NAME not in method.FAMILIES:
        raise PumerExportError(f"{method.TITLE} is implemented for {', '.join(method.FAMILIES)}, not {family.TITLE}")
