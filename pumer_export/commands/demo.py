"""``pumer-export demo``: a shipped trained model -> ONNX -> validation -> accuracy -> CPU benchmark -> report."""

from __future__ import annotations

import argparse

from ._common import positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole pipeline on a small trained model (about a minute on a 2-core CPU)",
        description=(
            "On the shipped easy-VQA checkpoint of the family (easy-vqa-vilt, or easy-vqa-meter with --model "
            "meter; PuMer settings included): export ONNX (PuMer and baseline), validate both against the PyTorch "
            "reference with ONNX Runtime, measure baseline and PuMer accuracy on the first 1000 easy-VQA test "
            "questions (needs the easy-vqa package), benchmark on the CPU and write report.md with a plot. With a "
            "GPU and TensorRT it also builds, validates and benchmarks the engines. Nothing is downloaded."
        ),
        epilog="example: pumer-export demo --out pumer-demo",
    )
    parser.add_argument("--out", metavar="DIR", default="pumer-demo", help="output directory (default pumer-demo)")
    parser.add_argument("--force", action="store_true", help="replace DIR if it holds a previous demo")
    parser.add_argument("--model", choices=("vilt", "meter"), default="vilt",
                        help="model family of the built-in model (default vilt)")
    parser.add_argument("--iters", type=positive_int, default=10, help="timed runs per benchmark case (default 10)")
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                        help="CPU threads of PyTorch and ONNX Runtime (default: theirs)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..console import info
    from ..demo import DemoOptions, run_demo
    from ._common import check_output_dir

    check_output_dir(args.out, "--out")
    summary = run_demo(DemoOptions(out=Path(args.out), force=args.force, iters=args.iters,
                                   progress=not args.no_progress, model=args.model, threads=args.threads))
    info("validation: " + ", ".join(f"{k} {'passed' if v else 'FAILED'}" for k, v in summary["validations"].items()))
    accuracy = summary["accuracy"]
    if accuracy is None:
        info(summary["accuracy_note"])
    for backend, row in (accuracy or {}).get("results", {}).items():
        info(f"accuracy, {backend}: baseline {row['baseline']:.2f}, PuMer {row['pumer']:.2f} (drop {row['drop']:+.2f} "
             f"points; {accuracy['questions']} easy-VQA test questions)")
    for backend in dict.fromkeys(sp["backend"] for sp in summary["speedups"]):
        rows = [sp for sp in summary["speedups"] if sp["backend"] == backend]
        info(f"PuMer speedup, {backend}: " + ", ".join(f"{sp['speedup']:.2f}x at batch {sp['batch_size']}" for sp in rows)
             + f" (FLOP-ideal {summary['flop_ideal']:.2f}x)")
    info(f"wrote {Path(args.out) / 'report.md'} in {summary['timings_s']['total']:.0f} s ({summary['tensorrt']})")
    return 0 if summary["passed"] else 1
