"""The answer loss of a LLaVA with a decoder method (or none): the answer text given the prompt, teacher-forced, with
the method's drop in place (Victor trains with it; ``finetune`` trains the stock model with it too).

The answer follows the prompt (``[prefix; image; registers; question] + answer + EOS``); the positions that predict
it are the last ``A + 1`` of the kept ones (no method drops text), so the loss reads the reference's prefill logits
there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import decoding


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
