"""``pumer-export demo``: the whole pipeline on a small built-in model, in one to a few minutes on a CPU.

1. a random VQA checkpoint of the chosen family (``checkpoint/``): ViLT (default) with ViLT-B/32's token layout
   (384x384 images in 32-pixel patches, text 40) in a 6-layer, hidden-256 encoder (``vilt-demo/``, no reduction)
   and PuMer applied to it (layers 1 and 3, ratios 0.1 / 0.3 / 0.2); or METER (``--model meter``) with
   METER-B/16's token layout at 224x224 in narrow towers and the released PuMer settings;
2. ONNX exports of PuMer and of the baseline (``onnx/pumer``, ``onnx/baseline``);
3. validation of both against the PyTorch reference with ONNX Runtime (``validate/``);
4. a CPU benchmark, PyTorch and ONNX Runtime (``bench/``: bench.json, bench.md, bench.png);
5. with a GPU and TensorRT: engines built from both exports, validated and benchmarked too;
6. ``report.md``: what ran, the verdicts and the speedups.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

from .errors import PumerExportError

DEFAULT_OUT = Path("pumer-demo")


@dataclasses.dataclass
class DemoOptions:
    out: Path = DEFAULT_OUT
    force: bool = False
    batch_sizes: Sequence[int] = (1, 4, 16)
    iters: int = 10
    warmup: int = 2
    num_samples: int = 8
    progress: bool = True
    model: str = "vilt"  # a family of pumer_export.models


def _gpu_tensorrt() -> tuple[bool, str]:
    from .parity.runners import tensorrt_available

    if not tensorrt_available():
        return False, "TensorRT is not installed: engines skipped"
    try:
        from .tensorrt.device import current_gpu

        if current_gpu() is None:
            return False, "no CUDA GPU: engines skipped"
    except Exception as exc:  # pragma: no cover - GPU machines only
        return False, f"no usable GPU ({type(exc).__name__}): engines skipped"
    return True, "GPU and TensorRT found: engines built"


def run_demo(options: DemoOptions) -> dict[str, Any]:
    """Run every step into ``options.out``; on any failure the directory is removed again."""
    out = Path(options.out)
    if out.exists():
        if not options.force:
            raise PumerExportError(f"{out} already exists; pass --force to replace it")
        if not out.is_dir() or not ((out / "report.md").is_file() or not any(out.iterdir())):
            raise PumerExportError(f"{out} is not a previous demo output; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    try:
        return _run_steps(out, options)
    except BaseException:  # an interrupted or failed demo leaves no half-written output behind
        shutil.rmtree(out, ignore_errors=True)
        raise


def _run_steps(out: Path, options: DemoOptions) -> dict[str, Any]:
    from .bench import BenchOptions, run_bench
    from . import models
    from .checkpoints import load_pumer_model
    from .console import step
    from .fsutil import write_text_atomic
    from .onnx.export import export_onnx
    from .parity.validate import ValidateOptions, validate

    family = models.get(options.model)
    image_size, text_length = family.DEMO_INPUT

    start = time.perf_counter()
    timings: dict[str, float] = {}

    def timed(name: str, t0: float) -> None:
        timings[name] = time.perf_counter() - t0

    t0 = time.perf_counter()
    with step(f"demo {family.TITLE} checkpoint + PuMer"):
        model = load_pumer_model(family.write_demo_checkpoint(out))
    timed("checkpoint", t0)

    t0 = time.perf_counter()
    onnx = {}
    with step("ONNX export (PuMer and baseline)"):
        for variant in ("pumer", "baseline"):
            result = export_onnx(model, out / "onnx" / variant, image_size=image_size, text_length=text_length,
                                 reduction=variant == "pumer", validate=False, processor_dir=out / "checkpoint")
            onnx[variant] = result.path
    timed("export", t0)

    use_trt, trt_note = _gpu_tensorrt()
    engines: dict[str, Path] = {}
    if use_trt:  # pragma: no cover - GPU machines only
        from .bench import ensure_engine

        t0 = time.perf_counter()
        with step("TensorRT engines"):
            for variant, path in onnx.items():
                engines[variant] = ensure_engine(path, out / "engines" / f"{variant}.plan",
                                                 batch_sizes=options.batch_sizes, fp16=False)
        timed("engines", t0)

    t0 = time.perf_counter()
    validations = {}
    with step("validation against the PyTorch reference"):
        for variant in ("pumer", "baseline"):
            validations[variant] = validate(out / "checkpoint", ValidateOptions(
                onnx=onnx[variant], engine=engines.get(variant), num_samples=options.num_samples,
                batch_size=min(4, options.num_samples), baseline=variant == "baseline",
                report_dir=out / "validate" / variant), model=model)
    timed("validate", t0)

    t0 = time.perf_counter()
    bench = run_bench(out / "checkpoint", BenchOptions(
        backends=["torch", "ort", *(["trt"] if use_trt else [])], batch_sizes=options.batch_sizes,
        iters=options.iters, warmup=options.warmup, report_dir=out / "bench", onnx=onnx["pumer"],
        onnx_baseline=onnx["baseline"], engine=engines.get("pumer"), engine_baseline=engines.get("baseline"),
        progress=options.progress), model=model)
    timed("bench", t0)
    timings["total"] = time.perf_counter() - start

    summary = {"out": str(out), "validations": {k: v["passed"] for k, v in validations.items()},
               "speedups": bench["speedups"], "flop_ideal": bench["flops"]["flop_ideal"], "timings_s": timings,
               "tensorrt": trt_note, "passed": all(v["passed"] for v in validations.values())}
    write_text_atomic(out / "report.md", _markdown(summary, validations, bench, family))
    return summary


def _markdown(summary: dict[str, Any], validations: dict[str, Any], bench: dict[str, Any], family) -> str:
    pumer = bench["settings"]["pumer"]
    (height, width), text_length = family.DEMO_INPUT
    lines = [
        "# pumer-export demo", "",
        f"{family.DEMO_DESCRIPTION}, PuMer at layers {pumer['reduce_layers']} "
        f"(prune {pumer['prune_ratio']}, merge {pumer['image_merge_ratio']}, text merge {pumer['text_merge_ratio']}), "
        f"image {height}x{width}, text length {text_length}. Total time {summary['timings_s']['total']:.0f} s.",
        "", "## Validation (PyTorch reference vs ONNX Runtime)", "",
        "| export | result | checks | logits max abs diff | reduction indices exact |", "|---|---|---|---|---|",
    ]
    for variant, report in validations.items():
        checks = report["checks"]
        backend = next(iter(report["comparison"]["backends"].values()), {})
        logits = backend.get("outputs", {}).get("logits", {}).get("stats", {})
        indices = backend.get("indices", {})
        exact = min((d["exact_rate"] for d in indices.values()), default=None)
        lines.append(f"| {variant} | {'PASSED' if report['passed'] else 'FAILED'} | "
                     f"{sum(c.passed for c in checks)}/{len(checks)} | {logits.get('max_abs', float('nan')):.2g} | "
                     f"{'-' if exact is None else f'{exact:.0%}'} |")
    lines += ["", "Reports: `validate/pumer/report.md`, `validate/baseline/report.md` (and report.json, junit.xml).",
              "", "## Benchmark (CPU)", "", "| backend | batch | speedup | FLOP-ideal | fraction of ideal |",
              "|---|---|---|---|---|"]
    for sp in bench["speedups"]:
        lines.append(f"| {sp['backend']} | {sp['batch_size']} | {sp['speedup']:.2f}x | {sp['flop_ideal']:.2f}x | "
                     f"{sp['fraction_of_ideal']:.0%} |")
    lines += ["", "Speedup = baseline p50 / PuMer p50 in the same process, interleaved; the FLOP-ideal ratio is the "
              "analytic FLOPs of the baseline over PuMer's. The model is narrower than the released ones, so "
              "per-operator overhead weighs more at batch 1; `pumer-export bench` on a full-size checkpoint gives "
              "the real figures (README).", "",
              "![throughput](bench/bench.png)", "", f"- TensorRT: {summary['tensorrt']}",
              "- files: `checkpoint/` (pumer-export checkpoint), `onnx/{pumer,baseline}/model.onnx`, `validate/`, `bench/`",
              "", "Re-run a step by hand:", "", "```",
              "pumer-export validate checkpoint --onnx onnx/pumer/model.onnx --report validate/pumer",
              "pumer-export bench checkpoint --backends torch,ort --batch-sizes 1,4,16 --onnx onnx/pumer/model.onnx "
              "--onnx-baseline onnx/baseline/model.onnx --report bench",
              "```", ""]
    return "\n".join(lines)
