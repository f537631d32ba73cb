"""Questions to model inputs for a LLaVA: prompts from the checkpoint's processor (its image placeholder expanded to
the N visual tokens, Victor's M register placeholders after it, left padding), each distinct image encoded once,
and the answer targets (the answer's tokens and end-of-sequence, right-padded) for training."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..datasets import Question
from ..errors import PumerExportError
from ..models.llava import IMAGE_TOKEN, REGISTER_TOKEN, image_tokens
from ..models.llava.processing import prompt


@dataclasses.dataclass
class Prompts:
    """Encoded questions: ``input_ids`` / ``attention_mask`` [Q, L] (left-padded), ``pixel_values`` [I, 3, H, W]
    with ``image_of`` [Q] the image row of each question, ``answer_ids`` / ``answer_mask`` [Q, A]."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    pixel_values: np.ndarray
    image_of: np.ndarray
    answer_ids: np.ndarray
    answer_mask: np.ndarray

    def __len__(self) -> int:
        return len(self.image_of)

    def batch(self, rows: Any) -> dict[str, np.ndarray]:
        """The feeds of questions ``rows``, with the padding columns no row of them uses cut off."""
        rows = np.asarray(rows)
        mask = self.attention_mask[rows]
        first = int(mask.argmax(axis=1).min())
        answer_mask = self.answer_mask[rows]
        width = max(int(answer_mask.sum(axis=1).max()), 1)
        return {"input_ids": self.input_ids[rows, first:], "attention_mask": mask[:, first:],
                "pixel_values": self.pixel_values[self.image_of[rows]],
                "answer_ids": self.answer_ids[rows, :width], "answer_mask": answer_mask[:, :width]}


@dataclasses.dataclass(frozen=True)
class PromptSpec:
    """What prompts for a model need: N, M, and the end and padding ids of its answers."""

    image_tokens: int
    registers: int
    eos_token_id: int | None
    pad_token_id: int

    @classmethod
    def of_model(cls, model) -> "PromptSpec":
        text = model.config.text_config
        return cls(image_tokens(model.config), getattr(model, "registers", 0), text.eos_token_id,
                   text.pad_token_id or 0)

    @classmethod
    def of_export(cls, meta: dict[str, Any]) -> "PromptSpec":
        """From an export's generation.json."""
        method = meta.get("method") or {}
        registers = method.get("settings", {}).get("registers", 0) if method.get("name") == "victor" else 0
        return cls(meta["image_tokens"], registers, meta.get("eos_token_id"), meta.get("pad_token_id") or 0)


def torch_batch(feeds: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in feeds.items()}


def image_token_count(processor) -> int:
    """How many image tokens the processor expands one image to."""
    from PIL import Image

    from ..processing import quiet_transformers

    size = processor.image_processor.crop_size["height"] if getattr(processor.image_processor, "crop_size", None) \
        else 32
    with quiet_transformers():
        ids = processor(images=[Image.new("RGB", (size, size))], text=[processor.image_token],
                        return_tensors="np")["input_ids"]
    return int((ids == processor.tokenizer.convert_tokens_to_ids(processor.image_token)).sum())


def prompts_text(processor, questions: Sequence[str], registers: int, n: int) -> list[str]:
    """The prompts with the image placeholder already expanded to ``n`` tokens."""
    return [prompt(q, registers).replace(IMAGE_TOKEN, processor.image_token * n, 1) for q in questions]


def encode(model, processor, questions: Sequence[Question], *, chunk: int = 256, progress=None) -> Prompts:
    """Encode ``questions`` for ``model`` (a model, or the :class:`PromptSpec` of an export) with ``processor``."""
    from ..processing import load_image, quiet_transformers

    spec = model if isinstance(model, PromptSpec) else PromptSpec.of_model(model)
    n, registers = spec.image_tokens, spec.registers
    if image_token_count(processor) != n:
        raise PumerExportError(f"the processor expands an image to {image_token_count(processor)} tokens, the model "
                               f"takes {n}: use the checkpoint's own processor files")
    if registers and REGISTER_TOKEN not in processor.tokenizer.get_vocab():
        raise PumerExportError(f"the tokenizer has no {REGISTER_TOKEN} token for Victor's registers")
    tokenizer = processor.tokenizer
    rows: dict[Path, int] = {}
    image_of = np.array([rows.setdefault(Path(q.image), len(rows)) for q in questions], dtype=np.int64)
    distinct = list(rows)
    task = progress.add_task("preparing inputs", total=len(distinct)) if progress else None
    parts = []
    with quiet_transformers():
        for start in range(0, len(distinct), chunk):
            pictures = [load_image(path, f"image {path}") for path in distinct[start:start + chunk]]
            parts.append(np.asarray(processor.image_processor(images=pictures, return_tensors="np")["pixel_values"],
                                    dtype=np.float32))
            if progress:
                progress.update(task, advance=len(pictures))
        text = tokenizer(prompts_text(processor, [q.question for q in questions], registers, n), padding=True,
                         return_tensors="np")
    eos, pad = spec.eos_token_id, spec.pad_token_id
    answers = [tokenizer(" " + _answer(q), add_special_tokens=False)["input_ids"] + ([eos] if eos is not None else [])
               for q in questions]
    width = max((len(a) for a in answers), default=1)
    answer_ids = np.full((len(questions), width), pad, dtype=np.int64)
    answer_mask = np.zeros((len(questions), width), dtype=np.int64)
    for row, ids in enumerate(answers):
        answer_ids[row, :len(ids)], answer_mask[row, :len(ids)] = ids, 1
    if tokenizer.padding_side != "left":
        raise PumerExportError("the LLaVA tokenizer must pad on the left (decoder batches): set padding_side")
    return Prompts(text["input_ids"].astype(np.int64), text["attention_mask"].astype(np.int64),
                   np.concatenate(parts) if parts else np.zeros((0, 3, 1, 1), np.float32), image_of, answer_ids,
                   answer_mask)


def _answer(question: Question) -> str:
    """The training target: the question's most frequent answer."""
    from collections import Counter

    return Counter(question.answers).most_common(1)[0][0] if question.answers else ""


def decode_answers(processor, token_ids: np.ndarray) -> list[str]:
    """Generated ids [B, T] to answer strings (special tokens and padding dropped)."""
    return [text.strip() for text in processor.tokenizer.batch_decode(token_ids.tolist(), skip_special_tokens=True)]
