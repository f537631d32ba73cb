"""ViLT, the single-stream family: text and image tokens in one encoder, reducers inside its layers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ...config import CONFIG_KEY
from ...errors import CheckpointError, ConfigError, PumerExportError
from ...schedule import TokenSchedule, encoder_flops as _encoder_flops, image_tokens_for

NAME = "vilt"
TITLE = "ViLT"
MODEL_TYPE = "vilt"
TASK = "vqa"
SCHEDULE_RULES = "vilt"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids", "pixel_values", "pixel_mask")
#: The VQA answer head (an nn.Sequential whose last layer is the label Linear).
ANSWER_HEAD = "classifier"
SUPPORTS_APPLY = True
#: Random-weight models by name (see :mod:`.presets`).
PRESETS = ("tiny", "demo", "easy-vqa", "vilt-b32")


def is_official(data: dict[str, Any]) -> bool:
    """Official PuMer ViLT configs have ``num_layers`` and no ``num_hidden_layers`` (and are not METER's)."""
    return ("num_layers" in data and "num_hidden_layers" not in data and data.get("model_type") in (None, MODEL_TYPE)
            and CONFIG_KEY not in data)


def config_from_dict(source: Path, data: dict[str, Any]):
    from transformers import ViltConfig

    if is_official(data):
        raise CheckpointError(f"{source} is an official PuMer checkpoint; convert it with `pumer-export convert`")
    try:
        return ViltConfig.from_dict(data)
    except Exception as exc:  # strict dataclass validation of transformers
        raise CheckpointError(f"{source}/config.json is not a valid ViLT config ({exc})".splitlines()[0]) from None


def check_config(config) -> None:
    from .modeling import check_model_config

    check_model_config(config)


def build_model(config):
    from .modeling import PumerViltForQuestionAnswering

    return PumerViltForQuestionAnswering(config)


def convert_official(source: Path, data: dict[str, Any], weights: dict[str, torch.Tensor]):
    """The model of an official PuMer ViLT checkpoint, its weights loaded."""
    from ...checkpoints import load_state_strict
    from .convert import official_config_to_hf, official_state_dict_to_hf

    try:
        model = build_model(official_config_to_hf(data, weights)).eval()
    except ConfigError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    load_state_strict(model, official_state_dict_to_hf(weights), source)
    return model


#: The most image tokens (image CLS included) a ViLT input may have: 64x64 patches, 2048x2048 pixels at ViLT-B/32's
#: patch size, far past any trained size (ViLT interpolates its position table) and still within a 2-core machine.
MAX_IMAGE_TOKENS = 64 * 64 + 1


def image_tokens(config, image_size: tuple[int, int]) -> int:
    return image_tokens_for(image_size, config.patch_size)


def check_input_size(config, image_size: tuple[int, int], text_length: int) -> None:
    """One-line errors for an image size or text length the model cannot take."""
    patch = config.patch_size
    height, width = image_size
    if height < patch or width < patch or height % patch or width % patch:
        raise PumerExportError(
            f"image size {height}x{width} is not a multiple of the patch size {patch}; "
            f"use e.g. {max(height // patch, 1) * patch}x{max(width // patch, 1) * patch}"
        )
    tokens = image_tokens(config, image_size)
    if tokens > MAX_IMAGE_TOKENS:
        side = int((MAX_IMAGE_TOKENS - 1) ** 0.5) * patch
        raise PumerExportError(
            f"image size {height}x{width} makes {tokens} image tokens; ViLT interpolates its {config.image_size}-pixel "
            f"position table up to {MAX_IMAGE_TOKENS} tokens at most (e.g. {side}x{side}): use a smaller --image-size")
    limit = config.max_position_embeddings
    if text_length < 1 or text_length > limit:
        raise PumerExportError(f"text length {text_length} is outside the model's text position table (1..{limit}); "
                               f"use --text-length {limit} or less")


def example_inputs(config, batch: int, *, text_length: int, image_size: tuple[int, int], seed: int = 0,
                   min_text_length: int = 2) -> dict[str, torch.Tensor]:
    from .presets import random_inputs

    return random_inputs(config, batch, text_length=text_length, image_size=tuple(image_size), seed=seed,
                         min_text_length=min_text_length)


def reference_forward(model, inputs: dict[str, torch.Tensor], **kwargs: Any):
    """The forward every backend is compared with: the full patch grid (fixed shapes)."""
    return model(**inputs, trim_image_padding=False, **kwargs)


def encoder_flops(config, schedule: TokenSchedule) -> int:
    return _encoder_flops(schedule, config.hidden_size, config.intermediate_size)


def architecture(config) -> dict[str, Any]:
    """What ``info`` shows of the architecture."""
    return {
        "model_type": config.model_type,
        "num_layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "num_heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "patch_size": config.patch_size,
        "position_grid": config.image_size // config.patch_size,
        "vocab_size": config.vocab_size,
        "max_text_length": config.max_position_embeddings,
        "num_labels": config.num_labels,
    }


def tiny_processor(config):
    """A real small processor for the built-in models: a word-level BERT-style tokenizer, ViLT's image processor."""
    from ...processing import Processor, quiet_transformers, tiny_tokenizer

    with quiet_transformers():
        from transformers import ViltImageProcessor

        images = ViltImageProcessor(size={"shortest_edge": config.image_size}, size_divisor=config.patch_size)
    return Processor(tiny_tokenizer("bert", config.vocab_size), images, Path("."))


def encode_images(processor, images: list, *, image_size: tuple[int, int]) -> dict[str, Any]:
    """Pixel inputs for RGB PIL ``images`` on the fixed canvas: each image resized to fit ``image_size`` (aspect
    kept), normalised by the checkpoint's image processor, padded with zeros at the bottom and right,
    ``pixel_mask`` marking the image."""
    import numpy as np

    from ...processing import fit_to_canvas, quiet_transformers

    height, width = image_size
    fitted = [fit_to_canvas(image, image_size) for image in images]
    with quiet_transformers():
        pixels = processor.image_processor(fitted, do_resize=False, do_pad=False, return_tensors=None)["pixel_values"]
    values = np.zeros((len(images), 3, height, width), dtype=np.float32)
    mask = np.zeros((len(images), height, width), dtype=np.int64)
    for index, array in enumerate(pixels):
        array = np.asarray(array, dtype=np.float32)
        values[index, :, :array.shape[1], :array.shape[2]] = array
        mask[index, :array.shape[1], :array.shape[2]] = 1
    return {"pixel_values": values, "pixel_mask": mask}


def encode_text(processor, questions: list[str], *, text_length: int) -> dict[str, Any]:
    """Text inputs: ids padded or truncated to ``text_length``, token type 0."""
    import numpy as np

    from ...processing import encode_text as _encode

    text = _encode(processor.tokenizer, questions, text_length)
    return {"input_ids": text["input_ids"], "attention_mask": text["attention_mask"],
            "token_type_ids": text.get("token_type_ids", np.zeros_like(text["input_ids"]))}


def encode(processor, images: list, questions: list[str], *, image_size: tuple[int, int],
           text_length: int) -> dict[str, Any]:
    """Model inputs for RGB PIL ``images`` and ``questions`` (:func:`encode_text` and :func:`encode_images`)."""
    return {**encode_text(processor, questions, text_length=text_length),
            **encode_images(processor, images, image_size=image_size)}


#: The demo's model (the shipped easy-VQA checkpoint), its input size (image, text length) and what its report says.
DEMO_PRETRAINED = "easy-vqa-vilt"
DEMO_INPUT = ((64, 64), 16)
DEMO_DESCRIPTION = ("ViLT trained on easy-VQA (`pumer-export pretrained easy-vqa-vilt`): 64x64 images in 8-pixel "
                    "patches (65 image + 16 text tokens), 4 layers of width 128")


def preset_model(name: str, seed: int = 0, **kwargs: Any):
    from . import presets

    builders = {"tiny": presets.tiny_vilt_model, "demo": presets.demo_vilt_model,
                "easy-vqa": presets.easy_vqa_vilt_model, "vilt-b32": presets.vilt_b32_model}
    if name not in builders:
        raise PumerExportError(f"unknown ViLT preset {name!r}; known: {', '.join(builders)}")
    return builders[name](seed=seed, **kwargs)
