"""The built-in LLaVA processor and prompt: transformers' ``LlavaProcessor`` (it expands the ``<image>`` placeholder
to the N visual tokens) over a word-level tokenizer of the built-in vocabulary, with ``<image>`` and Victor's
``<reg>`` as special tokens; prompts are left-padded, as decoder batches are."""

from __future__ import annotations

from typing import Any, Sequence

from . import IMAGE_TOKEN, REGISTER_TOKEN

#: Special tokens in id order: the preset configs' ``image_token_id`` (4) and Victor's register id (5) follow.
SPECIALS = ("<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN, REGISTER_TOKEN)
IMAGE_TOKEN_ID, REGISTER_TOKEN_ID = SPECIALS.index(IMAGE_TOKEN), SPECIALS.index(REGISTER_TOKEN)
#: The chat template's words (appended after the built-in vocabulary).
TEMPLATE_WORDS = ("user", "assistant", ":")


def tiny_tokenizer():
    """A word-level tokenizer over the built-in vocabulary (lower-cased, punctuation split), BOS prepended."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    from ...processing import TINY_WORDS

    vocab = {token: index for index, token in enumerate([*SPECIALS, *TINY_WORDS, *TEMPLATE_WORDS])}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", extra_special_tokens=[IMAGE_TOKEN, REGISTER_TOKEN],
                                   padding_side="left", model_max_length=256)


def tiny_processor(config):
    """The processor of a built-in LLaVA ``config``: CLIP's image processing at the tower's resolution."""
    from ...processing import quiet_transformers

    with quiet_transformers():
        from transformers import CLIPImageProcessor, LlavaProcessor

        size = config.vision_config.image_size
        images = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
        return LlavaProcessor(image_processor=images, tokenizer=tiny_tokenizer(),
                              patch_size=config.vision_config.patch_size,
                              vision_feature_select_strategy=config.vision_feature_select_strategy,
                              image_token=IMAGE_TOKEN, num_additional_image_tokens=1)


def prompt(question: str, registers: int = 0) -> str:
    """The single-image chat prompt: the image (and Victor's M register placeholders right after it), the
    question, then the answer's turn."""
    return f"USER: {IMAGE_TOKEN}{REGISTER_TOKEN * registers}\n{question} ASSISTANT:"


def encode(processor, images: Sequence[Any], questions: Sequence[str], registers: int = 0) -> dict[str, Any]:
    """Model inputs (numpy) for RGB PIL ``images`` and ``questions``: left-padded ``input_ids`` and
    ``attention_mask`` (the image placeholder expanded to N, then M register tokens), ``pixel_values``."""
    from ...processing import quiet_transformers

    with quiet_transformers():
        out = processor(images=list(images), text=[prompt(q, registers) for q in questions], padding=True,
                        return_tensors="np")
    return {"input_ids": out["input_ids"].astype("int64"), "attention_mask": out["attention_mask"].astype("int64"),
            "pixel_values": out["pixel_values"].astype("float32")}
