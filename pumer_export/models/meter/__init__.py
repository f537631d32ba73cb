"""METER, the two-stream family: CLIP ViT and RoBERTa towers, co-attention blocks, reducers in the text side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ...config import CONFIG_KEY
from ...errors import CheckpointError, ConfigError, PumerExportError
from ...schedule import TokenSchedule

NAME = "meter"
TITLE = "METER"
MODEL_TYPE = "meter"
TASK = "vqa"
SCHEDULE_RULES = "meter"
INPUT_NAMES = ("input_ids", "attention_mask", "pixel_values")
#: The VQA answer head (an nn.Sequential whose last layer is the label Linear).
ANSWER_HEAD = "vqa_classifier"
SUPPORTS_APPLY = False
PRESETS = ("tiny", "demo", "easy-vqa", "meter-b16")


def is_official(data: dict[str, Any]) -> bool:
    """Official PuMer METER configs: ``model_type`` "meter" with ``num_top_layer`` and no pumer-export settings."""
    return data.get("model_type") == MODEL_TYPE and "num_top_layer" in data and CONFIG_KEY not in data


def config_from_dict(source: Path, data: dict[str, Any]):
    from .modeling import MeterConfig

    if is_official(data):
        raise CheckpointError(f"{source} is an official PuMer METER checkpoint; convert it with `pumer-export convert`")
    try:
        return MeterConfig.from_dict(data)
    except Exception as exc:
        raise CheckpointError(f"{source}/config.json is not a valid METER config ({exc})".splitlines()[0]) from None


def check_config(config) -> None:
    from .modeling import check_model_config

    check_model_config(config)


def build_model(config):
    from .modeling import PumerMeterForQuestionAnswering

    return PumerMeterForQuestionAnswering(config)


def convert_official(source: Path, data: dict[str, Any], weights: dict[str, torch.Tensor]):
    """The model of an official PuMer METER checkpoint, its weights loaded (text encoder config: see convert)."""
    from ...checkpoints import load_state_strict
    from ...fsutil import read_json_object
    from .convert import TEXT_ENCODER_CONFIG_FILE, official_config, official_state_dict

    text_config = None
    path = source / TEXT_ENCODER_CONFIG_FILE
    if path.is_file():
        text_config = read_json_object(path, error=CheckpointError, hint=" (a RobertaConfig)")
    for key in ("hidden_size", "num_heads", "image_size"):
        if key not in data:
            raise CheckpointError(f"{source}/config.json lacks {key}; is this an official PuMer METER checkpoint?")
    try:
        model = build_model(official_config(data, weights, text_config)).eval()
    except ConfigError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    load_state_strict(model, official_state_dict(weights), source)
    return model


def image_tokens(config, image_size: tuple[int, int]) -> int:
    return (image_size[0] // config.patch_size) * (image_size[1] // config.patch_size) + 1


def check_input_size(config, image_size: tuple[int, int], text_length: int) -> None:
    """METER's CLIP tower does not interpolate its positions: the image size is the model's."""
    side = config.image_size
    if tuple(image_size) != (side, side):
        raise PumerExportError(f"METER runs at its own image size {side}x{side} (its CLIP position table is not "
                               f"interpolated), not {image_size[0]}x{image_size[1]}; use --image-size {side}x{side}")
    limit = config.max_position_embeddings
    if text_length < 1 or text_length > limit:
        raise PumerExportError(f"text length {text_length} is outside the model's text position table (1..{limit}); "
                               f"use --text-length {limit} or less")


def example_inputs(config, batch: int, *, text_length: int, image_size: tuple[int, int], seed: int = 0,
                   min_text_length: int = 2) -> dict[str, torch.Tensor]:
    from .presets import random_inputs

    check_input_size(config, image_size, text_length)
    return random_inputs(config, batch, text_length=text_length, seed=seed, min_text_length=min_text_length)


def reference_forward(model, inputs: dict[str, torch.Tensor], **kwargs: Any):
    kwargs.pop("trim_image_padding", None)
    return model(**{name: inputs[name] for name in INPUT_NAMES if name in inputs}, **kwargs)


def _layer_flops(query_tokens: int, key_tokens: int, hidden: int, intermediate: int, ffn_tokens: int) -> int:
    """One attention sub-layer of ``query_tokens`` over ``key_tokens`` plus an FFN on ``ffn_tokens`` (2 / MAC)."""
    attention = 2 * (2 * query_tokens * hidden * hidden + 2 * key_tokens * hidden * hidden)  # Q, O; K, V
    attention += 2 * 2 * query_tokens * key_tokens * hidden
    return attention + 2 * 2 * ffn_tokens * hidden * intermediate


def encoder_flops(config, schedule: TokenSchedule) -> int:
    """Analytic FLOPs of both towers and the co-attention blocks for one sample under ``schedule``.

    A reduced block's text side runs its self- and cross-attention on the tokens that enter it and its FFN on the
    merged text; its image side runs entirely on the reduced image tokens and the merged text (M6).
    """
    vision, text = config.vision(), config.text()
    image_in, text_in = schedule.image_tokens, schedule.text_tokens
    total = vision.num_hidden_layers * _layer_flops(image_in, image_in, vision.hidden_size,
                                                    vision.intermediate_size, image_in)
    total += text.num_hidden_layers * _layer_flops(text_in, text_in, text.hidden_size, text.intermediate_size,
                                                   text_in)
    h, i = config.hidden_size, config.intermediate_size
    image, words = image_in, text_in
    for block in range(config.num_hidden_layers):
        counts = schedule.at(block)
        image_out, words_out = (counts.image_out, counts.text_out) if counts is not None else (image, words)
        total += _layer_flops(words, words, h, 0, 0) + _layer_flops(words, image, h, i, words_out)  # text side
        total += _layer_flops(image_out, image_out, h, 0, 0) + _layer_flops(image_out, words_out, h, i, image_out)
        image, words = image_out, words_out
    return total


def architecture(config) -> dict[str, Any]:
    """What ``info`` shows of the architecture."""
    vision, text = config.vision(), config.text()
    return {
        "model_type": config.model_type,
        "num_layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "num_heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "vision_layers": vision.num_hidden_layers,
        "vision_width": vision.hidden_size,
        "image_size": config.image_size,
        "patch_size": config.patch_size,
        "text_layers": text.num_hidden_layers,
        "vocab_size": text.vocab_size,
        "max_text_length": config.max_position_embeddings,
        "num_labels": config.num_labels,
    }


def tiny_processor(config):
    """A real small processor for the built-in models: a word-level RoBERTa-style tokenizer (``<s>`` = 0, ``<pad>``
    = 1, ``</s>`` = 2) and CLIP's image processor at the model's image size."""
    from ...processing import Processor, quiet_transformers, tiny_tokenizer
    from .modeling import CLIP_MEAN, CLIP_STD

    side = config.image_size
    with quiet_transformers():
        from transformers import CLIPImageProcessor

        images = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side},
                                    image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    return Processor(tiny_tokenizer("roberta", config.vocab_size), images, Path("."))


def encode_images(processor, images: list, *, image_size: tuple[int, int]) -> dict[str, Any]:
    """Pixel inputs for RGB PIL ``images``: CLIP's resize and centre crop to the model's image size (which is the
    export's canvas)."""
    import numpy as np

    from ...processing import quiet_transformers

    with quiet_transformers():
        pixels = processor.image_processor(images, return_tensors="np")["pixel_values"].astype(np.float32)
    if tuple(pixels.shape[2:]) != tuple(image_size):
        raise PumerExportError(f"the image processor makes {pixels.shape[2]}x{pixels.shape[3]} images but the model "
                               f"takes {image_size[0]}x{image_size[1]}; fix crop_size in preprocessor_config.json")
    return {"pixel_values": pixels}


def encode_text(processor, questions: list[str], *, text_length: int) -> dict[str, Any]:
    """Text inputs: ids padded or truncated to ``text_length``."""
    from ...processing import encode_text as _encode

    text = _encode(processor.tokenizer, questions, text_length)
    return {"input_ids": text["input_ids"], "attention_mask": text["attention_mask"]}


def encode(processor, images: list, questions: list[str], *, image_size: tuple[int, int],
           text_length: int) -> dict[str, Any]:
    """Model inputs for RGB PIL ``images`` and ``questions`` (:func:`encode_text` and :func:`encode_images`)."""
    return {**encode_text(processor, questions, text_length=text_length),
            **encode_images(processor, images, image_size=image_size)}


#: The demo's model (the shipped easy-VQA checkpoint), its input size (image, text length) and what its report says.
DEMO_PRETRAINED = "easy-vqa-meter"
DEMO_INPUT = ((64, 64), 16)
DEMO_DESCRIPTION = ("METER trained on easy-VQA (`pumer-export pretrained easy-vqa-meter`): 64x64 images in 8-pixel "
                    "patches (65 image + 16 text tokens), 2-layer CLIP and text towers, 3 co-attention blocks of "
                    "width 128")


def preset_model(name: str, seed: int = 0, **kwargs: Any):
    from . import presets

    builders = {"tiny": presets.tiny_meter_model, "demo": presets.demo_meter_model,
                "easy-vqa": presets.easy_vqa_meter_model,
                "meter-b16": presets.meter_b16_model}
    if name not in builders:
        raise PumerExportError(f"unknown METER preset {name!r}; known: {', '.join(builders)}")
    return builders[name](seed=seed, **kwargs)
