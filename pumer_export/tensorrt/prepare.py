"""Plain-Python preparation of a pumer-export ONNX model for TensorRT (no ``tensorrt`` import).

Local function versus plugin
----------------------------
Every pumer node carries a model-local ``FunctionProto`` (so ONNX Runtime runs it) and the
``plugin_namespace`` / ``plugin_version`` attributes (so TensorRT maps it to a plugin). Which one
the TensorRT ONNX parser picks depends on its version:

============  ===========================================================================
TensorRT      parser's choice for a node that has both a local function and a plugin
============  ===========================================================================
10.0 - 10.6   the local function (the plugin is never used while the body is present)
10.7 - 10.14  the plugin, when the node's ``plugin_namespace`` names a registered creator
10.15 - 11.x  the local function, unless ``OnnxParserFlag.ENABLE_PLUGIN_OVERRIDE`` is set or
              the node carries ``plugin_namespace`` (ours always do)
============  ===========================================================================

Policy (:func:`function_policy`): the pumer function bodies are stripped on **every** version,
and ``ENABLE_PLUGIN_OVERRIDE`` is never set. On 10.0 - 10.6 stripping is required;
from 10.7 on it is a safeguard: with the bodies present, a node whose plugin is not registered
(library not loaded, wrong namespace or version) silently falls back to the standard-op body and
the build "succeeds" with an engine that does not use the plugins. Without the bodies the parse
fails on that node instead, and the error names it. Only the pumer-domain functions are removed;
nodes, their attributes, other functions and the (external) weights are untouched.

Why not ``ENABLE_PLUGIN_OVERRIDE``: it makes the parser import *every* node whose op type names a
registered creator as that plugin, and TensorRT's own plugin library (``init_libnvinfer_plugins``)
registers legacy creators named ``ScatterND``, ``ScatterElements`` and ``Split`` in the empty
namespace, so standard ONNX nodes of those types would become plugins. The pumer nodes carry
``plugin_namespace`` and need no override, so the flag is not used.

Precision
---------
See :func:`precision_policy`: the network is strongly typed (precision comes from the ONNX
model) on TensorRT 11 (where it is the only mode) and on TensorRT 10 too, except when ``--fp16``
is asked for a float32 model on TensorRT 10: then the network is weakly typed and the builder's
FP16 flag lets TensorRT choose fp16 kernels. TensorRT 11 refuses ``--fp16`` on a float32 model
(export a float16 model instead).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import onnx

from ..errors import PumerExportError
from ..onnx.files import load_onnx
from ..ops import DOMAIN, op_spec

#: Oldest supported TensorRT: IPluginV3 and the plugin fallback with plugin_namespace need 10.0.
MIN_TENSORRT = (10, 0)
#: Newest major version the precedence table above was checked against.
MAX_KNOWN_MAJOR = 11


# ---------------------------------------------------------------------------- versions
@dataclasses.dataclass(frozen=True, order=True)
class TrtVersion:
    major: int
    minor: int
    patch: int = 0
    build: int = 0

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @property
    def short(self) -> tuple[int, int]:
        return (self.major, self.minor)


def parse_trt_version(text: str | TrtVersion) -> TrtVersion:
    """``"10.3.0.30"`` / ``"10.15.1.post1"`` / ``"11.0"`` to a :class:`TrtVersion`."""
    if isinstance(text, TrtVersion):
        return text
    match = re.match(r"\s*v?(\d+)\.(\d+)(?:\.(\d+))?(?:\.(\d+))?", str(text))
    if not match:
        raise PumerExportError(f"cannot read a TensorRT version from {text!r} (expected MAJOR.MINOR[.PATCH])")
    parts = [int(p) if p is not None else 0 for p in match.groups()]
    return TrtVersion(*parts)


def check_supported(version: str | TrtVersion) -> TrtVersion:
    version = parse_trt_version(version)
    if version.short < MIN_TENSORRT:
        raise PumerExportError(
            f"TensorRT {version} is too old: the pumer plugins (IPluginV3) need TensorRT "
            f"{MIN_TENSORRT[0]}.{MIN_TENSORRT[1]} or newer"
        )
    return version


# ---------------------------------------------------------------------- function policy
@dataclasses.dataclass(frozen=True)
class FunctionPolicy:
    """What :func:`prepare_onnx_for_tensorrt` and the parser do for one TensorRT version."""

    version: str
    #: what the parser would pick for a pumer node with the bodies left in: "function" or "plugin"
    default_winner: str
    strip_functions: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def function_policy(version: str | TrtVersion) -> FunctionPolicy:
    """The local-function / plugin handling for TensorRT ``version`` (see the module docstring)."""
    version = check_supported(version)
    if version.short <= (10, 6):
        return FunctionPolicy(str(version), "function", True,
                              "TensorRT 10.0-10.6 uses a local function over a plugin: bodies stripped")
    note = "" if version.major <= MAX_KNOWN_MAJOR else f" (TensorRT {version.major} is newer than this table)"
    return FunctionPolicy(str(version), "plugin", True,
                          "TensorRT 10.7+ picks the plugin for nodes with plugin_namespace; bodies stripped so "
                          "that a missing plugin fails the parse instead of inlining the body" + note)


# ---------------------------------------------------------------------------- precision
_DTYPE_NAMES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.BFLOAT16: "bfloat16",
}
_DTYPE_ALIASES = {
    "float32": "float32", "fp32": "float32", "float": "float32", "torch.float32": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16", "torch.float16": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16", "torch.bfloat16": "bfloat16",
}


@dataclasses.dataclass(frozen=True)
class PrecisionPlan:
    onnx_dtype: str
    strongly_typed: bool
    fp16_flag: bool
    description: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def normalize_dtype(name: str) -> str:
    key = str(name).strip().lower()
    if key not in _DTYPE_ALIASES:
        raise PumerExportError(f"unknown dtype {name!r}; expected one of float32, float16, bfloat16")
    return _DTYPE_ALIASES[key]


def model_dtype(model: onnx.ModelProto, metadata: Mapping[str, Any] | None = None) -> str:
    """The floating-point precision of an export: the metadata's ``dtype``, else the float inputs/weights."""
    metadata = read_export_metadata(model) if metadata is None else metadata
    value = find_metadata_value(metadata, "dtype")
    if isinstance(value, str) and value.strip().lower() in _DTYPE_ALIASES:
        return normalize_dtype(value)
    candidates: Iterable[int] = [
        vi.type.tensor_type.elem_type for vi in model.graph.input if vi.type.HasField("tensor_type")
    ]
    for elem_type in list(candidates) + [init.data_type for init in model.graph.initializer]:
        if elem_type in _DTYPE_NAMES:
            return _DTYPE_NAMES[elem_type]
    return "float32"


def precision_policy(version: str | TrtVersion, onnx_dtype: str, fp16: bool = False) -> PrecisionPlan:
    """How the network is typed for ``version`` given the model's dtype and ``--fp16``.

    * TensorRT >= 11: always strongly typed (the weak-typing builder flags are gone); ``--fp16``
      on a float32 model is an error, on a float16 model it changes nothing.
    * TensorRT 10: strongly typed (the engine runs in the ONNX model's precision, as on 11),
      except ``--fp16`` on a float32 model: weakly typed network + ``BuilderFlag.FP16``.
    """
    version = check_supported(version)
    onnx_dtype = normalize_dtype(onnx_dtype)
    if version.major >= 11:
        if fp16 and onnx_dtype == "float32":
            raise PumerExportError(
                f"--fp16 needs a float16 ONNX model on TensorRT {version}: networks are strongly typed, the "
                "precision comes from the ONNX model; export the model in float16 (or drop --fp16)"
            )
        return PrecisionPlan(onnx_dtype, True, False, f"strongly typed ({onnx_dtype} from the ONNX model)")
    if fp16 and onnx_dtype == "float32":
        return PrecisionPlan(onnx_dtype, False, True, "weakly typed, FP16 builder flag (TensorRT picks fp16 kernels)")
    return PrecisionPlan(onnx_dtype, True, False, f"strongly typed ({onnx_dtype} from the ONNX model)")


# ------------------------------------------------------------------------------ profiles
@dataclasses.dataclass(frozen=True)
class BatchProfile:
    min: int
    opt: int
    max: int

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


#: ``--batch`` when the model's batch dimension is dynamic.
DEFAULT_DYNAMIC_BATCH = BatchProfile(1, 8, 32)


def parse_batch_profile(text: str, flag: str = "--batch") -> BatchProfile:
    """``"1:8:32"`` (MIN:OPT:MAX) or ``"8"`` (a fixed size) to a :class:`BatchProfile` (``flag``: the option named
    in errors; the same syntax serves other profile ranges, e.g. ``--prompt``)."""
    parts = [p.strip() for p in str(text).split(":")]
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3 or not all(re.fullmatch(r"\d+", p) for p in parts):
        raise PumerExportError(f"{flag} expects MIN:OPT:MAX (e.g. 1:8:32) or one size, got {text!r}")
    lo, opt, hi = (int(p) for p in parts)
    if lo < 1:
        raise PumerExportError(f"{flag} {text}: sizes must be at least 1")
    if not lo <= opt <= hi:
        raise PumerExportError(f"{flag} {text}: needs MIN <= OPT <= MAX")
    return BatchProfile(lo, opt, hi)


_SIZE_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_size(text: str) -> int:
    """``"4G"`` / ``"512M"`` / ``"1.5GiB"`` / ``"1048576"`` to bytes (binary units)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", str(text))
    if not match:
        raise PumerExportError(f"--workspace expects a size such as 512M or 4G, got {text!r}")
    value = int(float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()])
    if value < 1:
        raise PumerExportError(f"--workspace must be positive, got {text!r}")
    return value


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """A graph input: name, ONNX element type name, shape with ``None`` for the batch dimension."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]
    batch_dim: str | int | None  # the batch dimension's symbol, or its fixed size


def _elem_type_name(elem_type: int) -> str:
    if elem_type in _DTYPE_NAMES:
        return _DTYPE_NAMES[elem_type]
    try:
        return {"double": "float64"}.get(name := onnx.TensorProto.DataType.Name(elem_type).lower(), name)
    except ValueError:
        return "?"


def graph_inputs(model: onnx.ModelProto) -> list[InputSpec]:
    """The real inputs (not initializers) with the batch dim (dim 0) as ``None`` when dynamic.

    Every other dimension must be fixed: the export fixes the image size and text length.
    """
    initializers = {init.name for init in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in initializers:
            continue
        tensor_type = vi.type.tensor_type
        dtype = _elem_type_name(tensor_type.elem_type)
        dims = list(tensor_type.shape.dim)
        if not dims:
            raise PumerExportError(f"input {vi.name!r} has no shape; re-export the model")
        shape: list[int | None] = []
        batch: str | int | None = None
        for axis, dim in enumerate(dims):
            fixed = dim.HasField("dim_value") and dim.dim_value > 0
            if axis == 0:
                batch = dim.dim_value if fixed else (dim.dim_param or "?")
                shape.append(dim.dim_value if fixed else None)
            elif fixed:
                shape.append(dim.dim_value)
            else:
                raise PumerExportError(
                    f"input {vi.name!r} has a dynamic dimension {axis} ({dim.dim_param or '?'}); only the batch "
                    "dimension may be dynamic: export with a fixed image size and text length"
                )
        specs.append(InputSpec(vi.name, dtype, tuple(shape), batch))
    if not specs:
        raise PumerExportError("the ONNX model has no inputs")
    return specs


def default_batch_profile(inputs: list[InputSpec]) -> BatchProfile:
    """:data:`DEFAULT_DYNAMIC_BATCH`, or ``N:N:N`` when the model was exported with a fixed batch N."""
    fixed = {spec.shape[0] for spec in inputs if spec.shape[0] is not None}
    if fixed:
        size = max(fixed)
        return BatchProfile(size, size, size)
    return DEFAULT_DYNAMIC_BATCH


def profile_shapes(inputs: list[InputSpec], batch: BatchProfile) -> dict[str, dict[str, list[int]]]:
    """``{input: {"min": shape, "opt": shape, "max": shape}}`` for one optimization profile over the batch."""
    shapes = {}
    for spec in inputs:
        fixed = spec.shape[0]
        if fixed is not None and (batch.min, batch.opt, batch.max) != (fixed, fixed, fixed):
            raise PumerExportError(
                f"input {spec.name!r} has a fixed batch of {fixed}, so --batch must be {fixed}:{fixed}:{fixed} "
                f"(got {batch}); export with a dynamic batch to build a range"
            )
        rest = list(spec.shape[1:])
        shapes[spec.name] = {key: [size] + rest for key, size in batch.to_dict().items()}
    return shapes


# ------------------------------------------------------------------------------ metadata
def read_export_metadata(model: onnx.ModelProto) -> dict[str, Any]:
    """``metadata_props`` with JSON values decoded (strings that are not JSON are kept as they are)."""
    result: dict[str, Any] = {}
    for prop in model.metadata_props:
        try:
            result[prop.key] = json.loads(prop.value)
        except (ValueError, TypeError):
            result[prop.key] = prop.value
    return result


#: Prefix of the export's metadata keys (``pumer.op_spec_hash``, ``pumer.dtype``, ...).
METADATA_PREFIX = "pumer."


def find_metadata_value(metadata: Mapping[str, Any], key: str) -> Any:
    """``pumer.<key>`` or ``key`` in the metadata, or ``key`` inside one of its JSON objects."""
    for name in (METADATA_PREFIX + key, key):
        if name in metadata:
            return metadata[name]
    for value in metadata.values():
        if isinstance(value, Mapping) and key in value:
            return value[key]
    return None


#: Operators of ONNX Runtime's own quantization that TensorRT does not run.
ORT_QUANTIZED_OPS = ("MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul", "MatMulIntegerToFloat")


def check_quantization(model: onnx.ModelProto, metadata: Mapping[str, Any], fp16: bool) -> str | None:
    """The quantization label of a quantized export that TensorRT can build (Q/DQ placed for TensorRT, built
    strongly typed), None for a float export; a one-line error for an export quantized for ONNX Runtime (dynamic
    int8 runs MatMulInteger; its static QDQ has activation zero points, and TensorRT's quantization is symmetric)
    and for ``--fp16`` on a Q/DQ export (explicit quantization builds strongly typed, without precision flags)."""
    from ..quantize import read_quantization

    record = read_quantization(metadata)
    ort_ops = sorted({node.op_type for node in model.graph.node if node.op_type in ORT_QUANTIZED_OPS})
    if ort_ops or (record and record.get("target") != "tensorrt"):
        what = f"{record.get('label')} for ONNX Runtime" if record else f"for ONNX Runtime ({', '.join(ort_ops)})"
        raise PumerExportError(f"this export is quantized {what}, which TensorRT does not build; quantize the float "
                               "export with `pumer-export quantize EXPORT OUT --for tensorrt` and build that")
    if record is None:
        return None
    if fp16:
        raise PumerExportError(f"--fp16 with a {record.get('label')} export: a Q/DQ network builds strongly typed, its "
                               "precision set by the Q/DQ pairs; drop --fp16")
    return record.get("label")


def export_op_spec_hash(metadata: Mapping[str, Any]) -> str | None:
    value = find_metadata_value(metadata, "op_spec_hash")
    return value if isinstance(value, str) and value else None


def pumer_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The pumer-domain nodes of the main graph (where the exporter puts them)."""
    return [node for node in model.graph.node if node.domain == DOMAIN]


def check_pumer_nodes(model: onnx.ModelProto) -> None:
    """Every pumer node is a known op and carries the plugin attributes the creators are registered with."""
    spec = op_spec()
    expected = {"plugin_namespace": spec["plugin_namespace"], "plugin_version": spec["plugin_version"]}
    for node in pumer_nodes(model):
        if node.op_type not in spec["ops"]:
            raise PumerExportError(f"node {node.name or node.op_type!r}: unknown pumer op {node.op_type!r}")
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        for key, value in expected.items():
            got = attrs.get(key)
            got = got.decode() if isinstance(got, bytes) else got
            if got != value:
                raise PumerExportError(
                    f"node {node.name or node.op_type!r} has {key}={got!r}, the plugins are registered with "
                    f"{value!r}; re-export the model with this pumer-export"
                )


# ------------------------------------------------------------------------------ the model
@dataclasses.dataclass
class PreparedOnnx:
    """What the parser gets: serialized model bytes plus the original path (for external weights)."""

    source: Path
    model_bytes: bytes
    policy: FunctionPolicy
    stripped_functions: list[str]
    pumer_node_count: int
    op_types: list[str]


#: PumerCompact outputs whose ONNX type a TensorRT plugin cannot have: (output position, the plugin's type, the
#: node's type). TensorRT plugin outputs cannot be bool, and a size tensor (the count) must be int32.
COMPACT_CASTS = ((1, onnx.TensorProto.INT32, onnx.TensorProto.BOOL), (3, onnx.TensorProto.INT32, onnx.TensorProto.INT64))


def cast_around_plugins(model: onnx.ModelProto) -> int:
    """Rename the PumerCompact outputs the plugin produces in another type (:data:`COMPACT_CASTS`) and cast them back
    to the node's types right after it, in place (only for TensorRT: the function bodies are stripped, so no body
    sees the changed types). Returns the number of casts added."""
    nodes, added = [], 0
    for node in model.graph.node:
        nodes.append(node)
        if node.domain != DOMAIN or node.op_type != "PumerCompact":
            continue
        for position, _, to in COMPACT_CASTS:
            if position >= len(node.output) or not node.output[position]:
                continue
            original = node.output[position]
            node.output[position] = f"{original}.plugin"
            nodes.append(onnx.helper.make_node("Cast", [node.output[position]], [original], to=to,
                                               name=f"{node.name or 'PumerCompact'}.cast{position}"))
            added += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return added


def strip_pumer_functions(model: onnx.ModelProto) -> list[str]:
    """Remove the pumer-domain functions in place; return their names. Nodes are not touched."""
    removed = [f.name for f in model.functions if f.domain == DOMAIN]
    keep = [f for f in model.functions if f.domain != DOMAIN]
    del model.functions[:]
    model.functions.extend(keep)
    return removed


def prepare_onnx_for_tensorrt(
    path: str | Path, version: str | TrtVersion, model: onnx.ModelProto | None = None
) -> PreparedOnnx:
    """Apply :func:`function_policy` to the model at ``path``.

    External weights are not loaded: the returned bytes keep their references, and the parser
    resolves them relative to ``path`` (``OnnxParser.parse(bytes, path)``), so nothing is copied.
    """
    path = Path(path)
    policy = function_policy(version)
    model = load_onnx(path) if model is None else model
    stripped = strip_pumer_functions(model) if policy.strip_functions else []
    cast_around_plugins(model)
    nodes = pumer_nodes(model)
    try:
        data = model.SerializeToString()
    except ValueError as exc:  # over 2 GB in one protobuf
        raise PumerExportError(f"{path}: cannot serialize the model ({exc}); export with external data") from None
    return PreparedOnnx(path, data, policy, stripped, len(nodes), sorted({n.op_type for n in nodes}))
