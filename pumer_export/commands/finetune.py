"""``pumer-export finetune``: VQA fine-tuning of a checkpoint on a dataset, PuMer active or not."""

from __future__ import annotations

import argparse

from ._common import add_data_arguments, positive_float, positive_int, ratio


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune a checkpoint for VQA on a dataset (e.g. easy-vqa), with or without PuMer active",
        description=(
            "Fine-tune a pumer-export checkpoint (ViLT or METER) for VQA: binary cross-entropy on soft answer "
            "scores, AdamW with linear warm-up and cosine decay, PuMer's reducers in place during training unless "
            "--pumer off. After every epoch the validation accuracy is measured (on --val-* data, or on a seeded "
            "share of the training images held out); the best checkpoint is written to OUT with its processor "
            "files and labels, ready for run, eval and onnx. --resume continues an interrupted run."
        ),
        epilog=("example: pumer-export finetune ck ck-easy --dataset easy-vqa --split train --epochs 3\n"
                "         pumer-export pretrained easy-vqa-vilt init --untrained && pumer-export finetune init "
                "easy-vqa-vilt --dataset easy-vqa --split train --epochs 8 --batch-size 64 --lr 1e-3 --warmup 0.05"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    from ._common import check_output_dir, questions_from_args

    if args.resume and args.force:
        raise PumerExportError("pass --resume (continue OUT) or --force (replace OUT), not both")
    check_output_dir(args.out, "OUT")
    train = subset(questions_from_args(args), args.limit, seed=args.seed)
    validation = questions_from_args(args, prefix="val-", required=False)
    log = run_finetune(args.model, args.out, train, FinetuneOptions(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup,
        weight_decay=args.weight_decay, max_steps=args.max_steps, seed=args.seed, device=args.device,
        reduction=args.pumer, relabel=args.relabel, augment=args.augment, val_fraction=args.val_fraction,
        val_limit=args.val_limit,
        resume=args.resume, force=args.force, threads=args.threads, progress=not args.no_progress),
        validation=validation)
    info(f"wrote {args.out}: best validation accuracy {log['best_accuracy']:.2f} at step {log['best_step']} "
         f"({log['step']} steps, {log['seconds'] / 60:.1f} min); training.json has every epoch")
    return 0
