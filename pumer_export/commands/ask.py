"""``pumer-export ask``: send questions to a served pumer_vqa ensemble and print the answers."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ask",
        help="ask a running Triton server (pumer-export serve) a question about an image",
        description="Send an image and a question (or a JSON-lines file of them) to the pumer_vqa ensemble of a "
                    "Triton server and print the answers like `pumer-export run`.",
        epilog="example: pumer-export ask --url 127.0.0.1:8000 --image cat.jpg --question 'what is it?' --json",
    )
    parser.add_argument("--url", required=True, metavar="HOST:PORT", help="the server's HTTP address")
    parser.add_argument("--image", metavar="FILE", help="image file")
    parser.add_argument("--question", metavar="TEXT", help="question about the image")
    parser.add_argument("--pairs", metavar="FILE", help="JSON lines of {\"image\", \"question\"}")
    parser.add_argument("--model", default="pumer_vqa", help="model to query (default pumer_vqa)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from ..console import out_console, table
    from ..errors import PumerExportError
    from ..triton.client import VqaClient
    from .run import read_pairs

    if args.pairs and (args.image or args.question):
        raise PumerExportError("pass either --pairs FILE or --image with --question, not both")
    if args.pairs:
        pairs = read_pairs(args.pairs)
    elif args.image is None or args.question is None:
        raise PumerExportError("pass --image FILE and --question TEXT (or --pairs FILE)")
    else:
        if not args.question.strip():
            raise PumerExportError("the question is empty; ask something")
        pairs = [(args.image, args.question)]
    client = VqaClient(args.url, args.model)
    answers = [client.ask([image], [question])[0] for image, question in pairs]
    if args.json:
        results = [{"image": image, "question": question, "answers": found}
                   for (image, question), found in zip(pairs, answers)]
        print(json.dumps(results[0] if len(results) == 1 and not args.pairs else results, indent=2))
        return 0
    for (image, question), found in zip(pairs, answers):
        out_console.print(table(f"{image}: {question}", ("answer", "score"),
                                [(a["answer"], f"{a['score']:.4f}") for a in found]))
    return 0
