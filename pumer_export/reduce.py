"""PuMer's token-reduction steps: the reference semantics every backend is tested against.

Plain PyTorch functions in the spirit of ToMe's ``merge.py``. The model calls them
through the ``pumer::prune`` / ``pumer::merge`` custom ops (:mod:`pumer_export.ops`);
the ONNX function bodies and the CUDA kernels implement exactly these steps.

Rules fixed here for every backend:

* Scores, similarities and merge sums are computed in float32 whatever the input dtype;
  outputs return to the input dtype.
* Ties: top-k and argsort order equal values by lower index first (a stable sort; ONNX
  TopK's rule); an argmax over equal values returns the lowest index.
* Bipartite matching (ToMe): ``a`` = positions 0, 2, 4, ..., ``b`` = 1, 3, 5, ...; the
  first token (position 0) is never merged; each merged ``b`` token becomes the plain mean
  of itself and the ``a`` tokens sent to it (sizes start at 1 at every layer). The output is
  ``[kept a tokens in ascending position] + [all b tokens in order]``.
* ``r == 0`` merges nothing and keeps the order (ToMe's "do nothing").
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

#: ``score_head`` value that averages the text-to-image attention over heads.
MEAN_OF_HEADS = -1
#: ``masking`` codes (an attribute of the prune op): how attention over a key mask is normalised.
STANDARD = 0
OFFICIAL = 1
MASKINGS = {"standard": STANDARD, "official": OFFICIAL}


class MergePlan(NamedTuple):
    """A bipartite merge plan over the ``a`` (even) and ``b`` (odd) positions.

    ``src_idx`` [B, r]: a-indices merged, in merge-priority order; ``dst_idx`` [B, r]: the b-index
    each goes to; ``unm_idx`` [B, na - r]: a-indices kept, ascending. a-index j is position 2j,
    b-index j is position 2j + 1.
    """

    src_idx: torch.Tensor
    dst_idx: torch.Tensor
    unm_idx: torch.Tensor


def stable_topk_indices(values: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest values along the last dim, descending, ties by lower index."""
    order = torch.sort(values, dim=-1, descending=True, stable=True).indices
    return order[..., :k].contiguous()


def masked_softmax(scores: torch.Tensor, key_mask: torch.Tensor, masking: int) -> torch.Tensor:
    """Attention probabilities in float32 from raw scores [B, H, Nq, Nk] and a key mask [B, Nk].

    ``OFFICIAL`` (PuMer's P7 softmax): a masked query still attends to its own key (query row i and key i:
    the queries are the first rows of the keys' sequence), fractional masks weight keys proportionally,
    ``p = (e*m' + 1e-6/Nk) / (sum(e*m') + 1e-6)`` with ``e = exp(s - max(s))`` over all keys. ``STANDARD``:
    softmax of ``s + log(m)`` (masked keys get float32's lowest value), Hugging Face ViLT's rule for 0/1 masks.
    """
    scores = scores.float()
    mask = key_mask.float()[:, None, None, :]
    if masking == STANDARD:
        return torch.softmax(scores + log_mask_bias(key_mask)[:, None, None, :], dim=-1)
    if masking != OFFICIAL:
        raise ValueError(f"masking must be {STANDARD} (standard) or {OFFICIAL} (official), got {masking}")
    num_q, num_k = scores.shape[-2:]
    eye = torch.eye(num_q, num_k, dtype=torch.float32, device=scores.device)
    weights = mask + (1 - mask) * eye
    exp = torch.exp(scores - scores.amax(dim=-1, keepdim=True)) * weights
    return (exp + 1e-6 / num_k) / (exp.sum(dim=-1, keepdim=True) + 1e-6)


def log_mask_bias(key_mask: torch.Tensor) -> torch.Tensor:
    """The additive bias [B, Nk] of the ``STANDARD`` rule: log(m), float32's lowest value where m = 0."""
    mask = key_mask.float()
    return torch.where(mask > 0, torch.log(mask.clamp(min=1e-30)), torch.finfo(torch.float32).min)


def text_attention(queries: torch.Tensor, keys: torch.Tensor, key_mask: torch.Tensor, masking: int) -> torch.Tensor:
    """The text rows' attention probabilities [B, H, T, Nk] in float32.

    ``queries`` [B, H, T, d]: the text rows' queries (rows 0..T-1 of the queries' sequence), ``keys``
    [B, H, Nk, d], ``key_mask`` [B, Nk]; logits ``q k^T / sqrt(d)`` in float32, normalised by ``masking``.
    """
    logits = torch.matmul(queries.float(), keys.float().transpose(-1, -2)) / math.sqrt(queries.shape[-1])
    return masked_softmax(logits, key_mask, masking)


def text_informed_scores(
    queries: torch.Tensor,
    keys: torch.Tensor,
    key_mask: torch.Tensor,
    text_mask: torch.Tensor,
    image_start: int,
    score_head: int = MEAN_OF_HEADS,
    masking: int = STANDARD,
) -> torch.Tensor:
    """Score of every image key: the attention it receives from the text, per valid text token.

    Args:
        queries, keys, key_mask, masking: see :func:`text_attention`.
        text_mask: [B, T] (possibly fractional) text mask; only its row sums are used.
        image_start: the first image key (ViLT's joint sequence: the text length; a cross-attention whose keys
            are the image tokens: 0).
        score_head: ``-1`` averages the heads, ``k >= 0`` uses head ``k`` only.

    Returns:
        [B, Nk - image_start] float32 scores. All T text rows count, padded ones included; the sum is divided
        by the mask sum (the official behaviour).
    """
    cross = text_attention(queries, keys, key_mask, masking)[..., image_start:]
    per_row = cross.mean(dim=1) if score_head == MEAN_OF_HEADS else cross[:, score_head]
    return per_row.sum(dim=1) / text_mask.float().sum(dim=1, keepdim=True)


def _gather_tokens(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return tokens.gather(1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def prune(
    x: torch.Tensor,
    metric: torch.Tensor,
    queries: torch.Tensor,
    keys: torch.Tensor,
    key_mask: torch.Tensor,
    text_mask: torch.Tensor,
    keep: int,
    score_head: int = MEAN_OF_HEADS,
    image_start: int | None = None,
    masking: int = STANDARD,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Text-informed pruning: keep the ``keep`` best-scored image tokens, in score order.

    Args:
        x: tokens [B, Nk, C] aligned with the keys (ViLT: text then image tokens, image CLS included).
        metric: merge metric [B, Nk, D] (head-averaged keys), gathered like ``x``.
        queries, keys, key_mask, text_mask, score_head, masking: see :func:`text_informed_scores`.
        keep: image tokens to keep (1 <= keep <= Nk - image_start).
        image_start: the first image token of ``x`` / key (default: T, the number of text rows: ViLT).

    Returns:
        ``(x_kept [B, keep, C], metric_kept [B, keep, D], keep_idx [B, keep] int64)``; ``keep_idx``
        indexes the image part (0 = image CLS) in descending score order.
    """
    image_start = queries.shape[2] if image_start is None else image_start
    scores = text_informed_scores(queries, keys, key_mask, text_mask, image_start, score_head, masking)
    keep_idx = stable_topk_indices(scores, keep)
    return _gather_tokens(x[:, image_start:], keep_idx), _gather_tokens(metric[:, image_start:], keep_idx), keep_idx


def bipartite_similarity(metric: torch.Tensor) -> torch.Tensor:
    """Cosine similarity [B, na, nb] (float32) of every a-token (even position) to every b-token (odd position);
    row 0 is -inf: the first token is never merged."""
    m = metric.float()
    m = m / m.norm(dim=-1, keepdim=True)
    sim = m[:, ::2] @ m[:, 1::2].transpose(-1, -2)
    sim[:, 0, :] = -torch.inf
    return sim


def bipartite_plan(metric: torch.Tensor, r: int) -> MergePlan:
    """ToMe bipartite soft matching of ``metric`` [B, t, D] merging ``r`` tokens (``1 <= r <= (t-1)//2``)."""
    sim = bipartite_similarity(metric)
    node_idx = sim.argmax(dim=-1)
    node_max = sim.gather(-1, node_idx.unsqueeze(-1)).squeeze(-1)
    edge_order = torch.sort(node_max, dim=-1, descending=True, stable=True).indices
    src_idx = edge_order[:, :r]
    unm_idx = torch.sort(edge_order[:, r:], dim=-1).values
    dst_idx = node_idx.gather(-1, src_idx)
    return MergePlan(src_idx, dst_idx, unm_idx)


def apply_merge(x: torch.Tensor, plan: MergePlan) -> torch.Tensor:
    """Merge ``x`` [B, t, C] by ``plan``: ``[kept a] + [b, each the mean of itself and its a tokens]``."""
    a, b = x[:, ::2], x[:, 1::2]
    src = _gather_tokens(a, plan.src_idx).float()
    dst_index = plan.dst_idx.unsqueeze(-1).expand(-1, -1, x.shape[-1])
    sums = b.float().scatter_add(1, dst_index, src)
    counts = torch.ones(b.shape[:2], dtype=torch.float32, device=x.device)
    counts = counts.scatter_add(1, plan.dst_idx, torch.ones(plan.dst_idx.shape, dtype=torch.float32, device=x.device))
    merged_b = (sums / counts.unsqueeze(-1)).to(x.dtype)
    return torch.cat([_gather_tokens(a, plan.unm_idx), merged_b], dim=1)


def plan_slots(plan: MergePlan, tokens: int) -> torch.Tensor:
    """For every input position, the output position its token ends up in ([B, tokens] int64)."""
    batch = plan.unm_idx.shape[0]
    device = plan.unm_idx.device
    num_a, num_b = (tokens + 1) // 2, tokens // 2
    kept = plan.unm_idx.shape[1]
    slot_a = torch.empty(batch, num_a, dtype=torch.int64, device=device)
    slot_a.scatter_(1, plan.unm_idx, torch.arange(kept, device=device).expand(batch, -1))
    slot_a.scatter_(1, plan.src_idx, kept + plan.dst_idx)
    slots = torch.empty(batch, tokens, dtype=torch.int64, device=device)
    slots[:, ::2] = slot_a
    slots[:, 1::2] = kept + torch.arange(num_b, device=device)
    return slots


def merge(
    x: torch.Tensor, metric: torch.Tensor, mask: torch.Tensor, r: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Modality-aware merging of one modality: ToMe on ``metric``, mean-merge ``x`` and ``mask`` alike.

    Args:
        x: tokens [B, t, C]; metric: [B, t, D]; mask: [B, t] (float, possibly fractional).
        r: tokens to merge away, ``0 <= r <= (t - 1) // 2``.

    Returns:
        ``(x_out [B, t - r, C], mask_out [B, t - r], slots [B, t] int64)`` where ``slots[i, j]`` is the
        output position of input token j.
    """
    tokens = x.shape[1]
    if r == 0:
        slots = torch.arange(tokens, device=x.device).expand(x.shape[0], -1).clone()
        return x.clone(), mask.clone(), slots
    plan = bipartite_plan(metric, r)
    merged_x = apply_merge(x, plan)
    merged_mask = apply_merge(mask.unsqueeze(-1), plan).squeeze(-1)
    return merged_x, merged_mask, plan_slots(plan, tokens)
