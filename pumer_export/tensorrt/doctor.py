"""``pumer-export doctor``: what this machine has for exporting and deploying, and what it lacks.

:func:`collect` returns a JSON-ready report; every check is a row ``{item, status, detail, hint}``
with ``status`` one of ``ok``, ``missing``, ``error``, ``skipped`` (needs something missing
above) or ``info``. Two verdicts summarize it: ``cpu_export`` (torch, onnx, ONNX Runtime: export
and ONNX Runtime parity work) and ``tensorrt_build`` (CUDA GPU, TensorRT, plugin library with the
right op definitions and all pumer creators registered).

Nothing here raises for a missing component: it becomes a row. The TensorRT calls go through
:mod:`.trt_api`; the plugin library is only loaded after ``tensorrt`` is imported.
"""

from __future__ import annotations

import importlib
import platform
from typing import Any

from .. import __version__
from ..errors import PumerExportError
from ..ops import op_spec_hash
from . import INSTALL_HINT, device

OK, MISSING, ERROR, SKIPPED, INFO = "ok", "missing", "error", "skipped", "info"
#: Items whose status must be ok for each verdict.
CPU_EXPORT_ITEMS = ("torch", "onnx", "onnxruntime")
TENSORRT_ITEMS = ("CUDA driver", "GPU", "TensorRT", "plugin library", "plugin op spec")


def _row(item: str, status: str, detail: str = "", hint: str = "") -> dict[str, str]:
    return {"item": item, "status": status, "detail": detail, "hint": hint}


def _module_version(name: str) -> tuple[Any, str | None]:
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # ImportError, or a broken install raising anything
        return None, f"{type(exc).__name__}: {exc}"
    return module, None


def _python_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    rows = [_row("python", OK, f"{platform.python_version()} ({platform.machine()}, {platform.system()})"),
            _row("pumer-export", OK, f"{__version__}, op spec {op_spec_hash()[:12]}")]
    torch, error = _module_version("torch")
    if torch is None:
        rows.append(_row("torch", MISSING, error or "", "pip install torch"))
    else:
        cuda = torch.version.cuda
        gpu = "CUDA available" if cuda and torch.cuda.is_available() else ("CUDA build, no GPU" if cuda else "CPU build")
        rows.append(_row("torch", OK, f"{torch.__version__} ({gpu})"))
        report["versions"]["torch"] = torch.__version__
    onnx, error = _module_version("onnx")
    rows.append(_row("onnx", OK, onnx.__version__) if onnx else _row("onnx", MISSING, error or "", "pip install onnx"))
    if onnx:
        report["versions"]["onnx"] = onnx.__version__
    ort, error = _module_version("onnxruntime")
    if ort is None:
        rows.append(_row("onnxruntime", MISSING, error or "", "pip install onnxruntime (or onnxruntime-gpu)"))
    else:
        providers = list(ort.get_available_providers())
        report["onnxruntime_providers"] = providers
        report["versions"]["onnxruntime"] = ort.__version__
        rows.append(_row("onnxruntime", OK, f"{ort.__version__}; providers: {', '.join(providers)}"))
    return rows


def _cuda_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    info = device.cuda_info()
    report["cuda"] = info.to_dict()
    rows = []
    if info.driver_version:
        rows.append(_row("CUDA driver", OK, f"supports CUDA {info.driver_version}"))
    else:
        rows.append(_row("CUDA driver", MISSING, info.error or "", "install the NVIDIA driver (TensorRT needs a GPU)"))
    if info.devices:
        for gpu in info.devices:
            memory = f", {gpu.memory_bytes / 2**30:.0f} GiB" if gpu.memory_bytes else ""
            rows.append(_row("GPU" if gpu.index == 0 else f"GPU {gpu.index}", OK,
                             f"{gpu.index}: {gpu.name} (SM {gpu.sm}{memory})"))
    else:
        rows.append(_row("GPU", MISSING, info.error or "no CUDA device", "TensorRT builds and runs need an NVIDIA GPU"))
    return rows


def _tensorrt_rows(report: dict[str, Any], plugins: str | None) -> list[dict[str, str]]:
    from . import prepare, trt_api
    from .engine import find_plugins, plugin_spec_hash

    rows = []
    try:
        trt = trt_api.import_tensorrt()
    except PumerExportError as exc:
        trt = None
        report["tensorrt"] = {"version": None, "error": str(exc)}
        rows.append(_row("TensorRT", MISSING, "not installed" if "not installed" in str(exc) else str(exc),
                         INSTALL_HINT))
    if trt is not None:
        version = trt_api.tensorrt_version(trt)
        report["tensorrt"] = {"version": version}
        try:
            policy = prepare.function_policy(version)
        except PumerExportError as exc:
            rows.append(_row("TensorRT", ERROR, version, str(exc)))
        else:
            report["tensorrt"]["function_policy"] = policy.to_dict()
            rows.append(_row("TensorRT", OK, f"{version} (functions stripped)"))

    try:
        library = find_plugins(plugins)
    except PumerExportError as exc:
        library = None
        report["plugin_library"] = {"path": None, "error": str(exc)}
        rows.append(_row("plugin library", MISSING, "not found" if "not found" in str(exc) else "not usable", str(exc)))
    if library is not None:
        report["plugin_library"] = {"path": str(library)}
        rows.append(_row("plugin library", OK, str(library)))
        if trt is None:
            rows.append(_row("plugin op spec", SKIPPED, "the library links TensorRT: install it to load the library"))
        else:
            try:
                library_hash = plugin_spec_hash(library)
            except PumerExportError as exc:
                rows.append(_row("plugin op spec", ERROR, "cannot load the library", str(exc)))
            else:
                report["plugin_library"]["op_spec_hash"] = library_hash
                if library_hash == op_spec_hash():
                    rows.append(_row("plugin op spec", OK, f"{library_hash[:12]} matches this pumer-export"))
                else:
                    rows.append(_row("plugin op spec", ERROR, f"{library_hash[:12]} != {op_spec_hash()[:12]}",
                                     "rebuild it with pumer-export build-plugins"))

    creators = trt_api.expected_creators()
    report["creators"] = []
    if trt is None or library is None:
        need = "TensorRT" if trt is None else "the plugin library"
        for creator in creators:
            rows.append(_row(f"creator {creator.name}", SKIPPED, f"needs {need}"))
        return rows
    load_error = None
    try:
        trt_api.load_plugin_library(trt, library)
    except PumerExportError as exc:
        load_error = str(exc)
    for creator in creators:
        found = trt_api.has_creator(trt, creator)
        report["creators"].append({**creator.to_dict(), "registered": found})
        detail = f"version {creator.version}, namespace {creator.namespace!r}"
        rows.append(_row(f"creator {creator.name}", OK if found else MISSING,
                         detail + ("" if found else ": not registered"), "" if found else (load_error or "")))
    return rows


def collect(plugins: str | None = None) -> dict[str, Any]:
    """The doctor report (JSON-ready)."""
    report: dict[str, Any] = {"pumer_export_version": __version__, "op_spec_hash": op_spec_hash(), "versions": {}}
    rows = _python_rows(report) + _cuda_rows(report) + _tensorrt_rows(report, plugins)
    report["checks"] = rows
    status = {row["item"]: row["status"] for row in rows}
    creators_ok = all(row["status"] == OK for row in rows if row["item"].startswith("creator "))
    report["ready"] = {
        "cpu_export": all(status.get(item) == OK for item in CPU_EXPORT_ITEMS),
        "tensorrt_build": all(status.get(item) == OK for item in TENSORRT_ITEMS) and creators_ok,
    }
    return report


def blockers(report: dict[str, Any]) -> list[str]:
    """What stands in the way of a TensorRT build, TensorRT itself first (empty when ready)."""
    rows = [row for row in report["checks"] if row["status"] in (MISSING, ERROR)
            and (row["item"] in TENSORRT_ITEMS or row["item"].startswith("creator "))]
    rows.sort(key=lambda row: row["item"] != "TensorRT")
    return [row["item"] for row in rows]


def render(report: dict[str, Any]):
    """A rich table of the checks (hints under the detail, dimmed)."""
    from rich.markup import escape
    from rich.table import Table

    colors = {OK: "green", MISSING: "red", ERROR: "red", SKIPPED: "yellow", INFO: "cyan"}
    table = Table(title="pumer-export doctor", title_justify="left")
    table.add_column("item", overflow="fold")
    table.add_column("status", overflow="fold")
    table.add_column("detail", overflow="fold")
    for row in report["checks"]:
        color = colors.get(row["status"], "white")
        detail = escape(row["detail"])
        if row["hint"]:
            detail += f"\n[dim]-> {escape(row['hint'])}[/dim]"
        table.add_row(escape(row["item"]), f"[{color}]{row['status']}[/{color}]", detail)
    return table


def summary_lines(report: dict[str, Any]) -> list[str]:
    """One line per verdict; a missing TensorRT gets its own line with the install command."""
    ready = report["ready"]
    lines = [f"CPU export and ONNX Runtime: {'ready' if ready['cpu_export'] else 'not ready'}"]
    if report.get("tensorrt", {}).get("version") is None:
        lines.append(f"TensorRT is not installed: {INSTALL_HINT}")
    if ready["tensorrt_build"]:
        lines.append("TensorRT builds: ready")
    else:
        lines.append("TensorRT builds: not possible, missing or failing: " + (", ".join(blockers(report)) or "see above"))
    return lines
