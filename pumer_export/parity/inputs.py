"""Validation inputs: seeded random, a saved ``.npz`` batch, or a folder of (image, question) pairs.

Every source yields a list of feed dicts (``OrderedDict[name, numpy array]``, one per batch)
shaped for the export: text padded to its fixed length, images at its fixed size, and dtypes
as the ONNX model declares them, so the same feed goes to every runner.

``--inputs`` accepts:

* nothing: seeded random inputs (token ids with random true lengths, random pixels);
* ``FILE.npz``: arrays ``input_ids`` [B, T] and ``pixel_values`` [B, 3, H, W], optionally
  ``attention_mask`` [B, T] and, for ViLT exports, ``token_type_ids`` [B, T], ``pixel_mask`` [B, H, W]
  (defaults: ones, zeros, ones). Names, ranks, sizes and dtypes are checked against the export;
* ``DIR``: images (``.jpg``, ``.jpeg``, ``.png``, ``.bmp``, ``.webp``) with their questions, either
  in ``questions.json`` (``{"image.jpg": "question", ...}`` or ``[{"image": ..., "question": ...}]``)
  or in a ``<image stem>.txt`` next to each image. They are processed with the checkpoint's own
  processor (only when its files are in the checkpoint directory; nothing is downloaded) and fitted
  to the export's canvas as the runtime's VQA pipeline does.
"""

from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import PumerExportError, missing
from .onnxinfo import INPUT_NAMES, TensorInfo

from ..processing import IMAGE_SUFFIXES


@dataclasses.dataclass
class InputSpec:
    """What the export expects: fixed text length and image size, and the input dtypes."""

    text_length: int
    image_size: tuple[int, int]
    dtypes: dict[str, Any]  # input name -> numpy dtype
    vocab_size: int
    names: tuple[str, ...] = INPUT_NAMES

    @classmethod
    def from_infos(cls, infos: Sequence[TensorInfo], *, text_length: int, image_size: tuple[int, int],
                   vocab_size: int) -> "InputSpec":
        dtypes = {}
        for info in infos:
            dtype = info.dtype
            if dtype == "bfloat16":
                raise PumerExportError(f"input {info.name} is bfloat16, which numpy cannot feed; export with float32 inputs")
            dtypes[info.name] = np.dtype(dtype)
        names = tuple(info.name for info in infos) or INPUT_NAMES
        for name in names:
            dtypes.setdefault(name, np.dtype(np.float32 if name == "pixel_values" else np.int64))
        return cls(text_length, tuple(image_size), dtypes, vocab_size, names)

    def to_dict(self) -> dict[str, Any]:
        return {"text_length": self.text_length, "image_size": list(self.image_size),
                "dtypes": {k: str(v) for k, v in self.dtypes.items() if k in self.names}}


@dataclasses.dataclass
class Inputs:
    """Validation batches and where they came from."""

    batches: list[OrderedDict]
    source: str
    sample_names: list[str] | None = None

    @property
    def num_samples(self) -> int:
        return sum(int(batch["input_ids"].shape[0]) for batch in self.batches)

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "num_samples": self.num_samples,
            "num_batches": len(self.batches),
            "batch_sizes": [int(b["input_ids"].shape[0]) for b in self.batches],
            "shapes": {k: list(v.shape[1:]) for k, v in self.batches[0].items()} if self.batches else {},
            "dtypes": {k: str(v.dtype) for k, v in self.batches[0].items()} if self.batches else {},
            "sample_names": self.sample_names,
        }


def _feed(arrays: dict[str, np.ndarray], spec: InputSpec) -> OrderedDict:
    return OrderedDict((name, np.ascontiguousarray(arrays[name].astype(spec.dtypes[name], copy=False)))
                       for name in spec.names)


def _split(arrays: dict[str, np.ndarray], spec: InputSpec, batch_size: int) -> list[OrderedDict]:
    total = arrays["input_ids"].shape[0]
    return [_feed({k: v[start:start + batch_size] for k, v in arrays.items()}, spec)
            for start in range(0, total, batch_size)]


def random_inputs(config, spec: InputSpec, *, num_samples: int, batch_size: int, seed: int = 0) -> Inputs:
    """``num_samples`` seeded random samples in batches of ``batch_size`` (the model family's example inputs)."""
    from .. import models

    family = models.for_model(config)

    if spec.text_length > config.max_position_embeddings:
        raise PumerExportError(
            f"text length {spec.text_length} exceeds the model's max_position_embeddings {config.max_position_embeddings}"
        )
    batches = []
    for index, start in enumerate(range(0, num_samples, batch_size)):
        size = min(batch_size, num_samples - start)
        tensors = family.example_inputs(config, size, text_length=spec.text_length, image_size=spec.image_size,
                                        seed=seed + index)
        batches.append(_feed({k: v.numpy() for k, v in tensors.items()}, spec))
    return Inputs(batches, f"random (seed {seed})")


def _check_arrays(arrays: dict[str, np.ndarray], spec: InputSpec, origin: str) -> dict[str, np.ndarray]:
    """Complete the optional inputs and check names, ranks, sizes, dtypes and id ranges."""
    unknown = sorted(set(arrays) - set(spec.names))
    if unknown:
        raise PumerExportError(f"{origin}: unknown array(s) {unknown}; expected {', '.join(spec.names)}")
    for name in ("input_ids", "pixel_values"):
        if name not in arrays:
            raise PumerExportError(f"{origin}: missing array {name!r} (required: input_ids, pixel_values)")
    ids = arrays["input_ids"]
    if ids.ndim != 2:
        raise PumerExportError(f"{origin}: input_ids must be [batch, text_length], got shape {list(ids.shape)}")
    batch, height, width = ids.shape[0], *spec.image_size
    if batch == 0:
        raise PumerExportError(f"{origin}: the batch is empty")
    expected = {
        "input_ids": (batch, spec.text_length),
        "attention_mask": (batch, spec.text_length),
        "token_type_ids": (batch, spec.text_length),
        "pixel_values": (batch, 3, height, width),
        "pixel_mask": (batch, height, width),
    }
    expected = {name: shape for name, shape in expected.items() if name in spec.names}
    defaults = {"attention_mask": np.ones, "token_type_ids": np.zeros, "pixel_mask": np.ones}
    arrays = {name: value for name, value in arrays.items() if name in spec.names}
    for name, fill in defaults.items():
        if name in expected:
            arrays.setdefault(name, fill(expected[name], dtype=np.int64))
    for name, shape in expected.items():
        if tuple(arrays[name].shape) != shape:
            raise PumerExportError(
                f"{origin}: {name} has shape {list(arrays[name].shape)}, the export expects {list(shape)} "
                f"(text length {spec.text_length}, image {height}x{width})"
            )
        kind = arrays[name].dtype.kind
        if name == "pixel_values":
            if kind != "f":
                raise PumerExportError(f"{origin}: pixel_values must be floating point, got {arrays[name].dtype}")
            if not np.isfinite(arrays[name]).all():
                raise PumerExportError(f"{origin}: pixel_values holds NaN or infinite values")
        elif kind not in "iub":
            raise PumerExportError(f"{origin}: {name} must be an integer array, got {arrays[name].dtype}")
    if ids.min() < 0 or ids.max() >= spec.vocab_size:
        raise PumerExportError(f"{origin}: input_ids must be in [0, {spec.vocab_size}), got {ids.min()}..{ids.max()}")
    return arrays


def npz_inputs(path: Path, spec: InputSpec, *, batch_size: int, num_samples: int | None = None) -> Inputs:
    import zipfile

    if not zipfile.is_zipfile(path):  # np.load would try it as a pickle and say so
        raise PumerExportError(f"{path} is not a .npz file (not a zip archive); write one with numpy.savez "
                               "(arrays input_ids, pixel_values, ...)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except Exception as exc:  # not a zip, pickled objects, truncated
        raise PumerExportError(f"{path} is not a readable .npz file ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    arrays = _check_arrays(arrays, spec, str(path))
    if num_samples is not None:
        arrays = {k: v[:num_samples] for k, v in arrays.items()}
    return Inputs(_split(arrays, spec, batch_size), f"npz {path}")


def save_npz(path: Path, batches: Sequence[dict[str, np.ndarray]]) -> None:
    """Write batches as one ``.npz`` (the format ``--inputs FILE.npz`` reads)."""
    from ..fsutil import atomic_output_file

    arrays = {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}
    with atomic_output_file(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)


def _questions(folder: Path, images: list[Path]) -> dict[str, str]:
    listing = folder / "questions.json"
    questions: dict[str, str] = {}
    if listing.is_file():
        try:
            data = json.loads(listing.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise PumerExportError(f"{listing} is not valid JSON ({exc})") from None
        if isinstance(data, dict):
            questions = {str(k): str(v) for k, v in data.items()}
        elif isinstance(data, list) and all(isinstance(d, dict) and "image" in d and "question" in d for d in data):
            questions = {str(d["image"]): str(d["question"]) for d in data}
        else:
            raise PumerExportError(f"{listing} must map image names to questions or list {{image, question}} objects")
    for image in images:
        text = image.with_suffix(".txt")
        if image.name not in questions and text.is_file():
            questions[image.name] = text.read_text(encoding="utf-8").strip()
    return questions


def folder_inputs(folder: Path, model_dir: Path, spec: InputSpec, *, batch_size: int,
                  num_samples: int | None = None, family) -> Inputs:
    """Images with their questions, prepared by the checkpoint's own processor and fitted to the export's canvas
    exactly as :class:`pumer_export.runtime.VqaPipeline` does (the model family's ``encode``)."""
    from ..processing import load_image, load_processor

    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise PumerExportError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    questions = _questions(folder, images)
    absent = [p.name for p in images if p.name not in questions]
    if absent:
        raise PumerExportError(
            f"{folder}: no question for {absent[:3]}; add questions.json or a .txt file next to each image"
        )
    if num_samples is not None:
        images = images[:num_samples]
    processor = load_processor(model_dir)
    pictures = [load_image(path, "image") for path in images]
    arrays = family.encode(processor, pictures, [questions[p.name] for p in images], image_size=spec.image_size,
                           text_length=spec.text_length)
    arrays = _check_arrays(arrays, spec, str(folder))
    return Inputs(_split(arrays, spec, batch_size), f"folder {folder}", [p.name for p in images])


def question_inputs(questions, model_dir: Path, spec: InputSpec, *, batch_size: int, num_samples: int,
                    family) -> Inputs:
    """The first ``num_samples`` VQA questions of any data source (:mod:`pumer_export.datasets`: easy-VQA, VQAv2
    files, JSON lines), prepared as ``eval`` and ``finetune`` prepare them."""
    from ..datasets import encode_questions
    from ..processing import load_processor

    chosen = list(questions)[:num_samples]
    encoded = encode_questions(family, load_processor(model_dir), chosen,
                               image_size=spec.image_size, text_length=spec.text_length)
    arrays = _check_arrays(encoded.batch(slice(None)), spec, "the VQA data")
    return Inputs(_split(arrays, spec, batch_size), f"{len(chosen)} VQA questions",
                  [f"{Path(q.image).name}: {q.question}" for q in chosen])


def load_inputs(source: str | None, *, config, spec: InputSpec, model_dir: Path | None, num_samples: int,
                batch_size: int, seed: int = 0, questions=None) -> Inputs:
    """The validation inputs for ``--inputs`` or the VQA ``questions`` of a data source (neither: random)."""
    from .. import models

    if batch_size < 1 or num_samples < 1:
        raise PumerExportError("--num-samples and --batch-size must be at least 1")
    if questions is not None:
        if source is not None:
            raise PumerExportError("pass --inputs or a VQA data source (--dataset, --jsonl, VQAv2 files), not both")
        if model_dir is None:
            raise PumerExportError("VQA questions need a checkpoint directory with the processor files")
        return question_inputs(questions, model_dir, spec, batch_size=batch_size, num_samples=num_samples,
                               family=models.for_model(config))
    if source is None:
        return random_inputs(config, spec, num_samples=num_samples, batch_size=batch_size, seed=seed)
    path = Path(source)
    if path.is_dir():
        if model_dir is None:
            raise PumerExportError("a folder of images needs a checkpoint directory with the processor files")
        return folder_inputs(path, model_dir, spec, batch_size=batch_size, num_samples=num_samples,
                             family=models.for_model(config))
    if path.suffix == ".npz":
        if not path.is_file():
            raise missing(path, "--inputs")
        return npz_inputs(path, spec, batch_size=batch_size, num_samples=num_samples)
    if not path.exists():
        raise missing(path, "--inputs", "pass a .npz file or a folder of images and questions")
    raise PumerExportError(f"--inputs {path}: expected a .npz file or a folder of images and questions")
