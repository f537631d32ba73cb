"""Speed of a LLaVA with a decoder method against the stock model on the same weights (``pumer-export bench``).

For each backend and batch size, on the same prompts (seeded random images, the built-in questions; the prompt is
the checkpoint's own layout), stock and method measured interleaved, iteration by iteration:

* vision latency (tower and projector: the same work for both) and prefill latency (the decoder's prompt pass on
  given image features: what the FLOP-ideal ratio counts), medians;
* decode: the median latency of a decode step after the prompt (eight steps timed together), as tokens per second
  (batch / step);
* end to end: samples per second generating ``new_tokens`` tokens each, end-of-sequence ignored so both variants
  run the same steps (the paper's protocol generates 2 and 128 tokens at batch 16 after a 64-token prompt; scaled
  here to what the CPU allows);

beside the FLOP-ideal ratios (:func:`pumer_export.models.llava.prefill_flops`, ``decode_flops``) and the KV-cache
bytes per layer of both. No figure is asserted anywhere: benchmarks print.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import PumerExportError


def _time(fn: Callable[[], Any]) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


#: Decode steps timed together (one step of these small models is a fraction of a millisecond).
DECODE_STEPS = 8


def _decode_steps(backend, feeds: dict[str, np.ndarray]) -> Callable[[], Any]:
    """A function running :data:`DECODE_STEPS` decode steps after the prompt, each from the prompt's cache (prefill
    done once, outside the timing)."""
    features = backend.image_features(feeds["pixel_values"])
    mask = feeds["attention_mask"].astype(np.int64)
    logits, mask_short, pasts = backend.prefill(feeds["input_ids"], mask, features)
    batch = mask.shape[0]
    token = logits[:, -1].argmax(-1)[:, None].astype(np.int64)
    position = (np.maximum(mask.cumsum(1) - 1, 0)[:, -1] + 1)[:, None]
    one = np.ones((batch, 1), np.int64)
    full, short = np.concatenate([mask, one], 1), np.concatenate([mask_short.astype(np.int64), one], 1)
    def run():
        for _ in range(DECODE_STEPS):
            backend.decode(token, position, full, short, pasts)

    return run


def measure(backends: dict[str, Any], feeds: dict[str, dict[str, np.ndarray]], *, new_tokens: Sequence[int],
            warmup: int, iters: int) -> dict[str, dict[str, float]]:
    """Medians per variant (``backends`` and ``feeds``: variant -> backend, its prompts), the variants interleaved
    in every iteration."""
    from ..runtime import generate

    def vision(backend, inputs):
        return lambda: backend.image_features(inputs["pixel_values"])

    def prefill(backend, inputs):
        features = backend.image_features(inputs["pixel_values"])
        return lambda: backend.prefill(inputs["input_ids"], inputs["attention_mask"], features)

    def generation(backend, inputs, count):
        return lambda: generate(backend, inputs["input_ids"], inputs["attention_mask"], inputs["pixel_values"],
                                count, stop_at_eos=False)  # the same number of steps for both variants

    work: dict[str, dict[str, Callable[[], Any]]] = {}
    for variant, backend in backends.items():
        inputs = feeds[variant]
        jobs = {"vision_ms": vision(backend, inputs), "prefill_ms": prefill(backend, inputs),
                "decode_steps_ms": _decode_steps(backend, inputs)}
        for count in new_tokens:
            jobs[f"generate_{count}_ms"] = generation(backend, inputs, count)
        work[variant] = jobs
    times: dict[str, dict[str, list[float]]] = {v: {name: [] for name in jobs} for v, jobs in work.items()}
    for iteration in range(warmup + iters):
        for variant, jobs in work.items():
            for name, job in jobs.items():
                elapsed = _time(job)
                if iteration >= warmup:
                    times[variant][name].append(elapsed * 1e3)
    batch = next(iter(feeds.values()))["input_ids"].shape[0]
    out: dict[str, dict[str, float]] = {}
    for variant, series in times.items():
        row = {name: statistics.median(values) for name, values in series.items()}
        row["decode_step_ms"] = row.pop("decode_steps_ms") / DECODE_STEPS
        row["decode_tokens_per_s"] = batch / (row["decode_step_ms"] / 1e3)
        for count in new_tokens:
            row[f"generate_{count}_samples_per_s"] = batch / (row[f"generate_{count}_ms"] / 1e3)
        out[variant] = row
    return out


def costs(model, stock_length: int, method_length: int, new_tokens: int) -> dict[str, Any]:
    """FLOP-ideal ratios and KV-cache bytes (one sequence, float32) of the stock model's prompt (``stock_length``
    positions) against the method's (``method_length``: Victor's prompt also holds its M registers)."""
    from ..models import llava

    config, method = model.config, _settings(model)
    prefill = (llava.prefill_flops(config, stock_length), llava.prefill_flops(config, method_length, method))
    decode = (llava.decode_flops(config, stock_length), llava.decode_flops(config, method_length, method))
    stock_kv = llava.kv_cache_bytes(config, stock_length + new_tokens)
    method_kv = llava.kv_cache_bytes(config, method_length + new_tokens, method)
    return {"prompt_length": {"stock": stock_length, "method": method_length}, "new_tokens": new_tokens,
            "prefill_gflops": {"stock": prefill[0] / 1e9, "method": prefill[1] / 1e9},
            "prefill_flop_ideal": prefill[0] / prefill[1], "decode_flop_ideal": decode[0] / decode[1],
            "kv_bytes_per_layer": {"stock": stock_kv, "method": method_kv},
            "kv_bytes_ratio": sum(method_kv) / sum(stock_kv)}


def _settings(model):
    from ..models.llava.fastv import fastv_settings
    from ..models.llava.victor import victor_settings

    return victor_settings(model.config) or fastv_settings(model.config)


def run_bench(model, processor, *, backends: Sequence[str], batch_sizes: Sequence[int], new_tokens: Sequence[int],
              warmup: int, iters: int, threads: int | None, export_dir: Path, seed: int = 0,
              progress=None) -> dict[str, Any]:
    """Every backend x batch size, stock against ``model``'s method; exports both into ``export_dir`` for ort."""
    from .. import runtime
    from ..models.llava.stock import stock
    from .answers import ensure_exports
    from .validate import random_batches

    if not model.METHOD:
        raise PumerExportError("the checkpoint is stock LLaVA: bench compares a method with it; apply one first "
                               "(pumer-export apply CKPT OUT --method victor|fastv) or bench a Victor checkpoint")
    unknown = [name for name in backends if name not in ("torch", "ort")]
    if unknown:
        raise PumerExportError(f"LLaVA checkpoints run on torch and ort so far; {unknown[0]} is not implemented for "
                               "them yet")
    if threads:
        import torch

        torch.set_num_threads(threads)
    variants = {"stock": stock(model), model.METHOD: model}
    exports = ensure_exports(variants, export_dir, progress=progress) if "ort" in backends else {}
    report: dict[str, Any] = {"method": model.METHOD, "settings": model.method_settings(), "results": []}
    lengths = (0, 0)
    for name in backends:
        made = {v: runtime.TorchGeneration(net) if name == "torch" else
                runtime.OrtGeneration(exports[v], threads=threads) for v, net in variants.items()}
        for batch in batch_sizes:
            # each variant's own prompts for the same images and questions (Victor's carry the registers)
            feeds = {v: random_batches(net, processor, batch, batch, seed)[0] for v, net in variants.items()}
            lengths = (feeds["stock"]["input_ids"].shape[1], feeds[model.METHOD]["input_ids"].shape[1])
            task = progress.add_task(f"{name} batch {batch}", total=None) if progress else None
            rows = measure(made, feeds, new_tokens=new_tokens, warmup=warmup, iters=iters)
            if progress:
                progress.remove_task(task)
            report["results"].append({"backend": name, "batch": batch, "stock": rows["stock"],
                                      "method": rows[model.METHOD],
                                      "speedup": {k: rows["stock"][k] / rows[model.METHOD][k]
                                                  for k in rows["stock"] if k.endswith("_ms")}})
    report["costs"] = costs(model, *lengths, max(new_tokens))
    return report
