"""ONNX function bodies of the ``pumer`` ops, in standard ONNX operators.

Every pruning or merging step of an exported model is ONE node ``pumer::PumerPrune`` /
``pumer::PumerMerge``. Its meaning in standard ONNX lives in a model-local ``FunctionProto``
built here: ONNX Runtime inlines it (any execution provider, no custom library), while the
TensorRT parser maps the node to a plugin of the same name (see the node attributes
``plugin_namespace`` / ``plugin_version``).

The bodies follow :mod:`pumer_export.reduce` step by step:

* all float math (scores, normalisation, similarities, merge sums) runs in float32; the
  inputs are cast up and the merged outputs cast back with ``CastLike`` (fp16 / bf16 models);
  gathers move the original values, so kept tokens are bit-identical to the input;
* ties follow ONNX TopK (lower index first) and ArgMax (first maximum), the reference's rule;
* the count attributes ``text_len`` / ``keep`` / ``score_head`` / ``r`` are read through
  attribute references (``Constant(value_int=@attr)``), so one body serves every node;
* ``r == 0`` is the identity (ToMe's "do nothing"): the merge body is an ``If`` whose
  then-branch passes the inputs through, so the matching code never runs on it (it would
  reorder the tokens and is undefined for fewer than three tokens).

Bodies are built with :mod:`onnx.helper` (not onnxscript) so that the attribute references,
the ``If`` subgraphs and the opset imports are exactly what is written here.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..ops import DOMAIN, op_spec
from .opsets import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, SUPPORTED_OPSETS  # noqa: F401  (re-exported)

#: Version of the ``pumer`` domain (op_spec.json's ``domain_version``; 2: the prune op reads queries and keys).
DOMAIN_VERSION = op_spec()["domain_version"]

PRUNE = "PumerPrune"
MERGE = "PumerMerge"
COMPACT = "PumerCompact"
OP_TYPES = (PRUNE, MERGE, COMPACT)

#: Attributes every pumer node carries for TensorRT's plugin fallback (STRING attributes).
PLUGIN_NAMESPACE_ATTR = "plugin_namespace"
PLUGIN_VERSION_ATTR = "plugin_version"

_INT64_MAX = 2**63 - 1


def check_opset(opset: int) -> None:
    """Raise ValueError unless the bodies can be built at ``opset``."""
    if opset not in SUPPORTED_OPSETS:
        raise ValueError(f"opset {opset} is not supported; use {MIN_OPSET}..{MAX_OPSET}")


def plugin_attributes() -> dict[str, str]:
    """The TensorRT plugin attributes of every pumer node (from op_spec.json)."""
    spec = op_spec()
    return {PLUGIN_NAMESPACE_ATTR: spec["plugin_namespace"], PLUGIN_VERSION_ATTR: spec["plugin_version"]}


def count_attributes(op_type: str) -> tuple[str, ...]:
    """The integer count attributes of ``op_type`` in op_spec.json order."""
    return tuple(op_spec()["ops"][op_type]["attributes"])


class _Builder:
    """Collects nodes of one (sub)graph; value names are unique across the whole function."""

    def __init__(self, opset: int, counter: itertools.count, prefix: str) -> None:
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self._counter = counter
        self._prefix = prefix

    def sub(self) -> "_Builder":
        return _Builder(self.opset, self._counter, self._prefix)

    def fresh(self, hint: str) -> str:
        return f"{self._prefix}_{hint}_{next(self._counter)}"

    def op(self, op_type: str, *inputs: str, n_out: int = 1, out: Sequence[str] | None = None, **attrs):
        outputs = list(out) if out is not None else [self.fresh(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outputs, **attrs))
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    # ----------------------------------------------------------- constants
    def i64(self, *values: int) -> str:
        """A 1-D int64 constant."""
        return self.op("Constant", value_ints=list(values))

    def scalar_i64(self, value: int) -> str:
        return self.op("Constant", value_int=value)

    def scalar_f32(self, value: float) -> str:
        return self.op("Constant", value_float=value)

    def attr_int(self, attr: str) -> str:
        """A 0-D int64 tensor holding the calling node's integer attribute ``attr``."""
        ref = onnx.AttributeProto(name="value_int", ref_attr_name=attr, type=onnx.AttributeProto.INT)
        name = self.fresh(attr)
        node = helper.make_node("Constant", [], [name])
        node.attribute.append(ref)
        self.nodes.append(node)
        return name

    # ------------------------------------------------------------- helpers
    def reduce(self, op_type: str, x: str, axis: int, keepdims: int) -> str:
        """ReduceSum/Mean/Max/L2 over one axis (axes became an input of all of them in opset 18)."""
        if op_type == "ReduceSum" or self.opset >= 18:
            return self.op(op_type, x, self.i64(axis), keepdims=keepdims)
        return self.op(op_type, x, axes=[axis], keepdims=keepdims)

    def unsqueeze(self, x: str, axis: int) -> str:
        return self.op("Unsqueeze", x, self.i64(axis))

    def slice(self, x: str, start: str, end: str, axis: int, step: int | None = None) -> str:
        """x[start:end] along ``axis``; ``start``/``end`` are 1-D int64 values."""
        inputs = [x, start, end, self.i64(axis)]
        if step is not None:
            inputs.append(self.i64(step))
        return self.op("Slice", *inputs)

    def every_other(self, x: str, first: int) -> str:
        """x[:, first::2]."""
        return self.slice(x, self.i64(first), self.i64(_INT64_MAX), axis=1, step=2)

    def gather_rows(self, x: str, index: str) -> str:
        """x [B, n, C], index [B, k] -> x[b, index[b, i], :] ([B, k, C])."""
        return self.op("GatherND", x, self.unsqueeze(index, 2), batch_dims=1)

    def batch_range(self, count: str, like: str) -> str:
        """[B, count] int64 rows 0..count-1 (``count`` 0-D, ``like`` a [B, ...] tensor's shape source)."""
        row = self.op("Range", self.scalar_i64(0), count, self.scalar_i64(1))
        batch = self.slice(self.op("Shape", like), self.i64(0), self.i64(1), axis=0)
        return self.op("Expand", row, self.op("Concat", batch, self.unsqueeze(count, 0), axis=0))


def _value_info(name: str, elem_type: int | None = None) -> onnx.ValueInfoProto:
    if elem_type is None:  # polymorphic (type T): left to inference
        return onnx.ValueInfoProto(name=name)
    return helper.make_tensor_value_info(name, elem_type, None)


def _function(op_type: str, opset: int, b: _Builder, inputs, outputs, attrs) -> onnx.FunctionProto:
    spec = op_spec()["ops"][op_type]
    return helper.make_function(
        DOMAIN,
        op_type,
        inputs=list(inputs),
        outputs=list(outputs),
        nodes=b.nodes,
        opset_imports=[helper.make_opsetid("", opset)],
        attributes=list(attrs),
        doc_string=spec["summary"],
    )


def _masked_softmax(b: _Builder, logits: str, key_mask: str, masking: str, num_rows: str) -> str:
    """:func:`pumer_export.reduce.masked_softmax` on float32 ``logits`` [B, H, R, Nk] (rows = keys 0..R-1). The
    ``masking`` attribute (0-D int64) picks one rule through an ``If``, so only that rule's nodes run."""
    f32 = TensorProto.FLOAT

    def mask4(sb: _Builder) -> str:  # [B, 1, 1, Nk]
        return sb.unsqueeze(sb.unsqueeze(sb.op("Cast", key_mask, to=f32), 1), 1)

    # standard: softmax(s + log m), masked keys at float32's lowest value
    std = b.sub()
    mask = mask4(std)
    lowest = std.scalar_f32(float(np.finfo(np.float32).min))
    bias = std.op("Where", std.op("Greater", mask, std.scalar_f32(0.0)),
                  std.op("Log", std.op("Max", mask, std.scalar_f32(1e-30))), lowest)
    standard = std.op("Softmax", std.op("Add", logits, bias), axis=-1)
    # official P7: e = exp(s - max s) * (m + (1 - m) * eye); (e + 1e-6/Nk) / (sum e + 1e-6)
    off = b.sub()
    mask = mask4(off)
    num_keys = off.op("Gather", off.op("Shape", logits), off.scalar_i64(3), axis=0)
    rows = off.unsqueeze(off.op("Range", off.scalar_i64(0), num_rows, off.scalar_i64(1)), 1)  # [R, 1]
    cols = off.unsqueeze(off.op("Range", off.scalar_i64(0), num_keys, off.scalar_i64(1)), 0)  # [1, Nk]
    eye = off.op("Cast", off.op("Equal", rows, cols), to=f32)
    weights = off.op("Add", mask, off.op("Mul", off.op("Sub", off.scalar_f32(1.0), mask), eye))
    shifted = off.op("Sub", logits, off.reduce("ReduceMax", logits, axis=-1, keepdims=1))
    e = off.op("Mul", off.op("Exp", shifted), weights)
    eps = off.scalar_f32(1e-6)
    smooth = off.op("Div", eps, off.op("Cast", num_keys, to=f32))
    official = off.op("Div", off.op("Add", e, smooth), off.op("Add", off.reduce("ReduceSum", e, axis=-1, keepdims=1),
                                                                   eps))
    probs = b.fresh("probs")
    b.op("If", b.op("Equal", masking, b.scalar_i64(0)), out=[probs],
         then_branch=helper.make_graph(std.nodes, "standard_masking", [], [_value_info(standard, f32)]),
         else_branch=helper.make_graph(off.nodes, "official_masking", [], [_value_info(official, f32)]))
    return probs


def prune_function(opset: int = DEFAULT_OPSET) -> onnx.FunctionProto:
    """``pumer::PumerPrune`` in standard ONNX at ``opset`` (see :func:`pumer_export.reduce.prune`)."""
    check_opset(opset)
    f32 = TensorProto.FLOAT
    b = _Builder(opset, itertools.count(), "prune")
    inputs = ("x", "metric", "queries", "keys", "key_mask", "text_mask")
    x, metric, queries, keys, key_mask, text_mask = inputs
    text_len = b.attr_int("text_len")
    keep = b.unsqueeze(b.attr_int("keep"), 0)
    head = b.attr_int("score_head")
    image_start = b.unsqueeze(b.attr_int("image_start"), 0)
    masking = b.attr_int("masking")
    end = b.i64(_INT64_MAX)

    # the text rows' attention over every key, float32: logits = q k^T / sqrt(d)
    q = b.op("Cast", queries, to=f32)
    k = b.op("Cast", keys, to=f32)
    dim = b.op("Cast", b.op("Gather", b.op("Shape", q), b.scalar_i64(3), axis=0), to=f32)
    logits = b.op("Div", b.op("MatMul", q, b.op("Transpose", k, perm=[0, 1, 3, 2])), b.op("Sqrt", dim))
    probs = _masked_softmax(b, logits, key_mask, masking, text_len)
    cross = b.slice(probs, image_start, end, axis=3)  # the image keys
    # per_row = mean over heads, or head `score_head`
    mean_heads = b.reduce("ReduceMean", cross, axis=1, keepdims=0)
    one_head = b.op("Gather", cross, b.op("Max", head, b.scalar_i64(0)), axis=1)
    per_row = b.op("Where", b.op("Equal", head, b.scalar_i64(-1)), mean_heads, one_head)
    # score = sum over text rows / sum of the text mask
    total = b.reduce("ReduceSum", per_row, axis=1, keepdims=0)
    mask_sum = b.reduce("ReduceSum", b.op("Cast", text_mask, to=f32), axis=1, keepdims=1)
    score = b.op("Div", total, mask_sum)
    _, keep_idx = b.op("TopK", score, keep, n_out=2, axis=-1, largest=1, sorted=1)
    b.op("Identity", keep_idx, out=["keep_idx"])
    b.op("GatherND", b.slice(x, image_start, end, axis=1), b.unsqueeze(keep_idx, 2), batch_dims=1, out=["x_kept"])
    b.op("GatherND", b.slice(metric, image_start, end, axis=1), b.unsqueeze(keep_idx, 2), batch_dims=1,
         out=["metric_kept"])
    return _function(PRUNE, opset, b, inputs, ["x_kept", "metric_kept", "keep_idx"], count_attributes(PRUNE))


def _merge_branch(b: _Builder, x: str, metric: str, mask: str, r: str) -> tuple[str, str, str]:
    """The r >= 1 path of :func:`pumer_export.reduce.merge` (bipartite plan, mean merge, slots)."""
    f32 = TensorProto.FLOAT
    tokens = b.op("Gather", b.op("Shape", x), b.scalar_i64(1), axis=0)
    two = b.scalar_i64(2)
    num_a = b.op("Div", b.op("Add", tokens, b.scalar_i64(1)), two)
    kept = b.op("Sub", num_a, r)

    # --- plan (bipartite_plan)
    m = b.op("Cast", metric, to=f32)
    m = b.op("Div", m, b.reduce("ReduceL2", m, axis=-1, keepdims=1))
    sim = b.op("MatMul", b.every_other(m, 0), b.op("Transpose", b.every_other(m, 1), perm=[0, 2, 1]))
    first_row = b.op("Equal", b.op("Range", b.scalar_i64(0), num_a, b.scalar_i64(1)), b.scalar_i64(0))
    sim = b.op("Where", b.unsqueeze(first_row, 1), b.scalar_f32(float("-inf")), sim)
    node_max = b.reduce("ReduceMax", sim, axis=-1, keepdims=0)
    node_idx = b.op("ArgMax", sim, axis=-1, keepdims=0, select_last_index=0)
    _, edge_order = b.op("TopK", node_max, b.unsqueeze(num_a, 0), n_out=2, axis=-1, largest=1, sorted=1)
    r1 = b.unsqueeze(r, 0)
    src_idx = b.slice(edge_order, b.i64(0), r1, axis=1)
    rest = b.slice(edge_order, r1, b.i64(_INT64_MAX), axis=1)
    unm_idx, _ = b.op("TopK", rest, b.unsqueeze(kept, 0), n_out=2, axis=-1, largest=0, sorted=1)
    dst_idx = b.op("GatherElements", node_idx, src_idx, axis=1)

    # --- mean merge (apply_merge): b tokens + scatter-add of the merged a tokens, / counts
    counts = b.op("ConstantOfShape", b.op("Shape", dst_idx), value=helper.make_tensor("one", f32, [1], [1.0]))
    counts = b.op("ScatterElements", b.op("ConstantOfShape", b.op("Shape", b.every_other(mask, 1)),
                                          value=helper.make_tensor("one", f32, [1], [1.0])),
                  dst_idx, counts, axis=1, reduction="add")

    def merged(values: str, rank3: bool) -> str:
        a, bb = b.every_other(values, 0), b.every_other(values, 1)
        if rank3:
            src = b.op("Cast", b.gather_rows(a, src_idx), to=f32)
            unm = b.gather_rows(a, unm_idx)
            index = b.op("Expand", b.unsqueeze(dst_idx, 2), b.op("Shape", src))
            cnt = b.unsqueeze(counts, 2)
        else:
            src = b.op("Cast", b.op("GatherElements", a, src_idx, axis=1), to=f32)
            unm = b.op("GatherElements", a, unm_idx, axis=1)
            index, cnt = dst_idx, counts
        sums = b.op("ScatterElements", b.op("Cast", bb, to=f32), index, src, axis=1, reduction="add")
        mean = b.op("CastLike", b.op("Div", sums, cnt), values)
        return b.op("Concat", unm, mean, axis=1)

    x_out = merged(x, rank3=True)
    mask_out = merged(mask, rank3=False)

    # --- slots (plan_slots): a-token i -> its kept position or kept + its b-token; b-token j -> kept + j.
    # Interleaved without scatters: stack [slot_a, kept + arange(na)] on a last axis of 2, flatten, cut to t
    # (the last b entry is a pad when t is odd).
    a_shape = b.op("Shape", unm_idx)  # [B, kept]
    kept_rows = b.op("Expand", b.unsqueeze(b.op("Range", b.scalar_i64(0), kept, b.scalar_i64(1)), 0), a_shape)
    slot_a = b.op("ConstantOfShape", b.op("Shape", b.every_other(mask, 0)),
                  value=helper.make_tensor("zero", TensorProto.INT64, [1], [0]))
    slot_a = b.op("ScatterElements", slot_a, unm_idx, kept_rows, axis=1)
    slot_a = b.op("ScatterElements", slot_a, src_idx, b.op("Add", dst_idx, kept), axis=1)
    slot_b = b.op("Add", b.unsqueeze(b.op("Range", kept, b.op("Add", kept, num_a), b.scalar_i64(1)), 0),
                  b.op("Mul", slot_a, b.scalar_i64(0)))  # [B, na] (broadcast through slot_a's shape)
    pairs = b.op("Concat", b.unsqueeze(slot_a, 2), b.unsqueeze(slot_b, 2), axis=2)  # [B, na, 2]
    flat = b.op("Reshape", pairs, b.i64(0, -1))
    slots = b.slice(flat, b.i64(0), b.unsqueeze(tokens, 0), axis=1)
    return x_out, mask_out, slots


def merge_function(opset: int = DEFAULT_OPSET) -> onnx.FunctionProto:
    """``pumer::PumerMerge`` in standard ONNX at ``opset`` (see :func:`pumer_export.reduce.merge`)."""
    check_opset(opset)
    b = _Builder(opset, itertools.count(), "merge")
    x, metric, mask = "x", "metric", "mask"
    r = b.attr_int("r")
    is_identity = b.op("Equal", r, b.scalar_i64(0))

    then_b = b.sub()
    t_outs = [then_b.op("Identity", x), then_b.op("Identity", mask), then_b.batch_range(
        then_b.op("Gather", then_b.op("Shape", x), then_b.scalar_i64(1), axis=0), mask)]
    else_b = b.sub()
    e_outs = list(_merge_branch(else_b, x, metric, mask, r))

    def graph(name: str, sb: _Builder, outs: list[str]) -> onnx.GraphProto:
        types = [None, TensorProto.FLOAT, TensorProto.INT64]
        return helper.make_graph(sb.nodes, name, [], [_value_info(o, t) for o, t in zip(outs, types)])

    b.op("If", is_identity, out=["x_out", "mask_out", "slots"],
         then_branch=graph("identity", then_b, t_outs), else_branch=graph("bipartite_merge", else_b, e_outs))
    return _function(MERGE, opset, b, [x, metric, mask], ["x_out", "mask_out", "slots"], ["r"])


def compact_function(opset: int = DEFAULT_OPSET) -> onnx.FunctionProto:
    """``pumer::PumerCompact`` in standard ONNX at ``opset`` (see
    :func:`pumer_export.methods.smarttrim.reference.compact_index`): a full-length TopK of the keep mask is the stable
    kept-first order (TopK breaks ties by the lower index), cut to the largest count of a row."""
    check_opset(opset)
    b = _Builder(opset, itertools.count(), "compact")
    keep, x = "keep", "x"
    tokens = b.slice(b.op("Shape", keep), b.i64(1), b.i64(2), axis=0)
    _, order = b.op("TopK", b.op("Cast", keep, to=TensorProto.FLOAT), tokens, n_out=2, axis=1, largest=1, sorted=1)
    counts = b.reduce("ReduceSum", b.op("Cast", keep, to=TensorProto.INT64), axis=1, keepdims=0)
    b.op("ReduceMax", counts, b.i64(0), keepdims=0, out=["count"])  # (opset >= 18: axes are an input)
    b.op("Slice", order, b.i64(0), b.unsqueeze("count", 0), b.i64(1), out=["index"])
    b.op("GatherElements", keep, "index", axis=1, out=["alive"])
    b.op("GatherND", x, b.unsqueeze("index", 2), batch_dims=1, out=["x_out"])
    return _function(COMPACT, opset, b, [keep, x], ["x_out", "alive", "index", "count"], [])


def function_protos(opset: int = DEFAULT_OPSET) -> list[onnx.FunctionProto]:
    """The model-local functions of the pumer ops at ``opset``."""
    return [prune_function(opset), merge_function(opset), compact_function(opset)]


def add_functions(model: onnx.ModelProto, opset: int | None = None,
                  op_types: Sequence[str] | None = None) -> onnx.ModelProto:
    """Append (or replace) the pumer function bodies in ``model`` and import the ``pumer`` domain.

    ``opset`` defaults to the model's default-domain opset (the bodies must use the model's);
    ``op_types`` defaults to the pumer op types the graph uses (none: no bodies, no import).
    """
    if opset is None:
        opset = model_opset(model)
    if op_types is None:
        op_types = sorted({n.op_type for n in model.graph.node if n.domain == DOMAIN})
    unknown = sorted(set(op_types) - set(OP_TYPES))
    if unknown:
        raise ValueError(f"unknown pumer op type(s) {unknown}; known: {list(OP_TYPES)}")
    strip_functions(model)
    builders = {PRUNE: prune_function, MERGE: merge_function, COMPACT: compact_function}
    model.functions.extend(builders[op_type](opset) for op_type in OP_TYPES if op_type in op_types)
    if op_types and not any(imp.domain == DOMAIN for imp in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, DOMAIN_VERSION))
    return model


def strip_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """Remove the pumer function bodies (what TensorRT < 10.7 needs to pick the plugins)."""
    keep = [f for f in model.functions if not (f.domain == DOMAIN and f.name in OP_TYPES)]
    del model.functions[:]
    model.functions.extend(keep)
    return model


def model_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise ValueError("model imports no default ONNX opset")


def make_node(op_type: str, inputs: Sequence[str], outputs: Sequence[str], name: str | None = None,
              **counts: int) -> onnx.NodeProto:
    """A bare pumer node with its count attributes and the TensorRT plugin attributes."""
    expected = set(count_attributes(op_type))
    if set(counts) != expected:
        raise ValueError(f"{op_type} needs attributes {sorted(expected)}, got {sorted(counts)}")
    return helper.make_node(op_type, list(inputs), list(outputs), name=name, domain=DOMAIN,
                            **{k: int(v) for k, v in counts.items()}, **plugin_attributes())


def single_op_model(
    op_type: str,
    *,
    opset: int = DEFAULT_OPSET,
    float_type: int = TensorProto.FLOAT,
    attn_type: int | None = None,
    with_functions: bool = True,
    ir_version: int = 10,
    **counts: int,
) -> onnx.ModelProto:
    """A model holding one pumer node (all dims symbolic) and, by default, its function body.

    Inputs and outputs are named as in op_spec.json; ``float_type`` is the type ``T`` of the token
    inputs, ``attn_type`` the type ``A`` of PumerPrune's attention (default: ``float_type``).
    Used by the op tests and handy for plugin tests.
    """
    spec = op_spec()["ops"][op_type]
    types = {"T": float_type, "A": attn_type or float_type, "M": TensorProto.FLOAT, "I": TensorProto.INT64,
             "K": TensorProto.BOOL}

    def values(entries):
        return [helper.make_tensor_value_info(e["name"], types[e["type"]], [d.replace(" ", "") for d in e["shape"]])
                for e in entries]

    inputs, outputs = values(spec["inputs"]), values(spec["outputs"])
    node = make_node(op_type, [i.name for i in inputs], [o.name for o in outputs], name=op_type, **counts)
    graph = helper.make_graph([node], f"single_{op_type}", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                    helper.make_opsetid(DOMAIN, DOMAIN_VERSION)],
                              ir_version=ir_version, producer_name="pumer-export")
    if with_functions:
        add_functions(model, opset, [op_type])
    return model
