"""``pumer-export validate``: PyTorch reference vs ONNX Runtime / TensorRT, as a CI gate."""

from __future__ import annotations

import argparse
import textwrap

from ._common import add_data_arguments, parse_image_size, positive_int

EPILOG = """\
tolerances (Polygraphy syntax): --atol 1e-4 sets every float output, --atol logits:5e-4 one output
(repeat the option: --atol 1e-4 --atol logits:5e-4);
a float output passes when max|diff| <= atol OR max relative diff <= rtol. Defaults: fp32 exports
atol 1e-4, rtol 1e-3; fp16 5e-2, 5e-2; bf16 1e-1, 5e-2. Index outputs (layerL.keep_idx / image_slots / text_slots)
are compared exactly; a differing decision whose reference margin is within --tie-tolerance
(fp32 1e-4, fp16 1e-2) is reported as a near-tie, not a failure.

a quantized export (pumer-export quantize) is judged by task metrics instead: VQA top-1
agreement, answer-score error and the kept-token agreement of every reduce layer; --atol /
--rtol do not apply. Tolerances per quantization:
{gates}

exit status: 0 every check passed; 1 a check failed (the failing outputs are named);
2 a usage or input error.

examples:
  pumer-export validate ./vilt-pumer --onnx out/pumer/model.onnx --report reports/parity
  pumer-export validate ./vilt-pumer --onnx out/base          # a --no-reduction export: detected
  pumer-export validate ./vilt-pumer --onnx m.onnx --engine m.plan --inputs batch.npz --atol logits:5e-4
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..parity.quantized import describe_gates

    parser = subparsers.add_parser(
        "validate",
        help="check an ONNX export / TensorRT engine against the PyTorch reference (CI gate)",
        description=textwrap.fill(  # the raw formatter keeps the epilog's layout; wrap this by hand
            "Run identical inputs through the PyTorch reference (CPU), ONNX Runtime and TensorRT (when an engine is "
            "given) with Polygraphy's comparator; check outputs against tolerances, reduction indices against the "
            "reference (near-ties reported apart) and VQA top-1 / top-5 agreement. Writes report.json, report.md "
            "and junit.xml with --report.", width=79,
        ),
        epilog=EPILOG.format(gates=describe_gates()),
    )
    parser.add_argument("model", metavar="MODEL", help="pumer-export checkpoint directory (the reference)")
    parser.add_argument("--onnx", metavar="FILE|DIR", help="ONNX file (or export folder) to check, run with ONNX Runtime")
    parser.add_argument("--engine", metavar="FILE", help="TensorRT engine to check (needs TensorRT and a GPU)")
    parser.add_argument("--inputs", metavar="FILE|DIR",
                        help="a saved batch (.npz with input_ids, pixel_values[, attention_mask, token_type_ids, "
                             "pixel_mask]) or a folder of images + questions (questions.json mapping image file "
                             "names to questions, or listing {\"image\", \"question\"} objects; or <image>.txt "
                             "next to each image); for VQA data use the data options below; default: seeded random "
                             "inputs")
    parser.add_argument("--num-samples", type=positive_int, default=8, metavar="N", help="samples to check (default 8)")
    parser.add_argument("--batch-size", type=positive_int, default=4, metavar="B", help="samples per inference (default 4)")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the random inputs (default 0)")
    add_data_arguments(parser, split="test", what="VQA data to validate on (the first --num-samples questions)")
    parser.add_argument("--atol", action="append", metavar="[OUTPUT:]VALUE",
                        help="absolute tolerance; repeat for several outputs (see below)")
    parser.add_argument("--rtol", action="append", metavar="[OUTPUT:]VALUE",
                        help="relative tolerance; repeat for several outputs (see below)")
    parser.add_argument("--tie-tolerance", type=float, metavar="TAU",
                        help="relative margin below which a reduction decision is a near-tie")
    parser.add_argument("--ort-provider", choices=("cpu", "cuda"), default="cpu",
                        help="ONNX Runtime execution provider (default cpu)")
    parser.add_argument("--baseline", action="store_true",
                        help="run the reference without reducers (detected from an --onnx export's metadata; "
                             "needed only for an engine checked on its own)")
    parser.add_argument("--text-length", type=positive_int, metavar="T", help="text length (default: the export's)")
    parser.add_argument("--image-size", type=parse_image_size, metavar="HxW", help="image size (default: the export's)")
    parser.add_argument("--dtype", choices=("fp32", "fp16", "bf16"),
                        help="precision the tolerances are for (default: the export's)")
    parser.add_argument("--steps", type=positive_int, default=8, metavar="N",
                        help="LLaVA exports: greedy decode steps compared token for token (default 8)")
    parser.add_argument("--report", metavar="DIR", help="write report.json, report.md and junit.xml into DIR")
    parser.add_argument("--force", action="store_true", help="overwrite a report already in --report")
    parser.add_argument("--verbose", action="store_true", help="show Polygraphy's log")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..console import info, step
    from ..parity.validate import ValidateOptions, validate
    from ..parity.report import JSON_FILE, JUNIT_FILE, MARKDOWN_FILE
    from ._common import check_report_dir, is_generation_checkpoint, questions_from_args

    if is_generation_checkpoint(args.model):
        from . import _generation

        if args.report:
            check_report_dir(args.report, ("report.json",), args.force)
        return _generation.validate(args)
    if args.report:
        check_report_dir(args.report, (JSON_FILE, MARKDOWN_FILE, JUNIT_FILE), args.force)
    options = ValidateOptions(
        onnx=Path(args.onnx) if args.onnx else None,
        engine=Path(args.engine) if args.engine else None,
        inputs=args.inputs,
        questions=questions_from_args(args, required=False),
        num_samples=args.num_samples,
        batch_size=args.batch_size,
        seed=args.seed,
        atol=args.atol,
        rtol=args.rtol,
        tie_tolerance=args.tie_tolerance,
        ort_provider=args.ort_provider,
        text_length=args.text_length,
        image_size=args.image_size,
        dtype=args.dtype,
        baseline=args.baseline,
        report_dir=Path(args.report) if args.report else None,
        verbose=args.verbose,
    )
    with step(f"validating against the PyTorch reference {args.model}"):
        report = validate(args.model, options)
    for path in report.get("files", []):
        info(f"wrote {path}")
    return print_checks(report["checks"])


def print_checks(checks) -> int:
    """The checks (``backend``, ``name``, ``passed``, ``message``) as a table, then PASSED, or every failure on
    stderr; the exit status (0 all passed, 1 not)."""
    from ..console import err_console, info, out_console, table

    rows = [(c.backend, c.name, "pass" if c.passed else "FAIL", c.message) for c in checks]
    out_console.print(table("parity checks", ("backend", "check", "result", "details"), rows))
    if all(c.passed for c in checks):
        info(f"[green]PASSED[/green]: {len(checks)} checks")
        return 0
    failed = [c for c in checks if not c.passed]
    for check in failed:
        err_console.print(f"FAILED {check.backend}: {check.name}: {check.message}", markup=False)
    names = ", ".join(dict.fromkeys(c.name for c in failed))
    err_console.print(f"validation failed: {len(failed)} of {len(checks)} checks ({names})", markup=False)
    return 1
