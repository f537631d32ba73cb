"""An export of a LLaVA (stock, Victor, FastV) against its PyTorch reference: ``pumer-export validate`` on a LLaVA.

On the same prompts (the checkpoint's processor; seeded random images with questions of different lengths, so
batches carry left padding, or questions from a VQA set), for every batch:

* ``image_features``: the vision graph's output against the reference's;
* ``prefill logits``: the last position's logits;
* ``present shapes``: every layer's keys and values hold ``L`` positions before the drop layer and ``L - D`` from
  it on (D: the dropped positions), as the two-length cache requires;
* ``present values``: the keys and values themselves;
* ``greedy tokens``: the ids of ``steps`` greedy decode steps through ONNX Runtime's loop equal the reference's
  (exactly).

A float check passes when max|diff| <= atol or the max relative difference <= rtol.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..datasets import Question
from ..errors import PumerExportError

#: Questions of the built-in validation prompts (different lengths: batches get left padding).
QUESTIONS = ("what color is the shape?", "is there a circle in the image?", "what shape is it?",
             "does the image contain a red shape?", "is the shape not green?", "what is the color of the shape?")


@dataclasses.dataclass
class Check:
    name: str
    passed: bool
    message: str
    backend: str = "ort"


def _close(name: str, ours: np.ndarray, theirs: np.ndarray, atol: float, rtol: float) -> Check:
    if ours.shape != theirs.shape:
        return Check(name, False, f"shape {ours.shape}, reference {theirs.shape}")
    diff = np.abs(ours.astype(np.float64) - theirs.astype(np.float64))
    worst = float(diff.max()) if diff.size else 0.0
    relative = float((diff / np.maximum(np.abs(theirs), 1e-12)).max()) if diff.size else 0.0
    passed = worst <= atol or relative <= rtol
    return Check(name, passed, f"max|diff| {worst:.2e} (atol {atol:g}), max rel {relative:.2e} (rtol {rtol:g})")


def random_batches(model, processor, num_samples: int, batch_size: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Seeded random images with the built-in questions, encoded by ``processor``."""
    from PIL import Image

    from ..models.llava.processing import encode

    rng = np.random.default_rng(seed)
    size = model.config.vision_config.image_size
    batches = []
    for start in range(0, num_samples, batch_size):
        count = min(batch_size, num_samples - start)
        images = [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(count)]
        questions = [QUESTIONS[(start + i) % len(QUESTIONS)] for i in range(count)]
        batches.append(encode(processor, images, questions, registers=getattr(model, "registers", 0)))
    return batches


def dataset_batches(model, processor, questions: Sequence[Question], num_samples: int, batch_size: int
                    ) -> list[dict[str, np.ndarray]]:
    from . import data

    prompts = data.encode(model, processor, list(questions)[:num_samples])
    return [{k: v for k, v in prompts.batch(np.arange(s, min(s + batch_size, len(prompts)))).items()
             if not k.startswith("answer")} for s in range(0, len(prompts), batch_size)]


def validate(model, processor, export: str | Path, *, questions: Sequence[Question] | None = None,
             num_samples: int = 6, batch_size: int = 3, seed: int = 0, steps: int = 8, atol: float = 1e-4,
             rtol: float = 1e-3, threads: int | None = None) -> dict[str, Any]:
    """Every check on every batch; ``{"passed", "checks", "batches"}``."""
    from .. import runtime
    from .answers import check_export_matches

    export = Path(export)
    check_export_matches(model, export)
    ort, torch_ = runtime.OrtGeneration(export, threads=threads), runtime.TorchGeneration(model)
    meta = ort.meta
    if questions:
        batches = dataset_batches(model, processor, questions, num_samples, batch_size)
    else:
        batches = random_batches(model, processor, num_samples, batch_size, seed)
    if not batches:
        raise PumerExportError("no prompts to validate on")
    checks: list[Check] = []
    k, dropped = meta["drop_layer"], meta["dropped_tokens"]
    for number, feeds in enumerate(batches):
        tag = f"batch {number} ({feeds['input_ids'].shape[0]}x{feeds['input_ids'].shape[1]})"
        ours_features = ort.image_features(feeds["pixel_values"])
        their_features = torch_.image_features(feeds["pixel_values"])
        checks.append(_close(f"{tag} image_features", ours_features, their_features, atol, rtol))
        ours = ort.prefill(feeds["input_ids"], feeds["attention_mask"], their_features)
        theirs = torch_.prefill(feeds["input_ids"], feeds["attention_mask"], their_features)
        checks.append(_close(f"{tag} prefill logits", ours[0], theirs[0], atol, rtol))
        length = feeds["input_ids"].shape[1]
        wrong = [f"layer {i // 2}: {p.shape[2]} (want {length if i // 2 < k else length - dropped})"
                 for i, p in enumerate(ours[2]) if p.shape[2] != (length if i // 2 < k else length - dropped)]
        checks.append(Check(f"{tag} present shapes", not wrong,
                            "; ".join(wrong) if wrong else
                            f"layers < {k}: {length} positions, layers >= {k}: {length - dropped} (L - {dropped})"))
        if not wrong:  # the values, once the shapes are right: the first layer that fails, else the largest error
            each = [_close(f"layer {i // 2} {'value' if i % 2 else 'key'}", a, b, atol, rtol)
                    for i, (a, b) in enumerate(zip(ours[2], theirs[2]))]
            worst = next((c for c in each if not c.passed), None) or max(
                each, key=lambda c: float(c.message.split()[1]))
            checks.append(Check(f"{tag} present values", worst.passed, f"{worst.name}: {worst.message}"))
        generated = runtime.generate(ort, feeds["input_ids"], feeds["attention_mask"], feeds["pixel_values"], steps)
        expected = runtime.generate(torch_, feeds["input_ids"], feeds["attention_mask"], feeds["pixel_values"], steps)
        equal = generated == expected
        checks.append(Check(f"{tag} greedy tokens", bool(equal.all()),
                            f"{steps} steps: {int(equal.all(axis=1).sum())} of {len(equal)} rows equal"))
    return {"passed": all(c.passed for c in checks), "checks": checks, "batches": len(batches),
            "method": meta.get("method"), "steps": steps}
