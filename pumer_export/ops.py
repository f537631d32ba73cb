"""The ``pumer`` custom operators: the boundary every backend crosses.

``torch.ops.pumer.prune`` and ``torch.ops.pumer.merge`` wrap the reference steps of PuMer
(:mod:`pumer_export.reduce`); ``torch.ops.pumer.compact`` wraps SmartTrim's stable compaction
(:func:`pumer_export.methods.smarttrim.reference.compact_index`), the one op whose output length
depends on the data. The reference models call them, the ONNX exporter lowers each call to one
``pumer::PumerPrune`` / ``pumer::PumerMerge`` / ``pumer::PumerCompact`` node, and the TensorRT
plugins implement the same nodes. The operator definitions (inputs, outputs, attributes) live in
``op_spec.json``; :func:`op_spec_hash` identifies them, and engine builds compare it with the
hash compiled into the plugin library.
"""

from __future__ import annotations

import functools
import hashlib
import json
from importlib import resources
from typing import Any

import torch

from . import reduce

SPEC_FILE = "op_spec.json"
DOMAIN = "pumer"


@functools.lru_cache(maxsize=None)
def _spec_bytes() -> bytes:
    return resources.files(__package__).joinpath(SPEC_FILE).read_bytes()


def op_spec() -> dict[str, Any]:
    """The operator definitions (parsed ``op_spec.json``)."""
    return json.loads(_spec_bytes())


def op_spec_hash() -> str:
    """SHA-256 of ``op_spec.json``: the plugin library is built with the same value."""
    return hashlib.sha256(_spec_bytes()).hexdigest()


@torch.library.custom_op("pumer::prune", mutates_args=())
def prune(
    x: torch.Tensor,
    metric: torch.Tensor,
    queries: torch.Tensor,
    keys: torch.Tensor,
    key_mask: torch.Tensor,
    text_mask: torch.Tensor,
    text_len: int,
    keep: int,
    score_head: int,
    image_start: int,
    masking: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Text-informed pruning from the text rows' queries and the keys (see :func:`pumer_export.reduce.prune`).

    ``text_len`` is the number of text rows (``queries.shape[2]``), stated for the shape checks of every backend.
    """
    if queries.shape[2] != text_len:
        raise ValueError(f"queries has {queries.shape[2]} text rows, text_len is {text_len}")
    return reduce.prune(x, metric, queries, keys, key_mask, text_mask, keep, score_head, image_start, masking)


@prune.register_fake
def _prune_fake(x, metric, queries, keys, key_mask, text_mask, text_len, keep, score_head, image_start, masking):
    batch = x.shape[0]
    return (
        x.new_empty(batch, keep, x.shape[-1]),
        metric.new_empty(batch, keep, metric.shape[-1]),
        x.new_empty(batch, keep, dtype=torch.int64),
    )


@torch.library.custom_op("pumer::merge", mutates_args=())
def merge(
    x: torch.Tensor, metric: torch.Tensor, mask: torch.Tensor, r: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bipartite merging of one modality (see :func:`pumer_export.reduce.merge`)."""
    return reduce.merge(x, metric, mask, r)


@merge.register_fake
def _merge_fake(x, metric, mask, r):
    batch, tokens = x.shape[0], x.shape[1]
    return (
        x.new_empty(batch, tokens - r, x.shape[-1]),
        mask.new_empty(batch, tokens - r),
        x.new_empty(batch, tokens, dtype=torch.int64),
    )


@torch.library.custom_op("pumer::compact", mutates_args=())
def compact(keep: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """SmartTrim's stable compaction: each row's kept tokens of ``x`` [B, N, C] first, in their order, the batch
    padded to its largest count ``n``. Returns (x_out [B, n, C], alive [B, n] bool, index [B, n] int64, count:
    ``n`` as a 0-d int64). At least one token of the batch must be kept (SmartTrim keeps token 0 of every row)."""
    from .methods.smarttrim.reference import compact_index, gather_tokens

    if keep.shape != x.shape[:2] or keep.dtype != torch.bool:
        raise ValueError(f"keep must be a bool [B, N] mask of x's tokens, got {keep.dtype} {list(keep.shape)} for x "
                         f"{list(x.shape)}")
    if not bool(keep.any()):
        raise ValueError("pumer::compact keeps at least one token")
    index, alive = compact_index(keep)
    return gather_tokens(x, index), alive, index, torch.tensor(index.shape[1], dtype=torch.int64)


@compact.register_fake
def _compact_fake(keep, x):
    tokens = keep.shape[1]  # a number, or the length an earlier compaction left (then bounded by a check)
    count = torch.library.get_ctx().new_dynamic_size(min=1, max=tokens if isinstance(tokens, int) else None)
    torch._check(count <= tokens)
    return (x.new_empty(x.shape[0], count, x.shape[2]), keep.new_empty(keep.shape[0], count),
            keep.new_empty(keep.shape[0], count, dtype=torch.int64), keep.new_empty((), dtype=torch.int64))


# ------------------------------------------------------------------------ gradients
# Fine-tuning runs the model with its reducers in place (as the official PuMer training does), so both ops carry
# the gradient of the reference: a pruned or merged token passes its gradient back to the tokens it came from; the
# decisions (scores, similarities, hence queries, keys and merge metrics) are discrete and get none.
def _prune_setup_context(ctx, inputs, output):
    x, metric, image_start = inputs[0], inputs[1], inputs[9]
    ctx.save_for_backward(output[2])
    ctx.x_shape, ctx.metric_shape, ctx.image_start = x.shape, metric.shape, image_start


def _scatter_rows(grad: torch.Tensor, index: torch.Tensor, shape, start: int) -> torch.Tensor:
    out = grad.new_zeros(shape)
    out[:, start:].scatter_add_(1, index.unsqueeze(-1).expand(-1, -1, shape[-1]), grad)
    return out


def _prune_backward(ctx, grad_x, grad_metric, _grad_idx):
    (keep_idx,) = ctx.saved_tensors
    gx = None if grad_x is None else _scatter_rows(grad_x, keep_idx, ctx.x_shape, ctx.image_start)
    gm = None if grad_metric is None else _scatter_rows(grad_metric, keep_idx, ctx.metric_shape, ctx.image_start)
    return gx, gm, None, None, None, None, None, None, None, None, None


def _merge_setup_context(ctx, inputs, output):
    ctx.save_for_backward(output[2])
    ctx.out_tokens = output[0].shape[1]


def _merge_backward(ctx, grad_x, _grad_mask, _grad_slots):
    (slots,) = ctx.saved_tensors
    if grad_x is None:
        return None, None, None, None
    # every output token is the plain mean of the inputs sent to it: input j gets grad[slot j] / size of slot j
    sizes = torch.zeros(slots.shape[0], ctx.out_tokens, dtype=torch.float32, device=slots.device)
    sizes.scatter_add_(1, slots, torch.ones(slots.shape, dtype=torch.float32, device=slots.device))
    per_token = grad_x.float() / sizes.unsqueeze(-1)
    gx = per_token.gather(1, slots.unsqueeze(-1).expand(-1, -1, grad_x.shape[-1])).to(grad_x.dtype)
    return gx, None, None, None


prune.register_autograd(_prune_backward, setup_context=_prune_setup_context)
merge.register_autograd(_merge_backward, setup_context=_merge_setup_context)
