"""Export a PuMer model (any family of :mod:`pumer_export.models`) to ONE ONNX file for ONNX Runtime and TensorRT.

The file (``OUTDIR/model.onnx``):

* takes the family's inputs (ViLT: ``input_ids``, ``attention_mask``, ``token_type_ids`` [batch, T] int64,
  ``pixel_values`` [batch, 3, H, W] in the model's float type, ``pixel_mask`` [batch, H, W] int64; METER:
  ``input_ids``, ``attention_mask``, ``pixel_values``) and returns ``logits`` followed by the reduction index
  tensors (``layerL.keep_idx``, ``layerL.image_slots``, ``layerL.text_slots``) of the reference model;
* has a dynamic batch dimension (``batch``); H, W and T are fixed at export, so every token
  dimension is a concrete number after shape inference (checked);
* holds each pruning / merging step as one ``pumer::PumerPrune`` / ``pumer::PumerMerge`` node and
  their model-local function bodies (standard ONNX at the model's opset);
* records the export settings in ``metadata_props`` (keys ``pumer.*``, JSON values, see
  :data:`METADATA_KEYS`);
* keeps its weights inside the file unless they exceed :data:`EXTERNAL_DATA_THRESHOLD` bytes, in
  which case they go to ``model.onnx.data`` next to it (protobuf caps one file at 2 GiB).

``dtype="fp16"`` converts the weights to float16 before export. The model already computes the
attention softmax in float32, ONNX ``LayerNormalization`` accumulates in float32
(``stash_type=1``), and the pumer function bodies compute scores, similarities and merge sums
in float32, so the float16 model keeps float32 wherever the reduction decisions depend on it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import logging
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import onnx
import torch

from .. import __version__
from ..checkpoints import model_fingerprint
from ..errors import ConfigError, PumerExportError
from ..fsutil import atomic_output_dir
from ..models import example_inputs, reduction_set  # noqa: F401  (example_inputs re-exported)
from ..ops import op_spec_hash
from ..schedule import TokenSchedule, input_size
from . import functions
from .files import MODEL_FILE  # noqa: F401  (re-exported)
from .metadata import read_metadata, set_metadata  # noqa: F401  (read_metadata re-exported)
from ..parity.onnxinfo import is_kept_output
from .translation import custom_translation_table
DATA_FILE = "model.onnx.data"
#: Weights above this many bytes are written as external data (``model.onnx.data``).
EXTERNAL_DATA_THRESHOLD = 1 << 30
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
BATCH_DIM = "batch"
#: Metadata format; bumped when a key changes meaning.
METADATA_FORMAT = 1
METADATA_KEYS = (
    "pumer.format",  # METADATA_FORMAT
    "pumer.family",  # model family (pumer_export.models): "vilt", "meter"
    "pumer.config",  # PumerConfig.to_dict() of the exported model (reduce_layers [] with --no-reduction)
    "pumer.method",  # {"name": the reduction method (pumer_export.methods), "settings": its settings}
    "pumer.reduction",  # true / false
    "pumer.schedule",  # TokenSchedule.to_dict() for the fixed text length and image size
    "pumer.image_size",  # [H, W]
    "pumer.text_length",  # padded text length T
    "pumer.patch_size",
    "pumer.dtype",  # "fp32" / "fp16"
    "pumer.opset",
    "pumer.inputs",  # input names
    "pumer.outputs",  # output names (logits first)
    "pumer.op_spec_hash",  # sha256 of op_spec.json (plugins compare it)
    "pumer.model_sha256",  # checkpoints.model_fingerprint: which weights (reuse of exports is keyed on it)
    "pumer.fused_official_attention",  # official masking exported as a fused attention (P7 smoothing left out)
    "pumer.versions",  # exporter and library versions
    "pumer.model",  # the family's architecture summary
)


@dataclasses.dataclass
class ExportResult:
    path: Path
    schedule: TokenSchedule
    output_names: list[str]
    seconds: float
    validation: Any = None  # validation.ValidationReport when validation ran


class _ExportModule(torch.nn.Module):
    """forward(*family inputs) -> (logits, *indices), through the family's reference forward."""

    def __init__(self, model: torch.nn.Module, family) -> None:
        super().__init__()
        self.model = model
        self.family = family

    def forward(self, *inputs):
        out = self.family.reference_forward(self.model, dict(zip(self.family.INPUT_NAMES, inputs)))
        return (out.logits, *out.reduction_indices.values())


# ------------------------------------------------------------------ argument checks
def check_settings(config, *, opset: int, dtype: str, image_size: Sequence[int], text_length: int) -> None:
    """One-line errors for settings the export cannot honour."""
    from .. import models

    if opset not in functions.SUPPORTED_OPSETS:
        raise PumerExportError(
            f"opset {opset} is not supported; use {functions.MIN_OPSET}..{functions.MAX_OPSET} "
            f"(default {functions.DEFAULT_OPSET})"
        )
    if dtype not in DTYPES:
        raise PumerExportError(f"dtype {dtype!r} is not supported; use one of {', '.join(DTYPES)}")
    models.for_model(config).check_input_size(config, tuple(image_size), text_length)


# ------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def _fused_official(model, enabled: bool) -> Iterator[None]:
    """Run the official P7 attention as a fused attention with an additive mask while exporting (ViLT)."""
    encoder = getattr(model, "vilt", None)
    if encoder is None:
        if enabled:
            raise PumerExportError("--fused-official-attention is available for ViLT exports only")
        yield
        return
    previous = encoder.fused_official_attention
    encoder.fused_official_attention = enabled
    try:
        yield
    finally:
        encoder.fused_official_attention = previous


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Hide the exporter's progress prints and warnings that are not about the user's model."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _versions() -> dict[str, str]:
    import onnxscript
    import transformers

    versions = {"pumer_export": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
                "onnx": onnx.__version__, "onnxscript": onnxscript.__version__}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:  # pragma: no cover
        pass
    return versions


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str | None]:
    if not value_info.type.tensor_type.HasField("shape"):
        return [None]
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in value_info.type.tensor_type.shape.dim]


def check_static_token_dims(model_proto: onnx.ModelProto) -> None:
    """After shape inference: every tensor of rank >= 2 has concrete dims after the batch dim."""
    values = list(model_proto.graph.value_info) + list(model_proto.graph.output)
    known = {v.name for v in values}
    for node in model_proto.graph.node:
        if node.domain == functions.DOMAIN:
            missing = [o for o in node.output if o not in known]
            if missing:
                raise PumerExportError(f"shape inference gave no shape for {node.op_type} output(s) {missing}")
    for value in values:
        dims = _dims(value)
        if dims == [None]:
            raise PumerExportError(f"shape inference gave no shape for {value.name!r}")
        if any(not isinstance(d, int) for d in dims[1:]):
            raise PumerExportError(f"{value.name!r} has a symbolic token dimension after shape inference: {dims}")


def check_data_dependent_dims(model_proto: onnx.ModelProto) -> None:
    """After shape inference, for a method whose counts depend on the input (SmartTrim): every compaction's token
    dimension and every kept-positions output's is symbolic. A count frozen at export (the TorchScript exporter's
    trap: a constant length that silently gives wrong results on other inputs) fails here."""
    values = {v.name: v for v in list(model_proto.graph.value_info) + list(model_proto.graph.output)}
    compactions = [n for n in model_proto.graph.node if n.domain == functions.DOMAIN and n.op_type == functions.COMPACT]
    kept = [o.name for o in model_proto.graph.output if is_kept_output(o.name)]
    if not compactions or len(kept) != len(compactions):
        raise PumerExportError(f"the export holds {len(compactions)} compaction node(s) and {len(kept)} kept-positions "
                               "output(s); they should match one to one (and be at least one)")
    for name in [n.output[0] for n in compactions] + kept:
        if name not in values:
            raise PumerExportError(f"shape inference gave no shape for {name!r}")
        dims = _dims(values[name])
        if len(dims) < 2 or isinstance(dims[1], int):
            raise PumerExportError(f"{name!r} has a fixed token dimension {dims}: the count was frozen at export")


def _fold_constants(model_proto: onnx.ModelProto) -> onnx.ModelProto:
    """Constant folding and dead-node removal only.

    The exporter's ``optimize=True`` also runs onnxscript's rewrite rules, whose "x + 0 -> x" rule
    matches constants within 1e-8 of zero: it deletes PuMer's ``+ 1e-6 / N`` attention smoothing
    (official masking), which changes the probabilities of masked keys from ~1e-9 to 0 and, through
    the pruning scores of padded text rows, the kept tokens. Folding alone is exact.
    """
    import onnxscript.optimizer

    onnxscript.optimizer.fold_constants(model_proto)
    onnxscript.optimizer.remove_unused_nodes(model_proto)
    return model_proto


_NODE_NAMES = {"keep_idx": "prune", "image_slots": "image_merge", "text_slots": "text_merge"}


def name_pumer_nodes(model_proto: onnx.ModelProto) -> None:
    """Name each pumer node after the index output it produces (``layer1.prune``, ``layer1.image_merge``, ...; a
    compaction after its kept-positions output, in order: ``cross0.image.compact``)."""
    outputs = {o.name for o in model_proto.graph.output}
    used = {n.name for n in model_proto.graph.node}
    kept = [o.name for o in model_proto.graph.output if is_kept_output(o.name)]
    compactions = [n for n in model_proto.graph.node if n.domain == functions.DOMAIN and n.op_type == functions.COMPACT]
    if len(kept) == len(compactions):  # the exporter emits both in forward order
        for node, output in zip(compactions, kept):
            name = output[: -len("_kept")] + ".compact"
            if name not in used:
                used.add(name)
                node.name = name
    for node in model_proto.graph.node:
        if node.domain != functions.DOMAIN:
            continue
        for output in node.output:
            layer, _, kind = output.rpartition(".")
            if output in outputs and kind in _NODE_NAMES:
                name = f"{layer}.{_NODE_NAMES[kind]}"
                if name not in used:
                    used.add(name)
                    node.name = name
                break


def _io(values) -> list[dict[str, Any]]:
    return [{"name": v.name,
             "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
             "shape": [d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim]}
            for v in values]


def export_manifest(model_proto: onnx.ModelProto, model, family, *, external: bool,
                    processor_files: list[str]) -> dict[str, Any]:
    """The manifest of an ONNX export folder (see :mod:`pumer_export.manifest`)."""
    meta = read_metadata(model_proto)
    return {
        "family": family.NAME,
        "backend": "onnx",
        "model_file": MODEL_FILE,
        "data_files": [DATA_FILE] if external else [],
        "inputs": _io(model_proto.graph.input),
        "outputs": _io(model_proto.graph.output),
        "image_size": meta["pumer.image_size"],
        "text_length": meta["pumer.text_length"],
        "batch": {"min": 1, "max": 4096},
        "dtype": meta["pumer.dtype"],
        "reduction": meta["pumer.reduction"],
        "pumer": meta["pumer.config"],
        "schedule": meta["pumer.schedule"],
        "id2label": {str(k): v for k, v in sorted(model.config.id2label.items())},
        "processor": processor_files,
        "versions": meta["pumer.versions"],
        "model_sha256": meta["pumer.model_sha256"],
        "op_spec_hash": meta["pumer.op_spec_hash"],
    }


def _weight_bytes(model_proto: onnx.ModelProto) -> int:
    return sum(len(t.raw_data) for t in model_proto.graph.initializer)


# -------------------------------------------------------------------------- export
def export_onnx(
    model,
    outdir: str | Path,
    *,
    opset: int = functions.DEFAULT_OPSET,
    dtype: str = "fp32",
    image_size: Sequence[int] | None = None,
    text_length: int | None = None,
    reduction: bool = True,
    validate: bool = True,
    validation_options: dict[str, Any] | None = None,
    force: bool = False,
    external_data: bool | None = None,
    fused_official_attention: bool = False,
    processor_dir: str | Path | None = None,
) -> ExportResult:
    """Export ``model`` (a model of any family of :mod:`pumer_export.models`) to ``outdir``.

    Args:
        opset: ONNX opset (:data:`functions.SUPPORTED_OPSETS`).
        dtype: ``"fp32"`` or ``"fp16"``.
        image_size: (H, W) fixed in the file; multiples of the patch size (default: the model's).
        text_length: padded text length fixed in the file (default: the model's position table size).
        reduction: False exports the same weights without reducers (the speedup baseline).
        validate: run :func:`pumer_export.onnx.validation.validate_onnx` before publishing ``outdir``;
            a failure raises :class:`~pumer_export.errors.ParityError` and leaves no ``outdir``.
        validation_options: keyword arguments for ``validate_onnx`` (batch_sizes, atol, rtol, ...).
        force: replace an existing ``outdir``.
        external_data: force (True) or forbid (False) ``model.onnx.data``; default: above
            :data:`EXTERNAL_DATA_THRESHOLD`.
        fused_official_attention: for ``official`` masking, export the attention as the standard fused pattern with
            PuMer's P7 softmax as an additive mask (its 1e-6 smoothing left out); validated against the exact
            reference like any export.
        processor_dir: the checkpoint directory whose processor files are copied beside the model (so the folder
            is self-contained: ``manifest.json`` lists them).

    Returns:
        An :class:`ExportResult`; ``outdir`` holds ``model.onnx`` (and ``model.onnx.data``), ``manifest.json`` and
        the processor files.
    """
    from .. import models

    from .. import methods

    start = time.perf_counter()
    methods.require_backend(model, "ort", "ONNX export")
    method = methods.for_model(model)
    family = models.for_model(model)
    input_names = family.INPUT_NAMES
    image_size, text_length = input_size(model.config, image_size, text_length)
    check_settings(model.config, opset=opset, dtype=dtype, image_size=image_size, text_length=text_length)
    outdir = Path(outdir)
    if outdir.exists() and not force:
        raise PumerExportError(f"{outdir} already exists; pass --force to overwrite it")

    model = model.eval()
    if fused_official_attention and model.pumer_config.attention_masking != "official":
        raise PumerExportError("--fused-official-attention is for checkpoints with official masking; this one uses "
                               f"{model.pumer_config.attention_masking!r} masking, whose attention is fused already")
    with reduction_set(model, reduction), _fused_official(model, fused_official_attention):
        pumer = model.pumer_config
        try:
            schedule = model.token_schedule(text_length, image_size=image_size)
        except ConfigError as exc:
            raise PumerExportError(str(exc)) from None
        export_model = model if dtype == "fp32" else copy.deepcopy(model).to(DTYPES[dtype])
        module = _ExportModule(export_model, family).eval()
        inputs = example_inputs(model.config, 2, text_length=text_length, image_size=image_size, dtype=DTYPES[dtype])
        with torch.no_grad():
            outputs = family.reference_forward(export_model, inputs)
        output_names = ["logits", *outputs.reduction_indices]
        batch = torch.export.Dim(BATCH_DIM, min=1, max=4096)
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(
                module,
                tuple(inputs[name] for name in input_names),
                dynamo=True,
                opset_version=opset,
                input_names=list(input_names),
                output_names=output_names,
                dynamic_shapes=(tuple({0: batch} for _ in input_names),),
                custom_translation_table=custom_translation_table(),
                optimize=False,  # see _fold_constants
                verbose=False,
            )
            proto = _fold_constants(program.model_proto)
        del program, export_model, module
        reduction_meta = pumer.to_dict()

    got = functions.model_opset(proto)
    if got != opset:
        raise PumerExportError(f"the exporter produced opset {got} instead of {opset}; use the default opset")
    functions.add_functions(proto, opset)
    name_pumer_nodes(proto)
    proto.producer_name = "pumer-export"
    proto.producer_version = __version__
    config = model.config
    set_metadata(proto, {
        "pumer.format": METADATA_FORMAT,
        "pumer.family": family.NAME,
        "pumer.config": reduction_meta,
        "pumer.reduction": bool(reduction and (pumer.enabled if method.STATIC_COUNTS else
                                               method.settings(config).enabled)),
        "pumer.method": {"name": method.NAME, "settings": method.settings(config).to_dict()},
        "pumer.schedule": schedule.to_dict(),
        "pumer.image_size": list(image_size),
        "pumer.text_length": text_length,
        "pumer.patch_size": config.patch_size,
        "pumer.dtype": dtype,
        "pumer.opset": opset,
        "pumer.inputs": list(input_names),
        "pumer.outputs": output_names,
        "pumer.op_spec_hash": op_spec_hash(),
        "pumer.model_sha256": model_fingerprint(model),
        "pumer.fused_official_attention": bool(fused_official_attention),
        "pumer.versions": _versions(),
        "pumer.model": {"hidden_size": config.hidden_size, "num_hidden_layers": config.num_hidden_layers,
                        "num_attention_heads": config.num_attention_heads, "num_labels": config.num_labels,
                        "max_position_embeddings": config.max_position_embeddings,
                        **family.architecture(config)},
    })
    proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
    if method.STATIC_COUNTS or not (reduction and method.settings(model.config).enabled):
        check_static_token_dims(proto)
    else:
        check_data_dependent_dims(proto)
    use_external = _weight_bytes(proto) > EXTERNAL_DATA_THRESHOLD if external_data is None else external_data

    report = None
    with atomic_output_dir(outdir, force=force) as tmp:
        from ..manifest import write_manifest
        from ..processing import copy_processor_files

        processor_files = copy_processor_files(Path(processor_dir), tmp) if processor_dir is not None else []
        manifest = export_manifest(proto, model, family, external=use_external, processor_files=processor_files)
        path = tmp / MODEL_FILE
        if use_external:
            onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=DATA_FILE, size_threshold=1024)
            del proto
            onnx.checker.check_model(str(path), full_check=True)
        else:
            onnx.checker.check_model(proto, full_check=True)
            onnx.save_model(proto, str(path))
            del proto
        if validate:
            from .validation import validate_onnx

            report = validate_onnx(path, model, dtype=dtype, image_size=image_size, text_length=text_length,
                                   reduction=reduction, **(validation_options or {}))
        write_manifest(tmp, manifest)
    return ExportResult(outdir / MODEL_FILE, schedule, output_names, time.perf_counter() - start, report)
