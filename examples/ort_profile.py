"""Where an export spends its time in ONNX Runtime: per operator type, inside the pumer function bodies, per layer.

    python examples/ort_profile.py b32-bench/exports/fp32-pumer/model.onnx --batch 1 --threads 2
    python examples/ort_profile.py b32-bench/exports/fp32-baseline/model.onnx --batch 1 --threads 2

Runs the file with ONNX Runtime's profiler on seeded random inputs (ids = 1, masks = 1, random pixels) and prints
the kernel time per run: the total, the top operator types, the part spent in nodes inlined from the pumer
function bodies (ONNX Runtime names them after the function, with a leading "_"), and per segment between
LayerNormalization nodes (two per encoder layer) the total and the matrix-product time.
"""

from __future__ import annotations

import argparse
import collections
import json
import os

import numpy as np
import onnxruntime as ort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="model.onnx")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.enable_profiling = True
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in session.get_inputs():
        shape = [args.batch if not isinstance(d, int) else d for d in spec.shape]
        if "int" in spec.type:
            feeds[spec.name] = np.ones(shape, dtype=np.int64)
        else:
            dtype = np.float16 if "float16" in spec.type else np.float32
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
    for _ in range(args.warmup + args.runs):
        session.run(None, feeds)
    path = session.end_profiling()
    with open(path) as handle:
        events = [e for e in json.load(handle) if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    os.remove(path)
    per_run = len(events) // (args.warmup + args.runs)
    timed = events[args.warmup * per_run:]
    runs = args.runs

    by_type: collections.Counter = collections.Counter()
    body = 0.0
    for event in timed:
        by_type[event["args"]["op_name"]] += event["dur"]
        if event["name"].startswith(("_", "/")):
            body += event["dur"]
    total = sum(by_type.values())
    print(f"kernel time per run: {total / runs / 1000:.2f} ms (batch {args.batch}, {args.threads} threads)")
    print(f"  in pumer function bodies: {body / runs / 1000:.2f} ms ({body / total:.1%})")
    for op, duration in by_type.most_common(12):
        print(f"  {op:28s} {duration / runs / 1000:8.2f} ms")

    segments: collections.Counter = collections.Counter()
    matmul: collections.Counter = collections.Counter()
    norms = 0
    for event in events[args.warmup * per_run:(args.warmup + 1) * per_run]:
        op = event["args"]["op_name"]
        if op in ("LayerNormalization", "SkipLayerNormalization"):
            norms += 1
        segments[norms] += event["dur"]
        if op in ("MatMul", "FusedMatMul", "Gemm"):
            matmul[norms] += event["dur"]
    print("per segment between LayerNorms (one run): total / matrix products, ms")
    print("  " + " ".join(f"{segments[k] / 1000:.1f}/{matmul[k] / 1000:.1f}" for k in sorted(segments)))


if __name__ == "__main__":
    main()
