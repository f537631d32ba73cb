"""TensorRT engines of a generative export (LLaVA with Victor or FastV: :mod:`pumer_export.onnx.generation`).

The export's three graphs (vision, prefill, decode) use standard ONNX operators only, so no plugin is involved; what
a build must decide is the optimization profile of each graph, whose inputs have four symbolic dimensions:

* ``batch``;
* ``sequence``, the prompt length L (prefix, N image placeholders, M registers, text): from ``N + M + 1`` up to the
  positions the model has, minus the new tokens asked for;
* ``past_full``, the decode graph's past length P for layers < k, from the shortest prompt to the last position a
  generation of ``new_tokens`` reaches;
* ``past_short`` = ``past_full - D`` for layers >= k (D: the positions that left before layer k). ONNX cannot state
  the relation (:mod:`pumer_export.onnx.generation`), the profile does: both ranges move together.

:func:`plan_generation_build` does every check that needs no TensorRT (the folder is a generative export, the ranges
fit the model's positions, every input's dimensions are known); :func:`build_generation` builds the three engines
into one folder (``vision.plan``, ``prefill.plan``, ``decode.plan``, each with its sidecar, the export's
``generation.json`` with the profile recorded, the processor files), written atomically.
:class:`pumer_export.runtime.TrtGeneration` runs such a folder behind the same generation loop as ONNX Runtime.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import onnx

from ..errors import MissingDependencyError, PumerExportError
from ..fsutil import atomic_output_dir, check_destination
from . import prepare

#: The symbolic dimensions of the three graphs (the names :func:`pumer_export.onnx.generation.export_generation`
#: gives them).
SYMBOLS = ("batch", "sequence", "past_full", "past_short")
#: New tokens a request may generate unless told (what the decode profile's longest past allows).
DEFAULT_NEW_TOKENS = 64
#: The batch profile unless told (the paper's serving protocol runs batch 16).
DEFAULT_BATCH = prepare.BatchProfile(1, 8, 16)
_DIM = re.compile(r"^\s*([A-Za-z_]\w*)\s*(?:([+-])\s*(\d+))?\s*$")


@dataclasses.dataclass
class GenerationBuildPlan:
    """Everything decided in plain Python before TensorRT is touched."""

    export: Path
    out: Path
    meta: dict[str, Any]
    ranges: dict[str, prepare.BatchProfile]  # symbol -> min / opt / max
    new_tokens: int
    graphs: dict[str, Path]  # graph name -> ONNX file
    shapes: dict[str, dict[str, dict[str, list[int]]]]  # graph -> input -> min / opt / max shape
    workspace_bytes: int | None
    fp16: bool


@dataclasses.dataclass
class GenerationBuildResult:
    folder: Path
    records: dict[str, dict[str, Any]]  # graph -> sidecar record
    plan: GenerationBuildPlan
    seconds: float


def read_generation_manifest(folder: Path) -> dict[str, Any]:
    from ..onnx.generation import MANIFEST

    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise PumerExportError(f"{folder} is not a generative export (no {MANIFEST}): export the LLaVA checkpoint "
                               "with pumer-export onnx CKPT OUT first")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PumerExportError(f"{path} is not readable: {exc}; export the checkpoint again") from None


def prompt_floor(meta: dict[str, Any]) -> int:
    """The shortest prompt the graphs take: the N image placeholders, the M registers and one text token."""
    registers = int((meta.get("method") or {}).get("settings", {}).get("registers", 0) or 0)
    return int(meta["image_tokens"]) + registers + 1


def symbol_ranges(meta: dict[str, Any], *, batch: prepare.BatchProfile | None = None,
                  prompt: prepare.BatchProfile | None = None,
                  new_tokens: int = DEFAULT_NEW_TOKENS) -> dict[str, prepare.BatchProfile]:
    """The min / opt / max of every symbol, checked against the model's positions (one line naming the fix)."""
    positions, floor = int(meta["max_positions"]), prompt_floor(meta)
    if new_tokens < 1:
        raise PumerExportError(f"--new-tokens must be at least 1, got {new_tokens}")
    if floor + new_tokens > positions:
        raise PumerExportError(f"the shortest prompt ({floor} positions) and {new_tokens} new tokens do not fit the "
                               f"model's {positions} positions: ask for fewer --new-tokens")
    top = positions - new_tokens
    if prompt is None:
        prompt = prepare.BatchProfile(floor, min(floor + 32, top), top)
    elif prompt.min < floor or prompt.max > top:
        raise PumerExportError(f"--prompt {prompt}: prompts hold {floor} to {top} positions here (at least the image "
                               f"placeholders, registers and one token; at most {positions} positions minus "
                               f"{new_tokens} new tokens)")
    past_full = prepare.BatchProfile(prompt.min, min(prompt.opt + new_tokens // 2, positions - 1),
                                     prompt.max + new_tokens - 1)
    dropped = int(meta["dropped_tokens"])
    past_short = prepare.BatchProfile(past_full.min - dropped, past_full.opt - dropped, past_full.max - dropped)
    return {"batch": batch or DEFAULT_BATCH, "sequence": prompt, "past_full": past_full, "past_short": past_short}


def dimension(dim: onnx.TensorShapeProto.Dimension, ranges: dict[str, prepare.BatchProfile], key: str,
              where: str) -> int:
    """A dimension's size at ``key`` ("min", "opt", "max"): its fixed value, or its symbol (``name`` or
    ``name + c``) evaluated on ``ranges``."""
    if dim.HasField("dim_value") and dim.dim_value > 0:
        return int(dim.dim_value)
    match = _DIM.match(dim.dim_param or "")
    if not match or match.group(1) not in ranges:
        raise PumerExportError(f"{where} has a dimension {dim.dim_param or '?'!r} this build does not know (known: "
                               f"{', '.join(ranges)}); export the checkpoint again with this pumer-export")
    value = getattr(ranges[match.group(1)], key)
    if match.group(2):
        value += int(match.group(3)) if match.group(2) == "+" else -int(match.group(3))
    return value


def graph_shapes(model: onnx.ModelProto, ranges: dict[str, prepare.BatchProfile],
                 name: str) -> dict[str, dict[str, list[int]]]:
    """``{input: {"min": shape, "opt": shape, "max": shape}}`` of one graph."""
    initializers = {init.name for init in model.graph.initializer}
    shapes = {}
    for vi in model.graph.input:
        if vi.name in initializers:
            continue
        dims = list(vi.type.tensor_type.shape.dim)
        shapes[vi.name] = {key: [dimension(d, ranges, key, f"{name}.onnx input {vi.name!r}") for d in dims]
                           for key in ("min", "opt", "max")}
    return shapes


def plan_generation_build(export: str | os.PathLike, out: str | os.PathLike, *,
                          batch: str | prepare.BatchProfile | None = None,
                          prompt: str | prepare.BatchProfile | None = None, new_tokens: int = DEFAULT_NEW_TOKENS,
                          workspace: str | int | None = None, fp16: bool = False,
                          force: bool = False) -> GenerationBuildPlan:
    """The plain-Python half of :func:`build_generation`: every check that needs no TensorRT."""
    export, out = Path(export), Path(out)
    check_destination(out, force)
    if out.resolve() == export.resolve():
        raise PumerExportError(f"write the engines into a folder of their own, not the export folder {export}")
    meta = read_generation_manifest(export)
    if meta.get("backend") == "tensorrt":
        raise PumerExportError(f"{export} already holds TensorRT engines; build from the ONNX export folder")
    if isinstance(batch, str):
        batch = prepare.parse_batch_profile(batch)
    if isinstance(prompt, str):
        prompt = prepare.parse_batch_profile(prompt, flag="--prompt")
    ranges = symbol_ranges(meta, batch=batch, prompt=prompt, new_tokens=new_tokens)
    graphs, shapes = {}, {}
    for name in meta.get("graphs", ()):
        path = export / f"{name}.onnx"
        if not path.is_file():
            raise PumerExportError(f"{path} is missing: export the checkpoint again")
        graphs[name] = path
        shapes[name] = graph_shapes(prepare.load_onnx(path), ranges, name)
    workspace_bytes = prepare.parse_size(workspace) if isinstance(workspace, str) else workspace
    return GenerationBuildPlan(export, out, meta, ranges, new_tokens, graphs, shapes, workspace_bytes, fp16)


def build_generation(export: str | os.PathLike, out: str | os.PathLike, *,
                     batch: str | prepare.BatchProfile | None = None,
                     prompt: str | prepare.BatchProfile | None = None, new_tokens: int = DEFAULT_NEW_TOKENS,
                     workspace: str | int | None = None, fp16: bool = False, force: bool = False,
                     verbose: bool = False, progress=None) -> GenerationBuildResult:
    """Build the three engines of ``export`` into the folder ``out`` (nothing is written on any error)."""
    from ..ops import op_spec_hash
    from ..processing import copy_processor_files
    from . import device, sidecar as sidecar_mod, trt_api
    from .engine import onnx_record

    start = time.perf_counter()
    plan = plan_generation_build(export, out, batch=batch, prompt=prompt, new_tokens=new_tokens,
                                 workspace=workspace, fp16=fp16, force=force)
    trt = trt_api.import_tensorrt()
    version = trt_api.tensorrt_version(trt)
    gpu = device.current_gpu()
    if gpu is None:
        raise MissingDependencyError(f"TensorRT needs a CUDA GPU: {device.cuda_info().error}")
    profile = {name: r.to_dict() for name, r in plan.ranges.items()}
    records: dict[str, dict[str, Any]] = {}
    with atomic_output_dir(plan.out, force=force) as tmp:
        for name, path in plan.graphs.items():
            task = progress.add_task(f"building {name}.plan", total=None) if progress else None
            model = prepare.load_onnx(path)
            precision = prepare.precision_policy(version, prepare.model_dtype(model, {}), plan.fp16)
            output = trt_api.build_serialized_engine(
                trt, model_bytes=path.read_bytes(), model_path=path, strongly_typed=precision.strongly_typed,
                fp16_flag=precision.fp16_flag, shapes=plan.shapes[name], workspace_bytes=plan.workspace_bytes,
                verbose=verbose)
            records[name] = sidecar_mod.make_sidecar(
                plan_name=f"{name}.plan", engine_sha256=sidecar_mod.sha256_bytes(output.plan),
                engine_bytes=len(output.plan), tensorrt_version=version,
                gpu={"name": gpu.name, "sm": gpu.sm, "driver_version": device.cuda_info().driver_version},
                precision=precision.to_dict(), profile={"batch": plan.ranges["batch"].to_dict(), "symbols": profile,
                                                        "shapes": plan.shapes[name]},
                plugin_library=None, onnx=onnx_record(model, path), op_spec_hash=op_spec_hash(),
                function_policy={"plugin_layers": output.plugin_layers},
                build={"workspace_bytes": plan.workspace_bytes}, io=output.io)
            (tmp / f"{name}.plan").write_bytes(output.plan)
            sidecar_mod.write_sidecar(tmp / f"{name}.plan", records[name])
            if progress:
                progress.remove_task(task)
        meta = {**plan.meta, "backend": "tensorrt", "engines": {name: f"{name}.plan" for name in plan.graphs},
                "profile": {**profile, "new_tokens": plan.new_tokens}}
        from ..onnx.generation import MANIFEST

        (tmp / MANIFEST).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        copy_processor_files(plan.export, tmp)
    return GenerationBuildResult(plan.out, records, plan, time.perf_counter() - start)
