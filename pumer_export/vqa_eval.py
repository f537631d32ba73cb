"""VQA accuracy of baseline and PuMer models on a VQAv2-format set (the accuracy side of PuMer's promise).

Data: a VQAv2 question file (``{"questions": [{"question_id", "image_id", "question"}]}``), its annotation file
(``{"annotations": [{"question_id", "answers": [{"answer", ...}], "answer_type", ...}]}``) and a folder of images
named COCO-style (``COCO_val2014_%012d.jpg``: the trailing number is the image id); or a JSON-lines file of
``{"image", "question", "answers": [...]}``.

Accuracy is the standard VQA accuracy: for a predicted answer, the mean over the human answers of
``min(#matches among the *other* human answers / 3, 1)`` (leave-one-out, as the official evaluation computes it;
with a single human answer, an exact match), after the official normalisation (see :func:`normalize_answer`).
No maintained package ships this evaluation on its own (the official script is not on PyPI; lmms-eval carries a
copy inside a whole LLM-evaluation framework), so it is implemented here and tested on worked examples.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import PumerExportError, missing

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


# ---------------------------------------------------------------------------- data
@dataclasses.dataclass
class Question:
    question_id: int
    image: Path
    question: str
    answers: list[str]
    answer_type: str = "all"


def _load_json(path: Path, what: str) -> dict:
    from .fsutil import read_json_object

    if not path.is_file():
        raise missing(path, what)
    return read_json_object(path)


def _image_index(folder: Path) -> dict[int, Path]:
    from .processing import IMAGE_SUFFIXES

    if not folder.is_dir():
        raise missing(folder, "--images", "pass the folder that holds the images")
    index = {}
    for path in folder.iterdir():
        match = re.search(r"(\d+)$", path.stem)
        if match and path.suffix.lower() in IMAGE_SUFFIXES:
            index[int(match.group(1))] = path
    return index


def load_vqav2(questions: str | Path, annotations: str | Path, images: str | Path) -> list[Question]:
    """Questions with their human answers and image paths (one-line errors for every inconsistency)."""
    qdata = _load_json(Path(questions), "--questions")
    adata = _load_json(Path(annotations), "--annotations")
    if not isinstance(qdata, dict) or not isinstance(qdata.get("questions"), list):
        raise PumerExportError(f"{questions} is not a VQAv2 question file (no \"questions\" list)")
    if not isinstance(adata, dict) or not isinstance(adata.get("annotations"), list):
        raise PumerExportError(f"{annotations} is not a VQAv2 annotation file (no \"annotations\" list)")
    by_id = {}
    for item in adata["annotations"]:
        try:
            by_id[int(item["question_id"])] = item
        except (KeyError, TypeError, ValueError):
            raise PumerExportError(f"{annotations}: an annotation lacks question_id") from None
    index = _image_index(Path(images))
    out = []
    for item in qdata["questions"]:
        try:
            qid, image_id, text = int(item["question_id"]), int(item["image_id"]), str(item["question"])
        except (KeyError, TypeError, ValueError):
            raise PumerExportError(f"{questions}: a question lacks question_id, image_id or question") from None
        if qid not in by_id:
            raise PumerExportError(f"{annotations} has no annotation for question {qid}")
        if image_id not in index:
            raise PumerExportError(f"{images} has no image for image_id {image_id} (expected e.g. "
                                   f"COCO_val2014_{image_id:012d}.jpg)")
        annotation = by_id[qid]
        answers = [str(a["answer"]) for a in annotation.get("answers", []) if isinstance(a, dict) and "answer" in a]
        if not answers:
            raise PumerExportError(f"{annotations}: question {qid} has no answers")
        out.append(Question(qid, index[image_id], text, answers, str(annotation.get("answer_type", "all"))))
    if not out:
        raise PumerExportError(f"{questions} holds no questions")
    return out


def load_jsonl(path: str | Path) -> list[Question]:
    """``{"image", "question", "answers"}`` per line (image paths relative to the file)."""
    from .fsutil import read_json_lines, relative_to_file

    out = []
    for number, item in read_json_lines(path, ("image", "question", "answers"), "--jsonl"):
        answers = item["answers"] if isinstance(item["answers"], list) else [item["answers"]]
        out.append(Question(number, relative_to_file(path, item["image"]), str(item["question"]),
                            [str(a) for a in answers], str(item.get("answer_type", "all"))))
    return out


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
    limit: int | None = None
    batch_size: int = 8
    threads: int | None = None
    provider: str = "cpu"
    force: bool = False
    progress: bool = True


def run_eval(checkpoint: str | Path, questions: Sequence[Question], options: EvalOptions) -> dict[str, Any]:
    """Baseline and PuMer on every backend, on the same prepared inputs; writes report.json and report.md."""
    from . import models
    from .bench import ensure_engine, ensure_export, resolve_backends
    from .checkpoints import load_pumer_model, model_fingerprint
    from .console import progress_bar
    from .fsutil import write_text_atomic
    from .processing import load_image, load_processor
    from .runtime import TorchBackend, load_backend
    from .schedule import input_size

    checkpoint = Path(checkpoint)
    if options.limit is not None:
        questions = list(questions)[: options.limit]
    backends, notes = resolve_backends(list(options.backends))
    model = load_pumer_model(checkpoint)
    family = models.for_model(model)
    if not model.pumer_config.enabled:
        raise PumerExportError("the checkpoint has no PuMer reduce layers, so there is no accuracy drop to measure")
    image_size, text_length = input_size(model.config)
    processor = load_processor(checkpoint)
    pictures = [load_image(q.image, f"image of question {q.question_id}") for q in questions]
    feeds = family.encode(processor, pictures, [q.question for q in questions], image_size=tuple(image_size),
                          text_length=text_length)
    export_dir = Path(options.export_dir) if options.export_dir else Path(options.report_dir) / "exports"
    fingerprint = model_fingerprint(model)
    variants: dict[tuple[str, str], Any] = {}
    for backend in backends:
        for variant in ("baseline", "pumer"):
            reduction = variant == "pumer"
            if backend == "torch":
                runner = TorchBackend(checkpoint, image_size=image_size, text_length=text_length, reduction=reduction,
                                      model=model)
            else:
                path = ensure_export(model, export_dir / f"fp32-{variant}", dtype="fp32", reduction=reduction,
                                     image_size=image_size, text_length=text_length, fingerprint=fingerprint,
                                     processor_dir=checkpoint)
                folder = path.parent
                if backend == "trt":  # pragma: no cover - GPU machines only
                    from .tensorrt.engine import write_engine_folder

                    plan = ensure_engine(path, export_dir / f"{variant}-engine" / "model.plan",
                                         batch_sizes=(1, options.batch_size), fp16=False)
                    folder = write_engine_folder(path.parent, plan)
                runner = load_backend(folder, backend, provider=options.provider, threads=options.threads)
            variants[(backend, variant)] = runner

    total = len(variants) * len(questions)
    results: dict[str, dict[str, Any]] = {}
    labels = {int(k): v for k, v in model.config.id2label.items()}
    import contextlib

    with (progress_bar() if options.progress else contextlib.nullcontext()) as progress:
        task = progress.add_task("evaluating", total=total) if progress else None
        for (backend, variant), runner in variants.items():
            runner.run({k: v[: options.batch_size] for k, v in feeds.items()})  # warm-up, not timed
            logits, seconds = [], 0.0
            for start in range(0, len(questions), options.batch_size):
                batch = {k: v[start:start + options.batch_size] for k, v in feeds.items()}
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
    agreement = {}
    reference = backends[0]
    for backend in backends[1:]:
        for variant in ("baseline", "pumer"):
            a, b = results[reference][variant]["predictions"], results[backend][variant]["predictions"]
            agreement[f"{backend} vs {reference} ({variant})"] = float(np.mean([x == y for x, y in zip(a, b)]))
    report = {
        "model": str(checkpoint), "family": family.NAME, "num_questions": len(questions),
        "settings": {"backends": backends, "image_size": list(image_size), "text_length": text_length,
                     "batch_size": options.batch_size, "limit": options.limit,
                     "pumer": model.pumer_config.to_dict()},
        "results": results, "agreement": agreement, "notes": notes,
        "questions": [{"question_id": q.question_id, "image": str(q.image), "question": q.question}
                      for q in questions],
    }
    report_dir = Path(options.report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(report_dir / "report.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(report_dir / "report.md", markdown(report))
    return report


def markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = ["# VQA accuracy: baseline vs PuMer", "",
             f"- model: `{report['model']}` ({report['family']}); {report['num_questions']} questions; image "
             f"{'x'.join(map(str, s['image_size']))}, text length {s['text_length']}, batch {s['batch_size']}",
             f"- PuMer: layers {s['pumer']['reduce_layers']}, prune {s['pumer']['prune_ratio']}, merge "
             f"{s['pumer']['image_merge_ratio']}, text merge {s['pumer']['text_merge_ratio']}", "",
             "| backend | baseline accuracy | PuMer accuracy | drop (points) | baseline q/s | PuMer q/s | speedup |",
             "|---|---|---|---|---|---|---|"]
    for backend, r in report["results"].items():
        b, p = r["baseline"], r["pumer"]
        speed = f"{r['speedup']:.2f}x" if r["speedup"] else "-"
        lines.append(f"| {backend} | {b['accuracy']:.2f} | {p['accuracy']:.2f} | {r['accuracy_drop']:+.2f} | "
                     f"{b['throughput_qps']:.1f} | {p['throughput_qps']:.1f} | {speed} |")
    if report["agreement"]:
        lines += ["", "Top-1 answer agreement between backends:", ""]
        lines += [f"- {name}: {value:.1%}" for name, value in report["agreement"].items()]
    lines += ["", "Accuracy: standard VQA accuracy (leave-one-out over the human answers, official normalisation), "
              "in percent. Throughput counts model time only (inputs are prepared once and shared).", ""]
    lines += [f"- note: {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"
