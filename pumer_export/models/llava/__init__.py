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


def _drop_layer(config, victor) -> int:
    return num_layers(config) if victor is None else victor.drop_layer


def prefill_flops(config, prompt_length: int, victor=None) -> int:
    """Decoder FLOPs of the prompt pass (``prompt_length`` = L, image and registers included; the head on the last
    position only): layers before the drop over L tokens, the others over L - N (none dropped without ``victor``)."""
    text, n, k = config.text_config, image_tokens(config), _drop_layer(config, victor)
    short = prompt_length - (n if k < num_layers(config) else 0)
    return (k * _layer_flops(text, prompt_length, prompt_length)
            + (num_layers(config) - k) * _layer_flops(text, short, short) + 2 * text.hidden_size * text.vocab_size)


def decode_flops(config, past_length: int, victor=None) -> int:
    """Decoder FLOPs of one generated token after ``past_length`` positions (full length)."""
    text, n, k = config.text_config, image_tokens(config), _drop_layer(config, victor)
    short = past_length - (n if k < num_layers(config) else 0)
    return (k * _layer_flops(text, 1, past_length + 1) + (num_layers(config) - k) * _layer_flops(text, 1, short + 1)
            + 2 * text.hidden_size * text.vocab_size)


def kv_cache_bytes(config, length: int, victor=None, bytes_per_value: int = 4) -> list[int]:
    """Bytes of keys and values per decoder layer for one sequence of ``length`` positions (full length): layers
    from the drop on hold ``length - N``."""
    text, n, k = config.text_config, image_tokens(config), _drop_layer(config, victor)
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    per_position = 2 * text.num_key_value_heads * head_dim * bytes_per_value
    return [per_position * (length if i < k or k == num_layers(config) else length - n)
            for i in range(num_layers(config))]
