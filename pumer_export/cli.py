"""The ``pumer-export`` command line.

Each sub-command lives in :mod:`pumer_export.commands` as a module with a
``register(subparsers)`` function; heavy imports happen inside the command's run
function so ``pumer-export --help`` stays fast. A :class:`PumerExportError` (a
user mistake or a missing component) is printed as one line and exits with 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import textwrap
from typing import Sequence

from . import __version__
from .errors import PumerExportError

#: Sub-command modules, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "convert",
    "apply",
    "info",
    "onnx_export",
    "quantize",
    "inspect",
    "build_plugins",
    "build",
    "doctor",
    "validate",
    "bench",
    "run",
    "eval",
    "finetune",
    "sweep",
    "pretrained",
    "triton",
    "serve",
    "ask",
    "demo",
)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (no usage dump)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


class _HelpFormatter(argparse.HelpFormatter):
    """Help text wrapped to the terminal paragraph by paragraph (paragraphs split by a blank line); a paragraph
    whose lines are broken on purpose (the examples of an epilog) is kept as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n\n".join("\n".join(indent + line for line in paragraph.splitlines()) if "\n" in paragraph
                           else textwrap.fill(" ".join(paragraph.split()), width, initial_indent=indent,
                                              subsequent_indent=indent, break_on_hyphens=False)
                           for paragraph in text.split("\n\n"))

    def _split_lines(self, text: str, width: int) -> list[str]:  # option names stay whole (--head-layers)
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pumer-export",
        description="Export PuMer vision-language models (ViLT, METER) to ONNX and TensorRT, check parity, measure speedup.",
    )
    parser.add_argument("--version", action="version", version=f"pumer-export {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.commands.{name}").register(subparsers)
    for command in subparsers.choices.values():
        command.formatter_class = _HelpFormatter
    parser.set_defaults(_subparsers=subparsers.choices)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Our own progress display replaces the per-file bars of transformers / huggingface_hub.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # named by the sub-command's parser, so the hint points at its own --help
        args._subparsers[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args) or 0)
    except PumerExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's own flush at exit would fail again
        return 128 + 13  # what a shell reports for a tool ended by SIGPIPE
    except OSError as exc:  # a file-system problem (permissions, a full disk, a file where a folder goes)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}; check the path, its permissions and free space", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
