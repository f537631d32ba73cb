"""LLaVA (Hugging Face ``LlavaForConditionalGeneration``, llava-hf layout: CLIP vision tower, projector, Llama-style
language model): the project's first decoder family, the one Victor runs on.

So far: the built-in presets (random weights, for tests and benchmarks) and the model class with Victor's registers
(:mod:`.modeling`). The commands (``info``, ``onnx``, ``run``, ...) take classification families only until the
generation path lands; see :mod:`pumer_export.methods.victor` for what is built.
"""

from __future__ import annotations

NAME = "llava"
TITLE = "LLaVA"
MODEL_TYPE = "llava"
#: Special tokens of the built-in vocabulary: the image placeholder and Victor's register placeholder.
IMAGE_TOKEN = "<image>"
REGISTER_TOKEN = "<reg>"


def image_tokens(config) -> int:
    """N: the visual tokens one image becomes (the vision grid, plus CLS under the "full" strategy)."""
    vision = config.vision_config
    grid = (vision.image_size // vision.patch_size) ** 2
    return grid + (1 if config.vision_feature_select_strategy == "full" else 0)


def num_layers(config) -> int:
    return config.text_config.num_hidden_layers
