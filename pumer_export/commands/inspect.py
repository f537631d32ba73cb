"""``pumer-export inspect``: what an exported ONNX file holds."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="show the pumer nodes, token schedule, op counts and function bodies of an exported ONNX file",
        description=(
            "Summarize a model.onnx written by `pumer-export onnx`: the pumer::PumerPrune / PumerMerge nodes and "
            "their attributes, the token schedule and settings from the metadata, op counts, and whether the "
            "function bodies (what lets ONNX Runtime run the file without plugins) are present."
        ),
    )
    parser.add_argument("path", metavar="MODEL_ONNX", help="exported model.onnx (or the directory holding it)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:

    from ..console import out_console
    from ..errors import PumerExportError
    from ..onnx.files import resolve_onnx_path
    from ..onnx.inspect import render, summarize

    path = resolve_onnx_path(args.path)
    summary = summarize(path)
    if not summary["pumer_nodes"] and not any(key.startswith("pumer.") for key in summary["metadata"]):
        raise PumerExportError(
            f"{path} is not a pumer-export export (no pumer nodes, no pumer.* metadata); inspect a model.onnx "
            "written by `pumer-export onnx`, or use `polygraphy inspect model` for other ONNX files"
        )
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    for renderable in render(summary):
        out_console.print(renderable)
    return 0
