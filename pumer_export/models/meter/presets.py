"""Random-weight METER models (tests, benchmarks, the demo) and seeded example inputs; no downloads."""

from __future__ import annotations

from typing import Any

import torch

from ...config import PumerConfig, set_pumer_config
from ...processing import tiny_labels
from .modeling import MeterConfig, PumerMeterForQuestionAnswering

#: The released METER PuMer settings (csarron/meter-vqa2-p0.2r0.2t0.2-0246: cross blocks 0-3).
METER_PUMER = PumerConfig(reduce_layers=(0, 1, 2, 3), prune_ratio=0.2, image_merge_ratio=0.2, text_merge_ratio=0.2,
                          attention_masking="official")
#: Token ids of RoBERTa's tokenizer: <s>, <pad>, </s>.
BOS_ID, PAD_ID, EOS_ID = 0, 1, 2


def meter_config(
    *,
    hidden_size: int = 64,
    num_heads: int = 4,
    num_cross_layers: int = 4,
    vision_width: int = 64,
    vision_layers: int = 2,
    vision_heads: int = 4,
    text_layers: int = 2,
    vocab_size: int = 128,
    image_size: int = 64,
    patch_size: int = 16,
    max_text_length: int = 40,
    num_labels: int = 10,
    pumer: PumerConfig | None = PumerConfig(reduce_layers=(0, 2), prune_ratio=0.2, image_merge_ratio=0.2,
                                            text_merge_ratio=0.2),
    labels: tuple[str, ...] | None = None,
) -> MeterConfig:
    """A METER configuration (small by default) with PuMer settings."""
    config = MeterConfig(
        hidden_size=hidden_size, num_attention_heads=num_heads, intermediate_size=4 * hidden_size,
        num_hidden_layers=num_cross_layers,
        vision_config={"hidden_size": vision_width, "intermediate_size": 4 * vision_width,
                       "num_hidden_layers": vision_layers, "num_attention_heads": vision_heads,
                       "image_size": image_size, "patch_size": patch_size},
        text_config={"vocab_size": vocab_size, "hidden_size": hidden_size, "num_hidden_layers": text_layers,
                     "num_attention_heads": num_heads, "intermediate_size": 4 * hidden_size,
                     "max_position_embeddings": max_text_length + PAD_ID + 1, "type_vocab_size": 1,
                     "layer_norm_eps": 1e-5, "pad_token_id": PAD_ID, "bos_token_id": BOS_ID, "eos_token_id": EOS_ID},
        max_text_length=max_text_length,
        id2label=dict(enumerate(labels)) if labels else tiny_labels(num_labels),
        architectures=["PumerMeterForQuestionAnswering"],
    )
    config.label2id = {v: k for k, v in config.id2label.items()}
    set_pumer_config(config, pumer or PumerConfig())
    return config


#: METER-B/16 shapes (CLIP ViT-B/16 with METER's 11 blocks, RoBERTa-base, 6 cross blocks of width 768).
METER_B16_SHAPES = dict(hidden_size=768, num_heads=12, num_cross_layers=6, vision_width=768, vision_layers=11,
                        vision_heads=12, text_layers=12, vocab_size=50265, patch_size=16, max_text_length=50,
                        num_labels=3129)


def tiny_meter_model(seed: int = 0, **config_kwargs: Any) -> PumerMeterForQuestionAnswering:
    """A seeded random METER model in eval mode (see :func:`meter_config`)."""
    config = meter_config(**config_kwargs)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = PumerMeterForQuestionAnswering(config)
    return model.eval()


def meter_b16_model(seed: int = 0, image_size: int = 288, pumer: PumerConfig | None = METER_PUMER):
    """A random model with METER-B/16 shapes (about 320M parameters) at ``image_size``."""
    return tiny_meter_model(seed=seed, image_size=image_size, pumer=pumer, **METER_B16_SHAPES)


#: The demo's model: METER-B/16's token layout at 224x224 in narrower, shallower towers (see the family's
#: ``DEMO_DESCRIPTION``), so the whole demo runs in a few minutes on 2 cores.
DEMO_SHAPES = dict(hidden_size=256, num_heads=4, num_cross_layers=6, vision_width=256, vision_layers=4, vision_heads=4,
                   text_layers=2, vocab_size=1000, image_size=224, patch_size=16, max_text_length=40)


#: The easy-VQA model (``pumer-export pretrained easy-vqa-meter``): 64x64 images in 8-pixel patches (65 image
#: tokens), questions up to 16 tokens, a 2-layer CLIP tower and a 2-layer text tower of width 128, three
#: co-attention blocks, and the released METER PuMer ratios (0.2 / 0.2 / 0.2) at blocks 0 and 1.
EASY_VQA_SHAPES = dict(hidden_size=128, num_heads=4, num_cross_layers=3, vision_width=128, vision_layers=2,
                       vision_heads=4, text_layers=2, vocab_size=64, image_size=64, patch_size=8, max_text_length=16)
EASY_VQA_PUMER = PumerConfig(reduce_layers=(0, 1), prune_ratio=0.2, image_merge_ratio=0.2, text_merge_ratio=0.2)


def easy_vqa_meter_model(seed: int = 0, pumer: PumerConfig | None = EASY_VQA_PUMER):
    """The untrained easy-VQA METER (see :data:`EASY_VQA_SHAPES`), labels = easy-VQA's answers."""
    from ...datasets import EASY_VQA_ANSWERS

    return tiny_meter_model(seed=seed, pumer=pumer, labels=EASY_VQA_ANSWERS, num_labels=len(EASY_VQA_ANSWERS),
                            **EASY_VQA_SHAPES)


def demo_meter_model(seed: int = 0, pumer: PumerConfig | None = METER_PUMER):
    """The demo's random METER model (see :data:`DEMO_SHAPES`)."""
    return tiny_meter_model(seed=seed, pumer=pumer, **DEMO_SHAPES)


def random_inputs(config: MeterConfig, batch_size: int, *, text_length: int | None = None, seed: int = 0,
                  min_text_length: int = 2) -> dict[str, torch.Tensor]:
    """Seeded random inputs: ``<s>``-led ids with random true lengths, random pixels.

    The masked positions hold random non-pad ids (like the official fixture): real RoBERTa padding makes every pad
    identical, so merge decisions among pads are decided by rounding noise and a parity check on them cannot hold.
    """
    text_length = text_length or min(config.max_position_embeddings, 40)
    side = config.image_size
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min(min_text_length, text_length), text_length + 1, (batch_size,), generator=gen)
    lengths[0] = text_length
    attention_mask = (torch.arange(text_length)[None] < lengths[:, None]).long()
    vocab = config.text_config.get("vocab_size", 50265)
    input_ids = torch.randint(EOS_ID + 1, vocab, (batch_size, text_length), generator=gen)
    input_ids[:, 0] = BOS_ID
    pixel_values = torch.randn(batch_size, 3, side, side, generator=gen)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}
