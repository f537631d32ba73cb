"""Quantization of export folders: int8 / fp8 compression stacked on token reduction.

``quantize_export(EXPORT, OUT, options)`` turns an ONNX export folder (``pumer-export onnx``, either family, PuMer or
baseline) into another export folder that every command takes as it is (``validate``, ``bench``, ``run``, ``eval``,
``build``, ``triton``):

* ``target="ort"``, ``mode="dynamic"``: int8 weights, activations quantized at run time (``MatMulInteger``), with
  ONNX Runtime's ``quantize_dynamic``; no calibration. The fastest CPU export the project makes.
* ``target="ort"``, ``mode="static"``: QDQ int8 weights and activations with ONNX Runtime's ``quantize_static``,
  activation ranges calibrated on ``calibration`` batches (VQA questions prepared by the export's own processor,
  a saved ``.npz`` batch or a folder of images and questions).
* ``target="tensorrt"``: explicit Q/DQ pairs (``precision`` int8 or fp8) placed by NVIDIA's Model Optimizer
  (``modelopt.onnx.quantization``), calibrated the same way, for a strongly typed TensorRT engine (``build``).

What stays in float, and why (:func:`float_region`): the ``pumer`` nodes and their function bodies (they sort,
gather and average; integers there would change which tokens survive for no speed), and the matrix products whose
outputs reach a ``pumer`` node's *decision* inputs (the text rows' queries and the keys that make the pruning
scores, the keys that are the merge metrics) through shape-only operators. Quantizing those would move the
token decisions themselves; the hidden states the nodes carry (input 0) are not decision inputs. Only ``MatMul`` /
``Gemm`` are quantized (the transformer's compute); layer norms, softmax and the residual stream stay float.

The manifest and the ONNX metadata record the quantization (``quantization``: target, mode, precision, calibration,
excluded nodes, float tensors, library versions); the export's other records (family, PuMer settings, weights'
fingerprint) are kept, so checks that an export belongs to a checkpoint still hold.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import re
import shutil
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .errors import MissingDependencyError, PumerExportError

TARGETS = ("ort", "tensorrt")
ORT_MODES = ("dynamic", "static")
TRT_PRECISIONS = ("int8", "fp8")
#: The operators quantized: the transformer's matrix products.
QUANTIZED_OPS = ("MatMul", "Gemm")
#: Operators a decision input is traced back through to the matrix product that makes it (shape and bias only).
_SHAPE_OPS = {"Reshape", "Transpose", "Slice", "ReduceMean", "Cast", "Squeeze", "Unsqueeze", "Identity", "Split",
              "Gather", "Flatten"}
_AFFINE_OPS = {"Add", "Mul", "Div", "Sub"}  # followed only when every other input is a constant (bias, scale)
#: Per pumer op type: the inputs that carry tokens rather than decide (input 0: the hidden states reduced).
_CARRIED_INPUTS = {"PumerPrune": (0,), "PumerMerge": (0,)}
MODELOPT_HINT = 'pip install -e ".[quantize-trt]"'
#: Calibration samples by default (ONNX Runtime's and Model Optimizer's calibrators hold their activations).
DEFAULT_CALIBRATION_SIZE = 64


@dataclasses.dataclass
class QuantizeOptions:
    target: str = "ort"
    mode: str = "dynamic"               # ort: dynamic | static; tensorrt: always static (calibrated Q/DQ)
    precision: str = "int8"             # tensorrt: int8 | fp8; ort: int8
    per_channel: bool = True            # per output channel weight scales
    calibration: Any = None             # pumer_export.parity.inputs.Inputs (batches) for static / tensorrt
    calibration_method: str = "minmax"  # ort: minmax | entropy | percentile; tensorrt: max | entropy
    force: bool = False


@dataclasses.dataclass
class FloatRegion:
    """What stays in float: the pumer nodes, the matrix products behind their decision inputs, those inputs."""

    pumer_nodes: list[str]
    nodes: list[str]
    tensors: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"pumer_nodes": self.pumer_nodes, "matmul_nodes": self.nodes, "decision_tensors": self.tensors}


def label(quantization: dict[str, Any] | None, dtype: str = "fp32") -> str:
    """The precision name commands show: ``int8`` (ORT dynamic), ``int8-static``, ``int8-qdq`` / ``fp8-qdq``
    (TensorRT), else the float dtype."""
    if not quantization:
        return dtype
    if quantization.get("target") == "tensorrt":
        return f"{quantization.get('precision', 'int8')}-qdq"
    return "int8" if quantization.get("mode") == "dynamic" else "int8-static"


# ----------------------------------------------------------------------------- what stays float
def float_region(model) -> FloatRegion:
    """The pumer nodes of ``model`` (an ``onnx.ModelProto``), the ``MatMul`` / ``Gemm`` nodes whose outputs reach
    one of their decision inputs through shape-only or constant-affine operators, and those decision inputs."""
    producers = {out: node for node in model.graph.node for out in node.output}
    constants = {init.name for init in model.graph.initializer}
    constants |= {node.output[0] for node in model.graph.node if node.op_type == "Constant"}
    pumer_nodes, matmuls, tensors = [], [], []
    for node in model.graph.node:
        if node.domain != "pumer":
            continue
        pumer_nodes.append(node.name)
        carried = _CARRIED_INPUTS.get(node.op_type, (0,))
        for position, name in enumerate(node.input):
            if position in carried or not name or name in constants:
                continue
            tensors.append(name)
            pending, seen = [name], set()
            while pending:
                tensor = pending.pop()
                producer = producers.get(tensor)
                if producer is None or id(producer) in seen:
                    continue
                seen.add(id(producer))
                if producer.op_type in QUANTIZED_OPS:
                    matmuls.append(producer.name)
                elif producer.op_type in _SHAPE_OPS:
                    pending.append(producer.input[0])
                elif producer.op_type in _AFFINE_OPS:
                    dynamic = [i for i in producer.input if i and i not in constants]
                    if len(dynamic) == 1:
                        pending.append(dynamic[0])
    return FloatRegion(pumer_nodes, list(dict.fromkeys(matmuls)), list(dict.fromkeys(tensors)))


def check_float_region(original, quantized, region: FloatRegion) -> None:
    """Raise unless ``quantized`` still holds every pumer node and its function body unchanged, fed by float
    tensors that no dequantization produced, and the matrix products of ``region`` unquantized."""
    before = {f.name: f.SerializeToString(deterministic=True) for f in original.functions}
    after = {f.name: f.SerializeToString(deterministic=True) for f in quantized.functions}
    changed = [name for name, body in before.items() if after.get(name) != body]
    if changed:
        raise PumerExportError(f"quantization changed or dropped the pumer function bodies {changed}")
    nodes = {node.name: node for node in quantized.graph.node}
    absent = [name for name in region.pumer_nodes if name not in nodes]
    if absent:
        raise PumerExportError(f"quantization dropped the pumer nodes {absent}")
    producers = {out: node for node in quantized.graph.node for out in node.output}
    for name in region.pumer_nodes:
        for tensor in nodes[name].input:
            producer = producers.get(tensor)
            if producer is not None and producer.op_type in ("DequantizeLinear", "QuantizeLinear"):
                raise PumerExportError(f"quantization put a {producer.op_type} before pumer node {name} "
                                       f"(input {tensor}); its inputs must stay float")
    quantized_kinds = {"MatMulInteger", "QLinearMatMul", "DequantizeLinear", "QuantizeLinear"}
    for name in region.nodes:
        node = nodes.get(name)
        if node is None or node.op_type in quantized_kinds:
            raise PumerExportError(f"quantization replaced the float matrix product {name} that feeds a token "
                                   "decision")
        inputs = [producers.get(i) for i in node.input]
        if any(p is not None and p.op_type == "DequantizeLinear" for p in inputs):
            raise PumerExportError(f"quantization put Q/DQ on the inputs of {name}, which feeds a token decision")


def keep_float(original, quantized, region: FloatRegion) -> None:
    """Undo what a quantizer did to the float region, in place: the pumer function bodies are put back verbatim
    (Model Optimizer rewrites their node order), and an activation Q/DQ pair in front of a float-region node is
    bypassed (a tensor shared with a quantized MatMul gets its pair on every consumer), so those nodes read the
    float tensor itself. Q/DQ nodes left without consumers are removed."""
    originals = {(f.domain, f.name): f for f in original.functions}
    for index, function in enumerate(quantized.functions):
        if (function.domain, function.name) in originals:
            quantized.functions[index].CopyFrom(originals[(function.domain, function.name)])
    producers = {out: node for node in quantized.graph.node for out in node.output}
    keep = set(region.nodes) | set(region.pumer_nodes)
    for node in quantized.graph.node:
        if node.name not in keep:
            continue
        for position, tensor in enumerate(node.input):
            dq = producers.get(tensor)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producers.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[position] = q.input[0]
    outputs = {o.name for o in quantized.graph.output}
    while True:
        consumed = {name for node in quantized.graph.node for name in node.input}
        dead = [node for node in quantized.graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(out in consumed or out in outputs for out in node.output)]
        if not dead:
            break
        for node in dead:
            quantized.graph.node.remove(node)
    used = {name for node in quantized.graph.node for name in node.input}
    for init in [i for i in quantized.graph.initializer if i.name not in used]:
        quantized.graph.initializer.remove(init)


# ----------------------------------------------------------------------------- the backends' quantizers
class _Reader:
    """ONNX Runtime's CalibrationDataReader over prepared batches (one feed per call, then None)."""

    def __init__(self, batches: Sequence[dict[str, np.ndarray]]):
        self._batches = list(batches)
        self._index = 0

    def get_next(self):
        if self._index >= len(self._batches):
            return None
        self._index += 1
        return dict(self._batches[self._index - 1])

    def rewind(self) -> None:
        self._index = 0


def _quantize_ort(src: Path, dst: Path, options: QuantizeOptions, region: FloatRegion) -> dict[str, Any]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    exclude = region.nodes + region.pumer_nodes
    common = dict(op_types_to_quantize=list(QUANTIZED_OPS), per_channel=options.per_channel,
                  nodes_to_exclude=exclude, weight_type=QuantType.QInt8)
    if options.mode == "dynamic":
        quantize_dynamic(src, dst, **common, extra_options={"MatMulConstBOnly": True})
        return {"weights": "int8 (symmetric)", "activations": "int8, quantized at run time (MatMulInteger)"}
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    # Activations int8 with a zero point (QInt8, asymmetric): ONNX Runtime's CPU kernels run QDQ MatMul as
    # MatMulIntegerToFloat / QLinearMatMul. Dedicated pairs: a tensor shared by a quantized MatMul and a
    # pumer node gets its Q/DQ on the MatMul's edge only.
    quantize_static(src, dst, _Reader(options.calibration.batches), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, calibrate_method=methods[options.calibration_method],
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
                    **common)
    return {"weights": "int8 (symmetric)", "activations": f"int8 QDQ, calibrated ({options.calibration_method})"}


def _quantize_tensorrt(src: Path, dst: Path, options: QuantizeOptions, region: FloatRegion) -> dict[str, Any]:
    """Model Optimizer's Q/DQ placement, in a process of its own: it patches ONNX Runtime's quantization module
    on import, which would change any later ``quantize_static`` in the same process."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("modelopt") is None:
        raise MissingDependencyError(f"--for tensorrt needs NVIDIA's Model Optimizer (nvidia-modelopt); install it "
                                     f"with {MODELOPT_HINT}")
    method = {"minmax": "max", "entropy": "entropy"}[options.calibration_method]
    batches = options.calibration.batches
    data = src.with_suffix(".calibration.npz")
    np.savez(data, **{name: np.concatenate([b[name] for b in batches]) for name in batches[0]})
    job = {"src": str(src), "dst": str(dst), "data": str(data), "precision": options.precision, "method": method,
           "exclude": region.nodes + region.pumer_nodes}
    done = subprocess.run([sys.executable, "-m", "pumer_export.quantize", json.dumps(job)], capture_output=True,
                          text=True)
    data.unlink()
    if done.returncode != 0 or not dst.is_file():
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise PumerExportError(f"Model Optimizer failed to quantize the export: {lines[-1] if lines else 'no output'}")
    return {"weights": f"{options.precision} Q/DQ", "activations": f"{options.precision} Q/DQ, calibrated ({method})",
            "tensorrt": "build a strongly typed engine from it (`pumer-export build`)"}


def _modelopt_job(job: dict[str, Any]) -> None:
    """The child process of :func:`_quantize_tensorrt`."""
    import modelopt.onnx.quantization as mtq

    with np.load(job["data"]) as data:
        calibration = {name: data[name] for name in data.files}
    # Exact node names: Model Optimizer reads nodes_to_exclude as regular expressions.
    mtq.quantize(job["src"], quantize_mode=job["precision"], calibration_data=calibration,
                 calibration_method=job["method"], calibration_eps=["cpu"], op_types_to_quantize=list(QUANTIZED_OPS),
                 nodes_to_exclude=[f"^{re.escape(n)}$" for n in job["exclude"]], high_precision_dtype="fp32",
                 output_path=job["dst"], log_level="ERROR")


def _versions(target: str) -> dict[str, str]:
    import onnx
    import onnxruntime

    from . import __version__

    versions = {"pumer_export": __version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    if target == "tensorrt":
        from importlib.metadata import version

        versions["nvidia-modelopt"] = version("nvidia-modelopt")
    return versions


# ----------------------------------------------------------------------------- the whole step
@dataclasses.dataclass
class QuantizeResult:
    path: Path
    quantization: dict[str, Any]
    size_before: int
    size_after: int
    seconds: float


def check_options(options: QuantizeOptions, has_calibration: bool | None = None) -> None:
    """One-line errors for settings that do not go together (before any work; ``has_calibration``: whether
    calibration data will be given, when ``options.calibration`` is not prepared yet)."""
    if options.target not in TARGETS:
        raise PumerExportError(f"unknown target {options.target!r}; use {' or '.join(TARGETS)}")
    if options.target == "ort":
        if options.mode not in ORT_MODES:
            raise PumerExportError(f"unknown --mode {options.mode!r}; use {' or '.join(ORT_MODES)}")
        if options.precision != "int8":
            raise PumerExportError(f"--precision {options.precision} is for --for tensorrt; ONNX Runtime's CPU "
                                   "quantization is int8")
    elif options.precision not in TRT_PRECISIONS:
        raise PumerExportError(f"unknown --precision {options.precision!r}; use {' or '.join(TRT_PRECISIONS)}")
    elif options.calibration_method not in ("minmax", "entropy"):
        raise PumerExportError(f"--calibration-method {options.calibration_method} is ONNX Runtime's; use minmax or "
                               "entropy with --for tensorrt")
    needs_data = options.target == "tensorrt" or options.mode == "static"
    what = "--for tensorrt" if options.target == "tensorrt" else "--mode static"
    given = options.calibration is not None if has_calibration is None else has_calibration
    if needs_data and not given:
        raise PumerExportError(f"{what} calibrates activation ranges: pass calibration data (--calibration-dataset "
                               "easy-vqa, --calibration-jsonl FILE, VQAv2 files or --calibration-inputs FILE.npz|DIR)")
    if not needs_data and given:
        raise PumerExportError("--mode dynamic quantizes activations at run time and takes no calibration data; "
                               "drop the calibration options or use --mode static")


def _model_bytes(folder: Path, manifest: dict[str, Any]) -> int:
    return sum((folder / name).stat().st_size for name in [manifest["model_file"], *manifest.get("data_files", [])]
               if (folder / name).is_file())


def quantize_export(export_dir: str | Path, out_dir: str | Path, options: QuantizeOptions) -> QuantizeResult:
    """Quantize the ONNX export folder ``export_dir`` into the export folder ``out_dir`` (written atomically)."""
    import onnx

    from .fsutil import atomic_output_dir, check_destination
    from .manifest import read_manifest, verify_hashes, write_manifest
    from .onnx.metadata import set_metadata
    from .onnx.files import MODEL_FILE

    start = time.perf_counter()
    check_options(options)
    out_dir = Path(out_dir)
    check_destination(out_dir, options.force)
    manifest = read_manifest(export_dir)
    if manifest["backend"] != "onnx":
        raise PumerExportError(f"{export_dir} is a {manifest['backend']} export; quantize the ONNX export it was built "
                               "from, then build the engine from the quantized one")
    if manifest.get("quantization"):
        raise PumerExportError(f"{export_dir} is quantized already ({label(manifest['quantization'])}); quantize "
                               "the float export it came from")
    if manifest.get("dtype", "fp32") != "fp32":
        raise PumerExportError(f"{export_dir} is a {manifest['dtype']} export; quantize a float32 export "
                               "(`pumer-export onnx MODEL OUTDIR` without --dtype)")
    verify_hashes(manifest)
    source = Path(manifest["directory"])
    original = onnx.load(str(source / manifest["model_file"]))
    region = float_region(original)
    if options.calibration is not None:
        _check_calibration(options.calibration, original, source)

    with atomic_output_dir(out_dir, force=options.force) as tmp:
        src = tmp / ".float.onnx"
        onnx.save_model(original, str(src))  # one file (weights inline) for the quantizers
        dst = tmp / MODEL_FILE
        with _quiet():
            if options.target == "ort":
                scheme = _quantize_ort(src, dst, options, region)
            else:
                scheme = _quantize_tensorrt(src, dst, options, region)
        src.unlink()
        quantized = onnx.load(str(dst))
        keep_float(original, quantized, region)
        check_float_region(original, quantized, region)
        quantization = {
            "target": options.target, "mode": "static" if options.target == "tensorrt" else options.mode,
            "precision": options.precision, "label": "", "per_channel": options.per_channel,
            "ops": list(QUANTIZED_OPS), **scheme,
            "calibration": (None if options.calibration is None else
                            {"source": options.calibration.source, "samples": options.calibration.num_samples,
                             "method": options.calibration_method}),
            "float": {**region.to_dict(), "why": "the pumer nodes and the matrix products behind their decision "
                                                 "inputs (scores, merge metrics) stay float so that quantization "
                                                 "does not move which tokens survive"},
            "source": {"folder": str(source), "sha256": manifest.get("sha256", {})},
            "versions": _versions(options.target),
        }
        quantization["label"] = label(quantization)
        # Keep the export's records (Model Optimizer drops metadata) and add the quantization.
        del quantized.metadata_props[:]
        for prop in original.metadata_props:
            quantized.metadata_props.add(key=prop.key, value=prop.value)
        set_metadata(quantized, {"pumer.quantization": quantization})
        onnx.checker.check_model(quantized)
        onnx.save_model(quantized, str(dst))
        _smoke_run(dst, manifest)
        for name in manifest.get("processor", []):
            if (source / name).is_file():
                shutil.copy2(source / name, tmp / name)
        new_manifest = {k: v for k, v in manifest.items() if k not in ("directory", "sha256", "format")}
        new_manifest.update(model_file=MODEL_FILE, data_files=[], quantization=quantization,
                            id2label={str(k): v for k, v in manifest["id2label"].items()})
        write_manifest(tmp, new_manifest)
        size_after = dst.stat().st_size
    return QuantizeResult(out_dir / MODEL_FILE, quantization, _model_bytes(source, manifest), size_after,
                          time.perf_counter() - start)


def _check_calibration(inputs, model, source: Path) -> None:
    """Calibration batches must be this export's inputs (names, shapes, dtypes): one line otherwise."""
    declared = {}
    initializers = {i.name for i in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
        declared[value.name] = dims
    batch = inputs.batches[0]
    if set(batch) != set(declared):
        raise PumerExportError(f"the calibration data do not fit {source}: it takes {', '.join(declared)}, the data "
                               f"hold {', '.join(batch)} (data for another model family?)")
    for name, dims in declared.items():
        shape = list(batch[name].shape)
        if len(shape) != len(dims) or any(d is not None and d != s for d, s in zip(dims[1:], shape[1:])):
            raise PumerExportError(f"the calibration data do not fit {source}: {name} is {shape}, the export takes "
                                   f"{['batch', *dims[1:]]}")


def _smoke_run(path: Path, manifest: dict[str, Any]) -> None:
    """ONNX Runtime loads the file without this package and returns finite logits on a small batch."""
    import onnxruntime as ort

    from .backends import ort_session_options

    session = ort.InferenceSession(str(path), ort_session_options(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    for value in session.get_inputs():
        shape = [2 if not isinstance(d, int) else d for d in value.shape]
        if "float" in value.type:
            feeds[value.name] = rng.standard_normal(shape).astype(np.float32)
        else:
            feeds[value.name] = np.ones(shape, dtype=np.int64)
    logits = session.run(["logits"], feeds)[0]
    if not np.isfinite(logits).all():
        raise PumerExportError(f"the quantized model returns non-finite logits on a test batch ({path.name}); "
                               "try --mode dynamic or other calibration data")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the quantizers' own logging and progress output (the command shows its own progress)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def describe(result: QuantizeResult) -> str:
    q = result.quantization
    calib = f", calibrated on {q['calibration']['samples']} samples" if q.get("calibration") else ""
    return (f"{q['label']} ({q['target']}{calib}); {len(q['float']['matmul_nodes'])} matrix products and "
            f"{len(q['float']['pumer_nodes'])} pumer nodes kept float; {result.size_before / 1e6:.1f} MB -> "
            f"{result.size_after / 1e6:.1f} MB")


def read_quantization(metadata: dict[str, Any]) -> dict[str, Any] | None:
    """The ``pumer.quantization`` record of an export's metadata (None for a float export)."""
    value = metadata.get("pumer.quantization")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


# ----------------------------------------------------------------------------- calibration data
def calibration_inputs(export_dir: str | Path, *, questions=None, source: str | None = None,
                       num_samples: int = DEFAULT_CALIBRATION_SIZE, batch_size: int = 8):
    """Calibration batches for the export folder ``export_dir``: the first ``num_samples`` VQA ``questions``
    (any data source), or ``source`` (a saved ``.npz`` batch, or a folder of images and questions), prepared with
    the export's own processor files exactly as ``validate`` and the runtime prepare them."""
    from . import models
    from .errors import missing
    from .manifest import read_manifest
    from .parity.inputs import InputSpec, folder_inputs, npz_inputs, question_inputs
    from .parity.onnxinfo import read_onnx_info

    if questions is None and source is None:
        return None
    if questions is not None and source is not None:
        raise PumerExportError("pass --calibration-inputs or a calibration data source (--calibration-dataset, "
                               "--calibration-jsonl, VQAv2 files), not both")
    manifest = read_manifest(export_dir)
    folder = Path(manifest["directory"])
    family = models.get(manifest["family"])
    info = read_onnx_info(folder / manifest["model_file"])
    spec = InputSpec.from_infos(info.inputs, text_length=int(manifest["text_length"]),
                                image_size=tuple(manifest["image_size"]), vocab_size=_vocab_size(folder, manifest))
    if questions is not None:
        return question_inputs(questions, folder, spec, batch_size=batch_size, num_samples=num_samples, family=family)
    path = Path(source)
    if path.is_dir():
        return folder_inputs(path, folder, spec, batch_size=batch_size, num_samples=num_samples, family=family)
    if path.suffix == ".npz" and path.is_file():
        return npz_inputs(path, spec, batch_size=batch_size, num_samples=num_samples)
    if not path.exists():
        raise missing(path, "--calibration-inputs", "pass a .npz file or a folder of images and questions")
    raise PumerExportError(f"--calibration-inputs {path}: expected a .npz file or a folder of images and questions")


def _vocab_size(folder: Path, manifest: dict[str, Any]) -> int:
    """The rows of the word-embedding table that ``input_ids`` indexes (the range calibration ids must keep)."""
    import onnx

    model = onnx.load(str(folder / manifest["model_file"]), load_external_data=False)
    tables = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == "input_ids" \
                and node.input[0] in tables:
            return int(tables[node.input[0]].dims[0])
    return np.iinfo(np.int64).max  # not found: ids are then checked only for being non-negative


if __name__ == "__main__":  # the Model Optimizer child process
    import sys

    with _quiet():
        _modelopt_job(json.loads(sys.argv[1]))
