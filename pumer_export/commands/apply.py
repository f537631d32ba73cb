"""``pumer-export apply``: Hugging Face ViLT checkpoint + PuMer settings -> pumer-export checkpoint."""

from __future__ import annotations

import argparse

from ._common import ratio


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "apply",
        help="add PuMer settings to a Hugging Face ViLT VQA checkpoint (training-free)",
        description=(
            "Write a pumer-export checkpoint: the weights of a Hugging Face ViltForQuestionAnswering checkpoint "
            "with PuMer token reduction at the given layers. No training; accuracy depends on the ratios."
        ),
        epilog="example: pumer-export apply ./vilt-b32-finetuned-vqa ./vilt-pumer --layers 2,5,8 --prune 0.1 --merge 0.3 --text-merge 0.2",
    )
    parser.add_argument("src", metavar="SRC", help="Hugging Face ViLT checkpoint directory (or hub id)")
    parser.add_argument("dst", metavar="DST", help="output directory (written atomically)")
    parser.add_argument("--layers", required=True, metavar="L1,L2,...", help="reduce layers, 0-based, comma-separated (e.g. 2,5,8)")
    parser.add_argument("--prune", type=ratio, metavar="RATIO", default=0.1, help="image-token prune ratio in [0, 1) (default 0.1)")
    parser.add_argument("--merge", type=ratio, metavar="RATIO", default=0.3, help="image-token merge ratio in [0, 1) (default 0.3)")
    parser.add_argument("--text-merge", type=ratio, metavar="RATIO", default=0.2, help="text-token merge ratio in [0, 1) (default 0.2)")
    parser.add_argument("--score", choices=("mean", "first_head"), default="mean",
                        help="text-to-image score source: mean over heads (default) or the first head")
    parser.add_argument("--masking", choices=("standard", "official"), default=None,
                        help="attention masking: standard or official PuMer (default: as the checkpoint was trained: "
                             "the source's own PuMer masking when it has one, else standard)")
    parser.add_argument("--force", action="store_true", help="overwrite DST if it exists")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoints import apply_pumer
    from ..config import PumerConfig, parse_layers
    from ..console import info, step
    from ._common import check_output_dir

    check_output_dir(args.dst, "DST")
    pumer = PumerConfig(
        reduce_layers=parse_layers(args.layers),
        prune_ratio=args.prune,
        image_merge_ratio=args.merge,
        text_merge_ratio=args.text_merge,
        score=args.score,
        attention_masking=args.masking or "standard",
    )
    with step(f"applying PuMer to {args.src}"):
        apply_pumer(args.src, args.dst, pumer, force=args.force, keep_masking=args.masking is None)
    info(f"wrote {args.dst}")
    return 0
