"""Build and load TensorRT engines of pumer-export ONNX models.

:func:`build_engine` checks everything it can in plain Python first (the destination, ``--batch``
and ``--workspace``, that the ONNX is a pumer-export export whose op-definition hash matches this
package, the input shapes, that the plugin library exists), then imports TensorRT, checks the
plugin library's compiled op-definition hash, loads it and builds through :mod:`.trt_api`. The
plan and its sidecar (:mod:`.sidecar`) are written atomically; on any error nothing is written.

:func:`load_engine` reads the sidecar, checks it against this process (TensorRT version, GPU SM,
plugin library, op definitions) and only then deserializes the engine.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import onnx

from ..errors import MissingDependencyError, PumerExportError, missing
from ..fsutil import atomic_output_file, check_destination
from ..onnx.files import resolve_onnx_path
from ..ops import op_spec_hash
from . import device, prepare, sidecar as sidecar_mod

#: The ONNX file inside an export directory.
PLUGINS_HINT = "build it with pumer-export build-plugins, or pass --plugins LIB / set PUMER_PLUGINS"


# --------------------------------------------------------------------- plugin library
def find_plugins(explicit: str | os.PathLike | None = None) -> Path:
    """The plugin library: ``explicit`` (a file or its folder), else ``$PUMER_PLUGINS``, else the build-plugins output."""
    from ..plugins import find_plugin_library

    try:
        found = find_plugin_library(explicit)
    except MissingDependencyError:
        raise
    except PumerExportError as exc:
        raise MissingDependencyError(str(exc)) from None
    if found is None or not Path(found).is_file():
        raise MissingDependencyError(f"no pumer plugin library found; {PLUGINS_HINT}")
    if sys.platform.startswith("linux"):
        with open(found, "rb") as handle:
            if handle.read(4) != b"\x7fELF":
                raise MissingDependencyError(f"{found} is not a shared library (no ELF header); {PLUGINS_HINT}")
    return Path(found)


def plugin_spec_hash(path: Path) -> str:
    """The op-definition hash compiled into the library (``pumerOpSpecSha256()``).

    Loads the library, so call it after ``tensorrt`` is imported (it links libnvinfer).
    """
    from ..plugins import library_spec_hash

    try:
        return str(library_spec_hash(path))
    except PumerExportError:
        raise
    except (OSError, AttributeError) as exc:
        raise MissingDependencyError(f"cannot read pumerOpSpecSha256() from {path}: {exc}; {PLUGINS_HINT}") from None


def check_plugin_hash(path: Path, library_hash: str, model_hash: str | None) -> None:
    package_hash = op_spec_hash()
    if library_hash != package_hash:
        raise PumerExportError(
            f"plugin library {path} implements op spec {library_hash[:12]}, this pumer-export defines "
            f"{package_hash[:12]}; rebuild it with pumer-export build-plugins"
        )
    if model_hash is not None and library_hash != model_hash:  # pragma: no cover - caught by check_export
        raise PumerExportError(f"plugin library {path} does not implement the model's op spec {model_hash[:12]}")


# ------------------------------------------------------------------------ the ONNX model
def check_export(model: onnx.ModelProto, path: Path) -> dict[str, Any]:
    """The model's metadata, after checking it is a pumer-export export of this op spec."""
    metadata = prepare.read_export_metadata(model)
    model_hash = prepare.export_op_spec_hash(metadata)
    if model_hash is None:
        raise PumerExportError(
            f"{path} is not a pumer-export ONNX export (no pumer.op_spec_hash in its metadata); export it with "
            "pumer-export onnx"
        )
    if model_hash != op_spec_hash():
        raise PumerExportError(
            f"{path} was exported for pumer op spec {model_hash[:12]}, this pumer-export defines "
            f"{op_spec_hash()[:12]}; re-export the model with this version"
        )
    prepare.check_pumer_nodes(model)
    return metadata


def onnx_files(model: onnx.ModelProto, path: Path) -> list[Path]:
    """The ONNX file and the external data files it references."""
    locations = []
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location" and entry.value not in locations:
                    locations.append(entry.value)
    return [path] + [path.parent / location for location in locations]


def onnx_record(model: onnx.ModelProto, path: Path) -> dict[str, Any]:
    files = onnx_files(model, path)
    missing = [str(f) for f in files[1:] if not f.is_file()]
    if missing:
        raise PumerExportError(f"{path} references external data that does not exist: {', '.join(missing)}")
    record: dict[str, Any] = {"path": str(path.resolve()), "sha256": sidecar_mod.sha256_file(path)}
    if files[1:]:
        record["external_data"] = {f.name: sidecar_mod.sha256_file(f) for f in files[1:]}
    return record


# ------------------------------------------------------------------------------ build
@dataclasses.dataclass
class BuildPlan:
    """Everything decided in plain Python before TensorRT is touched."""

    onnx_path: Path
    out_path: Path
    model: onnx.ModelProto
    metadata: dict[str, Any]
    inputs: list[prepare.InputSpec]
    batch: prepare.BatchProfile
    shapes: dict[str, dict[str, list[int]]]
    workspace_bytes: int | None
    timing_cache: Path | None
    plugin_library: Path | None  # an explicit --plugins (checked to exist); else looked up after TensorRT
    needs_plugins: bool
    fp16: bool


@dataclasses.dataclass
class BuildResult:
    plan: Path
    sidecar: Path
    record: dict[str, Any]
    seconds: float


def plan_build(
    onnx_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    plugins: str | os.PathLike | None = None,
    batch: str | prepare.BatchProfile | None = None,
    timing_cache: str | os.PathLike | None = None,
    workspace: str | int | None = None,
    fp16: bool = False,
    force: bool = False,
) -> BuildPlan:
    """The plain-Python half of :func:`build_engine`: every check that needs no TensorRT."""
    out_path = Path(out_path)
    check_destination(out_path, force)
    if out_path.suffix == sidecar_mod.SUFFIX:
        raise PumerExportError(f"{out_path}: name the engine file (e.g. model.plan), the sidecar gets .json")
    profile = prepare.parse_batch_profile(batch) if isinstance(batch, str) else batch
    workspace_bytes = prepare.parse_size(workspace) if isinstance(workspace, str) else workspace
    path = resolve_onnx_path(onnx_path)
    model = prepare.load_onnx(path)
    metadata = check_export(model, path)
    prepare.check_quantization(model, metadata, fp16)
    inputs = prepare.graph_inputs(model)
    profile = profile or prepare.default_batch_profile(inputs)
    shapes = prepare.profile_shapes(inputs, profile)
    cache = Path(timing_cache) if timing_cache is not None else None
    if cache is not None and cache.exists() and not cache.is_file():
        raise PumerExportError(f"--timing-cache {cache} is not a file")
    needs_plugins = bool(prepare.pumer_nodes(model))
    library = find_plugins(plugins) if needs_plugins and plugins is not None else None
    return BuildPlan(path, out_path, model, metadata, inputs, profile, shapes, workspace_bytes, cache, library,
                     needs_plugins, fp16)


def build_engine(
    onnx_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    plugins: str | os.PathLike | None = None,
    batch: str | prepare.BatchProfile | None = None,
    timing_cache: str | os.PathLike | None = None,
    workspace: str | int | None = None,
    fp16: bool = False,
    force: bool = False,
    verbose: bool = False,
) -> BuildResult:
    """Build ``out_path`` (a TensorRT plan) and ``out_path.json`` (its sidecar) from a pumer-export ONNX model."""
    start = time.perf_counter()
    plan = plan_build(onnx_path, out_path, plugins=plugins, batch=batch, timing_cache=timing_cache,
                      workspace=workspace, fp16=fp16, force=force)

    from . import trt_api

    trt = trt_api.import_tensorrt()
    version = trt_api.tensorrt_version(trt)
    precision = prepare.precision_policy(version, prepare.model_dtype(plan.model, plan.metadata), plan.fp16)
    gpu = device.current_gpu()
    if gpu is None:
        raise MissingDependencyError(f"TensorRT needs a CUDA GPU: {device.cuda_info().error}")

    library_record = None
    if plan.needs_plugins:
        library = plan.plugin_library or find_plugins(None)
        library_hash = plugin_spec_hash(library)
        check_plugin_hash(library, library_hash, prepare.export_op_spec_hash(plan.metadata))
        trt_api.load_plugin_library(trt, library)
        library_record = {"path": str(library.resolve()), "sha256": sidecar_mod.sha256_file(library),
                          "op_spec_hash": library_hash}

    prepared = prepare.prepare_onnx_for_tensorrt(plan.onnx_path, version, model=plan.model)
    cache_in = None
    if plan.timing_cache is not None:
        cache_in = plan.timing_cache.read_bytes() if plan.timing_cache.is_file() else b""
    output = trt_api.build_serialized_engine(
        trt,
        model_bytes=prepared.model_bytes,
        model_path=plan.onnx_path,
        strongly_typed=precision.strongly_typed,
        fp16_flag=precision.fp16_flag,
        shapes=plan.shapes,
        workspace_bytes=plan.workspace_bytes,
        timing_cache=cache_in,
        verbose=verbose,
    )
    if output.plugin_layers < prepared.pumer_node_count:
        raise PumerExportError(
            f"the network has {output.plugin_layers} plugin layers for {prepared.pumer_node_count} pumer nodes: "
            "TensorRT did not use the pumer plugins; run pumer-export doctor"
        )

    record = sidecar_mod.make_sidecar(
        plan_name=plan.out_path.name,
        engine_sha256=sidecar_mod.sha256_bytes(output.plan),
        engine_bytes=len(output.plan),
        tensorrt_version=version,
        gpu={"name": gpu.name, "sm": gpu.sm, "driver_version": device.cuda_info().driver_version},
        precision=precision.to_dict(),
        profile={"batch": plan.batch.to_dict(), "shapes": plan.shapes},
        plugin_library=library_record,
        onnx=onnx_record(plan.model, plan.onnx_path),
        op_spec_hash=op_spec_hash(),
        function_policy={**prepared.policy.to_dict(), "stripped": prepared.stripped_functions,
                         "pumer_nodes": prepared.pumer_node_count, "plugin_layers": output.plugin_layers},
        build={"workspace_bytes": plan.workspace_bytes,
               "timing_cache": str(plan.timing_cache) if plan.timing_cache else None},
        io=output.io,
    )
    sidecar_path = write_outputs(plan.out_path, output.plan, record, plan.timing_cache, output.timing_cache)
    onnx_folder = plan.onnx_path.parent
    if (onnx_folder / "manifest.json").is_file() and plan.out_path.parent.resolve() != onnx_folder.resolve():
        write_engine_folder(onnx_folder, plan.out_path, record)  # the engine's folder becomes self-contained
    return BuildResult(plan.out_path, sidecar_path, record, time.perf_counter() - start)


def engine_manifest(onnx_manifest: Mapping[str, Any], plan_name: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest of an engine folder, from its ONNX export's manifest and the engine's sidecar record."""
    batch = (record.get("profile") or {}).get("batch") or {}
    precision = record.get("precision") or {}
    manifest = {k: v for k, v in onnx_manifest.items() if k not in ("directory", "sha256", "format", "data_files")}
    manifest.update(
        backend="tensorrt", model_file=plan_name, data_files=[sidecar_mod.sidecar_path(Path(plan_name)).name],
        batch={"min": int(batch.get("min", 1)), "max": int(batch.get("max", 1))},
        tensorrt={"version": record.get("tensorrt_version"), "gpu": record.get("gpu"), "precision": precision,
                  "plugin_library": (record.get("plugin_library") or {}).get("path")},
    )
    return manifest


def write_engine_folder(onnx_folder: str | os.PathLike, plan: str | os.PathLike,
                        record: Mapping[str, Any] | None = None) -> Path:
    """Make the engine's folder self-contained: its ``manifest.json`` (backend "tensorrt", the batch range of the
    profile) and the processor files of the ONNX export folder. Refuses a folder whose manifest names another
    model file (one engine per folder)."""
    from ..manifest import MANIFEST_FILE, read_manifest, write_manifest
    from ..processing import copy_processor_files

    plan = Path(plan)
    folder = plan.parent
    if folder.resolve() == Path(onnx_folder).resolve():
        raise PumerExportError(f"write the engine outside the ONNX export folder {folder} (e.g. engines/pumer/"
                               f"{plan.name}): an application loads one model per folder")
    existing = folder / MANIFEST_FILE
    if existing.is_file():
        try:
            other = json.loads(existing.read_text(encoding="utf-8")).get("model_file")
        except (OSError, ValueError):
            other = None
        if other != plan.name:
            raise PumerExportError(f"{folder} already holds an export of {other}; write each engine into a folder "
                                   "of its own (an application loads one model per folder)")
    record = record if record is not None else sidecar_mod.read_sidecar(plan)
    onnx_manifest = read_manifest(onnx_folder)
    copy_processor_files(Path(onnx_folder), folder)
    write_manifest(folder, engine_manifest(onnx_manifest, plan.name, record))
    return folder


def write_outputs(out_path: Path, plan_bytes: bytes, record: Mapping[str, Any],
                  timing_cache: Path | None = None, cache_bytes: bytes | None = None) -> Path:
    """Write the plan and its sidecar (each atomically, the sidecar first), then the timing cache."""
    import json

    sidecar_path = sidecar_mod.sidecar_path(out_path)
    with atomic_output_file(out_path) as tmp_plan, atomic_output_file(sidecar_path) as tmp_sidecar:
        tmp_plan.write_bytes(plan_bytes)
        tmp_sidecar.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if timing_cache is not None and cache_bytes:
        with atomic_output_file(timing_cache) as tmp_cache:
            tmp_cache.write_bytes(cache_bytes)
    return sidecar_path


# ------------------------------------------------------------------------------- load
@dataclasses.dataclass
class LoadedEngine:
    path: Path
    engine: Any  # trt.ICudaEngine
    sidecar: dict[str, Any]

    def infer(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Run once on numpy ``feeds`` (see :func:`trt_api.run_engine`)."""
        from . import trt_api

        return trt_api.run_engine(self.engine, feeds)


def runtime_info(trt_version: str | None, library: Path | None) -> sidecar_mod.RuntimeInfo:
    gpu = device.current_gpu()
    return sidecar_mod.RuntimeInfo(
        tensorrt_version=trt_version,
        gpu_sm=gpu.sm if gpu else None,
        gpu_name=gpu.name if gpu else None,
        plugin_sha256=sidecar_mod.sha256_file(library) if library else None,
        plugin_op_spec_hash=plugin_spec_hash(library) if library else None,
        op_spec_hash=op_spec_hash(),
    )


def load_engine(plan: str | os.PathLike, *, plugins: str | os.PathLike | None = None) -> LoadedEngine:
    """Deserialize ``plan`` after checking its sidecar against this process; load the plugin library first."""
    plan = Path(plan)
    if not plan.is_file():
        raise missing(plan, "engine")
    record = sidecar_mod.read_sidecar(plan)

    from . import trt_api

    trt = trt_api.import_tensorrt()
    library = None
    if record.get("plugin_library"):
        recorded = Path(record["plugin_library"].get("path", ""))
        if plugins is None and recorded.is_file() and not os.environ.get("PUMER_PLUGINS"):
            library = recorded
        else:
            library = find_plugins(plugins)
    if device.current_gpu() is None:
        raise MissingDependencyError(f"TensorRT engines need a CUDA GPU: {device.cuda_info().error}")
    sidecar_mod.check_sidecar(record, runtime_info(trt_api.tensorrt_version(trt), library), plan=plan)
    if library is not None:
        trt_api.load_plugin_library(trt, library)
    engine = trt_api.deserialize_engine(trt, plan.read_bytes())
    return LoadedEngine(plan, engine, record)
