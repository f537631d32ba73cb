"""VQA fine-tuning of a pumer-export checkpoint of any family (``pumer-export finetune``).

What it does, in the order a reader follows:

1. the checkpoint, its processor and the training data (:mod:`pumer_export.datasets`); the answer labels must hold
   the data's answers, or ``relabel`` replaces the answer head with the data's answers;
2. validation data: given, or a seeded share of the training *images* held out (no image in both);
3. inputs encoded once per distinct image (the family's own processor rule, as ``eval`` and the exports see them);
4. the loop: the family's usual VQA loss (binary cross-entropy on soft answer scores, times the label count as ViLT
   and METER train it), AdamW with linear warm-up and cosine decay (transformers' schedule), PuMer active or not
   (default: as the checkpoint is configured; the official PuMer fine-tunes with its reducers in place, the
   ``pumer`` ops carry the gradient of their reference), a progress bar with the running loss;
5. after every epoch (and at ``max_steps``): validation accuracy; the best checkpoint so far is written atomically
   to OUT (config with labels and PuMer settings, weights, processor files) with ``training_state.pt`` and
   ``training.json`` beside it, so ``--resume`` continues where a run stopped.

A plain loop rather than transformers' ``Trainer``: the models take pre-encoded numpy batches, the checkpoint must
be written with its processor files and PuMer settings in one atomic step, and the only scheduler needed comes from
transformers itself; ``Trainer`` would add accelerate and its own checkpoint layout for no gain here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .datasets import EncodedSet, Question
from .errors import PumerExportError

STATE_FILE = "training_state.pt"
LOG_FILE = "training.json"
REDUCTION_MODES = ("config", "on", "off")


@dataclasses.dataclass
class FinetuneOptions:
    epochs: int = 3
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup: float = 0.1  # share of the steps
    max_steps: int | None = None
    seed: int = 0
    device: str = "cpu"
    reduction: str = "config"  # "config": as the checkpoint is configured; "on"; "off" (reducers out in training)
    relabel: bool = False
    augment: bool = False  # random horizontal and vertical flips of the images (label-preserving on easy-VQA)
    val_fraction: float = 0.05
    val_limit: int | None = 2000
    resume: bool = False
    force: bool = False
    threads: int | None = None
    progress: bool = True
    eval_batch_size: int = 128


# ------------------------------------------------------------------------ labels
def answer_targets(questions: Sequence[Question], label2id: dict[str, int]) -> np.ndarray:
    """Soft VQA targets [Q, labels]: each label's VQA accuracy against the question's human answers (1.0 for the
    single answer of easy-VQA; ``min(matches / 3, 1)`` averaged leave-one-out for VQAv2's ten)."""
    from .vqa_eval import vqa_accuracy

    targets = np.zeros((len(questions), len(label2id)), dtype=np.float32)
    for row, q in enumerate(questions):
        for answer in set(q.answers):
            if answer in label2id:
                targets[row, label2id[answer]] = vqa_accuracy(answer, q.answers)
    return targets


def dataset_answers(questions: Sequence[Question]) -> list[str]:
    """The data's answers (each question's most frequent human answer), most frequent first, then by name."""
    from collections import Counter

    top = Counter(_top_answer(q) for q in questions)
    return sorted(top, key=lambda a: (-top[a], a))


def check_labels(model, questions: Sequence[Question], relabel: bool) -> None:
    """Refuse data whose answers the answer head cannot hold (or replace the head with ``relabel``)."""
    from . import models

    answers = dataset_answers(questions)
    labels = set(model.config.label2id)
    outside = [a for a in answers if a not in labels]
    if relabel:
        replace_answer_head(model, sorted(answers), models.for_model(model))
        return
    if outside:
        share = sum(_top_answer(q) in outside for q in questions) / len(questions)
        raise PumerExportError(
            f"{len(outside)} of the data's {len(answers)} answers are not labels of the checkpoint (e.g. "
            f"{', '.join(repr(a) for a in outside[:4])}; {share:.0%} of the questions); pass --relabel to replace "
            "the answer head with the data's answers")


def _top_answer(question: Question) -> str:
    from collections import Counter

    return Counter(question.answers).most_common(1)[0][0]


def replace_answer_head(model, labels: list[str], family) -> None:
    """A fresh last layer of the family's answer head for ``labels`` (the config's label maps follow)."""
    head = getattr(model, family.ANSWER_HEAD)
    last = head[-1]
    head[-1] = torch.nn.Linear(last.in_features, len(labels), device=last.weight.device, dtype=last.weight.dtype)
    torch.nn.init.normal_(head[-1].weight, std=0.02)
    torch.nn.init.zeros_(head[-1].bias)
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {label: index for index, label in enumerate(labels)}
    model.config.num_labels = len(labels)
    if hasattr(model, "num_labels"):
        model.num_labels = len(labels)


def hold_out(questions: Sequence[Question], fraction: float, seed: int) -> tuple[list[Question], list[Question]]:
    """Split ``questions`` by image: a seeded ``fraction`` of the distinct images and all their questions go to
    validation, so no validation image is seen in training."""
    images = sorted({str(q.image) for q in questions})
    count = max(1, int(round(fraction * len(images)))) if fraction > 0 else 0
    if count >= len(images):
        raise PumerExportError("too few images to hold out a validation share; pass validation data")
    held = set(np.random.default_rng(seed).permutation(images)[:count].tolist())
    return [q for q in questions if str(q.image) not in held], [q for q in questions if str(q.image) in held]


def flip_images(feeds: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Each sample's image tensors (``pixel_*``, [B, ..., H, W]) flipped left-right and top-bottom at random: an
    augmentation for data whose answers do not depend on orientation (easy-VQA's shapes and colours do not; a set
    that asks "left or right" must not use it). Seeded per step, so a resumed run draws the same flips."""
    batch = len(next(iter(feeds.values())))
    horizontal, vertical = rng.random(batch) < 0.5, rng.random(batch) < 0.5
    out = dict(feeds)
    for name, value in feeds.items():
        if name.startswith("pixel"):
            value = value.copy()
            value[horizontal] = value[horizontal][..., ::-1]
            value[vertical] = value[vertical][..., ::-1, :]
            out[name] = value
    return out


# ------------------------------------------------------------------------ running
def _to_torch(feeds: dict[str, np.ndarray], device: str) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(np.ascontiguousarray(value)).to(device) for name, value in feeds.items()}


@torch.no_grad()
def predict(model, encoded: EncodedSet, batch_size: int, device: str) -> np.ndarray:
    """Top-1 label ids of every question (the family's reference forward, eval mode)."""
    from . import models

    family = models.for_model(model)
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(encoded), batch_size):
        feeds = _to_torch(encoded.batch(slice(start, start + batch_size)), device)
        out.append(family.reference_forward(model, feeds).logits.argmax(dim=-1).cpu().numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def accuracy(model, encoded: EncodedSet, questions: Sequence[Question], batch_size: int, device: str) -> float:
    """VQA accuracy (percent) of the model's top-1 answers."""
    from .vqa_eval import score

    labels = {int(k): v for k, v in model.config.id2label.items()}
    predictions = [labels[int(i)] for i in predict(model, encoded, batch_size, device)]
    return score(questions, predictions)["accuracy"]


def run_finetune(checkpoint: str | Path, out: str | Path, train: Sequence[Question],
                 options: FinetuneOptions, validation: Sequence[Question] | None = None) -> dict[str, Any]:
    """Fine-tune ``checkpoint`` on ``train``; the best checkpoint (by validation accuracy) ends up in ``out``."""
    import contextlib

    from transformers import get_cosine_schedule_with_warmup

    from . import models
    from .checkpoints import load_pumer_model
    from .console import info, progress_bar
    from .datasets import encode_questions
    from .processing import load_processor
    from .schedule import input_size

    checkpoint, out = Path(checkpoint), Path(out)
    state = _resume_state(out, options)
    if options.threads:
        torch.set_num_threads(options.threads)
    if options.reduction not in REDUCTION_MODES:
        raise PumerExportError(f"reduction must be one of {', '.join(REDUCTION_MODES)}, got {options.reduction!r}")
    if options.device == "cuda" and not torch.cuda.is_available():
        raise PumerExportError("--device cuda: no CUDA device is visible to PyTorch; use --device cpu")
    model = load_pumer_model(checkpoint)
    family = models.for_model(model)
    processor = load_processor(checkpoint)
    if not train:
        raise PumerExportError("the training data holds no questions")
    if validation is None:
        train, validation = hold_out(train, options.val_fraction, options.seed)
    validation = list(validation)
    if options.val_limit is not None and len(validation) > options.val_limit:
        from .datasets import subset

        validation = subset(validation, options.val_limit, seed=options.seed)
    check_labels(model, train, options.relabel)
    label2id = {str(k): int(v) for k, v in model.config.label2id.items()}

    pumer = model.pumer_config
    train_pumer = {"config": pumer, "on": pumer, "off": pumer.without_reduction()}[options.reduction]
    if options.reduction == "on" and not pumer.enabled:
        raise PumerExportError("--pumer on: the checkpoint has no PuMer reduce layers; set them with `apply` first")
    image_size, text_length = input_size(model.config)

    with (progress_bar() if options.progress else contextlib.nullcontext()) as progress:
        encoded = encode_questions(family, processor, train, image_size=image_size, text_length=text_length,
                                   progress=progress)
        encoded_val = encode_questions(family, processor, validation, image_size=image_size,
                                       text_length=text_length, progress=progress)
    targets = torch.from_numpy(answer_targets(train, label2id))

    torch.manual_seed(options.seed)
    model.to(options.device)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embeddings" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embeddings" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": options.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=options.lr)
    steps_per_epoch = math.ceil(len(encoded) / options.batch_size)
    total_steps = steps_per_epoch * options.epochs
    if options.max_steps is not None:
        total_steps = min(total_steps, options.max_steps)
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(options.warmup * total_steps), total_steps)
    log: dict[str, Any] = {"checkpoint": str(checkpoint), "options": _options_dict(options), "epochs": [],
                           "train_questions": len(train), "validation_questions": len(validation),
                           "total_steps": total_steps, "best_accuracy": None, "best_step": None, "step": 0,
                           "seconds": 0.0}
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])  # dropout goes on as it would have
        log = state["log"]
        info(f"resuming at step {log['step']} of {total_steps} (best validation accuracy so far "
             f"{log['best_accuracy']:.2f})")
    generator = torch.Generator().manual_seed(options.seed)
    for _ in range(log["step"] // steps_per_epoch):  # a resumed run draws the permutations of the epochs it ran
        torch.randperm(len(encoded), generator=generator)

    model.set_pumer_config(train_pumer)
    model.train()
    step = log["step"]
    started = time.perf_counter() - log["seconds"]
    try:
        with (progress_bar() if options.progress else contextlib.nullcontext()) as progress:
            task = progress.add_task("training", total=total_steps, completed=step) if progress else None
            epoch = step // steps_per_epoch
            while step < total_steps:
                order = torch.randperm(len(encoded), generator=generator)  # one permutation per epoch, seeded
                first = step - epoch * steps_per_epoch  # a resumed epoch skips the batches it already ran
                running = []
                for index in range(first, steps_per_epoch):
                    rows = order[index * options.batch_size:(index + 1) * options.batch_size].numpy()
                    batch = encoded.batch(rows)
                    if options.augment:
                        batch = flip_images(batch, np.random.default_rng([options.seed, step]))
                    feeds = _to_torch(batch, options.device)
                    logits = family.reference_forward(model, feeds).logits
                    target = targets[rows].to(options.device)
                    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target) * target.shape[1]
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    optimizer.step()
                    scheduler.step()
                    step += 1
                    running.append(loss.item())
                    if progress:
                        progress.update(task, advance=1, description=(
                            f"epoch {epoch + 1}/{options.epochs} loss {np.mean(running[-50:]):.4f}"))
                    if step >= total_steps:
                        break
                epoch += 1
                model.set_pumer_config(pumer)  # validation and saving as the checkpoint will run
                acc = accuracy(model, encoded_val, validation, options.eval_batch_size, options.device)
                log["epochs"].append({"epoch": epoch, "step": step, "loss": float(np.mean(running)) if running else None,
                                      "validation_accuracy": acc})
                log["step"], log["seconds"] = step, time.perf_counter() - started
                best = log["best_accuracy"] is None or acc > log["best_accuracy"]
                if best:
                    log["best_accuracy"], log["best_step"] = acc, step
                message = (f"epoch {epoch}: loss {log['epochs'][-1]['loss']:.4f}, validation accuracy {acc:.2f}"
                           + (" (best so far, saved)" if best else f" (best {log['best_accuracy']:.2f})"))
                (progress.console.print if progress else info)(message)
                _save(model, out, checkpoint, log, optimizer, scheduler, best)
                model.set_pumer_config(train_pumer)
    finally:
        model.set_pumer_config(pumer)
        model.eval()
    return log


def _options_dict(options: FinetuneOptions) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(options).items() if k not in ("progress", "force", "resume")}


def _resume_state(out: Path, options: FinetuneOptions) -> dict[str, Any] | None:
    """The saved training state for ``--resume`` (None otherwise); one-line errors for what cannot go on."""
    from .commands._common import check_output_dir

    check_output_dir(out, "OUT")
    if not options.resume:
        if out.exists() and any(out.iterdir()) and not options.force:
            raise PumerExportError(f"{out} already exists; pass --resume to continue its training or --force to "
                                   "replace it")
        return None
    if not (out / STATE_FILE).is_file():
        raise PumerExportError(f"--resume: {out} holds no {STATE_FILE}; start without --resume")
    try:
        state = torch.load(out / STATE_FILE, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise PumerExportError(f"--resume: cannot read {out / STATE_FILE} ({type(exc).__name__})") from None
    saved = state["log"]["options"]
    changed = [k for k in ("batch_size", "epochs", "lr", "seed", "max_steps", "reduction", "relabel", "augment")
               if saved.get(k) != getattr(options, k)]
    if changed:
        flags = ", ".join("--" + k.replace("_", "-") for k in changed)
        raise PumerExportError(f"--resume: {flags} differ(s) from "
                               f"the interrupted run ({', '.join(f'{k}={saved.get(k)!r}' for k in changed)}); pass "
                               "the same settings")
    return state


def _save(model, out: Path, checkpoint: Path, log: dict[str, Any], optimizer, scheduler, best: bool) -> None:
    """Write OUT atomically: the best checkpoint (kept from before unless this one is better), the latest training
    state and the log."""
    import shutil

    from .fsutil import atomic_output_dir
    from .processing import copy_processor_files

    with atomic_output_dir(out, force=True) as tmp:
        if best:
            model.save_pretrained(tmp)  # the caller has set the checkpoint's own PuMer settings
            copy_processor_files(checkpoint, tmp)
        else:
            for item in out.iterdir():
                if item.name not in (STATE_FILE, LOG_FILE) and item.is_file():
                    shutil.copy2(item, tmp / item.name)
        torch.save({"model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "log": log,
                    "torch_rng": torch.get_rng_state()},
                   tmp / STATE_FILE)
        (tmp / LOG_FILE).write_text(json.dumps(log, indent=2) + "\n")
