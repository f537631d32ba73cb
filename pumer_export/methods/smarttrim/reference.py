"""SmartTrim-style trimming, the reference (pumer-export design): the trimmers, the decision rule and the compaction.

Defined once here; a family's hook (:mod:`pumer_export.models.meter.smarttrim`) calls these, and every backend is
held to them. The choices below are this project's (see :mod:`pumer_export.methods.smarttrim`):

* **Token trimmer** (DynamicViT-style predictor): ``u = GELU(Linear(LayerNorm(h)))`` per token, the stream's own
  global feature ``g`` = the mean of ``u`` over its *alive* tokens, the other stream's global feature ``g'`` = the
  mean of the other stream's ``u`` over its alive tokens (the same depth, before either stream is updated);
  ``logits = MLP([u, g, g'])`` with two outputs (drop, keep).
* **Decision**: keep token i when ``logit_keep - logit_drop >= tau`` and it is alive; token 0 of a stream is always
  kept (the pooler reads it) and pads are never alive. A dropped token never returns (``alive`` only shrinks), in
  its own stream or as a key of the other stream's attention (the dropped token is removed from the sequence).
* **Head trimmer**: ``MLP(mean of the attention module's query-stream input over the alive tokens)`` -> two logits
  per head; head j is kept when ``keep - drop >= head_tau``; a dropped head's context is multiplied by 0 before the
  output projection (all heads off is allowed: the sub-layer then adds only its output bias before the residual).
* **Removal**: at batch 1 the dropped tokens are removed (the reference); a batch compacts each sample's alive tokens
  to the front in their order (a stable compaction) and pads to the batch's largest count, with a key mask, so every
  sample's result equals its batch-1 run.
* **Training surrogate** (:mod:`.training`): the same trimmers and decisions, but the dropped tokens stay in place
  with a 0 in the stream's *policy* and attention weighs keys by it (:func:`policy_softmax`); with hard 0/1
  decisions this computes what removal computes (a test holds the two together), and the decisions can carry a
  straight-through gradient.
"""

from __future__ import annotations

import torch
from torch import nn

#: Decisions whose margin ``keep - drop`` lies within this of tau are near-ties: a backend may decide them either
#: way (float rounding), and the parity gates report such a sample instead of failing it (this project's choice).
NEAR_TIE_MARGIN = 1e-3


def masked_mean(values: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` [B, N, D] over the alive tokens (``alive`` [B, N], 0/1 or bool) -> [B, D]."""
    weights = alive.to(values.dtype)[..., None]
    return (values * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class TokenTrimmer(nn.Module):
    """Per-token keep / drop logits from the token, its stream's and the other stream's global features."""

    def __init__(self, hidden: int, width: int, other: int | None = None):
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, width), nn.GELU())
        # The other stream's global feature: its own trimmer's projection (cross layers), or a projection of its own
        # when the other stream's width differs (the image tower's trimmers read the text tower's mean).
        self.other_proj = (nn.Sequential(nn.LayerNorm(other), nn.Linear(other, width), nn.GELU())
                           if other is not None else None)
        self.head = nn.Sequential(nn.Linear(3 * width, width), nn.GELU(), nn.Linear(width, max(width // 2, 1)),
                                  nn.GELU(), nn.Linear(max(width // 2, 1), 2))

    def forward(self, projected: torch.Tensor, own_global: torch.Tensor, other_global: torch.Tensor) -> torch.Tensor:
        """``projected`` = ``self.proj(h)`` [B, N, W]; ``own_global`` = :func:`masked_mean` of it over the stream's
        alive tokens [B, W]; ``other_global`` [B, W] -> logits [B, N, 2].

        The first layer of ``head`` reads ``[u, g, g']``; it is computed as ``W_u u + (W_g g + W_g' g' + b)`` (the
        per-sample part once per sample, not concatenated and multiplied at every token: the same function, a third
        of the layer's cost)."""
        first, rest = self.head[0], self.head[1:]
        width = projected.shape[-1]
        per_sample = nn.functional.linear(torch.cat([own_global, other_global], dim=-1), first.weight[:, width:],
                                          first.bias)
        return rest(nn.functional.linear(projected, first.weight[:, :width]) + per_sample[:, None])


class HeadTrimmer(nn.Module):
    """Per-sample keep / drop logits of every head of one attention module."""

    def __init__(self, hidden: int, heads: int, width: int):
        super().__init__()
        self.heads = heads
        self.mlp = nn.Sequential(nn.Linear(hidden, width), nn.GELU(), nn.Linear(width, 2 * heads))

    def forward(self, queries_input: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
        return self.mlp(masked_mean(queries_input, alive)).view(-1, self.heads, 2)


def keep_margin(logits: torch.Tensor, keep_index: int = 1) -> torch.Tensor:
    """``logit_keep - logit_drop`` (the quantity the decision compares with tau; near-ties are judged on it)."""
    return logits[..., keep_index] - logits[..., 1 - keep_index]


def token_decision(logits: torch.Tensor, alive: torch.Tensor, tau: float, keep_index: int = 1) -> torch.Tensor:
    """The tokens kept [B, N] (bool): alive, and margin >= tau, token 0 always (never a pad: it is the first real
    token of its stream)."""
    keep = (keep_margin(logits, keep_index) >= tau) & alive.bool()
    keep[:, 0] = True
    return keep


def head_decision(logits: torch.Tensor, tau: float, keep_index: int = 1) -> torch.Tensor:
    """The heads kept [B, H] as a 0/1 float mask."""
    return (keep_margin(logits, keep_index) >= tau).float()


def compact_index(keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The stable compaction of ``keep`` [B, N] (bool): (index [B, n_max] int64, alive [B, n_max] bool) with
    ``n_max`` the largest count of a row; row b's kept positions come first in their order, then its dropped ones
    (padding, ``alive`` False). The rule of the ``pumer::compact`` op (:mod:`pumer_export.ops`) and its ONNX body."""
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
    index = order[:, :int(keep.sum(dim=1).max())]
    return index, keep.gather(1, index)


def gather_tokens(tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``tensor`` [B, N, ...] gathered along the tokens at ``index`` [B, n]."""
    batch, count = index.shape
    expanded = index.view(batch, count, *([1] * (tensor.dim() - 2))).expand(batch, count, *tensor.shape[2:])
    return tensor.gather(1, expanded)


def compact(keep: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Each sample's kept positions moved to the front in their order (stable), the batch padded to its largest
    count. Returns the new alive mask [B, n_max] (bool) and each of ``tensors`` ([B, N, ...]) gathered the same way.
    At batch 1 this is plain removal."""
    index, alive = compact_index(keep)
    return alive, [gather_tokens(tensor, index) for tensor in tensors]


def attention_bias(alive: torch.Tensor, queries: int, dtype: torch.dtype) -> torch.Tensor | None:
    """An additive key mask [B, 1, queries, N] for attention over a padded batch (None when nothing is padded)."""
    if not torch.compiler.is_exporting() and bool(alive.all()):  # (an export keeps the mask: no data branch)
        return None
    bias = torch.zeros(alive.shape, dtype=dtype, device=alive.device).masked_fill(~alive, torch.finfo(dtype).min)
    return bias[:, None, None, :].expand(alive.shape[0], 1, queries, alive.shape[1])


def policy_softmax(scores: torch.Tensor, key_policy: torch.Tensor) -> torch.Tensor:
    """Attention probabilities [B, H, Nq, Nk] from scores whose keys are weighed by ``key_policy`` [B, Nk] (0/1 with a
    straight-through gradient in training): ``p_ij = exp(s_ij) w_j / sum_k exp(s_ik) w_k``. For a kept query this is
    removal exactly (a dropped key gets weight 0); every row has a key of weight 1 (token 0 is always kept), so no
    row is empty. DynamicViT's attention-with-policy rule without its epsilon and self-key terms."""
    weights = key_policy[:, None, None, :].to(scores.dtype)
    # shifted by the largest score among the kept keys (a dropped key's larger score must not underflow the kept
    # ones), and capped at that shift (a dropped key's exp must not overflow: inf * 0 is nan; it is multiplied by 0
    # anyway, and its straight-through gradient stays bounded)
    top = scores.masked_fill(weights.detach() == 0, float("-inf")).amax(dim=-1, keepdim=True).detach()
    exp = torch.exp((scores - top).clamp(max=0.0)) * weights
    return exp / exp.sum(dim=-1, keepdim=True)
