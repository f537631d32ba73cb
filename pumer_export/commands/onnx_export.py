"""``pumer-export onnx``: a pumer-export checkpoint -> one ONNX file for ONNX Runtime and TensorRT."""

from __future__ import annotations

import argparse

from ._common import batch_sizes, non_negative_float, parse_image_size, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..onnx.opsets import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET

    parser = subparsers.add_parser(
        "onnx",
        help="export a checkpoint to ONNX (pumer custom ops with function bodies) and validate it",
        description=(
            "Export a pumer-export checkpoint to OUTDIR/model.onnx. Every pruning and merging step is one "
            "pumer::PumerPrune / pumer::PumerMerge node with a model-local function body in standard ONNX, so the "
            "file runs unchanged in ONNX Runtime (any execution provider, no custom library) while TensorRT can "
            "swap in plugins of the same name. The batch dimension is dynamic; image size and text length are "
            "fixed. The file is then run in ONNX Runtime at several batch sizes and compared with the PyTorch "
            "reference (logits within atol/rtol, reduction indices exact in fp32); a mismatch is an error and "
            "leaves no OUTDIR. Default tolerances: fp32 atol 1e-4, rtol 1e-3 (validate's), indices exact; fp16 "
            "(against the float32 reference) atol=rtol=1e-1, index agreement reported only."
        ),
    )
    parser.add_argument("model", metavar="MODEL", help="pumer-export checkpoint directory")
    parser.add_argument("outdir", metavar="OUTDIR", help="output directory (written atomically)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, metavar="N",
                        help=f"ONNX opset, {MIN_OPSET}..{MAX_OPSET} (default {DEFAULT_OPSET})")
    parser.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32",
                        help="weights and activations type (default fp32; fp16 keeps the pumer ops' math in fp32)")
    parser.add_argument("--image-size", type=parse_image_size, default=None, metavar="HxW",
                        help="fixed input image size (default: the checkpoint's own image size)")
    parser.add_argument("--text-length", type=positive_int, default=None, metavar="T",
                        help="fixed padded text length (default: the checkpoint's text position table size)")
    parser.add_argument("--no-reduction", action="store_true",
                        help="export the same model without reducers (the baseline of every speedup)")
    parser.add_argument("--skip-validation", action="store_true", help="do not run the file in ONNX Runtime")
    parser.add_argument("--batch-sizes", type=batch_sizes, default=(1, 3), metavar="B1,B2",
                        help="batch sizes validated from the one file (default 1,3)")
    parser.add_argument("--atol", type=non_negative_float, default=None, metavar="VALUE",
                        help="absolute tolerance of the logits (default: fp32 1e-4, fp16 1e-1)")
    parser.add_argument("--rtol", type=non_negative_float, default=None, metavar="VALUE",
                        help="relative tolerance of the logits (default: fp32 1e-4, fp16 1e-1)")
    parser.add_argument("--index-agreement", type=non_negative_float, default=None, metavar="FRACTION",
                        help="fraction of reduction indices that must equal the reference (default: fp32 1.0, fp16 0)")
    parser.add_argument("--external-data", action="store_true",
                        help="always write the weights to model.onnx.data (default: only above 1 GiB)")
    parser.add_argument("--fused-official-attention", action="store_true",
                        help="official-masking checkpoints: export the attention as the standard fused pattern with "
                             "PuMer's P7 softmax as an additive mask (its 1e-6 smoothing left out; validated against "
                             "the exact reference)")
    parser.add_argument("--force", action="store_true", help="overwrite OUTDIR if it exists")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .. import methods
    from ..checkpoints import load_pumer_config, load_pumer_model
    from ..console import info, step
    from ..errors import PumerExportError
    from ..fsutil import check_destination
    from ..onnx.export import check_settings, export_onnx
    from ..schedule import input_size

    from ._common import check_output_dir, is_generation_checkpoint

    outdir = Path(args.outdir)
    if is_generation_checkpoint(args.model):
        from . import _generation

        check_output_dir(outdir, "OUTDIR")
        return _generation.onnx(args)
    if args.skip_validation:
        given = [flag for flag, value in (("--atol", args.atol), ("--rtol", args.rtol),
                                          ("--index-agreement", args.index_agreement)) if value is not None]
        if given:
            raise PumerExportError(f"{', '.join(given)} set(s) the validation that --skip-validation turns off; "
                                   "drop one of them")
    check_output_dir(outdir, "OUTDIR")
    check_destination(outdir, args.force)
    config = load_pumer_config(args.model)
    methods.require_backend(config, "ort", "ONNX export")
    image_size, text_length = input_size(config, args.image_size, args.text_length)
    check_settings(config, opset=args.opset, dtype=args.dtype, image_size=image_size, text_length=text_length)
    if args.index_agreement is not None and args.index_agreement > 1:
        raise PumerExportError(f"--index-agreement is a fraction in [0, 1], got {args.index_agreement}")
    with step(f"loading {args.model}"):
        model = load_pumer_model(args.model)
    height, width = image_size
    method = methods.for_model(model)
    what = "baseline (no reduction)" if args.no_reduction else method.TITLE
    with step(f"exporting {what} model to ONNX (opset {args.opset}, {args.dtype}, {height}x{width}, "
              f"text {text_length})"):
        result = export_onnx(
            model, outdir, opset=args.opset, dtype=args.dtype, image_size=image_size,
            text_length=text_length, reduction=not args.no_reduction, validate=not args.skip_validation,
            validation_options={"batch_sizes": args.batch_sizes, "atol": args.atol, "rtol": args.rtol,
                                "index_agreement": args.index_agreement},
            force=args.force, external_data=True if args.external_data else None,
            fused_official_attention=args.fused_official_attention, processor_dir=args.model,
        )
    layers = result.schedule.layers
    if args.no_reduction:
        tokens = "no reduction"
    elif not method.STATIC_COUNTS:
        tokens = f"token counts depend on the input: {len(result.output_names) - 1} compactions"
    else:
        tokens = (f"tokens {result.schedule.text_tokens}+{result.schedule.image_tokens} -> "
                  f"{result.schedule.final_text_tokens}+{result.schedule.final_image_tokens}") if layers else \
            "no reduction"
    validated = "validated" if result.validation is not None else "not validated"
    info(f"wrote {result.path} ({tokens}; {validated}; {result.seconds:.1f}s)")
    return 0
