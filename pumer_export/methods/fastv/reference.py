"""FastV's reference: which positions stay after layer k (the one definition every backend is held to).

Each row ranks its N image tokens by the last prompt token's attention to them in layer k-1 (softmax probabilities,
mean over heads: :func:`pumer_export.models.llava.decoding.decoder_layer`), keeps the R highest (equal scores: the
earlier token first) and every non-image position; the kept positions stay in their order with their original
rotary positions. The count is fixed, so the drop is a gather with static shapes. The rank is counted pairwise
(how many tokens beat this one) rather than sorted: every backend computes the same order, ties included, and the
ONNX graph needs only comparisons, a sum and a TopK over distinct keys.
"""

from __future__ import annotations

import torch

from ...models.llava.decoding import Layout, Select


def image_ranks(attention: torch.Tensor, where: Layout) -> torch.Tensor:
    """[B, N] each image token's rank (0: the most attended; ties: the earlier token ranks first)."""
    n = where.image_tokens
    offsets = torch.arange(n, device=attention.device)
    scores = attention.gather(1, where.start[:, None] + offsets[None, :])
    beats = scores[:, None, :] > scores[:, :, None]  # [B, i, j]: token j has more attention than token i
    earlier_tie = (scores[:, None, :] == scores[:, :, None]) & (offsets[None, :] < offsets[:, None])[None]
    return (beats | earlier_tie).sum(dim=-1)


def _in_order(stay: torch.Tensor, count: int) -> torch.Tensor:
    """[B, count] the indices where ``stay`` is true (exactly ``count`` per row), ascending: a TopK over distinct
    keys (length - index where kept, 0 elsewhere)."""
    length = stay.shape[1]
    key = stay.long() * (length - torch.arange(length, device=stay.device))[None, :]
    return key.topk(count, dim=1).indices


def kept_image_positions(attention: torch.Tensor, where: Layout, keep_tokens: int) -> torch.Tensor:
    """[B, R] the positions of the R image tokens with the most attention, ascending."""
    return _in_order(image_ranks(attention, where) < keep_tokens, keep_tokens) + where.start[:, None]


def select(where: Layout, length: int, keep_tokens: int) -> Select:
    """FastV's drop for prompts of ``length`` positions: [B, L - N + R] positions in order."""
    n = where.image_tokens

    def rule(attention: torch.Tensor | None) -> torch.Tensor:
        j = torch.arange(length, device=attention.device)[None, :] - where.start[:, None]  # [B, L]
        in_image = (j >= 0) & (j < n)
        ranks = image_ranks(attention, where).gather(1, j.clamp(0, n - 1))
        stay = ~in_image | (ranks < keep_tokens)
        return _in_order(stay, length - n + keep_tokens)

    return Select(rule, needs_attention=True)
