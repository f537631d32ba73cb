"""``pumer-export ask``: send questions to a served pumer_vqa ensemble and print the answers."""

from __future__ import annotations

import argparse

from ._common import positive_int


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
    parser.add_argument("--top-k", type=positive_int, default=None, metavar="K",
                        help="answers per question (at most the repository's --top-k; default: all it returns)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import PumerExportError
    from ..triton.client import VqaClient
    from .run import pairs_from_args, print_answers

    pairs = pairs_from_args(args)
    if any(not question.strip() for _, question in pairs):
        raise PumerExportError("a question is empty; ask something")
    client = VqaClient(args.url, args.model)
    answers = [client.ask([image], [question])[0][: args.top_k] for image, question in pairs]
    print_answers(pairs, answers, as_json=args.json, many=bool(args.pairs))
    return 0
