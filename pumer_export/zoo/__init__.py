"""Small trained checkpoints that ship with the package (``pumer-export pretrained``, :func:`pretrained`).

Each entry is a folder next to this file holding an ordinary checkpoint (a pumer-export one: config.json with labels
and PuMer settings; a LLaVA one: the llava-hf layout with its method's settings), model.safetensors stored in float16
to keep the package small, the processor files, and
``card.json``: how it was trained (the command lines, seeded, from the family's untrained preset) and what it
measured. Loading turns the weights back into float32, so a written or loaded checkpoint is an ordinary one.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ..errors import PumerExportError

ROOT = Path(__file__).resolve().parent


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    family: str  # a family of pumer_export.models
    preset: str  # the family's preset: the untrained architecture the recipe starts from
    description: str
    #: the shipped checkpoint the recipe starts from instead of an untrained preset (a method trained onto it)
    base: str | None = None


ENTRIES = {e.name: e for e in (
    Entry("easy-vqa-vilt", "vilt", "easy-vqa",
          "ViLT on easy-VQA: 64x64 images in 8-pixel patches (65 image tokens), text 16, 4 layers of width 128; "
          "PuMer at layers 1 and 2 (prune 0.1, merge 0.3, text merge 0.2)"),
    Entry("easy-vqa-meter", "meter", "easy-vqa",
          "METER on easy-VQA: 64x64 images in 8-pixel patches (65 image tokens), text 16, 2-layer CLIP and text "
          "towers and 3 co-attention blocks of width 128; PuMer at blocks 0 and 1 (0.2 / 0.2 / 0.2)"),
    Entry("easy-vqa-meter-smarttrim", "meter", "easy-vqa",
          "easy-vqa-meter with SmartTrim-style trimmers (pumer-export design): image tokens before both CLIP blocks, "
          "both streams before every co-attention block, heads in every block; trained to keep 45 % of the FLOPs",
          base="easy-vqa-meter"),
    Entry("easy-vqa-llava", "llava", "easy-vqa",
          "LLaVA on easy-VQA, answers generated: 64x64 images in 8-pixel patches (64 visual tokens), 2-layer CLIP "
          "tower, 4-layer Llama-style decoder of width 128; stock (nothing dropped)"),
    Entry("easy-vqa-llava-victor", "llava", "easy-vqa",
          "easy-vqa-llava with Victor (pumer-export design): 8 registers after the image, the 64 visual tokens "
          "leave before decoder layer 1 of 4", base="easy-vqa-llava"),
)}


def names() -> list[str]:
    return list(ENTRIES)


def entry(name: str) -> Entry:
    if name not in ENTRIES:
        raise PumerExportError(f"unknown pretrained model {name!r}; known: {', '.join(ENTRIES)} "
                               "(`pumer-export pretrained --list`)")
    return ENTRIES[name]


def folder(name: str) -> Path:
    """The packaged checkpoint folder of ``name`` (an error when this installation lacks its weights)."""
    path = ROOT / entry(name).name
    if not (path / "model.safetensors").is_file():
        raise PumerExportError(f"the weights of {name} are not in this installation ({path}); reinstall "
                               "pumer-export from a full source tree")
    return path


def card(name: str) -> dict[str, Any]:
    """What ``name`` was trained with and what it measured (its card.json), or {} without one."""
    path = ROOT / entry(name).name / "card.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _generation(spec: Entry) -> bool:
    from .. import models

    return models.get(spec.family).TASK == "generation"


def pretrained(name: str):
    """The trained model ``name`` (float32, eval mode), e.g. ``pretrained("easy-vqa-vilt")``."""
    from .. import models
    from ..checkpoints import load_pumer_model

    spec = entry(name)
    if _generation(spec):
        return models.get(spec.family).load(folder(name)).float()
    return load_pumer_model(folder(name))


def untrained(name: str, seed: int = 0):
    """The model ``name`` before training: its family's preset with seeded random weights."""
    from .. import models

    spec = entry(name)
    if spec.base is not None:
        raise PumerExportError(f"{name} is trained from {spec.base} (its card has the recipe), not from random weights: "
                               f"start from `pumer-export pretrained {spec.base} OUT`")
    return models.get(spec.family).preset_model(spec.preset, seed=seed)


def write(name: str, out: str | Path, *, force: bool = False, untrained_seed: int | None = None) -> Path:
    """Write ``name`` to ``out`` as an ordinary checkpoint folder (float32 weights, processor files); with
    ``untrained_seed`` the untrained model instead (the start of the training recipe in its card)."""
    from .. import models
    from ..fsutil import atomic_output_dir
    from ..processing import copy_processor_files

    out = Path(out)
    if untrained_seed is None:
        model, source = pretrained(name), folder(name)
    else:
        model, source = untrained(name, untrained_seed), None
    if _generation(entry(name)):
        from ..models.llava import checkpoint, processing

        processor = checkpoint.load_processor(source) if source else processing.tiny_processor(model.config)
        return checkpoint.save(model, processor, out, force=force)
    with atomic_output_dir(out, force=force) as tmp:
        model.save_pretrained(tmp)
        if source is not None:
            copy_processor_files(source, tmp)
        else:
            models.for_model(model).tiny_processor(model.config).save(tmp)
    return out


def store(checkpoint: str | Path, name: str, card_data: dict[str, Any]) -> Path:
    """Put a trained checkpoint into the package as ``name`` (weights in float16, processor files, card.json):
    how the shipped entries were made."""
    import shutil

    from safetensors.torch import load_file, save_file

    from ..fsutil import atomic_output_dir
    from ..processing import copy_processor_files

    entry(name)
    checkpoint = Path(checkpoint)
    with atomic_output_dir(ROOT / name, force=True) as tmp:
        weights = load_file(str(checkpoint / "model.safetensors"))
        save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in weights.items()},
                  str(tmp / "model.safetensors"), metadata={"format": "pt"})
        shutil.copy2(checkpoint / "config.json", tmp / "config.json")
        copy_processor_files(checkpoint, tmp)
        (tmp / "card.json").write_text(json.dumps(card_data, indent=2) + "\n")
    return ROOT / name
