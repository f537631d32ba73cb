"""``pumer-export apply``: Hugging Face ViLT checkpoint + PuMer settings -> pumer-export checkpoint."""

from __future__ import annotations

import argparse

from ._common import ratio, threshold


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "apply",
        help="add PuMer settings to a Hugging Face ViLT VQA checkpoint (training-free), or Victor / FastV to a LLaVA one",
        description=(
            "Write a pumer-export checkpoint: the weights of a Hugging Face ViltForQuestionAnswering checkpoint "
            "with PuMer token reduction at the given layers. No training; accuracy depends on the ratios. On a LLaVA "
            "checkpoint (llava-hf layout, model_type llava): --method victor adds Victor's registers (to be "
            "trained) or --method fastv FastV's settings (training-free). On a SmartTrim checkpoint: --tau / "
            "--head-tau write it with other decision thresholds (the deployment knob that trades accuracy for "
            "speed; `sweep --tau` measures the choices)."
        ),
        epilog=("examples: pumer-export apply ./vilt-b32-finetuned-vqa ./vilt-pumer --layers 2,5,8 --prune 0.1 --merge 0.3 "
                "--text-merge 0.2\n"
                "          pumer-export apply ./llava ./llava-fastv --method fastv --keep-tokens 32 --drop-layer 2\n"
                "          pumer-export apply ./meter-smarttrim ./meter-smarttrim-tau1 --tau 1"),
    )
    parser.add_argument("src", metavar="SRC", help="Hugging Face ViLT checkpoint directory (or hub id), a llava-hf "
                        "LLaVA folder, or a SmartTrim checkpoint (with --tau / --head-tau)")
    parser.add_argument("dst", metavar="DST", help="output directory (written atomically)")
    parser.add_argument("--layers", metavar="L1,L2,...", help="PuMer's reduce layers, 0-based, comma-separated (e.g. 2,5,8); required for ViLT")
    parser.add_argument("--prune", type=ratio, metavar="RATIO", default=0.1, help="image-token prune ratio in [0, 1) (default 0.1)")
    parser.add_argument("--merge", type=ratio, metavar="RATIO", default=0.3, help="image-token merge ratio in [0, 1) (default 0.3)")
    parser.add_argument("--text-merge", type=ratio, metavar="RATIO", default=0.2, help="text-token merge ratio in [0, 1) (default 0.2)")
    parser.add_argument("--score", choices=("mean", "first_head"), default="mean",
                        help="text-to-image score source: mean over heads (default) or the first head")
    parser.add_argument("--masking", choices=("standard", "official"), default=None,
                        help="attention masking: standard or official PuMer (default: as the checkpoint was trained: "
                             "the source's own PuMer masking when it has one, else standard)")
    trimmed = parser.add_argument_group("SmartTrim checkpoints: the trained trimmers' decision thresholds instead of "
                                        "PuMer (weights unchanged)")
    trimmed.add_argument("--tau", type=threshold, default=None, metavar="T",
                         help="keep a token when keep_logit - drop_logit >= T (trained at 0; larger keeps fewer; inf "
                              "keeps only token 0 of each stream, -inf every token)")
    trimmed.add_argument("--head-tau", type=threshold, default=None, metavar="T",
                         help="the same threshold for the head trimmers")
    llava = parser.add_argument_group("LLaVA checkpoints (llava-hf layout): a decoder method instead of PuMer")
    llava.add_argument("--method", choices=("pumer", "victor", "fastv"), default=None,
                       help="victor: M learned registers after the image, the visual tokens leave before decoder "
                            "layer K (pumer-export design; needs training: finetune --method victor); fastv: "
                            "training-free, keep the R visual tokens the last prompt token attends to most after "
                            "layer K (default: pumer for ViLT)")
    llava.add_argument("--registers", type=int, default=None, metavar="M", help="Victor's registers (default 8)")
    llava.add_argument("--drop-layer", type=int, default=None, metavar="K",
                       help="the decoder layer the visual tokens leave before (Victor default 3, FastV 2)")
    llava.add_argument("--keep-tokens", type=int, default=None, metavar="R", help="FastV's kept visual tokens")
    llava.add_argument("--seed", type=int, default=0, help="seed of Victor's register initialisation (default 0)")
    parser.add_argument("--force", action="store_true", help="overwrite DST if it exists")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoints import apply_pumer
    from ..config import PumerConfig, parse_layers
    from ..console import info, step
    from ..errors import PumerExportError
    from ._common import check_output_dir, is_generation_checkpoint

    check_output_dir(args.dst, "DST")
    if args.tau is not None or args.head_tau is not None:
        from ..checkpoints import retune_smarttrim

        given = [flag for flag in ("layers", "method", "masking", "registers", "drop_layer", "keep_tokens")
                 if getattr(args, flag) is not None]
        if given:
            raise PumerExportError(f"--tau / --head-tau retune a SmartTrim checkpoint and take no "
                                   f"--{given[0].replace('_', '-')}")
        with step(f"setting the decision thresholds of {args.src}"):
            model = retune_smarttrim(args.src, args.dst, tau=args.tau, head_tau=args.head_tau, force=args.force)
        settings = model.smarttrim_config
        info(f"wrote {args.dst} (tau {settings.tau:g}, head tau {settings.head_tau:g})")
        return 0
    if is_generation_checkpoint(args.src):
        from . import _generation

        return _generation.apply(args)
    if args.method not in (None, "pumer"):
        raise PumerExportError(f"--method {args.method} is for LLaVA checkpoints; {args.src} is not one")
    for flag in ("registers", "drop_layer", "keep_tokens"):
        if getattr(args, flag) is not None:
            raise PumerExportError(f"--{flag.replace('_', '-')} is for LLaVA checkpoints (--method victor|fastv)")
    if args.layers is None:
        raise PumerExportError("pass PuMer's reduce layers: --layers L1,L2,... (e.g. 2,5,8)")
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
