"""The JSON sidecar written next to every engine (``OUT.plan.json``) and its check at load time.

A TensorRT engine only runs with the TensorRT version and GPU architecture it was built for, and
the pumer plugin layers inside it only mean what the plugin library that built them meant. The
sidecar records those facts; :func:`check_sidecar` compares them with the runtime and refuses a
mismatch with one line naming every difference and the fix (rebuild the engine).

Fields (``format_version`` 1)::

    format, format_version, created_utc, pumer_export_version
    engine:          file, sha256, bytes
    tensorrt:        version
    gpu:             name, sm ("8.7"), driver_version
    precision:       onnx_dtype, strongly_typed, fp16_flag, description
    profile:         batch {min, opt, max}, shapes {input: {min, opt, max}}
    plugin_library:  path, sha256, op_spec_hash       (null when the model has no pumer node)
    onnx:            path, sha256
    op_spec_hash:    SHA-256 of op_spec.json when the engine was built
    function_policy: the local-function / plugin handling used (see prepare.function_policy)
    build:           workspace_bytes, timing_cache
    io:              inputs / outputs [{name, dtype, shape}] as the engine reports them
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

from .. import __version__
from ..errors import PumerExportError
from ..fsutil import write_text_atomic

FORMAT = "pumer-export.tensorrt-engine"
FORMAT_VERSION = 1
SUFFIX = ".json"


def sidecar_path(plan: str | os.PathLike) -> Path:
    """``model.plan`` -> ``model.plan.json``."""
    plan = Path(plan)
    return plan.with_name(plan.name + SUFFIX)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_sidecar(
    *,
    plan_name: str,
    engine_sha256: str,
    engine_bytes: int,
    tensorrt_version: str,
    gpu: Mapping[str, Any],
    precision: Mapping[str, Any],
    profile: Mapping[str, Any],
    plugin_library: Mapping[str, Any] | None,
    onnx: Mapping[str, Any],
    op_spec_hash: str,
    function_policy: Mapping[str, Any],
    build: Mapping[str, Any] | None = None,
    io: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The sidecar as a JSON-ready dict (see the module docstring for the fields)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "pumer_export_version": __version__,
        "engine": {"file": plan_name, "sha256": engine_sha256, "bytes": int(engine_bytes)},
        "tensorrt": {"version": str(tensorrt_version)},
        "gpu": dict(gpu),
        "precision": dict(precision),
        "profile": dict(profile),
        "plugin_library": dict(plugin_library) if plugin_library is not None else None,
        "onnx": dict(onnx),
        "op_spec_hash": op_spec_hash,
        "function_policy": dict(function_policy),
        "build": dict(build or {}),
        "io": dict(io or {}),
    }


def write_sidecar(plan: str | os.PathLike, sidecar: Mapping[str, Any]) -> Path:
    """Write ``PLAN.json`` atomically; return its path."""
    path = sidecar_path(plan)
    write_text_atomic(path, json.dumps(sidecar, indent=2, sort_keys=False) + "\n")
    return path


def read_sidecar(plan: str | os.PathLike) -> dict[str, Any]:
    """Read and validate the structure of ``PLAN.json``."""
    path = sidecar_path(plan)
    if not path.is_file():
        raise PumerExportError(
            f"{path} is missing: the engine {Path(plan).name} has no build record; rebuild it with pumer-export build"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PumerExportError(f"{path} is not a readable sidecar: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise PumerExportError(f"{path} is not a pumer-export engine sidecar")
    if data.get("format_version") != FORMAT_VERSION:
        raise PumerExportError(
            f"{path} has sidecar format version {data.get('format_version')}, this pumer-export reads "
            f"{FORMAT_VERSION}; rebuild the engine with pumer-export build"
        )
    for key in ("engine", "tensorrt", "gpu", "op_spec_hash"):
        if key not in data:
            raise PumerExportError(f"{path} lacks the field {key!r}; rebuild the engine with pumer-export build")
    return data


@dataclasses.dataclass(frozen=True)
class RuntimeInfo:
    """What the loading process has; ``None`` means "unknown, not checked"."""

    tensorrt_version: str | None
    gpu_sm: str | None
    gpu_name: str | None = None
    plugin_sha256: str | None = None
    plugin_op_spec_hash: str | None = None
    op_spec_hash: str | None = None


def _trt_release(version: str) -> tuple[int, ...]:
    """major.minor.patch (a build number or post-release suffix does not change engine compatibility)."""
    from .prepare import parse_trt_version

    parsed = parse_trt_version(version)
    return (parsed.major, parsed.minor, parsed.patch)


def sidecar_mismatches(sidecar: Mapping[str, Any], runtime: RuntimeInfo) -> list[str]:
    """Every difference between what the engine was built with and ``runtime``, as phrases."""
    problems = []
    built_trt = sidecar.get("tensorrt", {}).get("version")
    if runtime.tensorrt_version and built_trt and _trt_release(built_trt) != _trt_release(runtime.tensorrt_version):
        problems.append(f"built with TensorRT {built_trt}, this is TensorRT {runtime.tensorrt_version}")
    built_sm = (sidecar.get("gpu") or {}).get("sm")
    if runtime.gpu_sm and built_sm and str(built_sm) != str(runtime.gpu_sm):
        built_gpu = (sidecar.get("gpu") or {}).get("name") or "a GPU"
        here = f"{runtime.gpu_name} " if runtime.gpu_name else ""
        problems.append(f"built for {built_gpu} (SM {built_sm}), this GPU is {here}(SM {runtime.gpu_sm})")
    library = sidecar.get("plugin_library")
    if library:
        if runtime.plugin_sha256 is None:
            problems.append("built with the pumer plugin library, none is loaded (pass --plugins or set PUMER_PLUGINS)")
        elif library.get("sha256") != runtime.plugin_sha256:
            problems.append(
                f"built with plugin library sha256 {str(library.get('sha256'))[:12]}, "
                f"the loaded one is {runtime.plugin_sha256[:12]}"
            )
        if runtime.plugin_op_spec_hash and runtime.plugin_op_spec_hash != sidecar.get("op_spec_hash"):
            problems.append(
                f"the loaded plugin library implements op spec {runtime.plugin_op_spec_hash[:12]}, the engine "
                f"was built for {str(sidecar.get('op_spec_hash'))[:12]}"
            )
    if runtime.op_spec_hash and sidecar.get("op_spec_hash") != runtime.op_spec_hash:
        problems.append(
            f"built for pumer op spec {str(sidecar.get('op_spec_hash'))[:12]}, this pumer-export has "
            f"{runtime.op_spec_hash[:12]}"
        )
    return problems


def check_sidecar(sidecar: Mapping[str, Any], runtime: RuntimeInfo, *, plan: str | os.PathLike | None = None) -> None:
    """Raise :class:`PumerExportError` naming every mismatch between the sidecar and the runtime."""
    problems = sidecar_mismatches(sidecar, runtime)
    if plan is not None:
        engine = sidecar.get("engine") or {}
        plan = Path(plan)
        if plan.is_file() and engine.get("sha256") and sha256_file(plan) != engine["sha256"]:
            problems.insert(0, "the engine file does not match its sidecar (sha256 differs)")
    if problems:
        name = Path(plan).name if plan is not None else "the engine"
        raise PumerExportError(
            f"{name} cannot be used here: " + "; ".join(problems)
            + "; rebuild it with pumer-export build on this machine"
        )
