"""What an exported ONNX file says about itself: inputs, outputs, and the export metadata.

The exporter stores its settings in ``metadata_props`` (JSON values: PuMer settings, token
schedule, image size, text length, dtype, ...). This module reads them tolerantly (a key that
is missing stays ``None``) so validation and benchmarks can size their inputs and detect a model
exported with other settings than the checkpoint's.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PumerExportError

#: The inputs of a ViLT export, in the order the exporter declares them (other families: ``pumer.inputs``).
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids", "pixel_values", "pixel_mask")
#: Outputs that hold indices (compared exactly) end with one of these.
#: PuMer's prune / merge outputs, and SmartTrim's kept positions per trimmer location (``cross0.image_kept``)
INDEX_SUFFIXES = (".keep_idx", ".image_slots", ".text_slots", ".image_kept", ".text_kept")

_ONNX_DTYPES = {
    1: np.float32, 10: np.float16, 16: "bfloat16", 11: np.float64, 7: np.int64, 6: np.int32, 9: np.bool_,
}
_DTYPE_NAMES = {"float32": "fp32", "fp32": "fp32", "float16": "fp16", "fp16": "fp16", "half": "fp16",
                "bfloat16": "bf16", "bf16": "bf16"}


def is_index_output(name: str) -> bool:
    return name.endswith(INDEX_SUFFIXES)


def is_kept_output(name: str) -> bool:
    """A SmartTrim kept-positions output (``cross0.image_kept``): [B, n] with -1 on a row's padding slots."""
    return name.endswith(INDEX_SUFFIXES[3:])


def canonical_dtype(name: str | None) -> str | None:
    """``fp32`` / ``fp16`` / ``bf16`` for the spellings the tools use, None for None."""
    if name is None:
        return None
    key = str(name).lower().replace("torch.", "")
    if key not in _DTYPE_NAMES:
        raise PumerExportError(f"unknown dtype {name!r}; use fp32, fp16 or bf16 (int8: `pumer-export quantize`)")
    return _DTYPE_NAMES[key]


@dataclasses.dataclass
class TensorInfo:
    name: str
    dtype: Any  # numpy dtype (or the string "bfloat16")
    shape: list[int | str | None]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": str(np.dtype(self.dtype)) if self.dtype != "bfloat16" else "bfloat16",
                "shape": self.shape}


@dataclasses.dataclass
class OnnxInfo:
    path: Path
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    metadata: dict[str, Any]
    opset: int | None

    # ------------------------------------------------------------- derived settings
    def _find(self, *keys: str) -> Any:
        """The first metadata value under any of ``keys`` (top level or one level down)."""
        for key in keys:
            for candidate in (f"pumer.{key}", key):
                if candidate in self.metadata:
                    return self.metadata[candidate]
        for value in self.metadata.values():
            if isinstance(value, dict):
                for key in keys:
                    if key in value:
                        return value[key]
        return None

    @property
    def pumer(self) -> dict[str, Any] | None:
        value = self._find("config", "pumer", "pumer_config")
        return value if isinstance(value, dict) else None

    @property
    def reduction(self) -> bool | None:
        """False for a baseline export (``--no-reduction``), None when the file does not say."""
        value = self._find("reduction")
        if isinstance(value, bool):
            return value
        pumer = self.pumer
        return bool(pumer.get("reduce_layers")) if pumer else None

    @property
    def image_size(self) -> tuple[int, int] | None:
        value = self._find("image_size")
        if isinstance(value, (list, tuple)) and len(value) == 2:
            return int(value[0]), int(value[1])
        if isinstance(value, int):
            return value, value
        pixel = self.input("pixel_values")
        if pixel is not None and len(pixel.shape) == 4 and all(isinstance(d, int) for d in pixel.shape[2:]):
            return int(pixel.shape[2]), int(pixel.shape[3])
        return None

    @property
    def text_length(self) -> int | None:
        value = self._find("text_length", "text_tokens")
        if isinstance(value, int):
            return value
        ids = self.input("input_ids")
        if ids is not None and len(ids.shape) == 2 and isinstance(ids.shape[1], int):
            return int(ids.shape[1])
        return None

    @property
    def dtype(self) -> str:
        value = self._find("dtype")
        if isinstance(value, str):
            try:
                return canonical_dtype(value) or "fp32"
            except PumerExportError:
                pass
        pixel = self.input("pixel_values")
        if pixel is not None:
            if pixel.dtype == "bfloat16":
                return "bf16"
            if np.dtype(pixel.dtype) == np.float16:
                return "fp16"
        return "fp32"

    def input(self, name: str) -> TensorInfo | None:
        return next((t for t in self.inputs if t.name == name), None)

    def require_model_inputs(self) -> None:
        """A one-line error unless the file takes a vision-language model's inputs (not some other ONNX model)."""
        missing = [name for name in ("input_ids", "pixel_values") if self.input(name) is None]
        if missing:
            raise PumerExportError(
                f"{self.path} is not a model export of pumer-export: it has no input(s) {', '.join(missing)} "
                f"(inputs: {', '.join(t.name for t in self.inputs) or 'none'}); export one with "
                f"`pumer-export onnx MODEL OUTDIR`"
            )

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "opset": self.opset,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "metadata": self.metadata,
        }


def _tensor_info(value) -> TensorInfo:
    ttype = value.type.tensor_type
    dims: list[int | str | None] = []
    for dim in ttype.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return TensorInfo(value.name, _ONNX_DTYPES.get(ttype.elem_type, np.float32), dims)


def read_onnx_info(path: str | Path) -> OnnxInfo:
    """Inputs, outputs and metadata of ``path`` (weights are not loaded)."""
    from ..onnx.files import load_onnx, resolve_onnx_path

    path = resolve_onnx_path(path)
    model = load_onnx(path)
    metadata: dict[str, Any] = {}
    for prop in model.metadata_props:
        try:
            metadata[prop.key] = json.loads(prop.value)
        except ValueError:
            metadata[prop.key] = prop.value
    # The exporter may also store everything as one JSON object under a single key.
    for value in list(metadata.values()):
        if isinstance(value, dict) and "pumer" in value and "pumer" not in metadata:
            metadata.setdefault("_export", value)
    initializers = {init.name for init in model.graph.initializer}
    inputs = [_tensor_info(v) for v in model.graph.input if v.name not in initializers]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return OnnxInfo(path, inputs, [_tensor_info(v) for v in model.graph.output], metadata, opset)


#: The PuMer settings an export must share with the checkpoint it is compared or timed with.
def method_differences(model, info: "OnnxInfo") -> list[str]:
    """How the export's recorded reduction method (``pumer.method``: name and settings) differs from the
    checkpoint's: [] when they agree or the file records none (exports older than the method seam)."""
    from .. import methods

    stored = info.metadata.get("pumer.method")
    if not isinstance(stored, dict):
        return []
    mine = methods.for_model(model)
    if stored.get("name") != mine.NAME:
        return [f"method {stored.get('name')} (export) vs {mine.NAME} (checkpoint)"]
    if mine.STATIC_COUNTS:  # PuMer's settings are compared key by key below
        return []
    wanted = json.loads(json.dumps(mine.settings(model.config).to_dict()))
    theirs = stored.get("settings") or {}
    return [f"{key} {theirs.get(key)} (export) vs {value} (checkpoint)" for key, value in wanted.items()
            if theirs.get(key) != value]


SETTING_KEYS = ("reduce_layers", "prune_ratio", "image_merge_ratio", "text_merge_ratio", "score", "attention_masking")


def check_export_of(model, info: OnnxInfo, *, reduction: bool | None = None, fingerprint: str | None = None,
                    option: str = "--onnx") -> None:
    """One-line error unless ``info`` is an export of ``model``: the same family, and (where asked) the same weights
    (``fingerprint``: :func:`~pumer_export.checkpoints.model_fingerprint`) and the checkpoint's PuMer settings, or
    none for a baseline (``reduction=False``). Files that do not record a field are not judged on it."""
    from .. import models

    family = models.for_model(model)
    stored_family = info.metadata.get("pumer.family")
    if stored_family and stored_family != family.NAME:
        theirs = models.get(stored_family).TITLE if stored_family in models.FAMILIES else stored_family
        raise PumerExportError(f"{option} {info.path}: the export is {theirs}, the checkpoint is {family.TITLE}; pass "
                               "an export of this checkpoint")
    stored_weights = info.metadata.get("pumer.model_sha256")
    if fingerprint and stored_weights and stored_weights != fingerprint:
        raise PumerExportError(f"{option} {info.path} was exported from another checkpoint (its weights differ); pass "
                               "an export of this checkpoint or leave the option out to export it")
    method = method_differences(model, info)
    if method:
        raise PumerExportError(f"{option} {info.path} was exported with other reduction settings: {'; '.join(method)}; "
                               "pass an export of this checkpoint")
    stored = info.pumer
    if reduction is None or stored is None:
        return
    mine = model.pumer_config if reduction else model.pumer_config.without_reduction()
    wanted = mine.to_dict()
    differing = [f"{key} {stored.get(key)} (export) vs {wanted[key]} (checkpoint)" for key in SETTING_KEYS
                 if key in stored and (list(stored[key]) if isinstance(stored[key], list) else stored[key])
                 != (list(wanted[key]) if isinstance(wanted[key], (list, tuple)) else wanted[key])]
    if differing:
        raise PumerExportError(f"{option} {info.path} was made with other PuMer settings: {'; '.join(differing)}")
