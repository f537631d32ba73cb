"""Official PuMer METER checkpoints -> pumer-export METER checkpoints (lossless).

The official state dict keeps its names except for the CLIP tower, which maps onto transformers' CLIP modules
(``in_proj`` split into q / k / v). The text encoder's RobertaConfig comes from ``text_encoder_config.json`` next to
the weights when present, else from roberta-base's public values built in here (no hub access).
"""

from __future__ import annotations

from typing import Any

import torch

from ...config import PumerConfig, set_pumer_config
from ...errors import ConfigError
from .modeling import MeterConfig

#: The RobertaConfig of roberta-base (the official code loads it from the hub; built in here, no download).
ROBERTA_BASE = {
    "vocab_size": 50265, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "hidden_act": "gelu", "max_position_embeddings": 514, "type_vocab_size": 1,
    "layer_norm_eps": 1e-5, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
}
#: Where a converted official checkpoint may carry its text encoder's RobertaConfig.
TEXT_ENCODER_CONFIG_FILE = "text_encoder_config.json"
_VIT = "meter.vit_model."
_TEXT_CONFIG_KEYS = tuple(ROBERTA_BASE) + ("hidden_dropout_prob", "attention_probs_dropout_prob",
                                           "initializer_range", "position_embedding_type")


def is_official_config(data: dict[str, Any]) -> bool:
    """An official PuMer METER config.json (not yet converted)."""
    return data.get("model_type") == "meter" and "num_top_layer" in data


def official_pumer_config(official: dict[str, Any], num_blocks: int) -> PumerConfig:
    """M1: cross block i reduces when ``2 * i`` is in the official ``reduce_layers``; the score is always the
    cross-attention head mean (M3: ``sim_method`` / ``merge_style`` are ignored by the official METER code)."""
    layers = official.get("reduce_layers") or ()
    blocks = sorted({layer // 2 for layer in layers if layer % 2 == 0 and layer // 2 < num_blocks})
    return PumerConfig(
        reduce_layers=tuple(blocks),
        prune_ratio=official.get("prune_r", 0.0) or 0.0,
        image_merge_ratio=official.get("merge_r", 0.0) or 0.0,
        text_merge_ratio=official.get("merge_text", 0.0) or 0.0,
        score="mean",
        attention_masking="official",
    )


def _count_blocks(weights: dict[str, torch.Tensor], prefix: str) -> int:
    found = {int(k[len(prefix):].split(".")[0]) for k in weights if k.startswith(prefix)}
    return max(found) + 1 if found else 0


def official_config(official: dict[str, Any], weights: dict[str, torch.Tensor],
                    text_config: dict[str, Any] | None) -> MeterConfig:
    """A :class:`MeterConfig` for an official METER checkpoint (shapes read from the weights)."""
    def shape(key: str) -> tuple[int, ...]:
        if key not in weights:
            raise ConfigError(f"the weights have no {key}; is this an official PuMer METER checkpoint?")
        return tuple(weights[key].shape)

    width = shape(_VIT + "class_embedding")[0]
    positions = shape(_VIT + "positional_embedding")[0]
    patch = shape(_VIT + "conv1.weight")[-1]
    image_size = int(official.get("image_size", 0))
    if image_size <= 0 or image_size % patch or (image_size // patch) ** 2 + 1 != positions:
        raise ConfigError(f"image_size {image_size} with patch {patch} does not match the {positions} vision "
                          "position embeddings (METER does not interpolate them)")
    heads = int(official["num_heads"])
    hidden = int(official["hidden_size"])
    vision = {
        "hidden_size": width,
        "intermediate_size": shape(_VIT + "transformer.resblocks.0.mlp.c_fc.weight")[0],
        "num_hidden_layers": _count_blocks(weights, _VIT + "transformer.resblocks."),
        # CLIP's rule is width // 64 heads; the official METER config states the heads of the tower of its width
        "num_attention_heads": heads if width == hidden else max(width // 64, 1),
        "image_size": image_size,
        "patch_size": patch,
    }
    text = {k: v for k, v in (text_config or ROBERTA_BASE).items() if k in _TEXT_CONFIG_KEYS}
    vocab = shape("meter.text_transformer.embeddings.word_embeddings.weight")[0]
    if text.get("vocab_size", vocab) != vocab:
        raise ConfigError(f"the text encoder config has vocab_size {text.get('vocab_size')} but the weights have "
                          f"{vocab} rows; put the right RobertaConfig in {TEXT_ENCODER_CONFIG_FILE}")
    labels = shape("vqa_classifier.3.weight")[0]
    blocks = int(official.get("num_top_layer", 6))
    config = MeterConfig(
        hidden_size=hidden, num_attention_heads=heads,
        intermediate_size=hidden * int(official.get("mlp_ratio", 4)), num_hidden_layers=blocks,
        max_text_length=int(official.get("max_text_len", 40)),
        vision_config=vision, text_config=text,
        id2label={i: str(i) for i in range(labels)}, architectures=["PumerMeterForQuestionAnswering"],
    )
    config.pumer_source = "official"
    set_pumer_config(config, official_pumer_config(official, blocks))
    return config


def official_state_dict(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official METER weights under this model's names: ``meter.*`` stays, the CLIP tower maps onto
    transformers' CLIP modules (``in_proj`` split into q / k / v), ``vqa_classifier`` stays."""
    out: dict[str, torch.Tensor] = {}
    renames = {
        "class_embedding": "embeddings.class_embedding",
        "positional_embedding": "embeddings.position_embedding.weight",
        "conv1.weight": "embeddings.patch_embedding.weight",
    }
    block_parts = {"attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2",
                   "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    for key, value in weights.items():
        if key == "meter.text_transformer.embeddings.position_ids":
            continue
        if not key.startswith(_VIT):
            out[key] = value
            continue
        rest = key[len(_VIT):]
        if rest in renames:
            out[_VIT + renames[rest]] = value
        elif rest.startswith("ln_pre."):
            out[_VIT + "pre_layrnorm." + rest[len("ln_pre."):]] = value
        elif rest.startswith("ln_post."):
            out[_VIT + "post_layernorm." + rest[len("ln_post."):]] = value
        elif rest.startswith("transformer.resblocks."):
            index, part = rest[len("transformer.resblocks."):].split(".", 1)
            base = f"{_VIT}layers.{index}."
            if part.startswith("attn.in_proj_"):
                kind = part[len("attn.in_proj_"):]  # weight / bias
                for name, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                    out[f"{base}self_attn.{name}.{kind}"] = chunk.clone()
            else:
                module, param = part.rsplit(".", 1)
                out[base + block_parts.get(module, module) + "." + param] = value
        else:
            out[key] = value
    return out
