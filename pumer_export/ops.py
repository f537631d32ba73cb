"""The ``pumer`` custom operators: the boundary every backend crosses.

``torch.ops.pumer.prune`` and ``torch.ops.pumer.merge`` wrap the reference steps of
:mod:`pumer_export.reduce`. The reference model calls them, the ONNX exporter lowers each
call to one ``pumer::PumerPrune`` / ``pumer::PumerMerge`` node, and the TensorRT plugins
implement the same nodes. The operator definitions (inputs, outputs, attributes) live in
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
