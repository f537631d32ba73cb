"""Argument parsing shared by the sub-commands."""

from __future__ import annotations

import argparse
import os
import re
import tempfile
from pathlib import Path

from ..errors import PumerExportError


def parse_image_size(text: str) -> tuple[int, int]:
    """``"384x384"`` (or a single ``"384"``) to (height, width)."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected HxW such as 384x384, got {text!r}")
    height = int(match.group(1))
    width = int(match.group(2) or match.group(1))
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"image size must be positive, got {text!r}")
    return height, width


def _int_at_least(minimum: int, kind: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind} integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a {kind} integer, got {value}")
        return value

    parse.__name__ = f"{kind.replace('-', '_')}_int"
    return parse


positive_int = _int_at_least(1, "positive")
non_negative_int = _int_at_least(0, "non-negative")


def _float_where(accept, kind: str):
    """A parser of finite floats that ``accept`` takes (``kind`` names them in the error)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if value != value or value in (float("inf"), float("-inf")) or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}")
        return value

    return parse


positive_float = _float_where(lambda v: v > 0, "a positive number")
non_negative_float = _float_where(lambda v: v >= 0, "a non-negative number")
ratio = _float_where(lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")


def threshold(text: str) -> float:
    """A decision threshold: any number, inf and -inf included (keep nothing / everything that may be dropped)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if value != value:
        raise argparse.ArgumentTypeError(f"expected a number such as -1, 0, 2.5 or inf, got {text!r}")
    return value


def port(text: str) -> int:
    """A TCP port, 1-65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number 1-65535, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 1-65535, got {value}")
    return value


def batch_sizes(text: str) -> tuple[int, ...]:
    """``"1,8,32"`` to (1, 8, 32): comma-separated positive integers."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers such as 1,8,32, got {text!r}")
    return values


def names(text: str) -> tuple[str, ...]:
    """``"shape,color"`` to ("shape", "color"): comma-separated names, at least one."""
    values = tuple(part.strip() for part in text.split(",") if part.strip())
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated names such as shape,color, got {text!r}")
    return values


def check_input_lengths(config, image_size: tuple[int, int], text_length: int) -> None:
    """Raise a one-line error when an image size or text length does not fit the model (the family's rule)."""
    from .. import models

    models.for_model(config).check_input_size(config, tuple(image_size), text_length)


def check_report_dir(path: str | os.PathLike, files: tuple[str, ...], force: bool, what: str = "--report") -> None:
    """Refuse to overwrite an earlier report in ``path`` (any of ``files`` present) unless ``force`` (the same
    policy as every other output: --force to overwrite)."""
    check_output_dir(path, what)
    present = [name for name in files if (Path(path) / name).exists()]
    if present and not force:
        raise PumerExportError(f"{what} {path} already holds a report ({', '.join(present)}); pass --force to "
                               "overwrite it or choose another directory")


def is_checkpoint_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a checkpoint directory (config.json) rather than an export or engine folder (which a
    manifest.json or generation.json describes)."""
    folder = Path(path)
    return (folder / "config.json").is_file() and not any(
        (folder / name).is_file() for name in ("manifest.json", "generation.json"))


def is_generation_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a checkpoint folder of a generation family (LLaVA): the commands that take both kinds
    branch on it before loading anything."""
    from ..models import is_generation

    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        import json

        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and is_generation(data)


def check_output_dir(path: str | os.PathLike, what: str = "output directory") -> None:
    """Fail fast (before any slow step) when ``path`` cannot become a directory.

    ``path`` may exist as a directory (overwriting is the caller's ``--force`` business) or not exist
    yet; an existing file there, or a parent that is a file or not writable, is a one-line error.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PumerExportError(f"{what} {path} is a file, not a directory; choose a directory path")
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise PumerExportError(f"cannot create {what} {path}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PumerExportError(f"cannot create {what} {path}: {parent} is not writable; choose another location")
    # os.access says yes to root everywhere, also on /proc or a read-only mount: try it.
    try:
        probe = tempfile.mkdtemp(prefix=".pumer-write-check-", dir=parent)
    except OSError as exc:
        raise PumerExportError(f"cannot create {what} {path}: {parent} does not accept new files "
                               f"({exc.strerror or exc}); choose another location") from None
    os.rmdir(probe)


# ------------------------------------------------------------------------ VQA data
def add_data_arguments(parser: argparse.ArgumentParser, *, split: str = "test", prefix: str = "",
                       what: str = "data") -> None:
    """The VQA data options every command shares: a named dataset, VQAv2 files or JSON lines
    (:mod:`pumer_export.datasets`). ``prefix`` names a second source (e.g. ``val-``)."""
    from ..datasets import DATASETS

    dest = prefix.replace("-", "_")
    group = parser.add_argument_group(f"{what} (one source: --{prefix}dataset, VQAv2 files or --{prefix}jsonl)")
    group.add_argument(f"--{prefix}dataset", dest=f"{dest}dataset", choices=tuple(DATASETS), metavar="NAME",
                       help=f"a named dataset: {', '.join(DATASETS)} (needs the datasets extra)")
    group.add_argument(f"--{prefix}split", dest=f"{dest}split", default=split, metavar="SPLIT",
                       help=f"the dataset's split (default {split})")
    group.add_argument(f"--{prefix}questions", dest=f"{dest}questions", metavar="FILE", help="VQAv2 question file")
    group.add_argument(f"--{prefix}annotations", dest=f"{dest}annotations", metavar="FILE",
                       help="VQAv2 annotation file")
    group.add_argument(f"--{prefix}images", dest=f"{dest}images", metavar="DIR",
                       help="image folder of the VQAv2 files (COCO-style names ending in the image id)")
    group.add_argument(f"--{prefix}jsonl", dest=f"{dest}jsonl", metavar="FILE",
                       help="JSON lines of {image, question, answers}")
    group.add_argument(f"--{prefix}answer-types", dest=f"{dest}answer_types", metavar="LIST",
                       type=names,
                       help="only questions of these comma-separated answer types (easy-VQA: yes/no, color, shape)")


def questions_from_args(args: argparse.Namespace, prefix: str = "", required: bool = True):
    """The :class:`~pumer_export.datasets.Question` list the data options name (None when none is given and
    ``required`` is false); one-line errors for a mix of sources or an incomplete one."""
    from ..datasets import load_dataset, load_jsonl, load_vqav2, of_answer_types

    dest = prefix.replace("-", "_")
    get = lambda name: getattr(args, f"{dest}{name}", None)  # noqa: E731
    vqav2 = (get("questions"), get("annotations"), get("images"))
    given = [name for name, on in ((f"--{prefix}dataset", get("dataset")), (f"--{prefix}jsonl", get("jsonl")),
                                   ("VQAv2 files", any(vqav2))) if on]
    if len(given) > 1:
        raise PumerExportError(f"pass one data source, not {' and '.join(given)}")
    if get("dataset"):
        questions = load_dataset(get("dataset"), get("split"))
    elif get("jsonl"):
        questions = load_jsonl(get("jsonl"))
    elif any(vqav2):
        if not all(vqav2):
            raise PumerExportError(f"VQAv2 data needs all three of --{prefix}questions FILE --{prefix}annotations "
                                   f"FILE --{prefix}images DIR")
        questions = load_vqav2(*vqav2)
    else:
        questions = None
    if questions is not None:
        return of_answer_types(questions, get("answer_types")) if get("answer_types") else questions
    if get("answer_types"):
        raise PumerExportError(f"--{prefix}answer-types selects from data: name it too (e.g. --{prefix}dataset "
                               "easy-vqa)")
    if required:
        raise PumerExportError(f"name the data: --{prefix}dataset easy-vqa, --{prefix}jsonl FILE, or "
                               f"--{prefix}questions FILE --{prefix}annotations FILE --{prefix}images DIR")
    return None

