"""The manifest of a self-contained export folder: everything an application needs to run the model.

An export folder holds the model (``model.onnx`` [+ ``model.onnx.data``], or a TensorRT engine), the processor
files when the checkpoint has them, and ``manifest.json``:

* ``format``, ``family`` (``pumer_export.models``), ``backend`` ("onnx" / "tensorrt"), ``model_file``;
* ``inputs`` / ``outputs``: name, dtype and shape (``"batch"`` for the batch dimension), in order;
* ``image_size`` [H, W] and ``text_length``: the fixed canvas; ``batch``: {"min", "max"};
* ``dtype``, ``reduction``, ``pumer`` (settings), ``schedule`` (token counts), ``id2label``;
* ``processor``: the processor files beside the model (empty when the checkpoint had none);
* ``versions``, ``sha256`` of every model file, ``model_sha256`` (which checkpoint weights).

:func:`read_manifest` checks it with one-line errors, so an application fails early and clearly.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .errors import PumerExportError, missing

MANIFEST_FILE = "manifest.json"
FORMAT = 1
BACKENDS = ("onnx", "tensorrt")
_REQUIRED = ("format", "family", "backend", "model_file", "inputs", "outputs", "image_size", "text_length", "batch",
             "id2label")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` into ``directory`` (atomically), with the hashes of the model files."""
    from .fsutil import write_text_atomic

    directory = Path(directory)
    files = [manifest["model_file"], *manifest.get("data_files", [])]
    manifest = {**manifest, "format": FORMAT,
                "sha256": {name: file_sha256(directory / name) for name in files if (directory / name).is_file()}}
    path = directory / MANIFEST_FILE
    write_text_atomic(path, json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return path


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The checked manifest of an export folder (one-line errors naming the problem and the fix)."""
    directory = Path(directory)
    if directory.is_file():
        if directory.name == MANIFEST_FILE or directory.suffix in (".onnx", ".plan", ".engine"):
            directory = directory.parent
        else:
            raise PumerExportError(f"{directory} is a file; pass the export folder that holds {MANIFEST_FILE}")
    if not directory.is_dir():
        raise missing(directory, "export folder")
    path = directory / MANIFEST_FILE
    if not path.is_file():
        raise PumerExportError(
            f"{directory} has no {MANIFEST_FILE}: it is not a self-contained export folder; re-export with "
            "`pumer-export onnx MODEL OUTDIR` (or `pumer-export build`), which writes one"
        )
    from .fsutil import read_json_object

    manifest = read_json_object(path, hint="; re-export the folder")
    absent = [key for key in _REQUIRED if key not in manifest]
    if absent:
        raise PumerExportError(f"{path} lacks {', '.join(absent)}; re-export the folder with this pumer-export")
    if manifest["format"] != FORMAT:
        raise PumerExportError(f"{path} has format {manifest['format']}; this pumer-export reads format {FORMAT}")
    if manifest["backend"] not in BACKENDS:
        raise PumerExportError(f"{path}: unknown backend {manifest['backend']!r} (expected one of {BACKENDS})")
    model_file = directory / manifest["model_file"]
    if not model_file.is_file():
        raise PumerExportError(f"{directory}: the manifest names {manifest['model_file']}, which is missing")
    manifest["id2label"] = {int(k): v for k, v in manifest["id2label"].items()}
    manifest["directory"] = str(directory)
    return manifest


def verify_hashes(manifest: dict[str, Any]) -> None:
    """Raise unless every model file still has the hash the manifest recorded (a changed or swapped file)."""
    directory = Path(manifest["directory"])
    for name, expected in manifest.get("sha256", {}).items():
        if (directory / name).is_file() and file_sha256(directory / name) != expected:
            raise PumerExportError(f"{directory / name} changed since export (sha256 differs from {MANIFEST_FILE}); "
                                   "re-export the folder")
