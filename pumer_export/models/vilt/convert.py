"""Official PuMer ViLT checkpoints -> pumer-export ViLT checkpoints (Hugging Face ViLT names), and reading the
ViLT config of a Hugging Face / pumer-export checkpoint."""

from __future__ import annotations

import re
from typing import Any, Mapping

import torch

from ...config import PumerConfig, set_pumer_config
from ...errors import CheckpointError
from .modeling import TEXT_LAYER_NORM_EPS_KEY

def official_to_hf_key(key: str) -> str | None:
    """The transformers ViLT name of an official PuMer ViLT weight (None for dropped buffers)."""
    if key == "vilt.text_embeddings.position_ids":
        return None
    rules = [
        (r"^vilt\.text_embeddings\.", "vilt.embeddings.text_embeddings."),
        (r"^vilt\.token_type_embeddings\.", "vilt.embeddings.token_type_embeddings."),
        (r"^vilt\.transformer\.cls_token$", "vilt.embeddings.cls_token"),
        (r"^vilt\.transformer\.pos_embed$", "vilt.embeddings.position_embeddings"),
        (r"^vilt\.transformer\.patch_embed\.proj\.", "vilt.embeddings.patch_embeddings.projection."),
        (r"^vilt\.transformer\.norm\.", "vilt.layernorm."),
        (r"^vilt\.pooler\.", "vilt.pooler."),
        (r"^vqa_classifier\.", "classifier."),
    ]
    for pattern, replacement in rules:
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key)
    block = re.match(r"^vilt\.transformer\.blocks\.(\d+)\.(.+)$", key)
    if block:
        index, rest = block.groups()
        parts = {
            "norm1.": "layernorm_before.",
            "attn.proj.": "attention.output.dense.",
            "norm2.": "layernorm_after.",
            "mlp.fc1.": "intermediate.dense.",
            "mlp.fc2.": "output.dense.",
        }
        for old, new in parts.items():
            if rest.startswith(old):
                return f"vilt.encoder.layer.{index}.{new}{rest[len(old):]}"
    return key  # unknown: reported as unexpected by load_state_strict


def official_state_dict_to_hf(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename official weights to transformers' ViLT names, splitting fused qkv into q, k, v."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in weights.items():
        qkv = re.match(r"^vilt\.transformer\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", key)
        if qkv:
            index, kind = qkv.groups()
            if tensor.shape[0] % 3:
                raise CheckpointError(f"{key} has {tensor.shape[0]} rows, not a multiple of 3 (q, k, v)")
            for name, part in zip(("query", "key", "value"), tensor.chunk(3, dim=0)):
                out[f"vilt.encoder.layer.{index}.attention.attention.{name}.{kind}"] = part.clone()
            continue
        new = official_to_hf_key(key)
        if new is not None:
            out[new] = tensor
    return out


def official_config_to_hf(official: Mapping[str, Any], weights: Mapping[str, torch.Tensor]):
    """A transformers ``ViltConfig`` (with PuMer settings) for an official PuMer ViLT config."""
    from transformers import ViltConfig

    missing = [k for k in ("hidden_size", "num_layers", "num_heads", "vocab_size", "max_text_len") if k not in official]
    if missing:
        raise CheckpointError(f"official config.json lacks {', '.join(missing)}; is this an official PuMer ViLT checkpoint?")
    archs = official.get("architectures") or ["ViltForQuestionAnswering"]
    if "ViltForQuestionAnswering" not in archs:
        raise CheckpointError(f"official checkpoint architecture {archs} is not supported; only VQA (ViltForQuestionAnswering) is")
    if "vqa_label_size" not in official:
        raise CheckpointError("official config.json lacks vqa_label_size; only VQA checkpoints are supported")
    pos = weights.get("vilt.transformer.pos_embed")
    patch = weights.get("vilt.transformer.patch_embed.proj.weight")
    if pos is None or patch is None:
        raise CheckpointError("official weights lack vilt.transformer.pos_embed or patch_embed.proj.weight")
    grid = int(round((pos.shape[1] - 1) ** 0.5))
    patch_size = int(patch.shape[-1])
    hidden = int(official["hidden_size"])
    config = ViltConfig(
        vocab_size=int(official["vocab_size"]),
        hidden_size=hidden,
        num_hidden_layers=int(official["num_layers"]),
        num_attention_heads=int(official["num_heads"]),
        intermediate_size=4 * hidden,  # the official blocks ignore mlp_ratio
        hidden_act="gelu",
        max_position_embeddings=int(official["max_text_len"]),
        modality_type_vocab_size=int(official.get("token_types", 2)),
        image_size=grid * patch_size,
        patch_size=patch_size,
        layer_norm_eps=1e-6,
        qkv_bias=True,
        num_labels=int(official["vqa_label_size"]),
        max_image_length=-1,
    )
    setattr(config, TEXT_LAYER_NORM_EPS_KEY, 1e-12)
    config.architectures = ["ViltForQuestionAnswering"]
    config.pumer_source = "official"
    set_pumer_config(config, PumerConfig.from_official(official))
    return config


