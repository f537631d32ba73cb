"""``pumer-export sweep``: the accuracy / speed trade-off of a grid of settings, to pick settings from.

PuMer checkpoints: the grid is reduce layers x prune x image merge x text merge (score and masking stay the
checkpoint's). SmartTrim checkpoints: the grid is the deployment knob ``tau`` (``--tau``; the trimmers' weights stay),
the FLOP-ideal speedup is the per-sample mean of the counts the questions realise, and the speed is measured on the
first questions (their counts). For every grid point:

1. the model with those settings, optionally fine-tuned for a few steps with them in place (``finetune_steps``,
   through :func:`pumer_export.finetune.run_finetune`);
2. its VQA accuracy on the data with the PyTorch reference (the baseline's once, without reduction);
3. its speed on every backend, interleaved with the baseline in the same process at one batch size (PyTorch
   eager and the ONNX Runtime exports), and the FLOP-ideal ratio from the token schedule.

Writes ``sweep.json``, ``sweep.md`` and ``sweep.png`` (accuracy against measured speedup per backend, each point's
FLOP-ideal speedup marked, the Pareto front drawn).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .config import PumerConfig
from .errors import PumerExportError

FILES = ("sweep.json", "sweep.md", "sweep.png")


@dataclasses.dataclass
class SweepOptions:
    layers: Sequence[tuple[int, ...]] = ()  # empty: the checkpoint's reduce layers
    prune: Sequence[float] = (0.1, 0.3)
    merge: Sequence[float] = (0.1, 0.3, 0.5)
    text_merge: Sequence[float] = (0.2,)
    backends: Sequence[str] = ("torch", "ort")
    batch_size: int = 8
    warmup: int = 2
    iters: int = 10
    threads: int | None = None
    finetune_steps: int = 0
    finetune_lr: float = 2e-4
    #: precisions of the ONNX Runtime export per point: ("fp32",) or ("fp32", "int8") (dynamic quantization,
    #: `pumer-export quantize --mode dynamic`); each int8 point is a row of its own, timed against the fp32 baseline
    precisions: Sequence[str] = ("fp32",)
    #: SmartTrim checkpoints: the values of tau to sweep (empty: the checkpoint's)
    tau: Sequence[float] = ()
    report_dir: Path = Path("sweep-report")
    progress: bool = True


def grid(base: PumerConfig, options: SweepOptions, num_layers: int) -> list[PumerConfig]:
    """The grid's settings (points that reduce nothing left out), each checked against the model's depth."""
    from .errors import ConfigError

    layer_sets = list(options.layers) or [base.reduce_layers]
    points = []
    for layers, prune, merge, text in itertools.product(layer_sets, options.prune, options.merge, options.text_merge):
        try:
            point = base.replace(reduce_layers=tuple(layers), prune_ratio=prune, image_merge_ratio=merge,
                                 text_merge_ratio=text)
            point.check_depth(num_layers)
        except ConfigError as exc:
            raise PumerExportError(f"sweep grid: {exc}") from None
        if point.enabled and (prune or merge or text) and point not in points:
            points.append(point)
    if not points:
        raise PumerExportError("the sweep grid has no point that reduces anything; give non-zero ratios and layers")
    return points


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both coordinates (higher is better on both)."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any((a >= x and b >= y) and (a > x or b > y) for j, (a, b) in enumerate(points) if j != i):
            front.append(i)
    return front


@dataclasses.dataclass
class _Source:
    """One checkpoint of the sweep and the points it contributes (PuMer settings or SmartTrim taus)."""

    path: Path
    model: Any
    method: Any
    points: list

    @property
    def trimmed(self) -> bool:  # SmartTrim: a tau axis on the checkpoint's trained trimmers
        return not self.method.STATIC_COUNTS

    def label(self, point) -> str:
        if self.trimmed:
            return f"tau {point.tau:g}"
        return (f"layers {','.join(map(str, point.reduce_layers))} prune {point.prune_ratio:g} merge "
                f"{point.image_merge_ratio:g} text {point.text_merge_ratio:g}")


def load_sources(checkpoints: Sequence[str | Path], options: SweepOptions) -> list[_Source]:
    """The sweep's checkpoints with their points, checked to be comparable: one family, one architecture (the
    first checkpoint's untrimmed model is every point's baseline), one processor. One-line errors otherwise."""
    from . import methods, models
    from .checkpoints import load_pumer_model
    from .schedule import input_size

    if not checkpoints:
        raise PumerExportError("sweep needs at least one checkpoint")
    sources = []
    for path in map(Path, checkpoints):
        model = load_pumer_model(path)
        sources.append(_Source(path, model, methods.for_model(model), []))
    kinds = {s.trimmed for s in sources}
    if options.tau and True not in kinds:
        names = ", ".join(str(s.path) for s in sources)
        raise PumerExportError(f"--tau is SmartTrim's knob; {names} {'is a' if len(sources) == 1 else 'are'} "
                               f"{sources[0].method.TITLE} checkpoint{'' if len(sources) == 1 else 's'}")
    if options.finetune_steps and False not in kinds:
        raise PumerExportError("--finetune-steps fine-tunes PuMer points; a SmartTrim sweep varies tau on the trained "
                               "trimmers (retrain with `finetune --method smarttrim` for another target)")
    for source in sources:
        model = source.model
        if source.trimmed:
            source.points = [model.smarttrim_config.replace(tau=float(t))
                             for t in (options.tau or [model.smarttrim_config.tau])]
        else:
            source.points = grid(model.pumer_config, options, model.config.num_hidden_layers)
    first = sources[0]
    family = models.for_model(first.model)
    for other in sources[1:]:
        problem = None
        if models.for_model(other.model) is not family:
            problem = f"is a {models.for_model(other.model).TITLE} model, {first.path} a {family.TITLE} one"
        elif input_size(other.model.config) != input_size(first.model.config):
            problem = "takes another input size"
        elif _architecture(other.model) != _architecture(first.model):
            problem = "has another architecture (widths, depths or vocabulary)"
        elif _processor_files(other.path) != _processor_files(first.path):
            problem = "has other processor files (tokenizer or image processor)"
        if problem:
            raise PumerExportError(f"sweep compares checkpoints of one model against one baseline: {other.path} "
                                   f"{problem}; sweep it on its own")
    return sources


def _architecture(model) -> dict[str, Any]:
    """The config entries that set the untrimmed model's compute (method settings and labels left out)."""
    skip = ("pumer", "smarttrim", "id2label", "label2id", "_name_or_path", "transformers_version", "architectures",
            "torch_dtype", "dtype")
    return {k: v for k, v in model.config.to_dict().items() if k not in skip}


def _processor_files(path: Path) -> dict[str, bytes]:
    from .processing import PROCESSOR_FILES

    return {name: (path / name).read_bytes() for name in PROCESSOR_FILES if (path / name).is_file()}


def run_sweep(checkpoints: str | Path | Sequence[str | Path], questions, options: SweepOptions,
              tuning=None) -> dict[str, Any]:
    """Measure every point of ``checkpoints`` (one path or several of one model: PuMer grids and SmartTrim taus side
    by side) on ``questions`` against the first checkpoint's untrimmed model; ``tuning``: the fine-tuning data of
    ``finetune_steps`` (PuMer points)."""
    import torch

    from . import models
    from .bench import (_OrtVariant, _TorchVariant, _percentiles, ensure_export, ensure_quantized, resolve_backends,
                        time_interleaved)
    from .checkpoints import model_fingerprint
    from .console import progress_bar
    from .datasets import encode_questions
    from .finetune import predict
    from .processing import load_processor
    from .schedule import input_size
    from .vqa_eval import score

    if isinstance(checkpoints, (str, Path)):
        checkpoints = [checkpoints]
    backends, notes = resolve_backends(list(options.backends))
    backends = [b for b in backends if b in ("torch", "ort")]
    if not backends:
        raise PumerExportError("sweep measures speed with torch and/or ort; name one of them in --backends")
    unknown = [p for p in options.precisions if p not in ("fp32", "int8")]
    if unknown or "fp32" not in options.precisions:
        raise PumerExportError(f"sweep precisions are fp32 and int8 (fp32 always), got {','.join(options.precisions)}")
    if "int8" in options.precisions and "ort" not in backends:
        raise PumerExportError("the int8 axis runs ONNX Runtime's quantized exports: add ort to --backends")
    if options.threads:
        torch.set_num_threads(options.threads)
    sources = load_sources(checkpoints, options)
    if options.finetune_steps and any(s.trimmed for s in sources):
        notes.append(f"--finetune-steps {options.finetune_steps} fine-tuned the PuMer points only; SmartTrim points "
                     "keep their trained trimmers")
    checkpoint, model = sources[0].path, sources[0].model  # the baseline: this checkpoint without reduction
    family = models.for_model(model)
    base = model.pumer_config
    image_size, text_length = input_size(model.config)
    processor = load_processor(checkpoint)
    report_dir = Path(options.report_dir)
    if len(questions) < options.batch_size:
        raise PumerExportError(f"the data holds {len(questions)} questions, fewer than --batch-size "
                               f"{options.batch_size}")

    def accuracy_of(net) -> dict[str, Any]:
        labels = {int(k): v for k, v in net.config.id2label.items()}
        predictions = [labels[int(i)] for i in predict(net, encoded, 64, "cpu")]
        scored = score(questions, predictions)
        return {"accuracy": scored["accuracy"], "per_answer_type": scored["per_answer_type"]}

    def ort_accuracy_of(path: Path, net) -> dict[str, Any]:
        from .runtime import load_backend

        labels = {int(k): v for k, v in net.config.id2label.items()}
        runner = load_backend(path.parent, "ort", threads=options.threads)
        logits = np.concatenate([runner.run(encoded.batch(slice(start, start + 64)))["logits"]
                                 for start in range(0, len(questions), 64)])
        scored = score(questions, [labels[int(i)] for i in logits.argmax(axis=1)])
        return {"accuracy": scored["accuracy"], "per_answer_type": scored["per_answer_type"]}

    def timed(variants) -> dict[str, float]:
        prepared = {name: variant.prepare(feed) for name, variant in variants.items()}
        latencies = time_interleaved(variants, prepared, warmup=options.warmup, iters=options.iters)
        return {name: _percentiles(values)["p50"] for name, values in latencies.items()}

    def realised(net, batches) -> dict[str, Any]:
        """SmartTrim: the FLOP-ideal speedups the counts of ``batches`` realise."""
        stats = net.trim_statistics([{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in b.items()}
                                     for b in batches])
        return stats["flop_ideal"]

    def flops_of(settings: PumerConfig) -> int:
        from .schedule import token_schedule

        schedule = token_schedule(settings, num_layers=model.config.num_hidden_layers, text_tokens=text_length,
                                  image_tokens=family.image_tokens(model.config, image_size),
                                  rules=family.SCHEDULE_RULES)
        return family.encoder_flops(model.config, schedule)

    rows: list[dict[str, Any]] = []
    described = []
    total = sum(len(s.points) for s in sources) + len(sources)
    with (progress_bar() if options.progress else contextlib.nullcontext()) as progress:
        encoded = encode_questions(family, processor, questions, image_size=image_size, text_length=text_length,
                                   progress=progress)
        feed = encoded.batch(slice(0, options.batch_size))  # the first questions: real counts for SmartTrim
        task = progress.add_task("sweep", total=total) if progress else None
        with models.reduction_set(model, False):
            baseline = {"accuracy": accuracy_of(model), "flops": flops_of(base.without_reduction())}
        baseline_exports = {}
        if "ort" in backends:
            if not sources[0].trimmed:
                model.set_pumer_config(base.without_reduction())
            baseline_exports["ort"] = ensure_export(model, report_dir / "exports" / "baseline", dtype="fp32",
                                                    reduction=False, image_size=image_size, text_length=text_length,
                                                    processor_dir=checkpoint)
            if not sources[0].trimmed:
                model.set_pumer_config(base)
        for index, source in enumerate(sources):
            entry = {"path": str(source.path), "method": source.method.NAME, "title": source.method.TITLE}
            if index:  # the baseline's accuracy is the first checkpoint's; the others' own untrimmed weights too
                with models.reduction_set(source.model, False):
                    entry["accuracy_without_reduction"] = accuracy_of(source.model)["accuracy"]
            else:
                entry["accuracy_without_reduction"] = baseline["accuracy"]["accuracy"]
            described.append(entry)
            if progress:
                progress.advance(task)
        for number, (source, point) in enumerate((source, point) for source in sources for point in source.points):
            label = source.label(point)
            if progress:
                progress.update(task, description=f"sweep: {label}")
            if not source.trimmed and flops_of(point) >= baseline["flops"]:
                notes.append(f"{label}: reduces no token on this model (skipped)"
                             + ("; a ViLT layer whose prune count is 0 does nothing (the official rule)"
                                if family.SCHEDULE_RULES == "vilt" else ""))
                if progress:
                    progress.advance(task)
                continue
            net = _point_model(source.path, source.model, point, number, tuning, options, report_dir)
            row = {"point": number, "label": label, "checkpoint": str(source.path), "method": source.method.NAME,
                   "precision": "fp32", "accuracy": accuracy_of(net), "accuracy_backend": "torch", "speed": {}}
            if source.trimmed:
                ideal = realised(net, [encoded.batch(slice(i, i + 64)) for i in range(0, len(questions), 64)])
                row.update({"smarttrim": point.to_dict(), "flops": baseline["flops"] / ideal["per_sample"],
                            "finetune_steps": 0, "flop_ideal": ideal["per_sample"],
                            "flop_ideal_timed_batch": realised(net, [feed])["padded"]})
            else:
                row.update({"pumer": point.to_dict(), "flops": flops_of(point),
                            "finetune_steps": options.finetune_steps,
                            "flop_ideal": baseline["flops"] / flops_of(point)})
            row["accuracy_drop"] = baseline["accuracy"]["accuracy"] - row["accuracy"]["accuracy"]
            for backend in backends:
                if backend == "torch":
                    variants = {"baseline": _TorchVariant(model, False, "cpu", "fp32"),
                                "pumer": _TorchVariant(net, True, "cpu", "fp32")}
                else:
                    path = ensure_export(net, report_dir / "exports" / f"point{number}", dtype="fp32",
                                         reduction=True, image_size=image_size, text_length=text_length,
                                         fingerprint=model_fingerprint(net), processor_dir=source.path)
                    variants = {"baseline": _OrtVariant(baseline_exports["ort"], "cpu", options.threads),
                                "pumer": _OrtVariant(path, "cpu", options.threads)}
                p50 = timed(variants)
                row["speed"][backend] = _speed(p50, row.get("flop_ideal_timed_batch", row["flop_ideal"]))
            rows.append(row)
            if "int8" in options.precisions:  # the same point, its ONNX Runtime export quantized
                quantized = ensure_quantized(path, report_dir / "exports" / f"point{number}-int8")
                int8 = {**row, "label": f"{label} int8", "precision": "int8",
                        "accuracy": ort_accuracy_of(quantized, net), "accuracy_backend": "ort int8", "speed": {}}
                int8["accuracy_drop"] = baseline["accuracy"]["accuracy"] - int8["accuracy"]["accuracy"]
                p50 = timed({"baseline": _OrtVariant(baseline_exports["ort"], "cpu", options.threads),
                             "pumer": _OrtVariant(quantized, "cpu", options.threads)})
                int8["speed"]["ort"] = _speed(p50, row.get("flop_ideal_timed_batch", row["flop_ideal"]))
                rows.append(int8)
            if progress:
                progress.advance(task)
    if not rows:
        raise PumerExportError("no point of the sweep grid reduces any token on this model; " + "; ".join(notes))
    front_backend = "ort" if "ort" in backends else backends[0]
    front = pareto_front([(r["speed"][front_backend]["speedup"] if front_backend in r["speed"] else 0.0,
                           r["accuracy"]["accuracy"]) for r in rows])
    for index, row in enumerate(rows):
        row["pareto"] = index in front
    method = sources[0].method
    sweep = {"model": str(checkpoint), "family": family.NAME, "method": {"name": method.NAME, "title": method.TITLE},
             "checkpoints": described, "num_questions": len(questions),
             "settings": {"backends": backends, "batch_size": options.batch_size, "warmup": options.warmup,
                          "iters": options.iters, "threads": options.threads, "image_size": list(image_size),
                          "text_length": text_length, "finetune_steps": options.finetune_steps,
                          "pareto_backend": front_backend, "precisions": list(options.precisions),
                          "accuracy_backend": "torch (the PyTorch reference) for fp32 points, ONNX Runtime for int8"},
             "baseline": baseline, "points": rows, "matched_flops": matched_flops(rows), "notes": notes}
    write_sweep(sweep, report_dir)
    return sweep


def matched_flops(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """With more than one method: every float32 point of a later method beside the float32 point of the first
    method nearest to it in FLOP-ideal speedup (nearest on a log scale), the comparison at matched FLOPs."""
    fp32 = [r for r in rows if r.get("precision", "fp32") == "fp32"]
    order = list(dict.fromkeys(r["method"] for r in fp32))
    if len(order) < 2:
        return []
    anchors = [r for r in fp32 if r["method"] == order[0]]
    pairs = []
    for row in fp32:
        if row["method"] == order[0]:
            continue
        nearest = min(anchors, key=lambda a: abs(np.log(a["flop_ideal"] / row["flop_ideal"])))
        pairs.append({"point": row["point"], "nearest": nearest["point"]})
    return pairs


def _speed(p50: dict[str, float], flop_ideal: float) -> dict[str, float]:
    return {"baseline_p50_ms": p50["baseline"], "pumer_p50_ms": p50["pumer"], "speedup": p50["baseline"] / p50["pumer"],
            "fraction_of_ideal": p50["baseline"] / p50["pumer"] / flop_ideal}


def _point_model(checkpoint: Path, model, point: PumerConfig, number: int, tuning, options: SweepOptions,
                 report_dir: Path):
    """The model of one grid point: the checkpoint with ``point``'s settings (PuMer's, or SmartTrim's tau),
    fine-tuned for the given steps (PuMer)."""
    if not options.finetune_steps or not isinstance(point, PumerConfig):
        import copy

        net = copy.deepcopy(model)
        if isinstance(point, PumerConfig):
            net.set_pumer_config(point)
        else:
            net.set_smarttrim_config(point)
        return net
    from .checkpoints import load_pumer_model
    from .finetune import FinetuneOptions, run_finetune
    from .fsutil import atomic_output_dir
    from .processing import copy_processor_files

    start = report_dir / "points" / f"point{number}" / "start"
    previous = model.pumer_config
    with atomic_output_dir(start, force=True) as tmp:
        model.set_pumer_config(point)
        model.save_pretrained(tmp)
        copy_processor_files(checkpoint, tmp)
    model.set_pumer_config(previous)
    tuned = report_dir / "points" / f"point{number}" / "checkpoint"
    run_finetune(start, tuned, tuning, FinetuneOptions(
        epochs=1, max_steps=options.finetune_steps, lr=options.finetune_lr, warmup=0.1, progress=False,
        force=True, threads=options.threads, val_limit=500))
    return load_pumer_model(tuned)


def _titles(sweep: dict[str, Any]) -> dict[str, str]:
    """Method name -> title, in the order the sweep's checkpoints bring them."""
    titles = {c["method"]: c["title"] for c in sweep.get("checkpoints", [])}
    return titles or {sweep["method"]["name"]: sweep["method"]["title"]}


def to_markdown(sweep: dict[str, Any]) -> str:
    s = sweep["settings"]
    base = sweep["baseline"]["accuracy"]["accuracy"]
    backends = s["backends"]
    titles = _titles(sweep)
    several = len(sweep.get("checkpoints", [])) > 1
    timed_batch = any("flop_ideal_timed_batch" in row for row in sweep["points"])  # counts that depend on the input
    heading = " against ".join(titles.values())
    lines = [f"# {heading} settings sweep: accuracy against speed", "",
             f"- model: `{sweep['model']}` ({sweep['family']}); {sweep['num_questions']} questions; image "
             f"{'x'.join(map(str, s['image_size']))}, text {s['text_length']}; speed at batch {s['batch_size']}, "
             f"{s['warmup']} warm-up + {s['iters']} timed runs interleaved with the baseline"
             + (f"; each PuMer point fine-tuned {s['finetune_steps']} steps" if s["finetune_steps"] else ""),
             f"- baseline: `{sweep['model']}` without reduction, accuracy {base:.2f} (PyTorch reference); Pareto front "
             f"(*) on {s['pareto_backend']}"]
    if several:
        lines += [f"- checkpoint `{c['path']}`: {c['title']}, accuracy without reduction "
                  f"{c['accuracy_without_reduction']:.2f}" for c in sweep["checkpoints"]]
    method_column = "method | " if several else ""
    lines += ["", f"| {method_column}settings | accuracy | drop | FLOP-ideal | "
              + ("FLOP-ideal of the timed batch | " if timed_batch else "")
              + " | ".join(f"{b} speedup" for b in backends) + " |",
              "|---|" + ("---|" if several else "") + "---|---|---|" + ("---|" if timed_batch else "")
              + "---|" * len(backends)]
    for row in sweep["points"]:
        speed = " | ".join(f"{row['speed'][b]['speedup']:.2f}x" if b in row["speed"] else "-" for b in backends)
        timed = (f"{row['flop_ideal_timed_batch']:.2f}x | " if "flop_ideal_timed_batch" in row else "- | ") \
            if timed_batch else ""
        method = f"{titles.get(row.get('method'), '')} | " if several else ""
        lines.append(f"| {method}{'*' if row['pareto'] else ''}{row['label']} | {row['accuracy']['accuracy']:.2f} | "
                     f"{row['accuracy_drop']:+.2f} | {row['flop_ideal']:.2f}x | {timed}{speed} |")
    if sweep.get("matched_flops"):
        by_number = {r["point"]: r for r in sweep["points"] if r.get("precision", "fp32") == "fp32"}
        first = next(iter(titles.values()))
        speed_backend = s["pareto_backend"]
        lines += ["", f"## At matched FLOPs: each point beside the {first} point nearest in FLOP-ideal speedup", "",
                  f"| point | accuracy | FLOP-ideal | {speed_backend} speedup | nearest {first} point | accuracy | "
                  f"FLOP-ideal | {speed_backend} speedup | accuracy difference |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for pair in sweep["matched_flops"]:
            row, anchor = by_number[pair["point"]], by_number[pair["nearest"]]

            def cells(r):
                speed = r["speed"].get(speed_backend)
                return (f"{r['accuracy']['accuracy']:.2f} | {r['flop_ideal']:.2f}x | "
                        + (f"{speed['speedup']:.2f}x" if speed else "-"))

            lines.append(f"| {titles.get(row['method'], '')} {row['label']} | {cells(row)} | {anchor['label']} | "
                         f"{cells(anchor)} | {row['accuracy']['accuracy'] - anchor['accuracy']['accuracy']:+.2f} |")
    lines += ["", "Accuracy: standard VQA accuracy in percent with the PyTorch reference (int8 rows: the quantized "
              "ONNX Runtime export); drop = the float32 baseline minus the point, in points. Speedup: float32 "
              "baseline p50 / the point's p50 on the same backend and input (int8 rows: the reduction and int8 "
              "together). SmartTrim: FLOP-ideal = the per-sample mean over the questions' realised counts; the speed "
              "runs on the first questions, whose padded batch may realise less.", "",
              "![sweep](sweep.png)", ""]
    lines += [f"- note: {n}" for n in sweep["notes"]]
    return "\n".join(lines) + "\n"


def plot_sweep(sweep: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .fsutil import atomic_output_file

    backends = sweep["settings"]["backends"]
    titles = _titles(sweep)
    fig, axes = plt.subplots(1, len(backends), figsize=(4.6 * len(backends), 3.8), squeeze=False)
    base = sweep["baseline"]["accuracy"]["accuracy"]
    for ax, backend in zip(axes[0], backends):
        rows = [r for r in sweep["points"] if backend in r["speed"]]
        xs = [r["speed"][backend]["speedup"] for r in rows]
        ys = [r["accuracy"]["accuracy"] for r in rows]
        for (name, title), (precision, marker) in itertools.product(titles.items(), (("fp32", "o"), ("int8", "s"))):
            chosen = [i for i, r in enumerate(rows)
                      if r.get("precision", "fp32") == precision and r.get("method", name) == name]
            if chosen:
                ax.scatter([xs[i] for i in chosen], [ys[i] for i in chosen], marker=marker, zorder=3,
                           label=f"{title.split(' (')[0] + ', ' if len(titles) > 1 else ''}measured ({precision})")
        ax.scatter([r["flop_ideal"] for r in rows], ys, marker="x", color="gray", label="FLOP-ideal", zorder=2)
        for x, r in zip(xs, rows):
            ax.plot([x, r["flop_ideal"]], [r["accuracy"]["accuracy"]] * 2, ":", color="gray", alpha=0.5)
        front = sorted(pareto_front(list(zip(xs, ys))), key=lambda i: xs[i])
        ax.plot([xs[i] for i in front], [ys[i] for i in front], "-", color="tab:red", label="Pareto front")
        ax.axhline(base, linestyle="--", color="black", alpha=0.6, label="baseline accuracy")
        ax.axvline(1.0, color="black", alpha=0.2)
        ax.set_xlabel(f"speedup over the baseline ({backend})")
        ax.set_ylabel("VQA accuracy (%)")
        ax.set_title(backend)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_output_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write_sweep(sweep: dict[str, Any], directory: Path) -> None:
    from .fsutil import write_text_atomic

    directory.mkdir(parents=True, exist_ok=True)
    write_text_atomic(directory / "sweep.json", json.dumps(sweep, indent=2) + "\n")
    write_text_atomic(directory / "sweep.md", to_markdown(sweep))
    plot_sweep(sweep, directory / "sweep.png")

