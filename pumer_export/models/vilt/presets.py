"""Small random ViLT models for tests and the built-in example (no downloads)."""

from __future__ import annotations

import torch
from transformers import ViltConfig

from ...config import PumerConfig, set_pumer_config
from ...processing import tiny_labels

#: PuMer settings of the built-in example (the released ViLT checkpoints use 0.1 / 0.3 / 0.2).
DEFAULT_TINY_PUMER = PumerConfig(reduce_layers=(1, 3), prune_ratio=0.1, image_merge_ratio=0.3, text_merge_ratio=0.2)


def tiny_vilt_config(
    *,
    num_layers: int = 4,
    hidden_size: int = 64,
    num_heads: int = 4,
    vocab_size: int = 128,
    num_labels: int = 10,
    image_size: int = 96,
    patch_size: int = 16,
    max_text_length: int = 40,
    pumer: PumerConfig | None = DEFAULT_TINY_PUMER,
    attention_masking: str | None = None,
    labels: tuple[str, ...] | None = None,
) -> ViltConfig:
    """A small ViLT configuration (4 layers, hidden 64 by default) with PuMer settings."""
    config = ViltConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=4 * hidden_size,
        image_size=image_size,
        patch_size=patch_size,
        max_position_embeddings=max_text_length,
        num_labels=num_labels,
        layer_norm_eps=1e-6,
    )
    config.id2label = dict(enumerate(labels)) if labels else tiny_labels(num_labels)
    config.label2id = {v: k for k, v in config.id2label.items()}
    pumer = pumer or PumerConfig()
    if attention_masking is not None:
        pumer = pumer.replace(attention_masking=attention_masking)
    set_pumer_config(config, pumer)
    return config


#: ViLT-B/32 shapes (dandelin/vilt-b32-finetuned-vqa): for benchmarks with random weights.
VILT_B32_SHAPES = dict(
    num_layers=12, hidden_size=768, num_heads=12, vocab_size=30522, num_labels=3129, image_size=384, patch_size=32
)
#: The PuMer settings of the released ViLT checkpoints (csarron/vilt-vqa2-p0.1-r0.3-t0.2-258).
VILT_B32_PUMER = PumerConfig(reduce_layers=(2, 5, 8), prune_ratio=0.1, image_merge_ratio=0.3, text_merge_ratio=0.2)


def vilt_b32_model(seed: int = 0, pumer: PumerConfig | None = VILT_B32_PUMER):
    """A randomly initialised model with ViLT-B/32 shapes (about 115M parameters)."""
    return tiny_vilt_model(seed=seed, pumer=pumer, **VILT_B32_SHAPES)


#: The built-in demo's model: ViLT-B/32's token layout (384x384 in 32-pixel patches: 145 image tokens, text 40)
#: in a narrower, shallower encoder (6 layers, hidden 256), so the whole demo runs in a couple of minutes on 2
#: cores while the token counts, not per-operator overhead, decide the speed.
DEMO_SHAPES = dict(num_layers=6, hidden_size=256, num_heads=4, image_size=384, patch_size=32)
DEMO_PUMER = PumerConfig(reduce_layers=(1, 3), prune_ratio=0.1, image_merge_ratio=0.3, text_merge_ratio=0.2)


def demo_vilt_model(seed: int = 0, pumer: PumerConfig | None = DEMO_PUMER):
    """The demo's random model (see :data:`DEMO_SHAPES`)."""
    return tiny_vilt_model(seed=seed, pumer=pumer, **DEMO_SHAPES)


#: The easy-VQA model (``pumer-export pretrained easy-vqa-vilt``): 64x64 images in 8-pixel patches (65 image
#: tokens with the image CLS, room for reduction), questions up to 16 tokens, a 4-layer hidden-128 encoder, and
#: the released ViLT PuMer ratios (0.1 / 0.3 / 0.2) at layers 1 and 2.
EASY_VQA_SHAPES = dict(num_layers=4, hidden_size=128, num_heads=4, vocab_size=64, image_size=64, patch_size=8,
                       max_text_length=16)
EASY_VQA_PUMER = PumerConfig(reduce_layers=(1, 2), prune_ratio=0.1, image_merge_ratio=0.3, text_merge_ratio=0.2)


def easy_vqa_vilt_model(seed: int = 0, pumer: PumerConfig | None = EASY_VQA_PUMER):
    """The untrained easy-VQA ViLT (see :data:`EASY_VQA_SHAPES`), labels = easy-VQA's answers."""
    from ...datasets import EASY_VQA_ANSWERS

    return tiny_vilt_model(seed=seed, pumer=pumer, labels=EASY_VQA_ANSWERS, num_labels=len(EASY_VQA_ANSWERS),
                           **EASY_VQA_SHAPES)


def tiny_vilt_model(seed: int = 0, **config_kwargs):
    """A seeded random :class:`PumerViltForQuestionAnswering` in eval mode (see :func:`tiny_vilt_config`)."""
    from .modeling import PumerViltForQuestionAnswering

    config = tiny_vilt_config(**config_kwargs)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = PumerViltForQuestionAnswering(config)
        # Random (not zero) CLS and position tables: transformers initialises them to zeros.
        emb = model.vilt.embeddings
        torch.nn.init.normal_(emb.cls_token, std=0.02)
        torch.nn.init.normal_(emb.position_embeddings, std=0.02)
    return model.eval()


def random_inputs(
    config: ViltConfig,
    batch_size: int,
    *,
    text_length: int | None = None,
    image_size: tuple[int, int] | None = None,
    seed: int = 0,
    min_text_length: int = 2,
) -> dict[str, torch.Tensor]:
    """Seeded random model inputs: [CLS]-led token ids with random true lengths, random pixels."""
    text_length = text_length or config.max_position_embeddings
    height, width = image_size or (config.image_size, config.image_size)
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min(min_text_length, text_length), text_length + 1, (batch_size,), generator=gen)
    lengths[0] = text_length
    positions = torch.arange(text_length)
    attention_mask = (positions[None] < lengths[:, None]).long()
    input_ids = torch.randint(4, config.vocab_size, (batch_size, text_length), generator=gen)
    input_ids[:, 0] = 2
    input_ids = input_ids * attention_mask
    pixel_values = torch.randn(batch_size, 3, height, width, generator=gen)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": torch.zeros_like(input_ids),
        "pixel_values": pixel_values,
        "pixel_mask": torch.ones(batch_size, height, width, dtype=torch.long),
    }
