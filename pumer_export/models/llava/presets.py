"""Built-in LLaVA configurations (random weights): small enough for tests and this CPU."""

from __future__ import annotations

from typing import Any

import torch

#: name -> (vision tower, language model) settings.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # 32x32 images in 8-px patches: 16 visual tokens; 4 decoder layers with grouped-query attention
    "tiny": {
        "vision": dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2),
        "text": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                     num_key_value_heads=2, max_position_embeddings=256),
    },
    # easy-VQA's 64x64 images in 8-px patches: 64 visual tokens (room for Victor to remove); the tower's last layer
    # feeds the projector (a 2-layer tower has no useful penultimate layer)
    "easy-vqa": {
        "vision": dict(image_size=64, patch_size=8, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                       num_attention_heads=4),
        "text": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                     num_key_value_heads=2, max_position_embeddings=128),
        "feature_layer": -1,
    },
    # speed at a realistic token layout (random weights, benchmarks only): LLaVA-1.5's 336x336 images in 14-px
    # patches (576 visual tokens) through a small tower, and a decoder of width 512 and 8 layers, so that the
    # decoder's prefill is dominated by its matmuls as a real LLaVA's is
    "wide": {
        "vision": dict(image_size=336, patch_size=14, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=2),
        "text": dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=8, num_attention_heads=8,
                     num_key_value_heads=8, max_position_embeddings=1024),
    },
}


def llava_config(name: str = "tiny", *, vocab_size: int = 96, image_token_id: int = 4, **text: Any):
    """The transformers ``LlavaConfig`` of preset ``name`` (``text`` overrides language-model settings); the
    special ids are the built-in tokenizer's (:mod:`.processing`: BOS 1, EOS 2, padding 3)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    preset = PRESETS[name]
    vision = CLIPVisionConfig(**preset["vision"])
    language = LlamaConfig(**{**preset["text"], "vocab_size": vocab_size, "bos_token_id": 1, "eos_token_id": 2,
                              "pad_token_id": 3, **text})
    grid = (vision.image_size // vision.patch_size) ** 2
    return LlavaConfig(vision_config=vision, text_config=language, image_token_id=image_token_id,
                       image_seq_length=grid, projector_hidden_act="gelu",
                       vision_feature_layer=preset.get("feature_layer", -2))


def llava_model(name: str = "tiny", seed: int = 0, **kwargs: Any):
    """A seeded random stock ``LlavaForConditionalGeneration`` of preset ``name``."""
    from transformers import LlavaForConditionalGeneration

    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(llava_config(name, **kwargs))
    return model.eval()
