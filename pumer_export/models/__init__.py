"""Model families: one package per family, each declaring what the rest of the toolchain needs.

Every family says its ``TASK``: "vqa" (answer classification: ViLT, METER) or "generation" (LLaVA, whose answer is
generated text; its pipeline steps are :mod:`pumer_export.generation`, the interface it declares is
:data:`GENERATION_INTERFACE`). A "vqa" family package (``pumer_export.models.vilt``, ``pumer_export.models.meter``)
provides, under the same names:

* ``NAME``, ``TITLE``, ``MODEL_TYPE`` (the ``model_type`` of its config.json), ``SCHEDULE_RULES`` (see
  :func:`pumer_export.schedule.layer_counts`), ``INPUT_NAMES`` (the exported model's inputs, in order),
  ``ANSWER_HEAD`` (the attribute holding the VQA head, an ``nn.Sequential`` ending in the label layer),
  ``SUPPORTS_APPLY`` (training-free PuMer on a Hugging Face checkpoint), ``PRESETS`` and ``preset_model(name)``
  (random-weight models for tests and benchmarks), ``DEMO_PRETRAINED`` / ``DEMO_INPUT`` / ``DEMO_DESCRIPTION``
  (the demo's model: a shipped trained checkpoint, :mod:`pumer_export.zoo`);
* checkpoints: ``is_official(data)`` (an official PuMer config.json), ``convert_official(source, data, weights)``
  (the model with the official weights loaded), ``config_from_dict(source, data)`` (a pumer-export checkpoint's
  config), ``check_config(config)``, ``build_model(config)``;
* inputs: ``check_input_size(config, image_size, text_length)``, ``image_tokens(config, image_size)``,
  ``example_inputs(config, batch, text_length=, image_size=, seed=)`` (seeded random inputs),
  ``tiny_processor(config)`` (a real small processor for the built-in models), ``encode_images(processor, images,
  image_size=)`` and ``encode_text(processor, questions, text_length=)`` (the processor's tensors on an export's
  fixed canvas) and ``encode(processor, images, questions, image_size=, text_length=)`` (both);
* ``reference_forward(model, inputs, **kw)`` (the forward every backend is compared with, fixed shapes),
  ``encoder_flops(config, schedule)`` and ``architecture(config)`` (the rows ``info`` shows).

The reduction itself is not part of a family: both call the same ``pumer`` ops (:mod:`pumer_export.reduce`).
Commands find a family with :func:`for_config` (a config.json's contents) or :func:`for_model`.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Sequence

from ..errors import CheckpointError

TASKS = ("vqa", "generation")
#: What every "vqa" family package defines (see the module doc); ``tests/test_meter.py`` holds both families to it.
INTERFACE = (
    "NAME", "TITLE", "MODEL_TYPE", "TASK", "SCHEDULE_RULES", "INPUT_NAMES", "ANSWER_HEAD", "SUPPORTS_APPLY", "PRESETS",
    "preset_model", "DEMO_PRETRAINED", "DEMO_INPUT", "DEMO_DESCRIPTION", "is_official",
    "convert_official", "config_from_dict", "check_config", "build_model", "check_input_size", "image_tokens",
    "example_inputs", "tiny_processor", "encode_images", "encode_text", "encode", "reference_forward",
    "encoder_flops", "architecture",
)
#: What a "generation" family defines: its presets, the token layout and the costs ``info`` and ``bench`` show, and
#: the checkpoint reader (``load``, ``load_processor``).
GENERATION_INTERFACE = ("NAME", "TITLE", "MODEL_TYPE", "TASK", "PRESETS", "preset_model", "image_tokens",
                        "num_layers", "prefill_flops", "decode_flops", "kv_cache_bytes", "architecture", "load",
                        "load_processor")
#: Family name -> package; the order is the order of help texts.
FAMILIES = {"vilt": "pumer_export.models.vilt", "meter": "pumer_export.models.meter",
            "llava": "pumer_export.models.llava"}


def get(name: str) -> ModuleType:
    """The family package called ``name``."""
    if name not in FAMILIES:
        raise CheckpointError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}")
    return importlib.import_module(FAMILIES[name])


def for_config(data: dict[str, Any], source: Any = "config.json") -> ModuleType:
    """The family of a config.json (``model_type``), or a one-line error naming the supported ones."""
    model_type = data.get("model_type")
    for name in FAMILIES:
        family = get(name)
        if family.MODEL_TYPE == model_type:
            return family
    hint = " (an official PuMer ViLT checkpoint has no model_type: convert it with `pumer-export convert`)" \
        if model_type is None and "num_layers" in data else ""
    raise CheckpointError(f"{source}: model_type {model_type!r} is not supported; supported: "
                          f"{', '.join(repr(get(n).MODEL_TYPE) for n in FAMILIES)}{hint}")


def is_generation(data: dict[str, Any]) -> bool:
    """Whether a config.json's contents are a generation family's (LLaVA) checkpoint."""
    name = next((n for n in FAMILIES if get(n).MODEL_TYPE == data.get("model_type")), None)
    return name is not None and get(name).TASK == "generation"


def for_model(model: Any) -> ModuleType:
    """The family of a loaded model (or of its config)."""
    config = getattr(model, "config", model)
    return for_config({"model_type": getattr(config, "model_type", None)}, type(model).__name__)


def example_inputs(config, batch: int, *, text_length: int, image_size: Sequence[int], dtype=None,
                   seed: int = 0) -> dict[str, Any]:
    """Seeded random inputs of ``config``'s family in the exported model's layout (pixel_values in ``dtype``)."""
    inputs = for_model(config).example_inputs(config, batch, text_length=text_length, image_size=tuple(image_size),
                                              seed=seed)
    if dtype is not None:
        inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    return inputs


def reduction_set(model, enabled: bool):
    """Run ``model`` with its reducers (``enabled``) or without them (the same weights: the baseline), and restore
    its settings afterwards (a context manager; each method says what "without" means)."""
    from .. import methods

    return methods.for_model(model).reduction_set(model, enabled)
