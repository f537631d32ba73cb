"""``pumer-export sweep``: accuracy and measured speed for a grid of PuMer settings and of SmartTrim's tau, one
checkpoint or several of one model in one report (the trade-off to pick from, methods compared at matched FLOPs)."""

from __future__ import annotations

import argparse

from ._common import add_data_arguments, non_negative_int, positive_int, ratio


def _ratios(text: str) -> tuple[float, ...]:
    try:
        values = tuple(ratio(part) for part in text.split(",") if part.strip())
    except argparse.ArgumentTypeError:
        values = ()
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers in [0, 1) such as 0.1,0.3, got {text!r}")
    return values


def _layer_sets(text: str) -> tuple[tuple[int, ...], ...]:
    try:
        sets = tuple(tuple(int(x) for x in part.split(",") if x.strip()) for part in text.split(";") if part.strip())
    except ValueError:
        sets = ()
    if not sets or not all(sets) or min(min(s) for s in sets) < 0:
        raise argparse.ArgumentTypeError(f"expected layer lists separated by ';' such as '1,2;1', got {text!r}")
    return sets


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="accuracy and measured speedup for a grid of PuMer settings and SmartTrim taus (Pareto front, plot)",
        description=(
            "For every PuMer checkpoint, every combination of --layers, --prune, --merge and --text-merge (score and "
            "masking stay the checkpoint's); for every SmartTrim checkpoint, every --tau: the VQA accuracy with the "
            "PyTorch reference (PuMer points optionally after --finetune-steps of fine-tuning with those settings), "
            "the speedup over the baseline (the first checkpoint without reduction) measured interleaved in one "
            "process on PyTorch and ONNX Runtime, and the FLOP-ideal speedup. Several checkpoints of one model (same "
            "architecture and processor) go into one report, with each later method's points beside the first "
            "method's point of nearest FLOPs. Writes sweep.json, sweep.md and sweep.png (accuracy against speedup, "
            "FLOP-ideal marked, Pareto front drawn)."
        ),
        epilog="examples: pumer-export sweep ck --dataset easy-vqa --limit 1000 --prune 0,0.1,0.3 --merge 0.1,0.3,0.5\n"
               "          pumer-export sweep meter meter-smarttrim --dataset easy-vqa --tau=-1,0,1 --prune 0.2,0.5 "
               "--merge 0.2,0.5",
    )
    parser.add_argument("model", metavar="MODEL", nargs="+",
                        help="pumer-export checkpoint directories (with their processor files); the first one's "
                             "untrimmed model is the baseline")
    add_data_arguments(parser, split="test")
    parser.add_argument("--limit", type=positive_int, default=1000, metavar="N",
                        help="a seeded draw of N questions (default 1000)")
    parser.add_argument("--layers", type=_layer_sets, default=(), metavar="SETS",
                        help="reduce-layer sets separated by ';' (default: the checkpoint's)")
    parser.add_argument("--prune", type=_ratios, default=(0.1, 0.3), metavar="LIST", help="default 0.1,0.3")
    parser.add_argument("--merge", type=_ratios, default=(0.1, 0.3, 0.5), metavar="LIST", help="default 0.1,0.3,0.5")
    parser.add_argument("--text-merge", type=_ratios, default=(0.2,), metavar="LIST", help="default 0.2")
    parser.add_argument("--tau", type=_floats, default=(), metavar="LIST",
                        help="SmartTrim checkpoints: the values of the token decision's tau to sweep, e.g. --tau=-2,0,2 "
                             "(default: the checkpoint's); the PuMer grid options do not apply to them")
    parser.add_argument("--backends", default="torch,ort", metavar="LIST", help="torch and/or ort (default both)")
    parser.add_argument("--batch-size", type=positive_int, default=8, metavar="B", help="speed batch (default 8)")
    parser.add_argument("--warmup", type=non_negative_int, default=2, help="default 2")
    parser.add_argument("--iters", type=positive_int, default=10, help="timed runs per point (default 10)")
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N", help="CPU threads")
    parser.add_argument("--finetune-steps", type=non_negative_int, default=0, metavar="N",
                        help="fine-tune each point N steps with its settings in place on the --finetune-* data "
                             "(default 0: training-free)")
    add_data_arguments(parser, split="train", prefix="finetune-", what="fine-tuning data (with --finetune-steps)")
    parser.add_argument("--int8", action="store_true",
                        help="add quantization as an axis: each point's ONNX Runtime export also quantized to int8 "
                             "(dynamic), its accuracy with ONNX Runtime and its speed against the float32 baseline")
    parser.add_argument("--seed", type=int, default=0, help="seed of the question draw (default 0)")
    parser.add_argument("--report", metavar="DIR", default="sweep-report", help="output directory")
    parser.add_argument("--force", action="store_true", help="overwrite a report already in --report")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as -2,0,2, got {text!r}") from None
    if not values or any(v != v for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as -2,0,2, got {text!r}")
    return values


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..console import info
    from ..datasets import subset
    from ..errors import PumerExportError
    from ..sweep import FILES, SweepOptions, run_sweep
    from ._common import check_report_dir, questions_from_args

    check_report_dir(args.report, FILES, args.force)
    questions = subset(questions_from_args(args), args.limit, seed=args.seed)
    tuning = questions_from_args(args, prefix="finetune-", required=False)
    if args.finetune_steps and tuning is None:
        raise PumerExportError("--finetune-steps needs fine-tuning data: --finetune-dataset easy-vqa (split train) "
                               "or --finetune-jsonl FILE")
    sweep = run_sweep(args.model, questions, SweepOptions(
        layers=args.layers, prune=args.prune, merge=args.merge, text_merge=args.text_merge,
        backends=[b.strip() for b in args.backends.split(",") if b.strip()], batch_size=args.batch_size,
        warmup=args.warmup, iters=args.iters, threads=args.threads, finetune_steps=args.finetune_steps,
        precisions=("fp32", "int8") if args.int8 else ("fp32",), report_dir=Path(args.report), tau=args.tau,
        progress=not args.no_progress), tuning=tuning)
    best = [r for r in sweep["points"] if r["pareto"]]
    info(f"baseline accuracy {sweep['baseline']['accuracy']['accuracy']:.2f} ({args.model[0]} without reduction); "
         "Pareto front: "
         + "; ".join(f"{r['label']} ({r['accuracy']['accuracy']:.2f}, "
                     f"{r['speed'][sweep['settings']['pareto_backend']]['speedup']:.2f}x)" for r in best))
    info(f"wrote {Path(args.report) / 'sweep.md'} ({len(sweep['points'])} points)")
    return 0
