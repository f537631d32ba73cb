"""Peak memory of one benchmark variant, measured in a process of its own.

A process that has run the baseline keeps the memory it freed (allocator arenas, ONNX Runtime's
arena), so measuring PuMer afterwards in the same process shows the baseline's peak again. Each
variant therefore runs in a fresh child: it loads its model (an ONNX file, or the checkpoint with or
without reducers), then for every batch size in ascending order resets the kernel's peak counter
(``/proc/self/clear_refs``), runs one inference and reads the peak resident size (``VmHWM``).
``peak_memory_mb`` is that process peak (weights and runtime included); ``run_memory_mb`` is its
growth over the resident size after loading (the activations and scratch of the largest run so far).

Used by :mod:`pumer_export.bench`; run as ``python -m pumer_export.memprobe SPEC.json``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import PumerExportError

_CLEAR_REFS = Path("/proc/self/clear_refs")


def status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def supported() -> bool:
    """Per-run peaks need Linux's /proc (VmHWM and a resettable peak)."""
    return status_kb("VmHWM") is not None and _CLEAR_REFS.exists()


def _runner(spec: dict[str, Any]):
    if spec["backend"] == "ort":
        import onnxruntime as ort

        from .backends import ort_session_options

        options = ort_session_options(spec.get("threads"))
        # Without the arena the peak follows the tensors the run keeps alive, not the arena's growth steps, so
        # the variants' own needs can be compared.
        options.enable_cpu_mem_arena = False
        session = ort.InferenceSession(spec["target"], options, providers=["CPUExecutionProvider"])
        types = {i.name: i.type for i in session.get_inputs()}

        def run(feed):
            feed = {k: v.astype(np.float16) if types.get(k) == "tensor(float16)" else v for k, v in feed.items()}
            session.run(None, feed)

        return run
    import torch

    from . import models
    from .checkpoints import load_pumer_model

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    model = load_pumer_model(spec["target"]).eval()
    if not spec["reduction"]:
        model.set_pumer_config(model.pumer_config.without_reduction())
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[spec["dtype"]]
    model.to(dtype)
    family = models.for_model(model)

    def run(feed):
        inputs = {k: torch.from_numpy(v) for k, v in feed.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
        with torch.inference_mode():
            family.reference_forward(model, inputs)

    return run


def probe(spec: dict[str, Any]) -> list[dict[str, float]]:
    """In this process: load the variant, then the peak of one run per batch size (ascending)."""
    feeds = np.load(spec["feeds"])
    run = _runner(spec)
    loaded = status_kb("VmRSS") or 0
    out = []
    for batch in sorted(spec["batch_sizes"]):
        feed = {name.split(".", 1)[1]: feeds[name] for name in feeds.files if name.startswith(f"b{batch}.")}
        reset_peak_rss()
        run(feed)
        peak = status_kb("VmHWM") or 0
        out.append({"batch_size": batch, "peak_memory_mb": peak / 1024, "run_memory_mb": (peak - loaded) / 1024})
    return out


def measure(spec: dict[str, Any], feeds: dict[int, dict[str, np.ndarray]]) -> dict[int, dict[str, Any]]:
    """Run :func:`probe` for ``spec`` in a child process; returns batch size -> memory fields."""
    with tempfile.TemporaryDirectory(prefix="pumer-memprobe-") as tmp:
        feeds_path = Path(tmp) / "feeds.npz"
        np.savez(feeds_path, **{f"b{b}.{k}": v for b, feed in feeds.items() for k, v in feed.items()})
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps({**spec, "feeds": str(feeds_path), "batch_sizes": sorted(feeds)}))
        proc = subprocess.run([sys.executable, "-m", __name__, str(spec_path)], capture_output=True, text=True,
                              check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise PumerExportError(f"memory probe of {spec['backend']} {spec.get('variant', '')} failed: {last}")
    method = ("VmHWM of a fresh process per variant, reset before each run (process peak incl. weights"
              + ("; ONNX Runtime without its CPU memory arena)" if spec["backend"] == "ort" else ")"))
    return {row["batch_size"]: {"peak_memory_mb": row["peak_memory_mb"], "memory_delta_mb": row["run_memory_mb"],
                                "memory_method": method}
            for row in json.loads(proc.stdout.strip().splitlines()[-1])}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(argv[0]).read_text())
    print(json.dumps(probe(spec)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
