"""``pumer-export doctor``: what is available for export and TensorRT deployment, and what is not."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="check the environment: CUDA, TensorRT, plugin library and creators, ONNX Runtime",
        description=(
            "Report the Python packages, ONNX Runtime execution providers, the CUDA driver and GPU, the TensorRT "
            "version, the pumer plugin library (found, loadable, op definitions matching) and whether each pumer "
            "plugin creator is registered. Run it first when a build fails. Exits 0 and marks what is missing; "
            "with --strict it exits 1 unless TensorRT builds are possible."
        ),
    )
    parser.add_argument("--plugins", metavar="LIB", default=None,
                        help="plugin library to check (default: $PUMER_PLUGINS, then the build-plugins output)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 unless everything for TensorRT builds is ok")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from ..console import err_console, out_console
    from ..tensorrt.doctor import collect, render, summary_lines

    report = collect(plugins=args.plugins)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        out_console.print(render(report))
        for line in summary_lines(report):
            err_console.print(line, soft_wrap=True, markup=False)
    if args.strict and not report["ready"]["tensorrt_build"]:
        return 1
    return 0
