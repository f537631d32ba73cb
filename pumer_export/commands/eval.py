"""``pumer-export eval``: VQA accuracy of the baseline and the reduced model (PuMer or SmartTrim) on the chosen
backends (the accuracy drop)."""

from __future__ import annotations

import argparse

from ._common import add_data_arguments, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="VQA accuracy of baseline and reduced model (PuMer, SmartTrim) per backend: accuracy drop, backend "
             "agreement, throughput",
        description=(
            "Run the baseline and the reduced model of a checkpoint on a VQA set (a named dataset such as easy-vqa, "
            "VQAv2 question and annotation files with an image folder, or JSON lines of {image, question, answers}) "
            "on every chosen backend, with the same prepared inputs, and report the standard VQA accuracy (official "
            "normalisation, leave-one-out over the human answers), the reduced model's accuracy drop against the "
            "baseline, the top-1 agreement between backends and the throughput. Writes report.json and report.md. "
            "ONNX exports are made (and reused) under REPORT/exports."
        ),
        epilog=("examples: pumer-export eval ck --dataset easy-vqa --split test --backends torch,ort --report eval\n"
                "          pumer-export eval vilt-pumer --questions v2_OpenEnded_mscoco_val2014_questions.json "
                "--annotations v2_mscoco_val2014_annotations.json --images val2014 --limit 500 --report eval"),
    )
    parser.add_argument("model", metavar="MODEL", help="pumer-export checkpoint directory (with its processor files)")
    add_data_arguments(parser, split="test")
    parser.add_argument("--backends", default="torch,ort", metavar="LIST",
                        help="comma-separated: torch, ort, trt (default torch,ort); the first is the agreement "
                             "reference")
    parser.add_argument("--dtype", default=None, metavar="LIST",
                        help="comma-separated precisions (default fp32, or a given --onnx export's own): fp32; for "
                             "ort also int8 (ONNX Runtime's "
                             "dynamic quantization of the fp32 exports, made here) and int8-static (given exports "
                             "only); each ort precision is its own row")
    parser.add_argument("--onnx", metavar="DIR", help="use this export folder of the reduced model (e.g. a "
                        "`pumer-export quantize` output) for the first --dtype instead of exporting (the baseline is made in the same "
                        "precision unless --onnx-baseline is given)")
    parser.add_argument("--onnx-baseline", metavar="DIR", help="use this baseline export folder for the first --dtype")
    parser.add_argument("--limit", type=positive_int, default=None, metavar="N", help="first N questions only")
    parser.add_argument("--batch-size", type=positive_int, default=8, metavar="B", help="default 8")
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N", help="CPU threads")
    parser.add_argument("--ort-provider", choices=("cpu", "cuda"), default="cpu", help="default cpu")
    parser.add_argument("--report", metavar="DIR", default="eval-report", help="output directory (default eval-report)")
    parser.add_argument("--force", action="store_true", help="overwrite a report already in --report")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    llava = parser.add_argument_group("LLaVA checkpoints (answers generated, greedy)")
    llava.add_argument("--baseline-checkpoint", metavar="DIR",
                       help="the stock LLaVA a Victor checkpoint was trained from (default: the checkpoint's own "
                            "weights without its method; right for FastV, which trains nothing)")
    llava.add_argument("--max-new-tokens", type=positive_int, default=4, metavar="N",
                       help="tokens generated per answer at most (default 4)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..console import info
    from ..errors import PumerExportError
    from ..bench import given_precision
    from ..onnx.files import resolve_onnx_path
    from ..vqa_eval import EvalOptions, run_eval
    from ._common import check_report_dir, is_generation_checkpoint, questions_from_args

    check_report_dir(args.report, ("report.json", "report.md"), args.force)
    questions = questions_from_args(args)
    if is_generation_checkpoint(args.model):
        from . import _generation

        return _generation.evaluate(args, questions)
    if args.baseline_checkpoint:
        raise PumerExportError("--baseline-checkpoint is for LLaVA checkpoints")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    given = {variant: path for variant, path in (("pumer", args.onnx), ("baseline", args.onnx_baseline)) if path}
    exports = {variant: resolve_onnx_path(path, f"--{'onnx' if variant == 'pumer' else 'onnx-baseline'}").parent
               for variant, path in given.items()}
    dtypes = ([d.strip() for d in args.dtype.split(",") if d.strip()] if args.dtype else
              [given_precision(next(iter(exports.values()), None))]) or ["fp32"]
    if given and "ort" not in backends and "trt" not in backends:
        raise PumerExportError("--onnx / --onnx-baseline are run by the ort backend; add ort to --backends")
    report = run_eval(args.model, questions, EvalOptions(
        backends=backends, report_dir=Path(args.report), limit=args.limit, batch_size=args.batch_size,
        dtypes=dtypes, exports=exports or None,
        threads=args.threads, provider=args.ort_provider, force=args.force, progress=not args.no_progress))
    reduced = report["settings"]["method"]["title"]
    for backend, result in report["results"].items():
        info(f"{backend}: baseline {result['baseline']['accuracy']:.2f}, {reduced} {result['pumer']['accuracy']:.2f} "
             f"(drop {result['accuracy_drop']:+.2f} points), speedup "
             f"{result['speedup']:.2f}x" if result["speedup"] else f"{backend}: no timing")
    for name, cost in report["quantization_cost"].items():
        info(f"{name} vs fp32: baseline {cost['baseline']:+.2f}, {reduced} {cost['pumer']:+.2f} points")
    for name, value in report["agreement"].items():
        info(f"agreement {name}: {value:.1%}")
    info(f"wrote {Path(args.report) / 'report.json'} and report.md ({report['num_questions']} questions)")
    return 0
