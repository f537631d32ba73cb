"""``pumer-export bench``: PuMer vs baseline latency, throughput and memory per backend.

For every backend x dtype x batch size both variants (``baseline``: the same weights without
reducers; ``pumer``) are measured in the same process, interleaved: after ``warmup`` runs of
each, ``iters`` rounds run baseline and PuMer back to back (alternating which goes first), so
a slow phase of a noisy machine hits both. Reported per case:

* latency p50 / p90 / p99 (ms) and throughput (batch / p50 latency, samples/s);
* peak memory (MB). CPU backends: each variant in a fresh process of its own
  (:mod:`pumer_export.memprobe`: a process that ran the baseline keeps the memory it freed, so
  one process cannot tell the variants apart): ``peak_memory_mb`` is that process's peak resident
  size during one run (weights included), ``memory_delta_mb`` its growth over the size after
  loading (the run's own activations and scratch). ``memory="process"`` measures in this process
  instead, ``"off"`` not at all. GPU backends: device memory (``torch.cuda.max_memory_allocated``
  for PyTorch, device memory in use from ``cudaMemGetInfo`` after the run for ONNX Runtime CUDA /
  TensorRT). ``memory_method`` says which.

and per backend x dtype x batch the speedup (baseline p50 / PuMer p50) next to the FLOP-ideal
ratio (:func:`pumer_export.schedule.encoder_flops` of the baseline over PuMer's schedule) and the
fraction of it achieved (speedup / ideal).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
import resource
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .backends import BACKEND_DTYPES, BACKENDS, QUANTIZED
from .errors import MissingDependencyError, PumerExportError

VARIANTS = ("baseline", "pumer")
#: Below these a warning says the figures are noisy.
MIN_RELIABLE_ITERS = 10
#: A speedup above the FLOP-ideal ratio by more than this factor is flagged as suspect.
IDEAL_EXCESS_WARNING = 1.10
#: p90 / p50 above which a case's runs vary too much to trust its ratio.
SPREAD_WARNING = 1.5
JSON_FILE = "bench.json"
MARKDOWN_FILE = "bench.md"
PLOT_FILE = "bench.png"
FORMAT_VERSION = 1


@dataclasses.dataclass
class BenchOptions:
    backends: Sequence[str] | None = None  # None: torch, ort and trt when TensorRT is installed
    batch_sizes: Sequence[int] = (1, 8, 32)
    dtypes: Sequence[str] | None = ("fp32",)  # None: a given export's precision, else fp32
    image_size: tuple[int, int] | None = None
    text_length: int | None = None
    warmup: int = 3
    iters: int = 20
    report_dir: Path = Path("bench-report")
    export_dir: Path | None = None  # default: report_dir / "exports"
    onnx: Path | None = None
    onnx_baseline: Path | None = None
    engine: Path | None = None
    engine_baseline: Path | None = None
    ort_provider: str = "cpu"
    device: str = "cpu"  # PyTorch device
    threads: int | None = None
    seed: int = 0
    progress: bool = True
    #: "auto": CPU memory per variant in a fresh process (Linux), "process": this process's peak, "off"
    memory: str = "auto"
    #: VQA questions (:mod:`pumer_export.datasets`) whose first B (seeded draw) make the batch of size B; None:
    #: seeded random inputs. A method whose counts depend on the input (SmartTrim) is only measured honestly on
    #: real data.
    questions: Sequence[Any] | None = None


# ----------------------------------------------------------------------------- memory
def measure_cpu_memory(fn: Callable[[], Any]) -> dict[str, Any]:
    """Peak RSS (MB) of this process while ``fn`` runs once. Memory freed by earlier runs stays resident, so
    variants measured one after the other in one process look alike; :mod:`pumer_export.memprobe` measures
    each in a process of its own (the default)."""
    from .memprobe import reset_peak_rss, status_kb

    gc.collect()
    before = status_kb("VmRSS")
    reset = reset_peak_rss()
    fn()
    peak = status_kb("VmHWM") if reset else None
    method = "VmHWM after reset (process peak during the run, this process: variants share it)"
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        method = "ru_maxrss (process-lifetime peak)"
    return {"peak_memory_mb": peak / 1024, "memory_delta_mb": (peak - before) / 1024 if before else None,
            "memory_method": method}


def measure_gpu_memory(fn: Callable[[], Any], backend: str) -> dict[str, Any]:
    import torch

    torch.cuda.synchronize()
    if backend == "torch":
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return {"peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20, "memory_delta_mb": None,
                "memory_method": "torch.cuda.max_memory_allocated"}
    free_before, total = torch.cuda.mem_get_info()
    fn()
    torch.cuda.synchronize()
    free_after, _ = torch.cuda.mem_get_info()
    return {"peak_memory_mb": (total - free_after) / 2**20, "memory_delta_mb": (free_before - free_after) / 2**20,
            "memory_method": "device memory in use after the run (cudaMemGetInfo, whole device)"}


# ----------------------------------------------------------------------------- runners
def _percentiles(samples_ms: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(samples_ms, dtype=np.float64)
    return {"p50": float(np.percentile(arr, 50)), "p90": float(np.percentile(arr, 90)),
            "p99": float(np.percentile(arr, 99)), "mean": float(arr.mean()), "min": float(arr.min())}


class _TorchVariant:
    def __init__(self, model, reduction: bool, device: str, dtype: str):
        import torch

        from . import models

        self.model, self.reduction, self.device = model, reduction, device
        self.family = models.for_model(model)
        self.torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]

    def prepare(self, feed: dict[str, np.ndarray]):
        import torch

        inputs = {k: torch.from_numpy(v).to(self.device) for k, v in feed.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.torch_dtype)
        return inputs

    def __call__(self, inputs):
        import torch

        from .models import reduction_set

        with reduction_set(self.model, self.reduction), torch.inference_mode():  # (the model is shared)
            out = self.family.reference_forward(self.model, inputs).logits
            if self.device != "cpu":
                torch.cuda.synchronize()
        return out


class _OrtVariant:
    def __init__(self, path: Path, provider: str, threads: int | None):
        import onnxruntime as ort

        from .backends import ort_session_options
        from .parity.runners import ORT_PROVIDERS

        wanted = ORT_PROVIDERS[provider]
        if wanted not in ort.get_available_providers():
            raise MissingDependencyError(f"ONNX Runtime has no {wanted} here; install onnxruntime-gpu for CUDA")
        self.session = ort.InferenceSession(str(path), ort_session_options(threads), providers=[wanted])
        self.types = {i.name: i.type for i in self.session.get_inputs()}

    def prepare(self, feed):
        out = {}
        for name, value in feed.items():
            kind = self.types.get(name, "")
            out[name] = value.astype(np.float16) if kind == "tensor(float16)" else value
        return out

    def __call__(self, feed):
        return self.session.run(None, feed)


class _TrtVariant:
    def __init__(self, path: Path):
        from polygraphy.backend.trt import TrtRunner

        from .parity.runners import load_trt_engine

        self.runner = TrtRunner(load_trt_engine(path))
        self.runner.activate()

    def prepare(self, feed):
        return feed

    def __call__(self, feed):
        return self.runner.infer(feed, check_inputs=False)


def time_interleaved(variants: dict[str, Any], prepared: dict[str, Any], *, warmup: int, iters: int,
                     tick: Callable[[], Any] | None = None) -> dict[str, list[float]]:
    """Latencies (ms) of every variant on its prepared input: ``warmup`` untimed rounds, then ``iters`` timed
    rounds, the variants interleaved and their order alternated each round (so drift hits all alike)."""
    names = list(variants)
    latencies: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(warmup):
        for name in names:
            variants[name](prepared[name])
            if tick:
                tick()
    for index in range(iters):
        for name in (names if index % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            variants[name](prepared[name])
            latencies[name].append((time.perf_counter() - start) * 1e3)
            if tick:
                tick()
    return latencies


# ----------------------------------------------------------------------------- exports
def _export_matches(path: Path, *, fingerprint: str, dtype: str, reduction: bool, image_size, text_length,
                   pumer) -> bool:
    """Whether ``path`` is an export of this very checkpoint (weights and architecture) with these options."""
    from .parity.onnxinfo import read_onnx_info

    if not path.is_file():
        return False
    try:
        info = read_onnx_info(path)
    except PumerExportError:
        return False
    from . import __version__
    from .ops import op_spec_hash

    stored = info.pumer or {}
    wanted = pumer.to_dict() if reduction else pumer.without_reduction().to_dict()
    exporter = (info.metadata.get("pumer.versions") or {}).get("pumer_export")
    from .quantize import read_quantization

    return (read_quantization(info.metadata) is None and info.metadata.get("pumer.model_sha256") == fingerprint
            and info.metadata.get("pumer.op_spec_hash") == op_spec_hash() and exporter == __version__
            and info.dtype == dtype and info.image_size == tuple(image_size) and info.text_length == text_length
            and all(stored.get(k) == v for k, v in wanted.items() if k != "format_version"))


def ensure_export(model, directory: Path, *, dtype: str, reduction: bool, image_size, text_length,
                  fingerprint: str | None = None, processor_dir: Path | None = None) -> Path:
    """``directory/model.onnx`` exported with these settings: reused only when it was exported from the same
    checkpoint (:func:`~pumer_export.checkpoints.model_fingerprint`) with the same options, else re-exported."""
    from .checkpoints import model_fingerprint
    from .onnx.export import export_onnx
    from .onnx.files import MODEL_FILE

    path = directory / MODEL_FILE
    fingerprint = fingerprint or model_fingerprint(model)
    if _export_matches(path, fingerprint=fingerprint, dtype=dtype, reduction=reduction, image_size=image_size,
                       text_length=text_length, pumer=model.pumer_config):
        return path
    export_onnx(model, directory, dtype=dtype, image_size=tuple(image_size), text_length=text_length,
                reduction=reduction, validate=False, force=True, processor_dir=processor_dir)
    return path


def ensure_quantized(float_path: Path, directory: Path) -> Path:
    """``directory/model.onnx``: the export folder of ``float_path`` quantized with ONNX Runtime's dynamic int8
    (``pumer-export quantize --mode dynamic``), reused only when it was made from this very file."""
    from .manifest import file_sha256
    from .onnx.files import MODEL_FILE
    from .parity.onnxinfo import read_onnx_info
    from .quantize import QuantizeOptions, quantize_export, read_quantization

    path = directory / MODEL_FILE
    if path.is_file():
        try:
            record = read_quantization(read_onnx_info(path).metadata) or {}
        except PumerExportError:
            record = {}
        if record.get("label") == "int8" and record.get("source", {}).get("sha256", {}).get(float_path.name) \
                == file_sha256(float_path):
            return path
    quantize_export(float_path.parent, directory, QuantizeOptions(mode="dynamic", force=True))
    return path


def export_precision(info) -> str:
    """The precision an export runs in, as ``--dtype`` names it: its float dtype, or its quantization's label."""
    from .quantize import label, read_quantization

    return label(read_quantization(info.metadata), info.dtype)


def given_precision(path: str | Path | None) -> str:
    """The precision a given export runs in (``fp32`` when none is given): the default ``--dtype`` of bench and
    eval, so that a quantized export is measured as what it is."""
    from .parity.onnxinfo import read_onnx_info

    return export_precision(read_onnx_info(path)) if path else "fp32"


def model_megabytes(path: Path) -> float:
    """The size of an ONNX file with its external data (what a deployment ships), in MB."""
    data = path.with_name(path.name + ".data")
    return (path.stat().st_size + (data.stat().st_size if data.is_file() else 0)) / 1e6


def ensure_engine(onnx_path: Path, plan: Path, *, batch_sizes: Sequence[int], fp16: bool) -> Path:
    """``plan`` built from ``onnx_path``: reused only when its sidecar records this ONNX file's hash and the batch
    profile ``min(batch_sizes):max:max``, else rebuilt."""
    from .tensorrt import sidecar
    from .tensorrt.engine import build_engine

    low, high = min(batch_sizes), max(batch_sizes)
    if plan.is_file():
        try:
            record = sidecar.read_sidecar(plan)
            same_onnx = (record.get("onnx") or {}).get("sha256") == sidecar.sha256_file(onnx_path)
            same_profile = (record.get("profile") or {}).get("batch") == {"min": low, "opt": high, "max": high}
        except PumerExportError:
            same_onnx = same_profile = False
        if same_onnx and same_profile:
            return plan
    batch = f"{low}:{high}:{high}"
    build_engine(onnx_path, plan, batch=batch, fp16=fp16, force=True)
    return plan


# ----------------------------------------------------------------------------- the run
def resolve_backends(requested: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """(backends to run, notes on the ones skipped)."""
    from .parity.runners import tensorrt_available

    notes = []
    if requested is None:
        backends = ["torch", "ort"]
        if tensorrt_available():
            backends.append("trt")
        else:
            notes.append("trt skipped: TensorRT is not installed")
        return backends, notes
    if not requested:
        raise PumerExportError(f"--backends is empty; name one or more of {', '.join(BACKENDS)}")
    unknown = [b for b in requested if b not in BACKENDS]
    if unknown:
        raise PumerExportError(f"unknown backend(s) {unknown}; use {', '.join(BACKENDS)}")
    if "trt" in requested and not tensorrt_available():
        from .tensorrt import INSTALL_HINT

        raise MissingDependencyError(f"--backends trt needs TensorRT, which is not installed ({INSTALL_HINT})")
    return list(dict.fromkeys(requested)), notes


def plan_cases(backends: Sequence[str], dtypes: Sequence[str], device: str, notes: list[str]) -> list[tuple[str, str]]:
    """The (backend, dtype) cases to measure, checked before any work: an unsupported pair is an error, a
    pointless one (float16 PyTorch on a CPU) a note; nothing left to measure is an error naming why."""
    for dtype in dtypes:
        unsupported = [b for b in backends if dtype not in BACKEND_DTYPES[b] and not (b == "torch" and dtype in QUANTIZED)]
        if unsupported:
            supported = "; ".join(f"{b}: {', '.join(BACKEND_DTYPES[b])}" for b in backends)
            raise PumerExportError(f"--dtype {dtype} is not measured by {', '.join(unsupported)} ({supported}); "
                                   f"drop it or those backends")
    plans: list[tuple[str, str]] = []
    for dtype in dtypes:
        for backend in backends:
            if (backend, dtype) in plans:
                continue
            if backend == "torch" and dtype == "fp16" and device == "cpu":
                notes.append("torch fp16 skipped: PyTorch runs float16 on the CPU through slow fallbacks "
                             "(use --device cuda, bf16, or the ort backend)")
                continue
            if backend == "torch" and dtype in QUANTIZED:
                note = (f"torch {dtype} skipped: PyTorch eager runs the float32 reference (what the official code "
                        f"runs); the {dtype} exports are compared with torch fp32")
                if "fp32" not in dtypes:
                    plans.append(("torch", "fp32"))
                    note += " (measured for that)"
                notes.append(note)
                continue
            plans.append((backend, dtype))
    if not plans:
        raise PumerExportError("nothing to measure: " + "; ".join(notes))
    return plans


def eager_comparison(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each exported backend's PuMer against PyTorch eager PuMer (what the official code runs), same batch and
    dtype (a quantized export: against torch fp32): ``speedup`` = torch PuMer p50 / backend PuMer p50. Empty unless
    torch was measured too."""
    pumer = {(r["backend"], r["dtype"], r["batch_size"]): r["latency_ms"]["p50"] for r in results
             if r["variant"] == "pumer"}
    out = []
    for (backend, dtype, batch), p50 in pumer.items():
        eager = pumer.get(("torch", "fp32" if dtype in QUANTIZED else dtype, batch))
        if backend != "torch" and eager is not None:
            out.append({"backend": backend, "dtype": dtype, "batch_size": batch, "torch_eager_p50_ms": eager,
                        "torch_dtype": "fp32" if dtype in QUANTIZED else dtype,
                        "backend_p50_ms": p50, "speedup": eager / p50})
    return out


def sample_warnings(options: BenchOptions, speedups: Sequence[dict[str, Any]],
                    results: Sequence[dict[str, Any]] = (), load: tuple[float, int] | None = None) -> list[str]:
    """Warnings about figures that should not be trusted: too few samples, a wide spread between runs, a busy
    machine (``load``: :func:`machine_load` after the runs), a speedup above the FLOP-ideal."""
    out = []
    few = [f"--warmup {options.warmup} (use 1 or more)"] if options.warmup < 1 else []
    few += [f"--iters {options.iters} (use {MIN_RELIABLE_ITERS} or more)"] if options.iters < MIN_RELIABLE_ITERS else []
    if few:
        out.append(f"warning: too few runs per case for stable ratios: {' and '.join(few)}")
    wide = [r for r in results if r["latency_ms"]["p90"] > SPREAD_WARNING * r["latency_ms"]["p50"]]
    if wide:
        worst = max(wide, key=lambda r: r["latency_ms"]["p90"] / r["latency_ms"]["p50"])
        out.append(f"warning: {len(wide)} case(s) vary widely between runs (worst: {worst['backend']} "
                   f"{worst['variant']} batch {worst['batch_size']}, p90 {worst['latency_ms']['p90']:.1f} ms vs p50 "
                   f"{worst['latency_ms']['p50']:.1f} ms): another load shares the machine; their ratios are "
                   "unreliable")
    if load is not None and load[0] > load[1]:
        out.append(f"warning: the machine was busy (load average {load[0]:.1f} on {load[1]} CPUs): figures are "
                   "unreliable; measure on a quiet machine")
    for sp in speedups:
        if sp["speedup"] > IDEAL_EXCESS_WARNING * sp["flop_ideal"]:
            out.append(f"warning: {sp['backend']} {sp['dtype']} batch {sp['batch_size']}: speedup "
                       f"{sp['speedup']:.2f}x is {sp['speedup'] / sp['flop_ideal']:.0%} of the FLOP-ideal "
                       f"{sp['flop_ideal']:.2f}x: memory-bound work the FLOP count leaves out (attention softmax), "
                       "or noise; re-run with more --iters on a quiet machine")
    return out


def machine_load() -> tuple[float, int] | None:
    """(1-minute load average, CPUs this process may use), or None where the system does not say."""
    try:
        return os.getloadavg()[0], default_threads()
    except (OSError, AttributeError):
        return None


def default_threads() -> int:
    """The CPUs this process may use: the thread count of PyTorch and ONNX Runtime unless --threads says."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _check_given_files(options: BenchOptions, backends: Sequence[str]) -> None:
    """Given exports and engines must exist and be used by a chosen backend (no silently ignored option)."""
    for option, path, users in (("--onnx", options.onnx, ("ort", "trt")),
                                ("--onnx-baseline", options.onnx_baseline, ("ort", "trt")),
                                ("--engine", options.engine, ("trt",)),
                                ("--engine-baseline", options.engine_baseline, ("trt",))):
        if path is None:
            continue
        if not any(b in backends for b in users):
            raise PumerExportError(f"{option} is only used by the {' / '.join(users)} backend(s), and --backends is "
                                   f"{','.join(backends)}; add {users[0]} to --backends or drop {option}")
        from .errors import missing
        from .onnx.files import resolve_onnx_path

        if option.startswith("--onnx"):
            resolve_onnx_path(path, option)  # a .onnx file or an export folder
        elif not Path(path).is_file():
            raise missing(path, option)


@dataclasses.dataclass
class _Run:
    """What a benchmark run decided before measuring anything (:func:`_prepare`)."""

    model_dir: Path | None
    model: Any
    family: Any
    options: BenchOptions           # with the thread count filled in
    backends: list[str]
    dtypes: list[str]
    plans: list[tuple[str, str]]    # (backend, dtype) cases
    batch_sizes: list[int]
    infos: dict[str, Any]           # given exports by option ("--onnx", "--onnx-baseline")
    image_size: tuple[int, int]
    text_length: int
    memory_mode: str                # child / process / off
    notes: list[str]
    export_dir: Path
    fingerprint: str | None = None  # the weights' hash, computed once when an export is made or checked
    method: Any = None              # the checkpoint's reduction method (pumer_export.methods)
    feeds: dict[int, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)  # by batch size

    def feed(self, batch: int) -> dict[str, np.ndarray]:
        """The inputs of batch size ``batch`` (the same for every backend): the first ``batch`` questions of a seeded
        draw of the data, or seeded random inputs."""
        if batch not in self.feeds:
            if self.options.questions is None:
                tensors = self.family.example_inputs(self.model.config, batch, text_length=self.text_length,
                                                     image_size=self.image_size, seed=self.options.seed)
                self.feeds[batch] = {k: v.numpy() for k, v in tensors.items()}
            else:
                from .datasets import subset
                from .parity.inputs import InputSpec, question_inputs

                spec = InputSpec(self.text_length, tuple(self.image_size),
                                 {name: np.dtype(np.float32 if name == "pixel_values" else np.int64)
                                  for name in self.family.INPUT_NAMES}, self.model.config.vocab_size,
                                 tuple(self.family.INPUT_NAMES))
                chosen = subset(self.options.questions, batch, seed=self.options.seed)
                self.feeds[batch] = dict(question_inputs(chosen, self.model_dir, spec, batch_size=batch,
                                                         num_samples=batch, family=self.family).batches[0])
        return self.feeds[batch]

    @property
    def on_gpu(self) -> dict[str, bool]:
        return {"torch": self.options.device != "cpu", "ort": self.options.ort_provider == "cuda", "trt": True}


def run_bench(model_dir: str | Path | None, options: BenchOptions, *, model=None) -> dict[str, Any]:
    """Measure every case, write bench.json / bench.md / bench.png into ``options.report_dir``.

    The steps: :func:`_prepare` (every check before any work, the sizes, threads and memory method), the FLOP-ideal
    ratio (:func:`_flops`), then per backend x dtype the two variants (:func:`_variants`: exports and engines as
    needed) timed interleaved per batch size (:func:`_measure`) and their memory (:func:`_child_memory`), and the
    report (:func:`_report`)."""
    from .console import progress_bar

    run = _prepare(model_dir, options, model)
    flops = _flops(run)
    results: list[dict[str, Any]] = []
    speedups: list[dict[str, Any]] = []
    exports: dict[str, dict[str, str]] = {}
    steps = len(run.plans) * len(run.batch_sizes) * (run.options.warmup + run.options.iters) * 2
    with (progress_bar() if run.options.progress else contextlib.nullcontext()) as progress:
        task = progress.add_task("benchmark", total=steps) if progress else None
        say = (lambda text: progress.update(task, description=text)) if progress else (lambda text: None)
        tick = (lambda: progress.advance(task)) if progress else None
        for backend, dtype in run.plans:
            say(f"{backend} {dtype}: preparing")
            variants, paths = _variants(run, backend, dtype)
            if paths:
                exports.setdefault(dtype, {}).update({k: str(v) for k, v in paths.items()})
            cases, feeds = _measure(run, backend, dtype, variants, paths, flops, say, tick, results, speedups)
            variants = {}  # release the sessions before the next backend
            gc.collect()
            if run.memory_mode == "child" and not run.on_gpu[backend] and backend in ("torch", "ort"):
                say(f"{backend} {dtype}: memory per variant")
                _child_memory(run, backend, dtype, paths, feeds, cases)
    return _report(run, flops, results, speedups, exports)


def _prepare(model_dir: str | Path | None, options: BenchOptions, model) -> _Run:
    """Every check that needs no measurement, in the order a user's mistake is best named, and the run's settings."""
    import torch

    from . import methods, models
    from .checkpoints import load_pumer_model, model_fingerprint
    from .commands._common import check_input_lengths
    from .parity.onnxinfo import canonical_dtype, check_export_of, read_onnx_info
    from .schedule import input_size

    backends, notes = resolve_backends(options.backends)
    _check_given_files(options, backends)
    requested = options.dtypes if options.dtypes is not None else [given_precision(options.onnx or
                                                                                   options.onnx_baseline)]
    dtypes = list(dict.fromkeys(d if d in QUANTIZED else canonical_dtype(d) for d in requested))
    if not dtypes:
        raise PumerExportError("--dtype is empty; name one or more of fp32, fp16, bf16")
    plans = plan_cases(backends, dtypes, options.device, notes)
    if options.memory not in ("auto", "process", "off"):
        raise PumerExportError(f"unknown memory method {options.memory!r}; use auto, process or off")
    batch_sizes = sorted(set(int(b) for b in options.batch_sizes))
    if not batch_sizes or min(batch_sizes) < 1:
        raise PumerExportError("--batch-sizes must be positive integers")
    if options.iters < 1 or options.warmup < 0:
        raise PumerExportError("--iters must be at least 1 and --warmup at least 0")
    if options.device != "cpu" and "torch" in backends and not torch.cuda.is_available():
        raise MissingDependencyError("--device cuda: PyTorch has no CUDA device here; use --device cpu or a CUDA "
                                     "build of PyTorch on a GPU machine")
    if options.ort_provider != "cpu" and "ort" in backends:
        import onnxruntime as ort

        from .parity.runners import ORT_PROVIDERS

        if ORT_PROVIDERS[options.ort_provider] not in ort.get_available_providers():
            raise MissingDependencyError(f"ONNX Runtime has no {ORT_PROVIDERS[options.ort_provider]} here; "
                                         "install onnxruntime-gpu for CUDA or use --ort-provider cpu")
    if model is None:
        if model_dir is None:
            raise PumerExportError("no model given")
        model = load_pumer_model(model_dir)
    model.eval()
    for backend in backends:
        methods.require_backend(model, backend, "bench")
    method = methods.for_model(model)
    if not method.settings(model.config).enabled:
        raise PumerExportError(f"the checkpoint has no {method.TITLE} reduction configured, so there is no speedup to "
                               "measure")
    if options.questions is not None:
        if model_dir is None:
            raise PumerExportError("VQA questions as inputs need the checkpoint directory (its processor files)")
        if len(options.questions) < max(options.batch_sizes):
            raise PumerExportError(f"the data holds {len(options.questions)} questions, fewer than the largest batch "
                                   f"size {max(options.batch_sizes)}")
    elif not method.STATIC_COUNTS:
        notes.append(f"warning: {method.TITLE} keeps as many tokens as the inputs need; on random inputs the counts "
                     "(and so the speedup) say little: pass real data (--dataset ...)")

    # ---- given exports: the right variant, this checkpoint's settings and weights, the first --dtype
    infos = {}
    for option, path, reduction in (("--onnx", options.onnx, True), ("--onnx-baseline", options.onnx_baseline, False)):
        if path is None:
            continue
        info = infos[option] = read_onnx_info(path)
        info.require_model_inputs()
        if info.reduction is not None and info.reduction != reduction:
            other = "--onnx-baseline" if reduction else "--onnx"
            raise PumerExportError(f"{option} {path} is a {'baseline' if info.reduction is False else 'PuMer'} export; "
                                   f"pass it as {other}")
        check_export_of(model, info, reduction=reduction, option=option)
        precision = export_precision(info)
        if precision != dtypes[0]:
            raise PumerExportError(f"{option} {path} runs in {precision} and the first --dtype is {dtypes[0]}; a given "
                                   f"export is measured as the first --dtype: pass --dtype {precision}")
    missing_static = [d for d in dtypes if d == "int8-static" and not (d == dtypes[0] and len(infos) == 2)]
    if missing_static and "ort" in backends:
        raise PumerExportError("--dtype int8-static needs calibrated exports: make them with `pumer-export quantize "
                               "EXPORT OUT --mode static --calibration-dataset ...` and pass both as --onnx and "
                               "--onnx-baseline with int8-static as the first --dtype (bench makes int8 itself)")
    fingerprint = None
    if infos:  # a given export must come from these very weights, or its speed says nothing about them
        fingerprint = model_fingerprint(model)
        for option, info in infos.items():
            check_export_of(model, info, fingerprint=fingerprint, option=option)

    # ---- sizes: a given export's, unless given (and then they must agree)
    given = next(iter(infos.values()), None)
    image_size, text_length = input_size(model.config, options.image_size or (given.image_size if given else None),
                                         options.text_length or (given.text_length if given else None))
    if given is not None:
        if options.image_size and given.image_size and tuple(options.image_size) != given.image_size:
            raise PumerExportError(f"--image-size {'x'.join(map(str, options.image_size))} differs from the given "
                                   f"export's {'x'.join(map(str, given.image_size))}; leave it out to use the export's")
        if options.text_length and given.text_length and options.text_length != given.text_length:
            raise PumerExportError(f"--text-length {options.text_length} differs from the given export's {given.text_length}")
    check_input_lengths(model.config, image_size, text_length)

    # ---- threads and the memory method
    if options.threads is None:  # one thread per usable CPU for both runtimes, said in the report
        options = dataclasses.replace(options, threads=default_threads())
        notes.append(f"threads: {options.threads} (the CPUs this process may use; --threads to change)")
    torch.set_num_threads(options.threads)
    memory_mode = options.memory
    if memory_mode == "auto":
        from .memprobe import supported

        if not supported():
            memory_mode = "process"
            notes.append("memory: no resettable peak RSS here (Linux /proc): process-wide peaks shown")
        elif model_dir is None and "torch" in [b for b, _ in plans]:
            memory_mode = "process"
            notes.append("memory: no checkpoint path for a separate process: process-wide peaks shown")
        else:
            memory_mode = "child"
    report_dir = Path(options.report_dir)
    return _Run(model_dir=Path(model_dir) if model_dir is not None else None, model=model,
                family=models.for_model(model), options=options, backends=backends, dtypes=dtypes, plans=plans,
                batch_sizes=batch_sizes, infos=infos, image_size=tuple(image_size), text_length=text_length,
                memory_mode=memory_mode, notes=notes, method=method,
                export_dir=Path(options.export_dir) if options.export_dir else report_dir / "exports",
                fingerprint=fingerprint)


def _flops(run: _Run) -> dict[str, Any]:
    """Encoder FLOPs of the baseline and the reduced model at the run's sizes and the FLOP-ideal ratio: PuMer's from
    its token schedule; for a method whose counts depend on the input, from the counts it realises on each batch
    size's inputs (``per_batch``: the padded batch's ideal, which gates the fraction, the per-sample mean, and the
    kept share per trimmer location)."""
    from .models import reduction_set

    model = run.model
    if not run.method.STATIC_COUNTS:
        import torch

        per_batch = {}
        for batch in run.batch_sizes:
            stats = model.trim_statistics([{k: torch.from_numpy(v) for k, v in run.feed(batch).items()}])
            per_batch[batch] = {"flop_ideal": stats["flop_ideal"]["padded"],
                                "flop_ideal_per_sample": stats["flop_ideal"]["per_sample"],
                                "kept_share": stats["kept_share"], "flops": stats["flops"]}
        return {"baseline": next(iter(per_batch.values()))["flops"]["untrimmed"], "per_batch": per_batch,
                "flop_ideal": None}
    schedule = model.token_schedule(run.text_length, run.image_size)
    with reduction_set(model, False):
        base_schedule = model.token_schedule(run.text_length, run.image_size)
    flops = {"baseline": run.family.encoder_flops(model.config, base_schedule),
             "pumer": run.family.encoder_flops(model.config, schedule)}
    return {**flops, "flop_ideal": flops["baseline"] / flops["pumer"], "token_schedule": schedule.to_dict()}


def _variants(run: _Run, backend: str, dtype: str) -> tuple[dict[str, Any], dict[str, Path]]:
    """The baseline and PuMer variants of one backend x dtype, and the model files they run (exports: given, reused
    or made; quantized exports from the float32 ones; engines built from the exports)."""
    from .checkpoints import model_fingerprint

    options, model = run.options, run.model
    if backend == "torch":
        net = model if dtype == "fp32" else _cast_copy(model, dtype)
        net.to(options.device)
        return {"baseline": _TorchVariant(net, False, options.device, dtype),
                "pumer": _TorchVariant(net, True, options.device, dtype)}, {}
    paths: dict[str, Path] = {}
    for variant, option in (("pumer", "--onnx"), ("baseline", "--onnx-baseline")):
        if option in run.infos and dtype == run.dtypes[0]:
            paths[variant] = run.infos[option].path
            continue
        if run.fingerprint is None:
            run.fingerprint = model_fingerprint(model)
        float_dtype = "fp32" if dtype in QUANTIZED else dtype
        paths[variant] = ensure_export(model, run.export_dir / f"{float_dtype}-{variant}", dtype=float_dtype,
                                       reduction=variant == "pumer", image_size=run.image_size,
                                       text_length=run.text_length, fingerprint=run.fingerprint,
                                       processor_dir=run.model_dir)
        if dtype in QUANTIZED:
            paths[variant] = ensure_quantized(paths[variant], run.export_dir / f"{dtype}-{variant}")
    if backend == "ort":
        return {v: _OrtVariant(paths[v], options.ort_provider, options.threads) for v in VARIANTS}, paths
    engines = {"pumer": options.engine, "baseline": options.engine_baseline}
    for v in VARIANTS:
        if engines[v] is None or dtype != run.dtypes[0]:
            engines[v] = ensure_engine(paths[v], run.export_dir / f"{dtype}-{v}" / "model.plan",
                                       batch_sizes=run.batch_sizes, fp16=dtype == "fp16")
    return {v: _TrtVariant(Path(engines[v])) for v in VARIANTS}, paths


def _measure(run: _Run, backend: str, dtype: str, variants: dict[str, Any], paths: dict[str, Path],
             flops: dict[str, Any], say, tick, results: list, speedups: list):
    """Time both variants interleaved at every batch size (memory in this process or on the GPU where that is the
    method); appends to ``results`` and ``speedups``; returns the cases by (batch, variant) and the feeds."""
    options = run.options
    feeds: dict[int, dict[str, np.ndarray]] = {}
    cases: dict[tuple[int, str], dict[str, Any]] = {}
    for batch in run.batch_sizes:
        say(f"{backend} {dtype} batch {batch}")
        feed = feeds[batch] = run.feed(batch)
        prepared = {v: variants[v].prepare(feed) for v in VARIANTS}
        latencies = time_interleaved(variants, prepared, warmup=options.warmup, iters=options.iters, tick=tick)
        for v in VARIANTS:
            run_once = (lambda v=v: variants[v](prepared[v]))
            if run.on_gpu[backend]:
                memory = measure_gpu_memory(run_once, backend)
            elif run.memory_mode == "process":
                memory = measure_cpu_memory(run_once)
            else:
                memory = {}  # filled in by a process per variant (_child_memory), or left out ("off")
            latency = _percentiles(latencies[v])
            cases[(batch, v)] = {
                "backend": backend, "batch_size": batch, "dtype": dtype, "variant": v,
                "latency_ms": latency, "throughput": batch / (latency["p50"] / 1e3),
                **memory, "iters": options.iters, "warmup": options.warmup,
                "device": "gpu" if run.on_gpu[backend] else "cpu",
                "model_mb": model_megabytes(Path(paths[v])) if backend == "ort" else None,
            }
            results.append(cases[(batch, v)])
        speedup = cases[(batch, "baseline")]["latency_ms"]["p50"] / cases[(batch, "pumer")]["latency_ms"]["p50"]
        realised = (flops.get("per_batch") or {}).get(batch)  # counts that depend on the input
        flop_ideal = realised["flop_ideal"] if realised else flops["flop_ideal"]
        speedups.append({"backend": backend, "batch_size": batch, "dtype": dtype, "speedup": speedup,
                         "flop_ideal": flop_ideal, "fraction_of_ideal": speedup / flop_ideal,
                         **({"flop_ideal_per_sample": realised["flop_ideal_per_sample"]} if realised else {})})
    return cases, feeds


def _child_memory(run: _Run, backend: str, dtype: str, paths: dict[str, Path], feeds, cases) -> None:
    """Each variant's peak memory in a fresh process of its own (:mod:`pumer_export.memprobe`)."""
    from . import memprobe

    for v in VARIANTS:
        spec = {"backend": backend, "variant": v, "dtype": dtype, "threads": run.options.threads,
                "target": str(paths[v]) if backend == "ort" else str(run.model_dir), "reduction": v == "pumer"}
        for batch, memory in memprobe.measure(spec, feeds).items():
            cases[(batch, v)].update(memory)


def _report(run: _Run, flops: dict[str, Any], results: list, speedups: list, exports: dict) -> dict[str, Any]:
    """The report (warnings on the figures, PuMer exports against eager PuMer), written and returned."""
    from .console import err_console
    from .parity.environment import environment

    options, notes = run.options, run.notes
    notes += sample_warnings(options, speedups, results, load=machine_load())
    bench = {
        "format_version": FORMAT_VERSION,
        "model": str(run.model_dir) if run.model_dir is not None else None,
        "settings": {"backends": run.backends, "batch_sizes": run.batch_sizes, "dtypes": run.dtypes,
                     "image_size": list(run.image_size), "text_length": run.text_length, "warmup": options.warmup,
                     "iters": options.iters, "ort_provider": options.ort_provider, "torch_device": options.device,
                     "threads": options.threads, "pumer": run.model.pumer_config.to_dict(),
                     "method": {"name": run.method.NAME, "title": run.method.TITLE,
                                "settings": run.method.settings(run.model.config).to_dict()},
                     "inputs": ("random (seed %d)" % options.seed if options.questions is None else
                                f"VQA questions (a seeded draw of {len(options.questions)})"), "interleaved": True,
                     "latency": "wall time of one inference call (host to host), percentiles over iters",
                     "throughput": "batch_size / p50 latency",
                     "speedup": "baseline p50 / pumer p50, same backend, batch and dtype"},
        "flops": flops,
        "exports": exports,
        "notes": notes,
        "results": results,
        "speedups": speedups,
        "vs_torch_eager": eager_comparison(results),
        "environment": environment(),
    }
    write_bench(bench, Path(options.report_dir))
    for note in notes:
        err_console.print(note if note.startswith("warning: ") else f"note: {note}", markup=False)
    return bench


def _cast_copy(model, dtype: str):
    import copy

    import torch

    return copy.deepcopy(model).to({"fp16": torch.float16, "bf16": torch.bfloat16}[dtype])


# ----------------------------------------------------------------------------- reports
def to_markdown(bench: dict[str, Any]) -> str:
    s = bench["settings"]
    method = s.get("method") or {"name": "pumer", "title": "PuMer"}
    per_batch = bench["flops"].get("per_batch")
    if per_batch:  # counts that depend on the input
        trim = method["settings"]
        described = [f"- {method['title']}: token trimmers before co-attention blocks {trim['cross_layers']}, "
                     f"image-tower blocks {trim['vit_layers']}, head trimmers in blocks {trim['head_layers']}, tau "
                     f"{trim['tau']:g}, head tau {trim['head_tau']:g}; inputs: {s.get('inputs', 'random')}",
                     "- FLOP-ideal speedup (whole model, realised counts): "
                     + ", ".join(f"batch {b}: {v['flop_ideal']:.2f}x padded, {v['flop_ideal_per_sample']:.2f}x per "
                                 "sample" for b, v in per_batch.items())]
    else:
        described = [f"- PuMer: layers {s['pumer']['reduce_layers']}, prune {s['pumer']['prune_ratio']}, merge "
                     f"{s['pumer']['image_merge_ratio']}, text merge {s['pumer']['text_merge_ratio']}",
                     f"- FLOP-ideal speedup (encoder): {bench['flops']['flop_ideal']:.2f}x"]
    lines = ["# pumer-export bench", "",
             f"- model: `{bench['model']}`; image {'x'.join(map(str, s['image_size']))}, text length {s['text_length']}",
             *described,
             f"- {s['warmup']} warm-up + {s['iters']} timed runs per case, baseline and {method['title']} interleaved",
             f"- {bench['environment']['cpu']} ({bench['environment']['cpu_count']} cores), "
             + ", ".join(f"{k} {v}" for k, v in bench["environment"]["versions"].items() if v), ""]
    lines += ["## Speedup", "", "| backend | dtype | batch | speedup | FLOP-ideal | fraction of ideal |"
              + (" FLOP-ideal per sample |" if per_batch else ""), "|---|---|---|---|---|---|"
              + ("---|" if per_batch else "")]
    for sp in bench["speedups"]:
        lines.append(f"| {sp['backend']} | {sp['dtype']} | {sp['batch_size']} | {sp['speedup']:.2f}x | "
                     f"{sp['flop_ideal']:.2f}x | {sp['fraction_of_ideal']:.0%} |"
                     + (f" {sp['flop_ideal_per_sample']:.2f}x |" if per_batch else ""))
    if per_batch:
        lines += ["", "## Kept share per trimmer location (mean +- std over the samples)", "",
                  "| batch | " + " | ".join(next(iter(per_batch.values()))["kept_share"]) + " |",
                  "|---|" + "---|" * len(next(iter(per_batch.values()))["kept_share"])]
        for b, v in per_batch.items():
            lines.append(f"| {b} | " + " | ".join(f"{x['mean']:.2f} +- {x['std']:.2f}"
                                                   for x in v["kept_share"].values()) + " |")
    if bench.get("vs_torch_eager"):
        lines += ["", f"## {method['title']} export vs PyTorch eager {method['title']}", "",
                  "| backend | dtype | batch | torch eager p50 ms | backend p50 ms | speedup |", "|---|---|---|---|---|---|"]
        for row in bench["vs_torch_eager"]:
            torch_dtype = f" (torch {row['torch_dtype']})" if row.get("torch_dtype", row["dtype"]) != row["dtype"] else ""
            lines.append(f"| {row['backend']} | {row['dtype']}{torch_dtype} | {row['batch_size']} | {row['torch_eager_p50_ms']:.2f} | "
                         f"{row['backend_p50_ms']:.2f} | {row['speedup']:.2f}x |")
    lines += ["", "## Cases", "",
              "| backend | dtype | batch | variant | p50 ms | p90 ms | p99 ms | samples/s | peak memory MB "
              "| run memory MB | model MB |", "|---|---|---|---|---|---|---|---|---|---|---|"]

    def mb(value) -> str:
        return "-" if value is None else f"{value:.0f}"

    def size(value) -> str:
        return "-" if value is None else f"{value:.1f}"

    for r in bench["results"]:
        lat = r["latency_ms"]
        lines.append(f"| {r['backend']} | {r['dtype']} | {r['batch_size']} | {r['variant']} | {lat['p50']:.2f} | "
                     f"{lat['p90']:.2f} | {lat['p99']:.2f} | {r['throughput']:.1f} | {mb(r.get('peak_memory_mb'))} "
                     f"| {mb(r.get('memory_delta_mb'))} | {size(r.get('model_mb'))} |")
    methods = list(dict.fromkeys(r["memory_method"] for r in bench["results"] if r.get("memory_method")))
    if methods:
        lines += ["", f"Memory: {'; '.join(methods)}."]
    for note in bench["notes"]:
        lines.append(f"- {note}" if note.startswith("warning: ") else f"- note: {note}")
    if bench.get("plot"):
        lines += ["", f"![throughput]({bench['plot']})"]
    return "\n".join(lines) + "\n"


def write_bench(bench: dict[str, Any], directory: Path) -> list[Path]:
    from .fsutil import write_text_atomic
    from .plot import plot_throughput

    directory.mkdir(parents=True, exist_ok=True)
    plot = directory / PLOT_FILE
    plot_throughput(bench, plot)
    bench["plot"] = PLOT_FILE
    write_text_atomic(directory / JSON_FILE, json.dumps(bench, indent=2) + "\n")
    write_text_atomic(directory / MARKDOWN_FILE, to_markdown(bench))
    return [directory / JSON_FILE, directory / MARKDOWN_FILE, plot]

