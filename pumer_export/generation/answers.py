"""Generated answers and their accuracy: ``run`` and ``eval`` on a LLaVA checkpoint or its export.

The backends are :mod:`pumer_export.runtime`'s generation backends (PyTorch's reference, ONNX Runtime) behind one
loop (:func:`pumer_export.runtime.generate`); the inputs are the checkpoint's own prompts (:mod:`.data`), the answer
is the generated text up to end-of-sequence, scored with the VQA accuracy (:func:`pumer_export.vqa_eval.score`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..datasets import Question
from ..errors import PumerExportError
from . import data

#: Tokens generated per answer unless told: easy-VQA's answers are one word and end-of-sequence.
DEFAULT_NEW_TOKENS = 4


def backend_for(name: str, model, export: Path | None, threads: int | None = None):
    """The generation backend ``name`` ("torch": the model's reference; "ort": the export folder; "trt": the engine
    folder built from it)."""
    from .. import runtime

    if name == "torch":
        return runtime.TorchGeneration(model)
    if name == "ort":
        if export is None:
            raise PumerExportError("the ort backend needs an export folder (pumer-export onnx CKPT OUT)")
        return runtime.OrtGeneration(export, threads=threads)
    if name == "trt":
        if export is None:
            raise PumerExportError("the trt backend needs an engine folder (pumer-export build EXPORT OUT)")
        return runtime.TrtGeneration(export)
    raise PumerExportError(f"LLaVA checkpoints run on torch, ort and trt; not {name}")


def check_export_matches(model, export: Path) -> None:
    """One line when an export folder was made from another method, other settings or other weights than ``model``
    (``generation.json`` records the weights' fingerprint)."""
    import json

    manifest = Path(export) / "generation.json"
    if not manifest.is_file():
        raise PumerExportError(f"{export} is not a LLaVA export (no generation.json): make one with "
                               "`pumer-export onnx CKPT OUT`")
    meta = json.loads(manifest.read_text())
    mine = {"name": model.METHOD, "settings": model.method_settings()}
    if meta.get("method") != mine:
        raise PumerExportError(f"{export} was exported from {meta.get('method')}, the checkpoint is {mine}: "
                               "export it again")
    from ..checkpoints import model_fingerprint

    if meta.get("model_sha256") not in (None, model_fingerprint(model)):
        raise PumerExportError(f"{export} was exported from other weights than the checkpoint's: export it again")


def ensure_exports(variants: dict[str, Any], folder: Path, given: dict[str, Path] | None = None,
                   progress=None) -> dict[str, Path]:
    """An export folder per variant (variant -> model): the one ``given``, else ``folder/<variant>``, reused when
    it matches the model (method, settings, weights: :func:`check_export_matches`) and exported otherwise."""
    from ..onnx.generation import MANIFEST, export_generation

    exports: dict[str, Path] = {}
    for variant, model in variants.items():
        target = Path((given or {}).get(variant) or Path(folder) / variant)
        if (given or {}).get(variant) or (target / MANIFEST).is_file():
            check_export_matches(model, target)  # an export of other weights or settings is refused
        else:
            task = progress.add_task(f"exporting {variant}", total=None) if progress else None
            export_generation(model, target, force=True)
            if progress:
                progress.remove_task(task)
        exports[variant] = target
    return exports


def generate_answers(backend, processor, prompts: data.Prompts, batch_size: int, max_new_tokens: int,
                     progress=None, label: str = "generating") -> tuple[list[str], np.ndarray, float]:
    """(answers, token ids [Q, T], seconds spent generating) for every prompt, in batches."""
    from ..runtime import generate

    task = progress.add_task(label, total=len(prompts)) if progress else None
    answers, tokens, seconds = [], [], 0.0
    for start in range(0, len(prompts), batch_size):
        rows = np.arange(start, min(start + batch_size, len(prompts)))
        feeds = prompts.batch(rows)
        began = time.perf_counter()
        ids = generate(backend, feeds["input_ids"], feeds["attention_mask"], feeds["pixel_values"], max_new_tokens)
        seconds += time.perf_counter() - began
        answers += data.decode_answers(processor, ids)
        tokens.append(ids)
        if progress:
            progress.update(task, advance=len(rows))
    return answers, np.concatenate(tokens) if tokens else np.zeros((0, max_new_tokens), np.int64), seconds


def evaluate(variants: dict[str, Any], processor, questions: Sequence[Question], *, backends: Sequence[str],
             exports: dict[str, Path], batch_size: int, max_new_tokens: int = DEFAULT_NEW_TOKENS,
             threads: int | None = None, progress=None) -> dict[str, Any]:
    """VQA accuracy of every variant (e.g. {"stock": model, "victor": model}) on every backend, the same questions;
    the agreement of each backend's token ids with PyTorch's."""
    from ..vqa_eval import score

    report: dict[str, Any] = {"questions": len(questions), "max_new_tokens": max_new_tokens, "results": {},
                              "agreement": {}}
    for variant, model in variants.items():
        prompts = data.encode(model, processor, questions, progress=progress)
        reference = None
        for name in backends:
            backend = backend_for(name, model, exports.get(variant), threads)
            answers, tokens, seconds = generate_answers(backend, processor, prompts, batch_size, max_new_tokens,
                                                        progress, f"{variant} on {name}")
            scored = score(questions, answers)
            report["results"].setdefault(variant, {})[name] = {
                "accuracy": scored["accuracy"], "per_answer_type": scored["per_answer_type"],
                "samples_per_second": len(questions) / seconds if seconds else None,
                "examples": [{"question": q.question, "answer": a, "expected": q.answers[0] if q.answers else ""}
                             for q, a in list(zip(questions, answers))[:5]]}
            if name == "torch":
                reference = tokens
            elif reference is not None:
                report["agreement"][f"{name} vs torch ({variant})"] = float((tokens == reference).all(axis=1).mean())
    stock = report["results"].get("stock")
    for variant, results in report["results"].items():
        if variant != "stock" and stock:
            for name, result in results.items():
                if name in stock:
                    result["drop"] = stock[name]["accuracy"] - result["accuracy"]
    return report


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# LLaVA easy-VQA-style evaluation ({report['questions']} questions, up to "
             f"{report['max_new_tokens']} new tokens, greedy)", "",
             "| variant | backend | accuracy | drop vs stock | per answer type | samples/s |", "|---|---|---|---|---|---|"]
    for variant, results in report["results"].items():
        for name, result in results.items():
            types = ", ".join(f"{k} {v:.2f}" for k, v in result["per_answer_type"].items())
            drop = f"{result['drop']:.2f}" if "drop" in result else ""
            speed = f"{result['samples_per_second']:.1f}" if result["samples_per_second"] else ""
            lines.append(f"| {variant} | {name} | {result['accuracy']:.2f} | {drop} | {types} | {speed} |")
    if report["agreement"]:
        lines += ["", "Token agreement with PyTorch (whole answers equal): " + ", ".join(
            f"{k} {100 * v:.2f} %" for k, v in report["agreement"].items())]
    return "\n".join(lines) + "\n"
