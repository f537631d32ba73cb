"""``pumer-export run``: answer questions about images with an exported model (or the checkpoint, for torch)."""

from __future__ import annotations

import argparse

from ._common import positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="answer questions about images with an export folder (ONNX Runtime, TensorRT) or a checkpoint",
        description=(
            "Answer a question about an image (or every image/question pair of a file) with an exported model (or "
            "a checkpoint, with PyTorch): "
            "inputs are prepared exactly as the checkpoint's processor does (its files travel with the export), "
            "fitted to the export's fixed image size and text length, and batched within its batch range. "
            "Prints the top-k answers with their sigmoid scores as a table or JSON."
        ),
        epilog=("examples: pumer-export run exports/pumer --image cat.jpg --question 'what is it?' --top-k 3\n"
                "          pumer-export run vilt-pumer --pairs pairs.jsonl --json     # a checkpoint: PyTorch"),
    )
    parser.add_argument("source", metavar="SOURCE", help="export folder (manifest.json, or a LLaVA export's "
                        "generation.json), TensorRT engine folder, or checkpoint directory (run with PyTorch)")
    parser.add_argument("--image", metavar="FILE", help="image file")
    parser.add_argument("--question", metavar="TEXT", help="question about the image")
    parser.add_argument("--pairs", metavar="FILE",
                        help="JSON lines of {\"image\": path, \"question\": text} (paths relative to the file)")
    parser.add_argument("--backend", choices=("ort", "trt", "torch"), default=None,
                        help="default: torch for a checkpoint directory, ort for an export folder")
    parser.add_argument("--ort-provider", "--provider", dest="provider", choices=("cpu", "cuda"), default="cpu",
                        help="ONNX Runtime provider (default cpu; --provider is the old spelling)")
    parser.add_argument("--plugins", metavar="LIB", help="TensorRT plugin library (default: found as `build` does)")
    parser.add_argument("--top-k", type=positive_int, default=5, metavar="K",
                        help="answers per question (default 5; ViLT and METER: a LLaVA generates one)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=4, metavar="N",
                        help="LLaVA: tokens generated per answer at most, greedy (default 4)")
    parser.add_argument("--batch-size", type=positive_int, default=None, metavar="B",
                        help="images per run (default: the export's largest batch)")
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N", help="CPU threads")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


def read_pairs(path) -> list[tuple[str, str]]:
    """(image path, question) pairs of a JSON-lines file (image paths relative to the file)."""
    from ..fsutil import read_json_lines, relative_to_file

    return [(str(relative_to_file(path, item["image"])), str(item["question"]))
            for _, item in read_json_lines(path, ("image", "question"), "--pairs")]


def pairs_from_args(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The (image, question) pairs of ``--image``/``--question`` or ``--pairs`` (run and ask)."""
    from ..errors import PumerExportError

    if args.pairs and (args.image or args.question):
        raise PumerExportError("pass either --pairs FILE or --image with --question, not both")
    if args.pairs:
        return read_pairs(args.pairs)
    if args.image is None or args.question is None:
        raise PumerExportError("pass --image FILE and --question TEXT (or --pairs FILE)")
    return [(args.image, args.question)]


def print_answers(pairs, answers, *, as_json: bool, many: bool) -> None:
    """Answers as JSON (one object, or a list for a pairs file) or one small table per question."""
    import json

    from ..console import out_console, table

    if as_json:
        results = [{"image": image, "question": question, "answers": found}
                   for (image, question), found in zip(pairs, answers)]
        print(json.dumps(results if many else results[0], indent=2))
        return
    for (image, question), found in zip(pairs, answers):
        out_console.print(table(f"{image}: {question}", ("answer", "score"),
                                [(a["answer"], f"{a['score']:.4f}") for a in found]))


def run(args: argparse.Namespace) -> int:
    from ..runtime import VqaPipeline

    from pathlib import Path

    from ._common import is_checkpoint_dir, is_generation_checkpoint

    pairs = pairs_from_args(args)
    if args.backend is None:
        args.backend = "torch" if is_checkpoint_dir(args.source) else "ort"
    if is_generation_checkpoint(args.source) or (Path(args.source) / "generation.json").is_file():
        from . import _generation

        return _generation.run(args, pairs)
    options = {"threads": args.threads}
    if args.backend == "ort":
        options["provider"] = args.provider
    if args.backend == "trt":
        options["plugins"] = args.plugins
    pipeline = VqaPipeline(args.source, args.backend, **options)
    answers = pipeline([p[0] for p in pairs], [p[1] for p in pairs], top_k=args.top_k, batch_size=args.batch_size)
    print_answers(pairs, answers, as_json=args.json, many=bool(args.pairs))
    return 0
