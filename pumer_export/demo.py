"""``pumer-export demo``: the whole pipeline on a small trained model, in about a minute on a CPU.

1. the shipped easy-VQA checkpoint of the chosen family (``checkpoint/``, :mod:`pumer_export.zoo`): ViLT (default)
   or METER (``--model meter``), each with its PuMer settings;
2. ONNX exports of PuMer and of the baseline (``onnx/pumer``, ``onnx/baseline``);
3. validation of both against the PyTorch reference with ONNX Runtime (``validate/``);
4. VQA accuracy of baseline and PuMer on the first questions of easy-VQA's test split, PyTorch and ONNX Runtime
   (``eval/``; needs the easy-vqa package, else skipped with a note);
5. a CPU benchmark, PyTorch and ONNX Runtime (``bench/``: bench.json, bench.md, bench.png; memory left out);
6. with a GPU and TensorRT: engines built from both exports, validated and benchmarked too;
7. ``report.md``: what ran, the verdicts, the accuracies and the speedups.
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
    eval_questions: int = 1000  # the first questions of easy-VQA's test split
    threads: int | None = None


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
        from .zoo import write

        model = load_pumer_model(write(family.DEMO_PRETRAINED, out / "checkpoint"))
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
    accuracy, accuracy_note = _accuracy(out, onnx, options, model)
    timed("accuracy", t0)

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
               "tensorrt": trt_note, "passed": all(v["passed"] for v in validations.values()),
               "accuracy": accuracy, "accuracy_note": accuracy_note}
    write_text_atomic(out / "report.md", _markdown(summary, validations, bench, family))
    return summary


def _accuracy(out: Path, onnx: dict[str, Path], options: DemoOptions, model) -> tuple[dict[str, Any] | None, str]:
    """Baseline and PuMer accuracy on a seeded draw of easy-VQA's test split (PyTorch and ONNX Runtime), or None
    and why not."""
    from .console import step
    from .datasets import load_dataset, subset
    from .vqa_eval import EvalOptions, run_eval

    try:
        questions = subset(load_dataset("easy-vqa", "test"), options.eval_questions)  # as `eval --limit N`
    except PumerExportError as exc:
        return None, f"accuracy skipped: {exc}"
    with step(f"accuracy on {len(questions)} easy-VQA test questions"):
        report = run_eval(out / "checkpoint", questions, EvalOptions(
            backends=("torch", "ort"), report_dir=out / "eval", exports={k: v.parent for k, v in onnx.items()},
            batch_size=32, threads=options.threads, progress=options.progress), model=model)
    rows = {backend: {"baseline": r["baseline"]["accuracy"], "pumer": r["pumer"]["accuracy"],
                      "drop": r["accuracy_drop"]} for backend, r in report["results"].items()}
    return {"questions": len(questions), "results": rows, "agreement": report["agreement"]}, \
        f"accuracy on the first {len(questions)} of easy-VQA's 9,673 test questions (eval/report.md)"


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
              "", "## Accuracy (easy-VQA test questions)", ""]
    accuracy = summary["accuracy"]
    if accuracy is None:
        lines += [summary["accuracy_note"]]
    else:
        lines += [f"{summary['accuracy_note']}.", "", "| backend | baseline | PuMer | drop (points) |", "|---|---|---|---|"]
        lines += [f"| {backend} | {r['baseline']:.2f} | {r['pumer']:.2f} | {r['drop']:+.2f} |"
                  for backend, r in accuracy["results"].items()]
        lines += [""] + [f"- top-1 agreement {name}: {value:.1%}" for name, value in accuracy["agreement"].items()]
    lines += ["", "## Benchmark (CPU)", "", "| backend | batch | speedup | FLOP-ideal | fraction of ideal |",
              "|---|---|---|---|---|"]
    for sp in bench["speedups"]:
        lines.append(f"| {sp['backend']} | {sp['batch_size']} | {sp['speedup']:.2f}x | {sp['flop_ideal']:.2f}x | "
                     f"{sp['fraction_of_ideal']:.0%} |")
    lines += ["", "Speedup = baseline p50 / PuMer p50 in the same process, interleaved; the FLOP-ideal ratio is the "
              "analytic FLOPs of the baseline over PuMer's. The model is far smaller than the released ones, so "
              "per-operator overhead weighs more at small batches; `pumer-export bench` on a full-size checkpoint "
              "gives the real figures (README). Memory is not measured here (`pumer-export bench --memory auto`).", "",
              "![throughput](bench/bench.png)", "", f"- TensorRT: {summary['tensorrt']}",
              "- files: `checkpoint/` (pumer-export checkpoint), `onnx/{pumer,baseline}/` (export folders), `validate/`, "
              "`eval/`, `bench/`",
              "", "Re-run a step by hand:", "", "```",
              "pumer-export validate checkpoint --onnx onnx/pumer/model.onnx --report validate/pumer",
              "pumer-export eval checkpoint --dataset easy-vqa --limit 1000 --report eval",
              "pumer-export bench checkpoint --backends torch,ort --batch-sizes 1,4,16 --onnx onnx/pumer/model.onnx "
              "--onnx-baseline onnx/baseline/model.onnx --report bench",
              "```", ""]
    return "\n".join(lines)
