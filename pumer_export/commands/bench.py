"""``pumer-export bench``: PuMer vs baseline latency, throughput, memory and speedup per backend."""

from __future__ import annotations

import argparse

from ..backends import BACKEND_DTYPES
from ._common import add_data_arguments, batch_sizes, non_negative_int, parse_image_size, positive_int


def _str_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="benchmark the reduced model (PuMer, SmartTrim) against the baseline (same weights) on PyTorch, ONNX "
             "Runtime and TensorRT",
        description=(
            "For every backend x batch size x dtype, measure the baseline (the same weights, no reduction) and the "
            "reduced model (the checkpoint's method) interleaved in one process: latency p50/p90/p99, throughput, "
            "peak memory, and the speedup next to the FLOP-ideal ratio (for counts that depend on the input: from the "
            "counts realised on the inputs, with the kept share per trimmer). Exports the ONNX files it needs "
            "(reused when present with the same settings) unless given. Writes bench.json, bench.md and bench.png "
            "into --report."
        ),
        epilog="example: pumer-export bench ./vilt-pumer --backends torch,ort --batch-sizes 1,8 --iters 20 --report bench/",
    )
    parser.add_argument("model", metavar="MODEL", help="pumer-export checkpoint directory")
    parser.add_argument("--backends", type=_str_list, metavar="LIST", help="comma-separated: torch, ort, trt "
                        "(default: torch,ort and trt when TensorRT is installed)")
    parser.add_argument("--batch-sizes", type=batch_sizes, default=(1, 8, 32), metavar="B1,B2,...",
                        help="batch sizes to measure (default 1,8,32)")
    parser.add_argument("--dtype", type=_str_list, default=None, metavar="LIST",
                        help="comma-separated precisions (default fp32, or a given --onnx export's own); per backend: "
                             + "; ".join(f"{b} {', '.join(d)}" for b, d in BACKEND_DTYPES.items()))
    parser.add_argument("--image-size", type=parse_image_size, metavar="HxW",
                        help="default: the given export's, else the checkpoint's own image size")
    parser.add_argument("--text-length", type=positive_int, metavar="T",
                        help="default: the given export's, else the checkpoint's text position table size")
    parser.add_argument("--warmup", type=non_negative_int, default=3, metavar="N", help="warm-up runs per variant and case (default 3)")
    parser.add_argument("--iters", type=positive_int, default=20, metavar="N", help="timed runs per variant and case (default 20)")
    parser.add_argument("--report", metavar="DIR", default="bench-report", help="output directory (default bench-report)")
    parser.add_argument("--export-dir", metavar="DIR", help="where exports are written / reused (default DIR/exports)")
    parser.add_argument("--onnx", metavar="FILE", help="reuse this ONNX export of the reduced model (first dtype)")
    parser.add_argument("--onnx-baseline", metavar="FILE", help="reuse this baseline ONNX export (first dtype)")
    parser.add_argument("--engine", metavar="FILE", help="reuse this TensorRT engine of the reduced model (first dtype)")
    parser.add_argument("--engine-baseline", metavar="FILE", help="reuse this baseline TensorRT engine (first dtype)")
    parser.add_argument("--ort-provider", choices=("cpu", "cuda"), default="cpu", help="default cpu")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="PyTorch device (default cpu)")
    parser.add_argument("--threads", type=positive_int, metavar="N", help="intra-op threads for PyTorch and ONNX Runtime")
    parser.add_argument("--memory", choices=("auto", "process", "off"), default="auto",
                        help="CPU memory: auto = each variant in a process of its own (its own peak), process = "
                             "this process's peak, off (default auto)")
    add_data_arguments(parser, split="test", what="inputs (default: seeded random inputs; a batch of B is the first B "
                       "questions of a seeded draw)")
    parser.add_argument("--force", action="store_true", help="overwrite a report already in --report")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--new-tokens", type=batch_sizes, default=(2, 16), metavar="N1,N2",
                        help="LLaVA: tokens generated per sample in the end-to-end runs (default 2,16; the paper "
                             "times 2 and 128)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..bench import BenchOptions, JSON_FILE, MARKDOWN_FILE, PLOT_FILE, run_bench
    from ..console import info, out_console, table
    from ._common import check_output_dir, check_report_dir, is_generation_checkpoint, questions_from_args

    if is_generation_checkpoint(args.model):
        from . import _generation

        check_report_dir(args.report, ("report.json",), args.force)
        if args.export_dir:
            check_output_dir(args.export_dir, "--export-dir")
        return _generation.bench(args)
    check_report_dir(args.report, (JSON_FILE, MARKDOWN_FILE, PLOT_FILE), args.force)
    if args.export_dir:
        check_output_dir(args.export_dir, "--export-dir")
    options = BenchOptions(
        backends=args.backends, batch_sizes=args.batch_sizes,
        dtypes=args.dtype, image_size=args.image_size,
        text_length=args.text_length, warmup=max(args.warmup, 0), iters=args.iters, report_dir=Path(args.report),
        export_dir=Path(args.export_dir) if args.export_dir else None,
        onnx=Path(args.onnx) if args.onnx else None, onnx_baseline=Path(args.onnx_baseline) if args.onnx_baseline else None,
        engine=Path(args.engine) if args.engine else None,
        engine_baseline=Path(args.engine_baseline) if args.engine_baseline else None,
        ort_provider=args.ort_provider, device=args.device, threads=args.threads, progress=not args.no_progress,
        memory=args.memory, questions=questions_from_args(args, required=False),
    )
    bench = run_bench(args.model, options)
    rows = []
    for sp in bench["speedups"]:
        cases = {r["variant"]: r for r in bench["results"] if r["backend"] == sp["backend"]
                 and r["batch_size"] == sp["batch_size"] and r["dtype"] == sp["dtype"]}
        rows.append((sp["backend"], sp["dtype"], sp["batch_size"], f"{cases['baseline']['latency_ms']['p50']:.2f}",
                     f"{cases['pumer']['latency_ms']['p50']:.2f}", f"{sp['speedup']:.2f}x", f"{sp['flop_ideal']:.2f}x",
                     f"{sp['fraction_of_ideal']:.0%}"))
    method = bench["settings"]["method"]
    out_console.print(table(f"{method['title']} vs baseline", ("backend", "dtype", "batch", "baseline p50 ms",
                                                               f"{method['name']} p50 ms", "speedup", "FLOP-ideal",
                                                               "of ideal"), rows))
    for batch, realised in (bench["flops"].get("per_batch") or {}).items():
        info(f"batch {batch}: realised counts give a FLOP-ideal of {realised['flop_ideal']:.2f}x for the padded batch, "
             f"{realised['flop_ideal_per_sample']:.2f}x per sample; kept share "
             + ", ".join(f"{where} {v['mean']:.2f}" for where, v in realised["kept_share"].items()))
    if bench["vs_torch_eager"]:
        out_console.print(table(f"{method['title']} export vs PyTorch eager {method['title']}", ("backend", "dtype", "batch", "torch eager p50 ms",
                                                                       "backend p50 ms", "speedup"),
                                [(r["backend"], r["dtype"], r["batch_size"], f"{r['torch_eager_p50_ms']:.2f}",
                                  f"{r['backend_p50_ms']:.2f}", f"{r['speedup']:.2f}x") for r in bench["vs_torch_eager"]]))
    for name in (JSON_FILE, MARKDOWN_FILE, PLOT_FILE):
        info(f"wrote {Path(args.report) / name}")
    return 0
