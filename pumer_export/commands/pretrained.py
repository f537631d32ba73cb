"""``pumer-export pretrained``: write a small trained checkpoint that ships with the package."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pretrained",
        help="write a small trained checkpoint that ships with pumer-export (easy-vqa-vilt, easy-vqa-meter, "
             "easy-vqa-meter-smarttrim, easy-vqa-llava, easy-vqa-llava-victor)",
        description=(
            "Write one of the small checkpoints trained on easy-VQA that ship with the package as an ordinary "
            "checkpoint folder (config, float32 weights, processor files; the LLaVA ones in the llava-hf layout), "
            "ready for info, run, eval, onnx, validate and bench. --list names them with what they measured; --untrained writes the same "
            "architecture with seeded random weights, where their training recipe starts."
        ),
        epilog="example: pumer-export pretrained easy-vqa-vilt ck && pumer-export eval ck --dataset easy-vqa",
    )
    parser.add_argument("name", metavar="NAME", nargs="?", help="the model's name (see --list)")
    parser.add_argument("out", metavar="OUT", nargs="?", help="output checkpoint directory")
    parser.add_argument("--list", action="store_true", help="list the models, their training and their accuracy")
    parser.add_argument("--untrained", action="store_true",
                        help="the architecture with seeded random weights (the start of the training recipe)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --untrained (default 0)")
    parser.add_argument("--force", action="store_true", help="replace OUT")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..console import info
    from ..errors import PumerExportError
    from .. import zoo
    from ._common import check_output_dir

    if args.list:
        for name in zoo.names():
            spec, card = zoo.entry(name), zoo.card(name)
            print(f"{name}: {spec.description}")
            for line in card.get("summary", []):
                print(f"    {line}")
        return 0
    if not args.name or not args.out:
        raise PumerExportError("name a model and an output folder, e.g. `pumer-export pretrained easy-vqa-vilt ck` "
                               "(`--list` names the models)")
    zoo.entry(args.name)
    check_output_dir(args.out, "OUT")
    zoo.write(args.name, args.out, force=args.force, untrained_seed=args.seed if args.untrained else None)
    what = "untrained (seeded random weights)" if args.untrained else "trained"
    info(f"wrote {args.out}: {args.name}, {what}")
    return 0
