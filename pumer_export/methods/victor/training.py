"""Victor's training objective: the answer text given the prompt, teacher-forced, with the drop in place.

The paper trains as LLaVA-1.5 does (the next-token loss on the answer, none on the image or register slots), with
Victor active in both stages: stage 1 trains the projector and the registers, stage 2 also the language model
(:func:`trainable`). Here the answer follows the prompt (``[prefix; image; registers; question] + answer + EOS``);
the positions that predict it are the last ``A + 1`` of the kept ones (the drop never touches the text), so the
loss reads the reference's prefill logits there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...models.llava import decoding


def with_answers(input_ids: torch.Tensor, attention_mask: torch.Tensor, answer_ids: torch.Tensor,
                 answer_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher-forced sequence: left-padded prompts followed by right-padded answers [B, A] (EOS included)."""
    return torch.cat([input_ids, answer_ids], 1), torch.cat([attention_mask, answer_mask], 1)


def answer_loss(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, pixel_values: torch.Tensor,
                answer_ids: torch.Tensor, answer_mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the answer tokens (padding excluded) under the model's own drop."""
    ids, mask = with_answers(input_ids, attention_mask, answer_ids, answer_mask)
    embeds, select = model.prepare(ids, decoding.image_features(model, pixel_values))
    logits, _ = decoding.prefill(model, model.drop_layer, mask, embeds, select)
    count = answer_ids.shape[1]
    predicting = logits[:, -(count + 1):-1]  # position p predicts token p + 1
    losses = F.cross_entropy(predicting.reshape(-1, predicting.shape[-1]).float(), answer_ids.reshape(-1),
                             reduction="none").view_as(answer_ids)
    weights = answer_mask.to(losses.dtype)
    return (losses * weights).sum() / weights.sum().clamp(min=1)


def trainable(model, language_model: bool = False) -> list[torch.nn.Parameter]:
    """Freeze what the stage keeps fixed and return what it trains: the registers and the projector (stage 1),
    and with ``language_model`` the decoder and its head too (stage 2); the vision tower stays frozen."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    modules = [model.model.multi_modal_projector]
    if language_model:
        modules += [model.model.language_model, model.lm_head]
    parameters = [model.victor_registers] + [p for module in modules for p in module.parameters()]
    for parameter in parameters:
        parameter.requires_grad_(True)
    return parameters
