"""Every GPU check of the PuMer kernels in one go (needs an NVIDIA GPU, PyTorch with CUDA, nvcc and ninja).

    python tests/gpu_check.py --out gpu-results            # about 3-6 minutes on an H100-class GPU

Steps (each recorded, a failing step does not stop the later ones):

1. build the PyTorch extension over the kernel launchers (the same sources the TensorRT plugins use);
2. run the GPU harness ``tests/test_kernels_cuda.py`` (every kernel against ``pumer_export.reduce``, SmartTrim's
   compaction against the ``pumer::compact`` op);
3. run the kernels under ``compute-sanitizer`` (memcheck, racecheck, synccheck, initcheck) on the sort fallbacks,
   r at its cap, t = 3, fp16 and bf16;
4. time each kernel at ViLT-B/32 shapes (384x384: 145 image + 40 text tokens, hidden 768, 12 heads, PuMer at
   0.1 / 0.3 / 0.2 at layers 2, 5, 8) for batch 1, 8 and 32 in fp16, next to one ViLT encoder layer at the same
   shapes (transformers' ViltLayer, fp16);
5. PyTorch eager throughput and peak memory of a ViLT-B/32-shaped model (random weights, fp16, batch 32,
   scaled_dot_product_attention), baseline and PuMer interleaved, next to the FLOP-ideal ratio.

Writes ``OUT/gpu_check.json`` and ``OUT/gpu_check.md``; exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # kernel_cases: the harness's shared cases and loader
SANITIZER_TOOLS = ("memcheck", "racecheck", "synccheck", "initcheck")
BATCHES = (1, 8, 32)


def _ext(build_dir: Path):
    from kernel_cases import load_extension

    return load_extension(build_dir)


# ---- step 3: the cases run under compute-sanitizer (one process per tool) ------------------------------------------


def sanitizer_cases(ext) -> int:
    """Run the sanitizer cases once; returns the number of cases (outputs compared with the reference too)."""
    import torch

    from kernel_cases import check_merge, check_prune, merge_inputs, prune_inputs

    cases = 0
    # prune: counting-rank fallback (4097 image tokens), t (text) = 3, fp16 / bf16 tokens and attention, both
    # masking rules, a cross-attention (keys = the image tokens)
    for t_dtype, a_dtype, tokens, text_len, keep, start, masking in (
        (torch.float16, torch.bfloat16, 4105, 8, 4097, None, 0),
        (torch.bfloat16, torch.float16, 12, 3, 9, None, 1),
        (torch.float16, torch.float16, 185, 40, 131, None, 0),
        (torch.float16, torch.float16, 145, 40, 100, 0, 1),
    ):
        inputs = prune_inputs(2 if tokens < 1000 else 1, tokens, text_len, 4, 24, 8, t_dtype, a_dtype, seed=tokens,
                              attn_kind="levels", device="cuda", image_start=start)
        start = text_len if start is None else start
        got = ext.prune(*inputs, text_len, keep, -1, start, masking)
        torch.cuda.synchronize()
        check_prune(got, *inputs, keep, -1, start, masking, exact=True)
        cases += 1
    # merge: counting-rank fallback (4250 a-tokens), r at its cap, t = 3, fp16 / bf16
    for dtype, tokens, r in ((torch.float16, 8500, 4249), (torch.bfloat16, 3, 1), (torch.float16, 131, 44),
                             (torch.bfloat16, 40, 19), (torch.float16, 40, 0)):
        inputs = merge_inputs(1 if tokens > 1000 else 2, tokens, 16, 16, dtype, seed=tokens, kind="duplicates",
                              device="cuda")
        got = ext.merge(*inputs, r)
        torch.cuda.synchronize()
        check_merge(got, *inputs, r, exact=True)
        cases += 1
    return cases


def run_sanitizer(tool: str, build_dir: Path, out: Path) -> dict:
    exe = shutil.which("compute-sanitizer")
    if exe is None:
        cuda_home = os.environ.get("CUDA_HOME") or "/usr/local/cuda"
        candidate = Path(cuda_home) / "bin" / "compute-sanitizer"
        exe = str(candidate) if candidate.exists() else None
    if exe is None:
        return {"tool": tool, "status": "skipped", "reason": "compute-sanitizer not found (CUDA toolkit bin/)"}
    log = out / f"sanitizer-{tool}.log"
    cmd = [exe, "--tool", tool, "--error-exitcode", "99", "--target-processes", "all"]
    if tool == "racecheck":
        cmd += ["--racecheck-report", "all"]
    cmd += [sys.executable, str(Path(__file__)), "--sanitizer-driver", "--build-dir", str(build_dir)]
    start = time.perf_counter()
    # One cudaMalloc per tensor (no caching allocator), so memcheck sees the true bounds of every buffer.
    env = {**os.environ, "PYTORCH_NO_CUDA_MEMORY_CACHING": "1"}
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=420, env=env)
    log.write_text(proc.stdout + proc.stderr)
    summary = [line for line in (proc.stdout + proc.stderr).splitlines() if "ERROR SUMMARY" in line or "RACECHECK SUMMARY" in line]
    return {
        "tool": tool,
        "status": "passed" if proc.returncode == 0 else "failed",
        "exit_code": proc.returncode,
        "summary": summary[-1] if summary else "",
        "seconds": round(time.perf_counter() - start, 1),
        "log": log.name,
    }


# ---- step 4: timings ------------------------------------------------------------------------------------------------


def vilt_b32_layer_counts():
    """The reduce-layer counts of ViLT-B/32 at 384x384, text 40, PuMer 0.1 / 0.3 / 0.2 at layers 2, 5, 8."""
    from pumer_export.config import PumerConfig
    from pumer_export.schedule import token_schedule

    pumer = PumerConfig(reduce_layers=[2, 5, 8], prune_ratio=0.1, image_merge_ratio=0.3, text_merge_ratio=0.2)
    schedule = token_schedule(pumer, num_layers=12, text_tokens=40, image_tokens=145)
    return [c for c in schedule.layers if c.layer in (2, 5, 8)]


def timings(ext) -> list[dict]:
    import torch
    from transformers import ViltConfig
    from transformers.models.vilt.modeling_vilt import ViltLayer

    from kernel_cases import cuda_median_ms, merge_inputs, prune_inputs

    dtype = torch.float16
    layer = ViltLayer(ViltConfig()).to("cuda", dtype).eval()
    rows = []
    for batch in BATCHES:
        for counts in vilt_b32_layer_counts():
            text, images = counts.text_in, counts.image_in
            tokens = text + images
            hidden = torch.randn(batch, tokens, 768, device="cuda", dtype=dtype)
            with torch.inference_mode():
                t_layer = cuda_median_ms(lambda: layer(hidden))
            inputs = prune_inputs(batch, tokens, text, 12, 768, 64, dtype, dtype, seed=batch, mask_kind="fractional",
                                  device="cuda", head_dim=64)
            t_prune = cuda_median_ms(lambda: ext.prune(*inputs, text, counts.keep, -1, text, 0))
            xi, mi, ki = merge_inputs(batch, counts.keep, 768, 64, dtype, seed=1, device="cuda")
            t_merge_i = cuda_median_ms(lambda: ext.merge(xi, mi, ki, counts.image_merge))
            xt, mt, kt = merge_inputs(batch, text, 768, 64, dtype, seed=2, device="cuda")
            t_merge_t = cuda_median_ms(lambda: ext.merge(xt, mt, kt, counts.text_merge))
            kernels = t_prune + t_merge_i + t_merge_t
            rows.append({
                "batch": batch, "layer": counts.layer, "tokens": tokens, "keep": counts.keep,
                "image_merge": counts.image_merge, "text_merge": counts.text_merge,
                "prune_ms": round(t_prune, 4), "merge_image_ms": round(t_merge_i, 4),
                "merge_text_ms": round(t_merge_t, 4), "kernels_ms": round(kernels, 4),
                "encoder_layer_ms": round(t_layer, 4), "kernels_vs_layer": round(kernels / t_layer, 4),
            })  # fmt: skip
    return rows


def eager_comparison(batch: int = 32, iters: int = 20) -> dict:
    """PyTorch eager baseline vs PuMer on a ViLT-B/32-shaped fp16 model: median latency, throughput, peak memory."""
    import torch

    from kernel_cases import cuda_median_ms

    from pumer_export.schedule import encoder_flops
    from pumer_export.models.vilt.presets import random_inputs, vilt_b32_model

    model = vilt_b32_model().to("cuda", torch.float16).eval()
    pumer = model.pumer_config
    inputs = {k: v.cuda() for k, v in random_inputs(model.config, batch, text_length=40, image_size=(384, 384)).items()}
    inputs["pixel_values"] = inputs["pixel_values"].half()
    variants = {"baseline": pumer.without_reduction(), "pumer": pumer}

    def run(variant):
        model.set_pumer_config(variants[variant])
        with torch.inference_mode():
            model(**inputs, trim_image_padding=False)

    times: dict[str, list[float]] = {v: [] for v in variants}
    for v in variants:  # warm-up
        for _ in range(3):
            run(v)
    for i in range(iters):
        for v in (("baseline", "pumer") if i % 2 == 0 else ("pumer", "baseline")):
            times[v].append(cuda_median_ms(lambda v=v: run(v), repeats=1, warmup=0))
    out = {"batch": batch, "dtype": "fp16", "iters": iters}
    for v in variants:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        run(v)
        torch.cuda.synchronize()
        median = statistics.median(times[v])
        out[v] = {"p50_ms": round(median, 3), "throughput": round(batch / (median / 1e3), 1),
                  "peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
    flops = {}
    for v in variants:
        model.set_pumer_config(variants[v])
        flops[v] = encoder_flops(model.token_schedule(40, (384, 384)), 768, 3072)
    model.set_pumer_config(pumer)
    out["speedup"] = round(out["baseline"]["p50_ms"] / out["pumer"]["p50_ms"], 3)
    out["flop_ideal"] = round(flops["baseline"] / flops["pumer"], 3)
    return out


# ---- report ---------------------------------------------------------------------------------------------------------


def write_report(out: Path, result: dict) -> None:
    (out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# PuMer GPU check: {'PASSED' if result['passed'] else 'FAILED'}", ""]
    env = result["environment"]
    lines += [f"GPU {env.get('gpu')} (sm_{env.get('sm')}), torch {env.get('torch')}, CUDA {env.get('cuda')}", ""]
    lines += ["| step | status | detail |", "| --- | --- | --- |"]
    for step in result["steps"]:
        lines.append(f"| {step['name']} | {step['status']} | {step.get('detail', '')} |")
    if result.get("timings"):
        lines += ["", "Kernel times at ViLT-B/32 shapes (fp16, median of 50, CUDA events), per reduce layer:", "",
                  "| batch | layer | N | prune ms | merge image ms | merge text ms | kernels ms | encoder layer ms "
                  "| kernels / layer |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in result["timings"]:
            lines.append(f"| {r['batch']} | {r['layer']} | {r['tokens']} | {r['prune_ms']:.4f} | {r['merge_image_ms']:.4f} "
                         f"| {r['merge_text_ms']:.4f} | {r['kernels_ms']:.4f} | {r['encoder_layer_ms']:.4f} "
                         f"| {100 * r['kernels_vs_layer']:.1f} % |")
    eager = result.get("eager")
    if eager:
        lines += ["", f"PyTorch eager, ViLT-B/32 shapes, fp16, batch {eager['batch']} (median of {eager['iters']}, "
                      "interleaved):", "", "| variant | p50 ms | samples/s | peak memory MB |", "| --- | --- | --- | --- |"]
        for v in ("baseline", "pumer"):
            lines.append(f"| {v} | {eager[v]['p50_ms']} | {eager[v]['throughput']} | {eager[v]['peak_memory_mb']} |")
        lines += ["", f"Speedup {eager['speedup']}x, FLOP-ideal {eager['flop_ideal']}x."]
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu-check"), help="results folder (default: gpu-check)")
    parser.add_argument("--build-dir", type=Path, default=None, help="extension build folder (default: OUT/build)")
    parser.add_argument("--skip-harness", action="store_true", help="do not run tests/test_kernels_cuda.py")
    parser.add_argument("--sanitizer-driver", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    try:
        import torch
    except ImportError:
        print("error: PyTorch is not installed", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("error: no CUDA GPU is visible to PyTorch: this script checks the kernels on a GPU "
              "(on a CPU use `python -m pytest -m emulation`)", file=sys.stderr)
        return 2

    build_dir = (args.build_dir or args.out / "build").resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    if args.sanitizer_driver:
        print(f"sanitizer cases run: {sanitizer_cases(_ext(build_dir))}")
        return 0

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    props = torch.cuda.get_device_properties(0)
    result = {
        "environment": {"gpu": props.name, "sm": f"{props.major}{props.minor}", "torch": torch.__version__,
                        "cuda": torch.version.cuda, "python": platform.python_version()},
        "steps": [],
    }  # fmt: skip
    steps = result["steps"]
    started = time.perf_counter()

    t0 = time.perf_counter()
    try:
        ext = _ext(build_dir)
        steps.append({"name": "build extension", "status": "passed", "detail": f"{time.perf_counter() - t0:.0f} s"})
    except Exception as exc:  # noqa: BLE001 - recorded in the report
        steps.append({"name": "build extension", "status": "failed", "detail": str(exc).splitlines()[-1][:300]})
        ext = None

    if not args.skip_harness:
        t0 = time.perf_counter()
        junit = out / "harness-junit.xml"
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-s", str(HERE / "test_kernels_cuda.py"), f"--junitxml={junit}",
             "-p", "no:cacheprovider"],
            check=False, capture_output=True, text=True, cwd=ROOT, timeout=420,
        )  # fmt: skip
        (out / "harness.log").write_text(proc.stdout + proc.stderr)
        tail = [line for line in proc.stdout.splitlines() if line.strip()][-1:] or [""]
        steps.append({"name": "tests/test_kernels_cuda.py", "status": "passed" if proc.returncode == 0 else "failed",
                      "detail": f"{tail[0]} ({time.perf_counter() - t0:.0f} s)"})

    if ext is not None:
        for tool in SANITIZER_TOOLS:
            res = run_sanitizer(tool, build_dir, out)
            steps.append({"name": f"compute-sanitizer {tool}", "status": res["status"],
                          "detail": res.get("summary") or res.get("reason", "")})
        try:
            result["timings"] = timings(ext)
            steps.append({"name": "timings", "status": "passed", "detail": f"{len(result['timings'])} rows"})
        except Exception as exc:  # noqa: BLE001 - recorded in the report
            steps.append({"name": "timings", "status": "failed", "detail": str(exc)[:300]})
    try:
        result["eager"] = eager_comparison()
        steps.append({"name": "eager PyTorch fp16 batch 32", "status": "passed",
                      "detail": f"speedup {result['eager']['speedup']}x (FLOP-ideal {result['eager']['flop_ideal']}x)"})
    except Exception as exc:  # noqa: BLE001 - recorded in the report
        steps.append({"name": "eager PyTorch fp16 batch 32", "status": "failed", "detail": str(exc)[:300]})

    result["seconds"] = round(time.perf_counter() - started, 1)
    result["passed"] = all(s["status"] in ("passed", "skipped") for s in steps)
    write_report(out, result)
    print((out / "gpu_check.md").read_text())
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
