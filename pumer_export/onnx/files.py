"""Finding and opening ONNX files: one place, one wording for every command.

An ONNX argument may be a ``.onnx`` file or an export folder written by ``pumer-export onnx``
(``OUTDIR/model.onnx``). A missing path and an unreadable file are one-line errors worded the same
way by every command (``inspect``, ``build``, ``validate``, ``bench``).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import PumerExportError, missing

#: The file an export folder holds.
MODEL_FILE = "model.onnx"
EXPORT_HINT = "export one with `pumer-export onnx MODEL OUTDIR`"


def resolve_onnx_path(path: str | os.PathLike, what: str = "ONNX model") -> Path:
    """A ``.onnx`` file, or an export folder holding ``model.onnx``."""
    path = Path(path)
    if path.is_dir():
        inner = path / MODEL_FILE
        if not inner.is_file():
            raise PumerExportError(f"{what} folder {path} holds no {MODEL_FILE}; {EXPORT_HINT}")
        return inner
    if not path.is_file():
        raise missing(path, what)
    return path


def load_onnx(path: str | os.PathLike, *, load_external_data: bool = False, what: str = "ONNX model"):
    """Load ``path`` (file or export folder) with a one-line error for a missing or unreadable file."""
    import onnx

    path = resolve_onnx_path(path, what)
    try:
        return onnx.load(str(path), load_external_data=load_external_data)
    except Exception as exc:  # DecodeError, OSError, ...: all "not a readable ONNX file"
        raise PumerExportError(
            f"{path} is not a readable ONNX model ({type(exc).__name__}): truncated or another kind of file; "
            f"{EXPORT_HINT}"
        ) from None
