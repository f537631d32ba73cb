"""Summary of an exported ONNX file: pumer nodes, token schedule, op counts, function bodies."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import onnx

from ..ops import DOMAIN, op_spec_hash
from . import functions
from .metadata import read_metadata
from .files import load_onnx


def load_header(path: str | Path) -> onnx.ModelProto:
    """The model without its external weights (enough for every summary here)."""
    return load_onnx(path)


def _attr(attribute: onnx.AttributeProto) -> Any:
    value = onnx.helper.get_attribute_value(attribute)
    return value.decode() if isinstance(value, bytes) else value


def _count_ops(nodes, counts: collections.Counter) -> None:
    for node in nodes:
        counts[f"{node.domain}::{node.op_type}" if node.domain else node.op_type] += 1
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                _count_ops(attribute.g.node, counts)


def summarize(path: str | Path) -> dict[str, Any]:
    """Everything ``pumer-export inspect`` shows, as a JSON-ready dict."""
    model = load_header(path)
    metadata = read_metadata(model)
    opset = {imp.domain or "ai.onnx": imp.version for imp in model.opset_import}
    pumer_nodes = []
    for node in model.graph.node:
        if node.domain == DOMAIN:
            pumer_nodes.append({
                "name": node.name,
                "op_type": node.op_type,
                "attributes": {a.name: _attr(a) for a in node.attribute},
                "inputs": list(node.input),
                "outputs": list(node.output),
            })
    local = {(f.domain, f.name): f for f in model.functions}
    bodies = {}
    for op_type in sorted({n["op_type"] for n in pumer_nodes} | set(functions.OP_TYPES)):
        proto = local.get((DOMAIN, op_type))
        bodies[op_type] = None if proto is None else {
            "opset": {imp.domain or "ai.onnx": imp.version for imp in proto.opset_import},
            "nodes": len(proto.node),
            "attributes": list(proto.attribute) + [a.name for a in proto.attribute_proto],
        }
    used = {n["op_type"] for n in pumer_nodes}
    counts: collections.Counter = collections.Counter()
    _count_ops(model.graph.node, counts)
    stored_hash = metadata.get("pumer.op_spec_hash")
    return {
        "path": str(path),
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "ir_version": model.ir_version,
        "opset_import": opset,
        "inputs": [_value(v) for v in model.graph.input],
        "outputs": [_value(v) for v in model.graph.output],
        "pumer_nodes": pumer_nodes,
        "function_bodies": bodies,
        "runs_without_plugins": all(bodies.get(op) is not None for op in used),
        "op_counts": dict(sorted(counts.items(), key=lambda item: (-item[1], item[0]))),
        "metadata": metadata,
        "op_spec_hash_matches": None if stored_hash is None else stored_hash == op_spec_hash(),
        "external_data": any(
            t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer
        ),
    }


def _value(value: onnx.ValueInfoProto) -> dict[str, Any]:
    tensor = value.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in tensor.shape.dim]
    return {"name": value.name, "type": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name, "shape": dims}


def render(summary: dict[str, Any]) -> list:
    """Rich renderables for :func:`summarize`'s result."""
    from ..console import table

    meta = summary["metadata"]
    out: list = []
    head = [
        ["file", summary["path"]],
        ["producer", summary["producer"] or "-"],
        ["model family", meta.get("pumer.family", "vilt" if "pumer.format" in meta else "-")],
        ["opsets", ", ".join(f"{k} {v}" for k, v in summary["opset_import"].items())],
        ["dtype", meta.get("pumer.dtype", "-")],
        ["image size", "x".join(map(str, meta["pumer.image_size"])) if "pumer.image_size" in meta else "-"],
        ["text length", meta.get("pumer.text_length", "-")],
        ["reduction", meta.get("pumer.reduction", "-")],
        ["external data", summary["external_data"]],
        ["op spec hash", {None: "not recorded", True: "matches this pumer-export",
                          False: "DIFFERS from this pumer-export"}[summary["op_spec_hash_matches"]]],
        ["runs without plugins", "yes (function bodies present)" if summary["runs_without_plugins"]
         else "NO: a pumer op has no function body"],
    ]
    out.append(table("model", ["field", "value"], head))
    out.append(table("inputs / outputs", ["", "name", "type", "shape"],
                     [["in", v["name"], v["type"], v["shape"]] for v in summary["inputs"]]
                     + [["out", v["name"], v["type"], v["shape"]] for v in summary["outputs"]]))
    rows = []
    for node in summary["pumer_nodes"]:
        attrs = ", ".join(f"{k}={v}" for k, v in node["attributes"].items())
        rows.append([node["op_type"], node["name"], attrs])
    out.append(table(f"pumer nodes ({len(rows)})", ["op", "name", "attributes"], rows))
    out.append(table("function bodies", ["op", "present", "opset", "nodes"], [
        [op, "yes" if body else "no", ", ".join(f"{k} {v}" for k, v in body["opset"].items()) if body else "-",
         body["nodes"] if body else "-"] for op, body in summary["function_bodies"].items()]))
    schedule = meta.get("pumer.schedule")
    if schedule and any(c.get("active", True) and (c["prune"] or c["image_merge"] or c["text_merge"])
                        for c in schedule["layers"]):  # (a SmartTrim export's counts depend on the input)
        layer_rows = [[c["layer"], f"{c['text_in']}+{c['image_in']}", c["prune"], c["image_merge"], c["text_merge"],
                       f"{c['text_out']}+{c['image_out']}"] for c in schedule["layers"]]
        out.append(table(f"token schedule (text+image tokens; {schedule['text_tokens']}+{schedule['image_tokens']} in)",
                         ["layer", "in", "pruned", "image merged", "text merged", "out"], layer_rows))
    counts = summary["op_counts"]
    out.append(table(f"op counts ({sum(counts.values())} nodes, subgraphs included)", ["op", "count"],
                     [[k, v] for k, v in counts.items()]))
    return out
