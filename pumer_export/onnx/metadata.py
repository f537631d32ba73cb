"""The export's own records in an ONNX file's ``metadata_props``: ``pumer.*`` keys with JSON values.

Written by the exporter (settings, token schedule, sizes, dtype, versions, weights' fingerprint) and by
``quantize`` (``pumer.quantization``); read by every command that takes an export.
"""

from __future__ import annotations

import json
from typing import Any

import onnx


def set_metadata(model_proto: onnx.ModelProto, entries: dict[str, Any]) -> None:
    """Set ``entries`` (JSON-encoded) in ``metadata_props``, replacing keys that are there."""
    existing = {p.key: p for p in model_proto.metadata_props}
    for key, value in entries.items():
        text = json.dumps(value, sort_keys=True)
        if key in existing:
            existing[key].value = text
        else:
            model_proto.metadata_props.add(key=key, value=text)


def read_metadata(model_proto: onnx.ModelProto) -> dict[str, Any]:
    """The ``pumer.*`` metadata of an exported model, JSON-decoded."""
    result = {}
    for prop in model_proto.metadata_props:
        if prop.key.startswith("pumer."):
            try:
                result[prop.key] = json.loads(prop.value)
            except ValueError:
                result[prop.key] = prop.value
    return result
