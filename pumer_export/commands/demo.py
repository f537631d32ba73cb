"""``pumer-export demo``: tiny model -> PuMer -> ONNX -> validation -> CPU benchmark -> report."""

from __future__ import annotations

import argparse

from ._common import positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole pipeline on a tiny built-in model (about a minute on a CPU)",
        description=(
            "On a tiny random ViLT model: apply PuMer, export ONNX (PuMer and baseline), validate both against the "
            "PyTorch reference with ONNX Runtime, benchmark on the CPU and write report.md with a plot. With a GPU "
            "and TensorRT it also builds, validates and benchmarks the engines. Nothing is downloaded."
        ),
        epilog="example: pumer-export demo --out pumer-demo",
    )
    parser.add_argument("--out", metavar="DIR", default="pumer-demo", help="output directory (default pumer-demo)")
    parser.add_argument("--force", action="store_true", help="replace DIR if it holds a previous demo")
    parser.add_argument("--iters", type=positive_int, default=10, help="timed runs per benchmark case (default 10)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..console import info
    from ..demo import DemoOptions, run_demo
    from ._common import check_output_dir

    check_output_dir(args.out, "--out")
    summary = run_demo(DemoOptions(out=Path(args.out), force=args.force, iters=args.iters,
                                   progress=not args.no_progress))
    info(f"validation: " + ", ".join(f"{k} {'passed' if v else 'FAILED'}" for k, v in summary["validations"].items()))
    info(f"wrote {Path(args.out) / 'report.md'} in {summary['timings_s']['total']:.0f} s ({summary['tensorrt']})")
    return 0 if summary["passed"] else 1
