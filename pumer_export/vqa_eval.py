"""VQA accuracy of baseline and PuMer models on a VQAv2-format set (the accuracy side of PuMer's promise).

Data: :class:`pumer_export.datasets.Question` records from any source the commands take (easy-VQA, VQAv2 files,
JSON lines; see :mod:`pumer_export.datasets`).

Accuracy is the standard VQA accuracy: for a predicted answer, the mean over the human answers of
``min(#matches among the *other* human answers / 3, 1)`` (leave-one-out, as the official evaluation computes it;
with a single human answer, an exact match), after the official normalisation (see :func:`normalize_answer`).
No maintained package ships this evaluation on its own (the official script is not on PyPI; lmms-eval carries a
copy inside a whole LLM-evaluation framework), so it is implemented here and tested on worked examples.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .datasets import Question
from .errors import PumerExportError

# ----------------------------------------------------------------- normalisation
_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
                "?", "!")
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_BETWEEN_DIGITS = re.compile(r"(\d)(,)(\d)")
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
            "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
#: Contractions written without their apostrophe, restored (the official evaluation's rule, common forms).
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldntve": "couldn't've", "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hes": "he's", "howd": "how'd", "howll": "how'll",
    "hows": "how's", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itll": "it'll", "lets": "let's",
    "maam": "ma'am", "mightnt": "mightn't", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't", "shant": "shan't",
    "shed": "she'd", "shes": "she's", "shouldve": "should've", "shouldnt": "shouldn't", "somebodyd": "somebody'd",
    "somebodys": "somebody's", "someoned": "someone'd", "someones": "someone's", "somethingd": "something'd",
    "somethings": "something's", "thered": "there'd", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed": "we'd", "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's", "whereve": "where've",
    "whod": "who'd", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't", "yall": "y'all",
    "youd": "you'd", "youll": "you'll", "youre": "you're", "youve": "you've",
}


def strip_punctuation(text: str) -> str:
    """Punctuation next to a space (or any, when a comma sits between digits) is removed, otherwise replaced by a
    space; a period not between digits is removed."""
    out = text
    for mark in _PUNCTUATION:
        if (mark + " " in text or " " + mark in text) or _COMMA_BETWEEN_DIGITS.search(text):
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD.sub("", out)


def normalize_words(text: str) -> str:
    """Lower case, number words to digits, articles dropped, contractions restored."""
    words = [_NUMBERS.get(word, word) for word in text.lower().split()]
    words = [word for word in words if word not in _ARTICLES]
    return " ".join(_CONTRACTIONS.get(word, word) for word in words)


def normalize_answer(text: str) -> str:
    """The official normalisation of a predicted answer: whitespace, punctuation, then words."""
    return normalize_words(strip_punctuation(text.replace("\n", " ").replace("\t", " ").strip()))


def vqa_accuracy(prediction: str, human_answers: Sequence[str]) -> float:
    """Standard VQA accuracy of one prediction against the human answers (see the module doc).

    As in the official evaluation, answers are normalised only when the humans disagree (ground-truth answers get the
    punctuation rule, the prediction the full normalisation); otherwise the comparison is exact after trimming.
    """
    answers = [a.replace("\n", " ").replace("\t", " ").strip() for a in human_answers]
    if not answers:
        raise PumerExportError("a question has no human answers")
    predicted = prediction.replace("\n", " ").replace("\t", " ").strip()
    if len(set(answers)) > 1:
        answers = [strip_punctuation(a) for a in answers]
        predicted = normalize_answer(predicted)
    if len(answers) == 1:
        return float(answers[0] == predicted)
    scores = []
    for left_out in range(len(answers)):
        matches = sum(1 for i, answer in enumerate(answers) if i != left_out and answer == predicted)
        scores.append(min(1.0, matches / 3.0))
    return sum(scores) / len(scores)


# ---------------------------------------------------------------------------- scoring
def score(questions: Sequence[Question], predictions: Sequence[str]) -> dict[str, Any]:
    """Overall and per-answer-type accuracy (percent) of ``predictions``."""
    per = [vqa_accuracy(p, q.answers) for q, p in zip(questions, predictions)]
    types: dict[str, list[float]] = {}
    for q, value in zip(questions, per):
        types.setdefault(q.answer_type, []).append(value)
    return {"accuracy": 100.0 * float(np.mean(per)),
            "per_answer_type": {k: 100.0 * float(np.mean(v)) for k, v in sorted(types.items())},
            "per_question": per}


@dataclasses.dataclass
class EvalOptions:
    backends: Sequence[str] = ("torch", "ort")
    report_dir: Path = Path("eval-report")
    export_dir: Path | None = None
    #: ONNX export folders to use as they are, by variant ("baseline", "pumer"); others are made under export_dir
    exports: dict[str, Path] | None = None
    #: precisions: fp32, and for ONNX Runtime int8 (dynamic, made from the fp32 export) or int8-static (given
    #: exports only); the given exports are used for the first one
    dtypes: Sequence[str] = ("fp32",)
    limit: int | None = None
    batch_size: int = 8
    threads: int | None = None
    provider: str = "cpu"
    force: bool = False
    progress: bool = True


def run_eval(checkpoint: str | Path, questions: Sequence[Question], options: EvalOptions, *,
             model=None) -> dict[str, Any]:
    """Baseline and PuMer on every backend, on the same prepared inputs; writes report.json and report.md."""
    from . import methods, models
    from .bench import ensure_engine, ensure_export, ensure_quantized, resolve_backends
    from .checkpoints import load_pumer_model, model_fingerprint
    from .console import progress_bar
    from .fsutil import write_text_atomic
    from .datasets import encode_questions
    from .processing import load_processor
    from .runtime import TorchBackend, load_backend
    from .schedule import input_size

    checkpoint = Path(checkpoint)
    if options.limit is not None:
        questions = list(questions)[: options.limit]
    backends, notes = resolve_backends(list(options.backends))
    cases = _cases(backends, list(options.dtypes), notes)
    model = load_pumer_model(checkpoint) if model is None else model
    method = methods.for_model(model)
    for backend in backends:
        methods.require_backend(model, backend, "eval")
    family = models.for_model(model)
    if not method.settings(model.config).enabled:
        raise PumerExportError(f"the checkpoint has no {method.TITLE} reduction configured, so there is no accuracy "
                               "drop to measure")
    image_size, text_length = input_size(model.config)
    fingerprint = model_fingerprint(model)
    _check_given_exports(model, options, fingerprint)
    processor = load_processor(checkpoint)
    with (progress_bar() if options.progress else contextlib.nullcontext()) as progress:
        encoded = encode_questions(family, processor, questions, image_size=tuple(image_size),
                                   text_length=text_length, progress=progress)
    export_dir = Path(options.export_dir) if options.export_dir else Path(options.report_dir) / "exports"
    variants: dict[tuple[str, str], Any] = {}
    for backend, dtype in cases:
        name = backend if dtype == "fp32" else f"{backend} {dtype}"
        for variant in ("baseline", "pumer"):
            reduction = variant == "pumer"
            if backend == "torch":
                runner = TorchBackend(checkpoint, image_size=image_size, text_length=text_length, reduction=reduction,
                                      model=model)
            else:
                given = (options.exports or {}).get(variant) if dtype == options.dtypes[0] else None
                if given:
                    path = Path(given) / "model.onnx"
                else:
                    if dtype == "int8-static":
                        raise PumerExportError("--dtype int8-static needs calibrated exports: make them with "
                                               "`pumer-export quantize EXPORT OUT --mode static --calibration-dataset "
                                               "...` and pass them as --onnx and --onnx-baseline")
                    path = ensure_export(model, export_dir / f"fp32-{variant}", dtype="fp32", reduction=reduction,
                                         image_size=image_size, text_length=text_length, fingerprint=fingerprint,
                                         processor_dir=checkpoint)
                    if dtype == "int8":
                        path = ensure_quantized(path, export_dir / f"int8-{variant}")
                folder = path.parent
                if backend == "trt":  # pragma: no cover - GPU machines only
                    from .tensorrt.engine import write_engine_folder

                    plan = ensure_engine(path, export_dir / f"{variant}-engine" / "model.plan",
                                         batch_sizes=(1, options.batch_size), fp16=False)
                    folder = write_engine_folder(path.parent, plan)
                runner = load_backend(folder, backend, provider=options.provider, threads=options.threads)
            variants[(name, variant)] = runner
    backends = list(dict.fromkeys(name for name, _ in variants))

    total = len(variants) * len(questions)
    results: dict[str, dict[str, Any]] = {}
    labels = {int(k): v for k, v in model.config.id2label.items()}
    with (progress_bar() if options.progress else contextlib.nullcontext()) as progress:
        task = progress.add_task("evaluating", total=total) if progress else None
        for (backend, variant), runner in variants.items():
            runner.run(encoded.batch(slice(0, options.batch_size)))  # warm-up, not timed
            logits, seconds = [], 0.0
            for start in range(0, len(questions), options.batch_size):
                batch = encoded.batch(slice(start, start + options.batch_size))
                t0 = time.perf_counter()
                logits.append(runner.run(batch)["logits"])
                seconds += time.perf_counter() - t0
                if progress:
                    progress.update(task, advance=len(batch["input_ids"]), description=f"{backend} {variant}")
            top = np.concatenate(logits).argmax(axis=1)
            predictions = [labels.get(int(i), str(int(i))) for i in top]
            scored = score(questions, predictions)
            results.setdefault(backend, {})[variant] = {
                "accuracy": scored["accuracy"], "per_answer_type": scored["per_answer_type"],
                "throughput_qps": len(questions) / seconds if seconds else None, "seconds": seconds,
                "predictions": predictions,
            }
    for backend, by_variant in results.items():
        by_variant["accuracy_drop"] = by_variant["baseline"]["accuracy"] - by_variant["pumer"]["accuracy"]
        base, pumer = by_variant["baseline"]["throughput_qps"], by_variant["pumer"]["throughput_qps"]
        by_variant["speedup"] = pumer / base if base and pumer else None
    quantization_cost = {}  # each quantized row against the fp32 row of its backend, per variant
    for name, by_variant in results.items():
        backend, _, dtype = name.partition(" ")
        if dtype and backend in results:
            quantization_cost[name] = {v: results[backend][v]["accuracy"] - by_variant[v]["accuracy"]
                                       for v in ("baseline", "pumer")}
    agreement = {}
    reference = backends[0]
    for backend in backends[1:]:
        for variant in ("baseline", "pumer"):
            a, b = results[reference][variant]["predictions"], results[backend][variant]["predictions"]
            label = variant if variant == "baseline" else method.NAME  # the reduced model by its method's name
            agreement[f"{backend} vs {reference} ({label})"] = float(np.mean([x == y for x, y in zip(a, b)]))
    report = {
        "model": str(checkpoint), "family": family.NAME, "num_questions": len(questions),
        "settings": {"backends": backends, "dtypes": list(options.dtypes), "image_size": list(image_size),
                     "text_length": text_length,
                     "batch_size": options.batch_size, "limit": options.limit,
                     "pumer": model.pumer_config.to_dict(),
                     "method": {"name": method.NAME, "title": method.TITLE,
                                "settings": method.settings(model.config).to_dict()}},
        "results": results, "agreement": agreement, "quantization_cost": quantization_cost, "notes": notes,
        "questions": [{"question_id": q.question_id, "image": str(q.image), "question": q.question}
                      for q in questions],
    }
    report_dir = Path(options.report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(report_dir / "report.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(report_dir / "report.md", markdown(report))
    return report


def _check_given_exports(model, options: EvalOptions, fingerprint: str) -> None:
    """Given exports must come from this checkpoint, one per variant, and run in the first --dtype (one line)."""
    from .bench import export_precision
    from .parity.onnxinfo import check_export_of, read_onnx_info

    precisions = {}
    for variant, folder in (options.exports or {}).items():
        info = read_onnx_info(Path(folder) / "model.onnx")
        check_export_of(model, info, reduction=variant == "pumer", fingerprint=fingerprint,
                        option=f"the {variant} export")
        precisions[variant] = export_precision(info)
    if len(set(precisions.values())) > 1:
        raise PumerExportError("the given exports run in different precisions (" + ", ".join(
            f"{v} {p}" for v, p in precisions.items()) + "); pass a PuMer and a baseline export of one precision")
    if precisions and next(iter(precisions.values())) != options.dtypes[0]:
        precision = next(iter(precisions.values()))
        raise PumerExportError(f"the given exports run in {precision} and the first --dtype is {options.dtypes[0]}: "
                               f"pass --dtype {precision}")


def _cases(backends: Sequence[str], dtypes: Sequence[str], notes: list[str]) -> list[tuple[str, str]]:
    """(backend, dtype) pairs to evaluate; one-line errors for pairs no backend runs (before any work)."""
    from .backends import BACKEND_DTYPES, QUANTIZED

    unknown = [d for d in dtypes if d not in ("fp32", *QUANTIZED)]
    if unknown:
        raise PumerExportError(f"--dtype {','.join(unknown)}: eval measures fp32 and, on ONNX Runtime, "
                               f"{', '.join(QUANTIZED)}")
    cases: list[tuple[str, str]] = []
    for dtype in dtypes:
        for backend in backends:
            if dtype == "fp32":
                cases.append((backend, dtype))
            elif backend == "ort":
                cases.append((backend, dtype))
            elif backend == "torch":
                note = f"torch {dtype} skipped: PyTorch runs the float32 reference; compare the {dtype} rows with it"
                if "fp32" not in dtypes and ("torch", "fp32") not in cases:
                    cases.append(("torch", "fp32"))
                    note += " (measured for that)"
                notes.append(note)
            elif dtype not in BACKEND_DTYPES[backend]:
                raise PumerExportError(f"--dtype {dtype} is for ONNX Runtime; TensorRT engines of this project are "
                                       "fp32 / fp16 (Q/DQ engines: `pumer-export quantize --for tensorrt`, then build)")
    if not cases:
        raise PumerExportError("nothing to evaluate: " + "; ".join(notes))
    return cases


def markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    method = s.get("method") or {"name": "pumer", "title": "PuMer"}
    name = "PuMer" if method["name"] == "pumer" else method["name"]
    if method["name"] == "pumer":
        described = (f"- PuMer: layers {s['pumer']['reduce_layers']}, prune {s['pumer']['prune_ratio']}, merge "
                     f"{s['pumer']['image_merge_ratio']}, text merge {s['pumer']['text_merge_ratio']}")
    else:
        described = f"- {method['title']}: " + ", ".join(f"{k} {v}" for k, v in method["settings"].items()
                                                         if k != "format_version")
    lines = [f"# VQA accuracy: baseline vs {name}", "",
             f"- model: `{report['model']}` ({report['family']}); {report['num_questions']} questions; image "
             f"{'x'.join(map(str, s['image_size']))}, text length {s['text_length']}, batch {s['batch_size']}",
             described, "",
             f"| backend | baseline accuracy | {name} accuracy | drop (points) | baseline q/s | {name} q/s | speedup |",
             "|---|---|---|---|---|---|---|"]
    for backend, r in report["results"].items():
        b, p = r["baseline"], r["pumer"]
        speed = f"{r['speedup']:.2f}x" if r["speedup"] else "-"
        lines.append(f"| {backend} | {b['accuracy']:.2f} | {p['accuracy']:.2f} | {r['accuracy_drop']:+.2f} | "
                     f"{b['throughput_qps']:.1f} | {p['throughput_qps']:.1f} | {speed} |")
    if report.get("quantization_cost"):
        lines += ["", "Accuracy lost to quantization (points, against the fp32 row of the same backend):", ""]
        lines += [f"- {row}: baseline {cost['baseline']:+.2f}, {name} {cost['pumer']:+.2f}"
                  for row, cost in report["quantization_cost"].items()]
    if report["agreement"]:
        lines += ["", "Top-1 answer agreement between backends:", ""]
        lines += [f"- {name}: {value:.1%}" for name, value in report["agreement"].items()]
    lines += ["", "Accuracy: standard VQA accuracy (leave-one-out over the human answers, official normalisation), "
              "in percent. Throughput counts model time only (inputs are prepared once and shared).", ""]
    lines += [f"- note: {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"
