"""``pumer-export triton``: a Triton model repository (pre-processing, model, post-processing, ensemble)."""

from __future__ import annotations

import argparse

from ._common import positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "triton",
        help="write a Triton Inference Server model repository for an export folder",
        description=(
            "Write a Triton model repository for an export folder: pumer_preprocess (image bytes + question -> "
            "the processor's tensors on the export's canvas, Python backend), pumer_model (the model step), "
            "pumer_postprocess (logits -> top-k answers with labels) and the pumer_vqa ensemble chaining them. "
            "max_batch_size and dynamic batching come from the export's batch range, names, dtypes and dims from "
            "its manifest. Every config.pbtxt is validated against Triton's model-config schema (tritonclient) "
            "before the repository is written (atomically). README.md in it has the server command."
        ),
        epilog="example: pumer-export triton exports/pumer triton-repo --backend python && pumer-export serve triton-repo",
    )
    parser.add_argument("export", metavar="EXPORT", help="export folder (manifest.json): ONNX, or an engine folder")
    parser.add_argument("repo", metavar="REPO", help="repository directory to write")
    parser.add_argument("--backend", choices=("python", "onnxruntime", "tensorrt"), default="python",
                        help="model step: python (the pumer-export runtime in Triton's Python backend; default), "
                             "onnxruntime (Triton's onnxruntime_onnx backend), tensorrt (tensorrt_plan)")
    parser.add_argument("--max-batch-size", type=positive_int, default=None, metavar="N",
                        help="default: the export's largest batch, at most 32")
    parser.add_argument("--top-k", type=positive_int, default=5, metavar="K", help="answers per question (default 5)")
    parser.add_argument("--instances", type=positive_int, default=1, metavar="N", help="model instances (default 1)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="instance group kind (default cpu)")
    parser.add_argument("--max-queue-delay-us", type=positive_int, default=2000, metavar="US",
                        help="dynamic batching: longest wait to form a batch (default 2000)")
    parser.add_argument("--force", action="store_true", help="replace REPO if it exists")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..console import info
    from ..triton.repository import write_repository
    from ._common import check_output_dir

    check_output_dir(args.repo, "REPO")
    plan = write_repository(args.export, args.repo, step=args.backend, max_batch_size=args.max_batch_size,
                            top_k=args.top_k, instances=args.instances, device=args.device,
                            delay_us=args.max_queue_delay_us, force=args.force)
    info(f"wrote {args.repo}: {', '.join(plan.configs)} (model step {plan.step}, max batch {plan.max_batch_size}); "
         f"start it with `pumer-export serve {args.repo}`")
    return 0
