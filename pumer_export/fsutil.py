"""Atomic writes: an artifact is either complete or absent, never half-written."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import PumerExportError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _default_mode(path: Path, mode: int) -> None:
    """Give a ``mkstemp`` / ``mkdtemp`` path (0600 / 0700) the permissions a plain create would have."""
    os.chmod(path, mode & ~_umask())


def _readable_tree(root: Path) -> None:
    """Give every file and folder under ``root`` the read (and folder search) bits the umask allows.

    Writers we call (``save_pretrained`` / safetensors, temporary files) create some files 0600; outputs are
    meant to be read by others like any file the user creates.
    """
    mask = _umask()
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        extra = (0o555 if path.is_dir() else 0o444) & ~mask
        mode = path.stat().st_mode & 0o7777
        if mode | extra != mode:
            os.chmod(path, mode | extra)


def check_destination(dst: Path, force: bool) -> None:
    """Refuse to overwrite ``dst`` unless ``force``."""
    if dst.exists() and not force:
        raise PumerExportError(f"{dst} already exists; pass --force to overwrite it")


@contextlib.contextmanager
def atomic_output_dir(dst: str | os.PathLike, *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary directory next to ``dst`` that becomes ``dst`` only if the block succeeds.

    On any exception the temporary directory is removed and an existing ``dst`` is left untouched.
    """
    dst = Path(dst)
    check_destination(dst, force)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=dst.parent))
    try:
        _default_mode(tmp, 0o777)
        yield tmp
        _readable_tree(tmp)
        if dst.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
            old.rmdir()
            os.replace(dst, old)
            os.replace(tmp, dst)
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
        else:
            os.replace(tmp, dst)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_output_file(dst: str | os.PathLike, *, force: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``dst`` that is renamed to ``dst`` only if the block succeeds."""
    dst = Path(dst)
    check_destination(dst, force)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dst.name}.tmp-", dir=dst.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        _default_mode(tmp, 0o666)
        yield tmp
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(dst: str | os.PathLike, text: str) -> None:
    with atomic_output_file(dst) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_json_object(path: str | os.PathLike, *, error: type[Exception] = PumerExportError, hint: str = "") -> dict:
    """The JSON object in ``path``; ``error`` (one line, ``hint`` appended) when it is not valid JSON or no object."""
    import json

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise error(f"{path} is not valid JSON ({exc}){hint}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise error(f"{path} must hold a JSON object{hint}")
    return data


def read_json_lines(path: str | os.PathLike, required: tuple[str, ...], what: str) -> list[tuple[int, dict]]:
    """(line number, object) of every non-empty line of a JSON-lines file; one-line errors naming the line."""
    import json

    from .errors import PumerExportError, missing

    path = Path(path)
    if not path.is_file():
        raise missing(path, what)
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            raise PumerExportError(f"{path}:{number} is not JSON; write one JSON object per line") from None
        if not isinstance(item, dict) or not set(required) <= set(item):
            raise PumerExportError(f"{path}:{number} needs {', '.join(repr(k) for k in required)}")
        items.append((number, item))
    if not items:
        raise PumerExportError(f"{path} holds no entries")
    return items


def relative_to_file(path: str | os.PathLike, value: str) -> Path:
    """``value`` as a path, relative ones taken from the folder of ``path`` (the file that names it)."""
    candidate = Path(str(value))
    return candidate if candidate.is_absolute() else Path(path).parent / candidate
