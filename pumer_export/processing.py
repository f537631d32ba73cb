"""Turning images and questions into an export's fixed-size inputs, exactly as the checkpoint's processor does.

* :func:`load_processor`: the tokenizer and image processor saved with a checkpoint or an export (local files only);
* :func:`tiny_processor`: a real small processor for the built-in random models (a word-level tokenizer over a
  small vocabulary and the family's image processor), saved with their checkpoints so every application path
  works on them;
* :func:`load_image`: paths, PIL images or arrays to RGB PIL images, with one-line errors;
* :func:`encode_text`: questions to ids padded or truncated to the fixed text length (a warning names the
  truncated questions);
* the family's ``encode_images`` fits images to the fixed canvas (see ``pumer_export.models``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import PumerExportError, missing

#: Files that make up a processor (copied from checkpoints into exports).
PROCESSOR_FILES = (
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
)
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
log = logging.getLogger(__name__)

#: Words of the built-in models' vocabulary: enough for questions about generated pictures.
TINY_WORDS = (
    "what", "is", "the", "color", "colour", "of", "shape", "how", "many", "are", "there", "in", "this", "picture",
    "image", "a", "an", "it", "does", "do", "have", "which", "where", "left", "right", "top", "bottom", "big",
    "small", "red", "green", "blue", "yellow", "black", "white", "circle", "square", "triangle", "yes", "no", "one",
    "two", "three", "four", "?",
    # easy-VQA's remaining words (appended: earlier ids stay as they were)
    "gray", "teal", "brown", "rectangle", "contain", "present", "not",
)
#: Answer labels of the built-in models (random weights: the answers mean nothing, the labels are real strings).
TINY_ANSWERS = ("yes", "no", "red", "green", "blue", "yellow", "circle", "square", "one", "two", "three", "white")


def tiny_labels(num_labels: int) -> dict[int, str]:
    """Answer labels of a built-in model: :data:`TINY_ANSWERS` when they suffice, else ``answer_i``."""
    if num_labels <= len(TINY_ANSWERS):
        return dict(enumerate(TINY_ANSWERS[:num_labels]))
    return {i: f"answer_{i}" for i in range(num_labels)}


@dataclasses.dataclass
class Processor:
    """A checkpoint's tokenizer and image processor."""

    tokenizer: Any
    image_processor: Any
    source: Path

    def save(self, directory: Path) -> list[str]:
        """Write the processor files into ``directory``; returns their names."""
        directory = Path(directory)
        before = {p.name for p in directory.iterdir()} if directory.is_dir() else set()
        self.tokenizer.save_pretrained(str(directory))
        self.image_processor.save_pretrained(str(directory))
        return sorted({p.name for p in directory.iterdir()} - before)


@contextlib.contextmanager
def quiet_transformers():
    """Hide transformers' notices that are not about the user's data (e.g. the PIL image backend fallback) and its
    progress bars for loading and writing weights (the commands show their own progress)."""
    from transformers.utils import logging as hf_logging

    logger = logging.getLogger("transformers")
    level, bars = logger.level, hf_logging.is_progress_bar_enabled()
    logger.setLevel(logging.ERROR)
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
        if bars:
            hf_logging.enable_progress_bar()


def has_processor(directory: Path) -> bool:
    """A saved processor: an image processor config (alone or inside processor_config.json) and a tokenizer."""
    directory = Path(directory)
    return any((directory / name).is_file() for name in ("preprocessor_config.json", "processor_config.json")) and any(
        (directory / name).is_file() for name in _TOKENIZER_FILES)


def copy_processor_files(src: Path, dst: Path) -> list[str]:
    """Copy the processor files of ``src`` (if any) into ``dst``; returns the copied names."""
    import shutil

    copied = []
    for name in PROCESSOR_FILES:
        if (Path(src) / name).is_file():
            shutil.copy2(Path(src) / name, Path(dst) / name)
            copied.append(name)
    return copied


def load_processor(directory: str | Path) -> Processor:
    """The processor saved in ``directory`` (a checkpoint or an export folder); nothing is downloaded."""
    directory = Path(directory)
    if not has_processor(directory):
        raise PumerExportError(
            f"{directory} has no processor files (preprocessor_config.json or processor_config.json, and "
            "tokenizer.json / vocab.txt); copy them from the source checkpoint (`pumer-export convert` and `apply` "
            "copy them when present)"
        )
    try:
        with quiet_transformers():
            from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

            if (directory / "processor_config.json").is_file():  # a combined processor (e.g. ViltProcessor)
                combined = AutoProcessor.from_pretrained(str(directory), local_files_only=True)
                tokenizer, image_processor = combined.tokenizer, combined.image_processor
            else:
                tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
                image_processor = AutoImageProcessor.from_pretrained(str(directory), local_files_only=True)
    except Exception as exc:
        raise PumerExportError(
            f"cannot load the processor of {directory} ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    return Processor(tokenizer, image_processor, directory)


def tiny_tokenizer(kind: str, vocab_size: int):
    """A word-level tokenizer over :data:`TINY_WORDS` (``kind``: "bert" or "roberta" special tokens)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    if kind == "bert":
        specials = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
        order = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    else:
        specials = {"bos": "<s>", "pad": "<pad>", "eos": "</s>", "unk": "<unk>", "cls": "<s>", "sep": "</s>",
                    "mask": "<mask>"}
        order = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    words = list(TINY_WORDS)[: max(vocab_size - len(order), 0)]
    vocab = {token: index for index, token in enumerate(order + words)}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token=specials["unk"]))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    first, last = specials["cls"], specials["sep"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{first} $A {last}", special_tokens=[(first, vocab[first]), (last, vocab[last])])
    kwargs = {f"{name}_token": token for name, token in specials.items()}
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=512, **kwargs)


# ---------------------------------------------------------------------------- images
def load_image(image: Any, name: str = "image"):
    """An RGB PIL image from a path, a PIL image or an HxWx3 / HxW uint8 or float array (one-line errors)."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise missing(path, name)
        try:
            with Image.open(path) as img:
                img.load()
                return img.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise PumerExportError(f"cannot read image {path} ({type(exc).__name__}); is it an image file?") from None
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        array = image
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=2)
        if array.ndim != 3 or array.shape[2] not in (3, 4):
            raise PumerExportError(f"{name}: an image array must be HxWx3 (RGB), got shape {list(image.shape)}")
        if array.dtype.kind == "f":
            array = np.clip(array * 255.0 if array.max() <= 1.0 else array, 0, 255).astype(np.uint8)
        return Image.fromarray(array[..., :3].astype(np.uint8), "RGB")
    raise PumerExportError(f"{name}: expected an image path, a PIL image or a numpy array, got {type(image).__name__}")


def fit_to_canvas(image, canvas: tuple[int, int]):
    """Resize ``image`` (PIL) to fit inside ``canvas`` (H, W) keeping its aspect ratio; returns the resized image."""
    from PIL import Image

    height, width = canvas
    scale = min(height / image.height, width / image.width)
    size = (max(1, min(width, round(image.width * scale))), max(1, min(height, round(image.height * scale))))
    return image.resize(size, Image.BICUBIC)


# ------------------------------------------------------------------------------ text
def encode_text(tokenizer, questions: Sequence[str], text_length: int) -> dict[str, np.ndarray]:
    """Ids [B, T] padded to ``text_length``; a question longer than that is truncated with a warning."""
    for index, question in enumerate(questions):
        if not isinstance(question, str) or not question.strip():
            raise PumerExportError(f"question {index + 1} is empty; ask something")
    full = tokenizer(list(questions), padding=False, truncation=False)["input_ids"]
    long = [i + 1 for i, ids in enumerate(full) if len(ids) > text_length]
    if long:
        log.warning("question(s) %s are longer than the export's text length %d and were truncated",
                    ", ".join(map(str, long[:5])), text_length)
    tokens = tokenizer(list(questions), padding="max_length", truncation=True, max_length=text_length,
                       return_tensors="np")
    return {name: np.asarray(value, dtype=np.int64) for name, value in tokens.items()}
