"""Translations of the pumer custom ops (and one aten op) for ``torch.onnx.export(dynamo=True)``.

The exporter inlines onnxscript functions, so each translation's body is exactly ONE node of
the custom ``pumer`` opset: ``pumer::PumerPrune`` / ``pumer::PumerMerge`` with the integer count
attributes of the torch op and the TensorRT plugin attributes ``plugin_namespace`` /
``plugin_version``. The standard-ONNX meaning of those nodes is appended afterwards as
model-local functions (:mod:`pumer_export.onnx.functions`).

``aten::sort.stable`` (the visual embedding's valid-patches-first order) has no torchlib
translation; it becomes ``TopK`` over the whole axis, whose tie rule (lower index first) is
exactly a stable sort.
"""

from __future__ import annotations

from typing import Any, Callable, Tuple, TypeVar

import onnxscript
from onnxscript import BOOL, INT64, opset18 as op
from onnxscript.onnx_types import TensorType
from onnxscript.values import Opset

from ..ops import DOMAIN, op_spec

_SPEC = op_spec()
_PLUGIN_NAMESPACE = _SPEC["plugin_namespace"]
_PLUGIN_VERSION = _SPEC["plugin_version"]

pumer = Opset(DOMAIN, _SPEC["domain_version"])
_translations = Opset("pumer.translation", 1)

#: Return annotations: the exporter takes the number of outputs from them.
T = TypeVar("T", bound=TensorType)
M = TypeVar("M", bound=TensorType)


A = TypeVar("A", bound=TensorType)


@onnxscript.script(opset=_translations, default_opset=op)
def pumer_prune(
    x: T, metric: T, queries: A, keys: A, key_mask: M, text_mask: M, text_len: int, keep: int, score_head: int,
    image_start: int, masking: int,
) -> Tuple[T, T, INT64]:
    """torch.ops.pumer.prune -> one pumer::PumerPrune node."""
    x_kept, metric_kept, keep_idx = pumer.PumerPrune(
        x, metric, queries, keys, key_mask, text_mask,
        text_len=text_len, keep=keep, score_head=score_head, image_start=image_start, masking=masking,
        plugin_namespace=_PLUGIN_NAMESPACE, plugin_version=_PLUGIN_VERSION,
    )
    return x_kept, metric_kept, keep_idx


@onnxscript.script(opset=_translations, default_opset=op)
def pumer_merge(x: T, metric: T, mask: M, r: int) -> Tuple[T, M, INT64]:
    """torch.ops.pumer.merge -> one pumer::PumerMerge node."""
    x_out, mask_out, slots = pumer.PumerMerge(
        x, metric, mask, r=r, plugin_namespace=_PLUGIN_NAMESPACE, plugin_version=_PLUGIN_VERSION
    )
    return x_out, mask_out, slots


@onnxscript.script(opset=_translations, default_opset=op)
def pumer_compact(keep: BOOL, x: T) -> Tuple[T, BOOL, INT64, INT64]:
    """torch.ops.pumer.compact -> one pumer::PumerCompact node (its output length depends on ``keep``)."""
    x_out, alive, index, count = pumer.PumerCompact(
        keep, x, plugin_namespace=_PLUGIN_NAMESPACE, plugin_version=_PLUGIN_VERSION
    )
    return x_out, alive, index, count


def aten_sort_stable(self: T, stable: bool = False, dim: int = -1, descending: bool = False) -> Tuple[T, INT64]:
    """aten::sort.stable as a full-length TopK (ONNX TopK breaks ties by lower index: a stable sort)."""
    size = op.Reshape(op.Gather(op.Shape(self), dim, axis=0), op.Constant(value_ints=[1]))
    values, indices = op.TopK(self, size, axis=dim, largest=1 if descending else 0, sorted=1)
    return values, indices


def custom_translation_table() -> dict[Any, Callable]:
    """The ``custom_translation_table`` for ``torch.onnx.export`` (registers the torch ops first)."""
    import torch

    from .. import ops  # noqa: F401  (defines torch.ops.pumer.*)

    return {
        torch.ops.pumer.prune.default: pumer_prune,
        torch.ops.pumer.merge.default: pumer_merge,
        torch.ops.pumer.compact.default: pumer_compact,
        torch.ops.aten.sort.stable: aten_sort_stable,
    }
