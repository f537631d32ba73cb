"""VQA data as one record type, from every source the commands take, and its model inputs.

Sources (each a reader returning :class:`Question` records):

* ``--dataset easy-vqa [--split train|test]``: easy-VQA (a public VQA set of 64x64 shape images, 13 answers), read
  through the ``easy-vqa`` package's own accessors (the ``datasets`` extra);
* ``--questions FILE --annotations FILE --images DIR``: VQAv2's question and annotation files with a folder of
  COCO-style image names;
* ``--jsonl FILE``: JSON lines of ``{"image", "question", "answers"}`` (image paths relative to the file).

:func:`encode_questions` prepares model inputs once per distinct image (easy-VQA asks about ten questions per
image) with the family's own ``encode_images`` / ``encode_text`` (the checkpoint's processor rule, as exports and
``run`` apply it), so training, evaluation and validation feed identical tensors.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import PumerExportError, missing

#: Named datasets (``--dataset``) and their splits.
DATASETS = {"easy-vqa": ("train", "test")}
#: easy-VQA's 13 answers, sorted: the label set of the easy-VQA checkpoints (``easy_vqa.get_answers()``).
EASY_VQA_ANSWERS = ("black", "blue", "brown", "circle", "gray", "green", "no", "rectangle", "red", "teal",
                    "triangle", "yellow", "yes")
#: easy-VQA's answer types, by answer (the set has one answer per question).
_EASY_VQA_TYPES = {"yes": "yes/no", "no": "yes/no", "circle": "shape", "rectangle": "shape", "triangle": "shape"}


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


def load_easy_vqa(split: str = "test") -> list[Question]:
    """easy-VQA's ``split`` ("train" or "test") through the ``easy-vqa`` package (one human answer per question;
    answer types yes/no, color, shape)."""
    if split not in DATASETS["easy-vqa"]:
        raise PumerExportError(f"easy-vqa has the splits {', '.join(DATASETS['easy-vqa'])}, not {split!r}")
    try:
        import easy_vqa
    except ImportError:
        raise PumerExportError("--dataset easy-vqa needs the easy-vqa package: pip install 'pumer-export[datasets]' "
                               "(or pip install easy-vqa)") from None
    if split == "train":
        texts, answers, image_ids = easy_vqa.get_train_questions()
        paths = easy_vqa.get_train_image_paths()
    else:
        texts, answers, image_ids = easy_vqa.get_test_questions()
        paths = easy_vqa.get_test_image_paths()
    return [Question(number, Path(paths[image_id]), text, [answer], _EASY_VQA_TYPES.get(answer, "color"))
            for number, (text, answer, image_id) in enumerate(zip(texts, answers, image_ids))]


def load_dataset(name: str, split: str) -> list[Question]:
    """A named dataset's split (see :data:`DATASETS`)."""
    if name not in DATASETS:
        raise PumerExportError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return load_easy_vqa(split)


def of_answer_types(questions: Sequence[Question], types: Sequence[str]) -> list[Question]:
    """The questions whose answer type is one of ``types`` (easy-VQA: yes/no, color, shape; VQAv2: yes/no, number,
    other), in their order; a type no question has is an error naming the types present."""
    present = sorted({q.answer_type for q in questions})
    unknown = [t for t in types if t not in present]
    if unknown:
        raise PumerExportError(f"no question has the answer type {', '.join(map(repr, unknown))}; this data has "
                               f"{', '.join(present)}")
    wanted = set(types)
    return [q for q in questions if q.answer_type in wanted]


def subset(questions: Sequence[Question], limit: int | None, seed: int | None = None) -> list[Question]:
    """The first ``limit`` questions, or ``limit`` drawn without replacement with ``seed`` (in their order)."""
    questions = list(questions)
    if limit is None or limit >= len(questions):
        return questions
    if seed is None:
        return questions[:limit]
    chosen = np.sort(np.random.default_rng(seed).choice(len(questions), size=limit, replace=False))
    return [questions[i] for i in chosen]


# ------------------------------------------------------------------------- inputs
@dataclasses.dataclass
class EncodedSet:
    """Model inputs of a question list: text tensors per question, image tensors per distinct image.

    ``text[name]`` is [Q, ...], ``images[name]`` is [I, ...] and ``image_of[q]`` the row of question q's image.
    """

    text: dict[str, np.ndarray]
    images: dict[str, np.ndarray]
    image_of: np.ndarray

    def __len__(self) -> int:
        return len(self.image_of)

    def batch(self, rows: Any) -> dict[str, np.ndarray]:
        """The feeds of questions ``rows`` (a slice or an index array)."""
        rows = np.arange(len(self))[rows] if isinstance(rows, slice) else np.asarray(rows)
        feeds = {name: value[rows] for name, value in self.text.items()}
        feeds.update({name: value[self.image_of[rows]] for name, value in self.images.items()})
        return feeds


def encode_questions(family, processor, questions: Sequence[Question], *, image_size: tuple[int, int],
                     text_length: int, chunk: int = 256, progress=None) -> EncodedSet:
    """Encode ``questions`` with the family's ``encode_text`` / ``encode_images`` (the processor's rule), each
    distinct image once."""
    from .processing import load_image

    rows: dict[Path, int] = {}
    image_of = np.array([rows.setdefault(Path(q.image), len(rows)) for q in questions], dtype=np.int64)
    distinct = list(rows)
    task = progress.add_task("preparing inputs", total=len(distinct)) if progress else None
    image_parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(distinct), chunk):
        pictures = [load_image(path, f"image {path}") for path in distinct[start:start + chunk]]
        for name, value in family.encode_images(processor, pictures, image_size=tuple(image_size)).items():
            image_parts.setdefault(name, []).append(np.asarray(value))
        if progress:
            progress.update(task, advance=len(pictures))
    text = family.encode_text(processor, [q.question for q in questions], text_length=text_length)
    return EncodedSet({k: np.asarray(v) for k, v in text.items()},
                      {k: np.concatenate(v) for k, v in image_parts.items()}, image_of)
