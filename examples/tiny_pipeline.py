#!/usr/bin/env python
"""The tiny end-to-end pipeline through the Python API (CPU, no downloads, about a minute).

    python examples/tiny_pipeline.py [OUT_DIR]

1. a tiny random ViLT VQA checkpoint, then PuMer applied to it (training-free);
2. ONNX exports of PuMer and of the baseline (same weights, no reducers);
3. validation of both against the PyTorch reference with ONNX Runtime (Polygraphy's comparator);
4. a short CPU benchmark (PyTorch and ONNX Runtime, baseline vs PuMer interleaved).

The same steps from the shell: ``pumer-export apply``, ``pumer-export onnx``, ``pumer-export validate``,
``pumer-export bench`` (see examples/vilt_b32_walkthrough.md); all of it in one command: ``pumer-export demo``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pumer_export.bench import BenchOptions, run_bench
from pumer_export.checkpoints import apply_pumer, load_pumer_model
from pumer_export.config import PumerConfig
from pumer_export.onnx.export import export_onnx
from pumer_export.parity.validate import ValidateOptions, validate
from pumer_export.models.vilt.presets import tiny_vilt_model

IMAGE_SIZE = (96, 96)
TEXT_LENGTH = 40


def main(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)

    # 1. A plain (no PuMer) tiny ViLT checkpoint, then PuMer at layers 1 and 3.
    tiny_vilt_model(seed=0, pumer=None).save_pretrained(out / "vilt-tiny")
    pumer = PumerConfig(reduce_layers=(1, 3), prune_ratio=0.1, image_merge_ratio=0.3, text_merge_ratio=0.2)
    apply_pumer(out / "vilt-tiny", out / "vilt-tiny-pumer", pumer, force=True)
    model = load_pumer_model(out / "vilt-tiny-pumer")
    print("token schedule:", [(c.layer, c.tokens_in, c.tokens_out) for c in
                              model.token_schedule(TEXT_LENGTH, IMAGE_SIZE).layers])

    # 2. ONNX: PuMer and the baseline (reduction=False).
    onnx = {}
    for variant in ("pumer", "baseline"):
        onnx[variant] = export_onnx(model, out / "onnx" / variant, image_size=IMAGE_SIZE, text_length=TEXT_LENGTH,
                                    reduction=variant == "pumer", force=True).path

    # 3. Parity: reference vs ONNX Runtime, reports in out/validate/<variant>.
    passed = True
    for variant, path in onnx.items():
        report = validate(out / "vilt-tiny-pumer", ValidateOptions(
            onnx=path, baseline=variant == "baseline", num_samples=8, report_dir=out / "validate" / variant))
        print(f"validate {variant}: {'PASSED' if report['passed'] else 'FAILED ' + ', '.join(report['failures'])}")
        passed &= report["passed"]

    # 4. Benchmark (tiny model: overhead-bound, the numbers only show the mechanics).
    bench = run_bench(out / "vilt-tiny-pumer", BenchOptions(
        backends=["torch", "ort"], batch_sizes=[1, 8], iters=5, warmup=1, report_dir=out / "bench",
        onnx=onnx["pumer"], onnx_baseline=onnx["baseline"], progress=False))
    for sp in bench["speedups"]:
        print(f"{sp['backend']:5} batch {sp['batch_size']:2}: speedup {sp['speedup']:.2f}x "
              f"(FLOP-ideal {sp['flop_ideal']:.2f}x)")
    print(f"reports in {out}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("pumer-demo/tiny-pipeline")))
