"""``pumer-export convert``: official PuMer checkpoint -> pumer-export checkpoint."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert an official PuMer ViLT or METER checkpoint to a pumer-export checkpoint",
        description=(
            "Convert an official PuMer checkpoint (config.json with reduce_layers/prune_r/merge_r/merge_text and "
            "pytorch_model.bin or model.safetensors with the official key names) into a pumer-export checkpoint: "
            "safetensors weights, the PuMer settings and the official attention masking recorded in config.json. "
            "ViLT checkpoints get the Hugging Face ViLT layout; METER checkpoints (model_type 'meter') take their "
            "text encoder's RobertaConfig from text_encoder_config.json next to the weights when present, else "
            "roberta-base's (built in, no download). Lossless. Official checkpoints carry no processor: --processor "
            "DIR adds the tokenizer and image processor files of DIR (e.g. a saved dandelin/vilt-b32-finetuned-vqa) "
            "so that run, eval and onnx exports can prepare inputs."
        ),
    )
    parser.add_argument("src", metavar="SRC", help="official checkpoint directory (or hub id)")
    parser.add_argument("dst", metavar="DST", help="output directory (written atomically)")
    parser.add_argument("--processor", metavar="DIR", default=None,
                        help="a folder with the tokenizer and image processor files to add to DST")
    parser.add_argument("--force", action="store_true", help="overwrite DST if it exists")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoints import convert_official
    from ..console import info, step
    from ._common import check_output_dir

    check_output_dir(args.dst, "DST")
    if args.processor is not None:
        from ..processing import load_processor

        load_processor(args.processor)  # one line now for a folder that holds no usable processor
    with step(f"converting {args.src}"):
        model = convert_official(args.src, args.dst, force=args.force, processor=args.processor)
    pumer = model.pumer_config
    info(
        f"wrote {args.dst}: {model.config.model_type}, {model.config.num_hidden_layers} layers, hidden {model.config.hidden_size}, "
        f"reduce layers {list(pumer.reduce_layers)}, prune {pumer.prune_ratio}, merge {pumer.image_merge_ratio}, "
        f"text merge {pumer.text_merge_ratio}, score {pumer.score}, masking {pumer.attention_masking}"
        + ("" if args.processor else "; no processor files (run and eval need them: --processor DIR)")
    )
    return 0
