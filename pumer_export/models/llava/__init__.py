"""LLaVA (Hugging Face ``LlavaForConditionalGeneration``, llava-hf layout: CLIP vision tower, projector, Llama-style
language model): the project's first decoder family, the one Victor runs on.

A "generation" family (:mod:`pumer_export.models`): the built-in presets (random weights, :mod:`.presets`), the
processor (:mod:`.processing`), checkpoints (:mod:`.checkpoint`: stock, Victor or FastV in the llava-hf folder
layout), the two-group decoder the decoder methods share (:mod:`.decoding`, :mod:`.reduced`), their model classes
(:mod:`.stock`, :mod:`.victor`, :mod:`.fastv`), the answer loss (:mod:`.training`) and the costs below. The
pipeline steps on top of them (finetune, run, eval, validate, bench) are :mod:`pumer_export.generation`.
"""

from __future__ import annotations

NAME = "llava"
TITLE = "LLaVA"
MODEL_TYPE = "llava"
TASK = "generation"
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


# ----------------------------------------------------------------------- costs (``info``, ``bench``'s FLOP-ideal)
def _layer_flops(text, queries: int, keys: int) -> int:
    """FLOPs (2 per multiply-add) of one Llama-style decoder layer: projections, the attention over ``keys`` per
    query as the exported graphs compute it (masked positions included), the gated MLP."""
    d, heads, kv_heads = text.hidden_size, text.num_attention_heads, text.num_key_value_heads
    head_dim = getattr(text, "head_dim", None) or d // heads
    q_dim, kv_dim = heads * head_dim, kv_heads * head_dim
    projections = queries * (d * q_dim + 2 * d * kv_dim + q_dim * d)
    attention = 2 * queries * keys * q_dim
    mlp = 3 * queries * d * text.intermediate_size
    return 2 * (projections + attention + mlp)


def _drop(config, method) -> tuple[int, int]:
    """(k, D) of a method's settings (Victor's or FastV's): the drop layer and the positions dropped there (N, or
    N - R for FastV's ``keep_tokens``); no method: nothing dropped."""
    if method is None or method.drop_layer >= num_layers(config):
        return num_layers(config), 0
    return method.drop_layer, image_tokens(config) - getattr(method, "keep_tokens", 0)


def prefill_flops(config, prompt_length: int, method=None) -> int:
    """Decoder FLOPs of the prompt pass (``prompt_length`` = L, image and registers included; the head on the last
    position only): layers before the drop over L tokens, the others over L - D (``method``: Victor's or FastV's
    settings; none: the stock model)."""
    text, (k, dropped) = config.text_config, _drop(config, method)
    short = prompt_length - dropped
    return (k * _layer_flops(text, prompt_length, prompt_length)
            + (num_layers(config) - k) * _layer_flops(text, short, short) + 2 * text.hidden_size * text.vocab_size)


def decode_flops(config, past_length: int, method=None) -> int:
    """Decoder FLOPs of one generated token after ``past_length`` positions (full length)."""
    text, (k, dropped) = config.text_config, _drop(config, method)
    short = past_length - dropped
    return (k * _layer_flops(text, 1, past_length + 1) + (num_layers(config) - k) * _layer_flops(text, 1, short + 1)
            + 2 * text.hidden_size * text.vocab_size)


def kv_cache_bytes(config, length: int, method=None, bytes_per_value: int = 4) -> list[int]:
    """Bytes of keys and values per decoder layer for one sequence of ``length`` positions (full length): layers
    from the drop on hold ``length - D``."""
    text, (k, dropped) = config.text_config, _drop(config, method)
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    per_position = 2 * text.num_key_value_heads * head_dim * bytes_per_value
    return [per_position * (length if i < k else length - dropped) for i in range(num_layers(config))]


# ----------------------------------------------------------------------- presets, checkpoints, ``info``
from .presets import PRESETS  # noqa: E402,F401  (part of the family interface; after the constants)


def preset_model(name: str = "tiny", seed: int = 0):
    """A seeded random LLaVA of preset ``name`` in the stock class (the decoder methods' interface, nothing
    dropped)."""
    from .presets import llava_model
    from .stock import stock

    return stock(llava_model(name, seed=seed))


def load(path):
    """A LLaVA checkpoint folder as its method's model (:func:`.checkpoint.load`)."""
    from .checkpoint import load as load_checkpoint

    return load_checkpoint(path)


def load_processor(path):
    from .checkpoint import load_processor as load_folder_processor

    return load_folder_processor(path)


def architecture(config) -> dict:
    """The rows ``info`` shows for a LLaVA config."""
    vision, text = config.vision_config, config.text_config
    return {
        "vision tower": f"CLIP ViT, {vision.num_hidden_layers} layers, width {vision.hidden_size}, "
                        f"{vision.image_size}x{vision.image_size} images in {vision.patch_size}-px patches",
        "visual tokens (N)": image_tokens(config),
        "feature layer": f"{config.vision_feature_layer} ({config.vision_feature_select_strategy})",
        "language model": f"{text.model_type}, {text.num_hidden_layers} layers, width {text.hidden_size}, "
                          f"{text.num_attention_heads} heads ({text.num_key_value_heads} for keys/values), "
                          f"vocabulary {text.vocab_size}",
        "positions": text.max_position_embeddings,
        "image token id": config.image_token_id,
    }
