"""``pumer-export finetune``: VQA fine-tuning of a checkpoint on a dataset, PuMer active or not, or SmartTrim-style
trimmers trained (``--method smarttrim``)."""

from __future__ import annotations

import argparse

from ._common import add_data_arguments, non_negative_float, positive_float, positive_int, ratio


def keep_share(text: str) -> float:
    """A share in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a share in (0, 1], got {text!r}")
    return value


def repeats(text: str) -> dict[str, int]:
    """``"shape=4"`` / ``"shape=4,color=2"`` to {answer type: K}, K >= 1."""
    out: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, _, count = part.rpartition("=")
        if not name or not count.isdigit() or int(count) < 1:
            raise argparse.ArgumentTypeError(f"expected TYPE=K with K a positive integer (e.g. shape=4), got {part!r}")
        out[name] = int(count)
    if not out:
        raise argparse.ArgumentTypeError(f"expected TYPE=K (e.g. shape=4), got {text!r}")
    return out


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune a checkpoint for VQA on a dataset (e.g. easy-vqa), with or without PuMer active, train "
             "SmartTrim-style trimmers (--method smarttrim) or a LLaVA and Victor's registers (--method victor)",
        description=(
            "Fine-tune a pumer-export checkpoint (ViLT or METER) for VQA: binary cross-entropy on soft answer "
            "scores, AdamW with linear warm-up and cosine decay, PuMer's reducers in place during training unless "
            "--pumer off. After every epoch the validation accuracy is measured (on --val-* data, or on a seeded "
            "share of the training images held out); the best checkpoint is written to OUT with its processor "
            "files and labels, ready for run, eval and onnx. --resume continues an interrupted run.\n\n"
            "--method smarttrim (METER) trains SmartTrim-style token and head trimmers (pumer-export design: no "
            "official code exists): attached to a plain checkpoint first (--cross-layers, --vit-layers, "
            "--head-layers), trained with hard Gumbel-softmax decisions and a straight-through gradient, "
            "self-distillation from the same weights untrimmed, and a cost on the share of FLOPs kept that falls "
            "from 1 to --target-keep over the --curriculum share of the steps. Only epochs that reach the target "
            "(within 0.02) are kept as the best.\n\n"
            "A LLaVA checkpoint trains on the same data phrased as generation (the answer word and end-of-sequence "
            "after the checkpoint's prompt, next-token loss); --method victor attaches Victor's registers to a stock "
            "one first (--registers, --drop-layer) and trains them with the projector (--train projector, Victor's "
            "stage 1) or with the decoder too (--train projector+language)."
        ),
        epilog=("example: pumer-export finetune ck ck-easy --dataset easy-vqa --split train --epochs 3\n"
                "         pumer-export pretrained easy-vqa-vilt init --untrained && pumer-export finetune init "
                "easy-vqa-vilt --dataset easy-vqa --split train --epochs 8 --batch-size 64 --lr 1e-3 --warmup 0.05"),
    )
    parser.add_argument("model", metavar="CKPT", help="pumer-export checkpoint directory (with its processor files)")
    parser.add_argument("out", metavar="OUT", help="output checkpoint directory (the best epoch's weights)")
    add_data_arguments(parser, split="train", what="training data")
    add_data_arguments(parser, split="test", prefix="val-", what="validation data (default: held-out training images)")
    parser.add_argument("--epochs", type=positive_int, default=3, help="default 3")
    parser.add_argument("--batch-size", type=positive_int, default=32, metavar="B", help="default 32")
    parser.add_argument("--lr", type=positive_float, default=5e-4, help="peak learning rate (default 5e-4)")
    parser.add_argument("--warmup", type=ratio, default=0.1, metavar="SHARE",
                        help="share of the steps spent warming the learning rate up (default 0.1)")
    parser.add_argument("--weight-decay", type=ratio, default=0.01, help="AdamW's (default 0.01)")
    parser.add_argument("--max-steps", type=positive_int, default=None, metavar="N", help="stop after N steps")
    parser.add_argument("--seed", type=int, default=0, help="seed of the batch order and the held-out images")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="default cpu")
    parser.add_argument("--pumer", choices=("config", "on", "off"), default="config",
                        help="PuMer's reducers during training: as the checkpoint is configured (default), on, or "
                             "off (the checkpoint keeps its settings either way)")
    parser.add_argument("--augment", nargs="?", const="flip", default="", choices=("flip", "dihedral"),
                        help="flip images left-right and top-bottom at random (--augment or --augment flip), or also "
                             "transpose square ones (--augment dihedral: the 8 rotations and reflections); for data "
                             "whose answers do not depend on orientation, such as easy-VQA")
    parser.add_argument("--oversample", type=repeats, default={}, metavar="TYPE=K",
                        help="the training questions of answer type TYPE appear K times an epoch (comma-separated "
                             "for several; e.g. shape=4 for easy-VQA); validation is not oversampled")
    trim = parser.add_argument_group("SmartTrim-style training (--method smarttrim)")
    trim.add_argument("--method", choices=("pumer", "smarttrim", "victor"), default=None,
                      help="the reduction method to train (default: the checkpoint's own; victor: LLaVA)")
    trim.add_argument("--target-keep", type=keep_share, default=None, metavar="R",
                      help="share of the untrimmed model's FLOPs to keep, per sample (default 0.5: 2x fewer)")
    trim.add_argument("--curriculum", type=ratio, default=None, metavar="SHARE",
                      help="share of the steps over which the target falls from 1 to R (default 0.5)")
    trim.add_argument("--cost-weight", type=positive_float, default=None, help="weight of the cost term (default 10)")
    trim.add_argument("--distill-weight", type=non_negative_float, default=None,
                      help="weight of the self-distillation term (default 1)")
    trim.add_argument("--head-target", type=keep_share, default=None, metavar="R",
                      help="share of attention heads to keep (default: no cost on heads)")
    trim.add_argument("--trimmer-lr-scale", type=positive_float, default=None, metavar="X",
                      help="the trimmers' learning rate over --lr (default 10: they start from scratch)")
    trim.add_argument("--freeze-backbone", action="store_true", help="train the trimmers only")
    trim.add_argument("--cross-layers", default=None, metavar="L,L",
                      help="co-attention blocks with token trimmers (default: all; 'none': none)")
    trim.add_argument("--vit-layers", default=None, metavar="L,L",
                      help="image-tower blocks with an image token trimmer before them (default: none)")
    trim.add_argument("--head-layers", default=None, metavar="L,L",
                      help="co-attention blocks with head trimmers (default: all; 'none': none)")
    llava = parser.add_argument_group("LLaVA (answers generated; --method victor attaches Victor to a stock one)")
    llava.add_argument("--train", choices=("all", "projector", "projector+language"), default=None,
                       help="what trains: every weight (all, the default for a stock LLaVA), Victor's stage 1 "
                            "(projector: the registers and the projector; Victor's default) or stage 2 "
                            "(projector+language: the decoder too)")
    llava.add_argument("--registers", type=positive_int, default=None, metavar="M",
                       help="Victor's registers when --method victor attaches it (default 8)")
    llava.add_argument("--drop-layer", type=int, default=None, metavar="K",
                       help="the decoder layer Victor drops the visual tokens before (default 3)")
    parser.add_argument("--relabel", action="store_true",
                        help="replace the answer head with the training data's answers")
    parser.add_argument("--val-fraction", type=ratio, default=0.05, metavar="SHARE",
                        help="share of the training images held out for validation without --val-* data "
                             "(default 0.05)")
    parser.add_argument("--val-limit", type=positive_int, default=2000, metavar="N",
                        help="validate on at most N questions (a seeded draw; default 2000)")
    parser.add_argument("--limit", type=positive_int, default=None, metavar="N",
                        help="train on a seeded draw of N questions only")
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N", help="CPU threads")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted run in OUT")
    parser.add_argument("--force", action="store_true", help="replace OUT")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..console import info
    from ..datasets import subset
    from ..errors import PumerExportError
    from ..finetune import FinetuneOptions, run_finetune
    from ._common import check_output_dir, is_generation_checkpoint, questions_from_args

    if args.resume and args.force:
        raise PumerExportError("pass --resume (continue OUT) or --force (replace OUT), not both")
    check_output_dir(args.out, "OUT")
    train = subset(questions_from_args(args), args.limit, seed=args.seed)
    validation = questions_from_args(args, prefix="val-", required=False)
    if is_generation_checkpoint(args.model):
        return _run_generation(args, train, validation)
    llava_flags = [f for f in ("train", "registers", "drop_layer") if getattr(args, f) is not None]
    if llava_flags or args.method == "victor":
        flag = "--method victor" if args.method == "victor" else "--" + llava_flags[0].replace("_", "-")
        raise PumerExportError(f"{flag} is for LLaVA checkpoints; {args.model} is not one")
    method, trim_settings, trim_training = _method_options(args)
    log = run_finetune(args.model, args.out, train, FinetuneOptions(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup,
        weight_decay=args.weight_decay, max_steps=args.max_steps, seed=args.seed, device=args.device,
        reduction=args.pumer, relabel=args.relabel, augment=args.augment, oversample=args.oversample,
        val_fraction=args.val_fraction,
        val_limit=args.val_limit,
        resume=args.resume, force=args.force, threads=args.threads, progress=not args.no_progress,
        method=method, trim_settings=trim_settings, trim_training=trim_training),
        validation=validation)
    info(f"wrote {args.out}: best validation accuracy {log['best_accuracy']:.2f} at step {log['best_step']} "
         f"({log['step']} steps, {log['seconds'] / 60:.1f} min); training.json has every epoch")
    return 0


def _run_generation(args: argparse.Namespace, train, validation) -> int:
    """A LLaVA checkpoint: answers as text (:mod:`pumer_export.generation.finetune`)."""
    from ..console import info
    from ..errors import PumerExportError
    from ..finetune import FinetuneOptions
    from ..generation.finetune import run_finetune

    for flag in ("relabel", "augment") + TRIM_FLAGS:
        if getattr(args, flag) not in (None, False, ""):
            raise PumerExportError(f"--{flag.replace('_', '-')} is for ViLT and METER checkpoints, not LLaVA")
    if args.pumer != "config":
        raise PumerExportError("--pumer is for ViLT and METER checkpoints, not LLaVA")
    if args.device != "cpu":
        raise PumerExportError("LLaVA training runs on --device cpu so far")
    victor = None
    if args.method == "victor":
        from ..methods.victor.config import VictorConfig

        victor = VictorConfig(**{k: v for k, v in (("registers", args.registers), ("drop_layer", args.drop_layer))
                                 if v is not None})
    elif args.registers is not None or args.drop_layer is not None:
        raise PumerExportError("--registers and --drop-layer set Victor's settings: add --method victor")
    parts = args.train or ("projector" if args.method == "victor" else "all")
    log = run_finetune(args.model, args.out, train, FinetuneOptions(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup,
        weight_decay=args.weight_decay, max_steps=args.max_steps, seed=args.seed, oversample=args.oversample,
        val_fraction=args.val_fraction, val_limit=args.val_limit, resume=args.resume, force=args.force,
        threads=args.threads, progress=not args.no_progress, method=args.method),
        parts=parts, victor_settings=victor, validation=validation)
    info(f"wrote {args.out}: best validation accuracy {log['best_accuracy']:.2f} at step {log['best_step']} "
         f"({log['step']} steps, {log['seconds'] / 60:.1f} min); training.json has every epoch")
    return 0


TRIM_FLAGS = ("target_keep", "curriculum", "cost_weight", "distill_weight", "head_target", "freeze_backbone",
              "trimmer_lr_scale", "cross_layers", "vit_layers", "head_layers")


def _method_options(args: argparse.Namespace):
    """(method, SmartTrimConfig or None, TrainOptions or None) from the flags; SmartTrim's flags without
    ``--method smarttrim`` are refused in one line."""
    from ..errors import PumerExportError

    given = [name for name in TRIM_FLAGS if getattr(args, name) not in (None, False)]
    if args.method != "smarttrim":
        if given:
            raise PumerExportError(f"--{given[0].replace('_', '-')} is a SmartTrim training option; add --method "
                                   "smarttrim")
        return args.method, None, None
    from ..methods.smarttrim.training import TrainOptions

    training = TrainOptions(**{name: getattr(args, name) for name in TRIM_FLAGS[:7]
                               if getattr(args, name) not in (None, False)})
    settings = {name: _layers(getattr(args, name), f"--{name.replace('_', '-')}") for name in TRIM_FLAGS[7:]
                if getattr(args, name) is not None}
    return "smarttrim", settings or None, training


def _layers(text: str, flag: str) -> tuple[int, ...]:
    from ..errors import PumerExportError

    text = text.strip()
    if text in ("", "none"):
        return ()
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise PumerExportError(f"{flag} takes comma-separated block numbers such as 0,1,2 (or none), got "
                               f"{text!r}") from None
