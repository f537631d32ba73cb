"""``pumer-export quantize``: an ONNX export folder -> an int8 (or fp8) export folder, the pumer ops kept float."""

from __future__ import annotations

import argparse

from ._common import add_data_arguments, positive_int

EPILOG = """\
what stays float: the pumer nodes and their function bodies, and the matrix products whose outputs
are the pumer nodes' decision inputs (the text queries and keys that make the pruning scores, the
keys that are the merge metrics); quantizing those would move which tokens survive. Only MatMul /
Gemm are quantized.

examples:
  pumer-export quantize ex q --mode dynamic                                  # ONNX Runtime CPU, no data
  pumer-export quantize ex qs --mode static --calibration-dataset easy-vqa    # QDQ, train split
  pumer-export quantize ex qt --for tensorrt --precision fp8 --calibration-dataset easy-vqa
  pumer-export build qt/model.onnx qt.plan                                   # strongly typed engine
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..quantize import DEFAULT_CALIBRATION_SIZE

    parser = subparsers.add_parser(
        "quantize",
        help="quantize an ONNX export folder to int8 (ONNX Runtime) or int8/fp8 Q/DQ (TensorRT)",
        description=(
            "Quantize the ONNX export folder EXPORT (a `pumer-export onnx` folder, PuMer or baseline, either family) "
            "into the export folder OUT, which validate, bench, run, eval, build and triton take as they are. "
            "--mode dynamic: int8 weights, activations quantized at run time (ONNX Runtime's quantize_dynamic; the "
            "fastest CPU export). --mode static: int8 weights and activations in QDQ form, activation ranges "
            "calibrated on the calibration data (ONNX Runtime's quantize_static). --for tensorrt: explicit Q/DQ "
            "(int8 or fp8) placed by NVIDIA's Model Optimizer for a strongly typed TensorRT engine. The manifest "
            "and the ONNX metadata record the quantization; OUT is written atomically."
        ),
        epilog=EPILOG,
    )
    parser.add_argument("export", metavar="EXPORT", help="ONNX export folder (with manifest.json)")
    parser.add_argument("out", metavar="OUT", help="output export folder (written atomically)")
    parser.add_argument("--for", dest="target", choices=("ort", "tensorrt"), default="ort",
                        help="ort: ONNX Runtime's quantization (default); tensorrt: Q/DQ with NVIDIA's Model "
                             "Optimizer for TensorRT")
    parser.add_argument("--mode", choices=("dynamic", "static"), default=None,
                        help="ort: dynamic (default) or static (calibrated QDQ); tensorrt is always static")
    parser.add_argument("--precision", choices=("int8", "fp8"), default="int8",
                        help="int8 (default); fp8 only with --for tensorrt")
    parser.add_argument("--per-tensor", action="store_true",
                        help="one weight scale per matrix instead of one per output channel (ONNX Runtime)")
    parser.add_argument("--calibration-method", choices=("minmax", "entropy", "percentile"), default="minmax",
                        help="how activation ranges are chosen from the calibration data (default minmax; "
                             "percentile: ONNX Runtime only)")
    parser.add_argument("--calibration-size", type=positive_int, default=DEFAULT_CALIBRATION_SIZE, metavar="N",
                        help=f"calibration samples, spread evenly over the data (default {DEFAULT_CALIBRATION_SIZE})")
    parser.add_argument("--calibration-inputs", metavar="FILE|DIR",
                        help="calibration data as a saved batch (.npz of the export's inputs) or a folder of images "
                             "and questions (as `validate --inputs` reads them)")
    add_data_arguments(parser, split="train", prefix="calibration-",
                       what="calibration data for --mode static / --for tensorrt")
    parser.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..console import info, step
    from ..errors import PumerExportError
    from ..manifest import read_manifest
    from ..quantize import QuantizeOptions, calibration_inputs, check_options, describe, quantize_export
    from ._common import check_output_dir, questions_from_args

    if args.target == "tensorrt" and args.mode == "dynamic":
        raise PumerExportError("--for tensorrt places calibrated Q/DQ pairs (static); --mode dynamic is for ONNX "
                               "Runtime: drop one of them")
    mode = args.mode or ("static" if args.target == "tensorrt" else "dynamic")
    check_output_dir(args.out, "OUT")
    if Path(args.out).exists() and not args.force:
        raise PumerExportError(f"{args.out} already exists; pass --force to overwrite it")
    read_manifest(args.export)  # an export folder, before any data is read
    options = QuantizeOptions(target=args.target, mode=mode, precision=args.precision,
                              per_channel=not args.per_tensor, calibration_method=args.calibration_method,
                              force=args.force)
    data_given = any(getattr(args, f"calibration_{name}") for name in ("dataset", "jsonl", "questions", "annotations",
                                                                         "images", "inputs"))
    check_options(options, has_calibration=data_given)
    if data_given:
        with step("preparing the calibration data"):
            questions = questions_from_args(args, prefix="calibration-", required=False)
            if questions is not None:  # spread over the data: easy-VQA and VQAv2 ask several questions per image
                stride = max(1, len(questions) // args.calibration_size)
                questions = list(questions)[::stride][: args.calibration_size]
            options.calibration = calibration_inputs(args.export, questions=questions, source=args.calibration_inputs,
                                                     num_samples=args.calibration_size)
    with step(f"quantizing {args.export} ({args.target}, {mode}, {args.precision})"):
        result = quantize_export(args.export, args.out, options)
    info(f"wrote {result.path}: {describe(result)} ({result.seconds:.1f}s)")
    return 0
