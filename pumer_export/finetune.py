"""VQA fine-tuning of a pumer-export checkpoint of any family (``pumer-export finetune``).

What it does, in the order a reader follows:

1. the checkpoint, its processor and the training data (:mod:`pumer_export.datasets`); the answer labels must hold
   the data's answers, or ``relabel`` replaces the answer head with the data's answers;
2. validation data: given, or a seeded share of the training *images* held out (no image in both);
3. inputs encoded once per distinct image (the family's own processor rule, as ``eval`` and the exports see them);
4. the loop: the family's usual VQA loss (binary cross-entropy on soft answer scores, times the label count as ViLT
   and METER train it), AdamW with linear warm-up and cosine decay (transformers' schedule), PuMer active or not
   (default: as the checkpoint is configured; the official PuMer fine-tunes with its reducers in place, the
   ``pumer`` ops carry the gradient of their reference), a progress bar with the running loss; a method that
   learns (SmartTrim, ``--method smarttrim``) brings its own objective
   (:class:`pumer_export.methods.smarttrim.training.Objective`: relaxed decisions, self-distillation, a cost on the
   FLOPs kept) and may scale its modules' learning rate;
5. after every epoch (and at ``max_steps``): validation accuracy as trained (``--pumer off``: without the reducers,
   and then also with them, logged beside it) and what the method realises (SmartTrim's FLOPs share; an epoch short
   of its target cannot become the best); the best checkpoint so far is written atomically
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
    #: image augmentation: "" none; "flip": random left-right and top-bottom flips; "dihedral": the flips and a
    #: random transpose (square images), i.e. the 8 rotations and reflections (label-preserving on easy-VQA)
    augment: str = ""
    #: answer type -> K: the training questions of that type appear K times an epoch (after the validation
    #: hold-out), e.g. {"shape": 4} for easy-VQA, whose shape questions a small model otherwise learns last
    oversample: dict[str, int] = dataclasses.field(default_factory=dict)
    val_fraction: float = 0.05
    val_limit: int | None = 2000
    resume: bool = False
    force: bool = False
    threads: int | None = None
    progress: bool = True
    eval_batch_size: int = 128
    #: the reduction method to train: None keeps the checkpoint's (PuMer, or a SmartTrim checkpoint's trimmers);
    #: "smarttrim" attaches trimmers at ``trim_settings``' locations to a plain METER checkpoint first
    method: str | None = None
    #: where the trimmers go (method "smarttrim" on a checkpoint without them): {"cross_layers": (...), ...}, any
    #: left out at the method's default
    trim_settings: dict[str, tuple[int, ...]] | None = None
    trim_training: Any = None  # methods.smarttrim.training.TrainOptions


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


def oversampled(questions: Sequence[Question], repeats: dict[str, int]) -> list[Question]:
    """``questions`` with those of each answer type in ``repeats`` appearing that many times (the copies follow the
    originals; the batch order is drawn anew each epoch). An answer type the data lacks is one line."""
    questions = list(questions)
    present = {q.answer_type for q in questions}
    missing = sorted(set(repeats) - present)
    if missing:
        raise PumerExportError(f"--oversample: no training question has the answer type {', '.join(missing)}; "
                               f"this data has {', '.join(sorted(present))}")
    extra = [q for q in questions if repeats.get(q.answer_type, 1) > 1 for _ in range(repeats[q.answer_type] - 1)]
    return questions + extra


def flip_images(feeds: dict[str, np.ndarray], rng: np.random.Generator, *, transpose: bool = False
                ) -> dict[str, np.ndarray]:
    """Each sample's image tensors (``pixel_*``, [B, ..., H, W]) flipped left-right and top-bottom at random, and
    with ``transpose`` (square images only) also transposed at random, which together give the 8 rotations and
    reflections of the square: an augmentation for data whose answers do not depend on orientation (easy-VQA's
    shapes and colours do not; a set that asks "left or right" must not use it). Seeded per step, so a resumed run
    draws the same ones."""
    batch = len(next(iter(feeds.values())))
    horizontal, vertical = rng.random(batch) < 0.5, rng.random(batch) < 0.5
    swap = rng.random(batch) < 0.5 if transpose else np.zeros(batch, dtype=bool)
    out = dict(feeds)
    for name, value in feeds.items():
        if name.startswith("pixel"):
            value = value.copy()
            value[horizontal] = value[horizontal][..., ::-1]
            value[vertical] = value[vertical][..., ::-1, :]
            if swap.any():
                if value.shape[-1] != value.shape[-2]:
                    raise PumerExportError(f"--augment dihedral needs square images; {name} is "
                                           f"{value.shape[-2]}x{value.shape[-1]}: use --augment flip")
                value[swap] = np.swapaxes(value[swap], -1, -2)
            out[name] = value
    return out


# ------------------------------------------------------------------------ running
def task_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The family's VQA loss: binary cross-entropy on soft answer scores, times the label count (as ViLT and METER
    train)."""
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets) * targets.shape[1]


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
    """Fine-tune ``checkpoint`` on ``train``; the best checkpoint (by validation accuracy) ends up in ``out``.
    Returns the training log (also written to ``out/training.json``)."""
    import contextlib

    from .console import progress_bar

    checkpoint, out = Path(checkpoint), Path(out)
    state = resume_state(out, options)
    with (progress_bar() if options.progress else contextlib.nullcontext()) as progress:
        run = _Run(checkpoint, train, validation, options, progress)
    if state is not None:
        run.restore(state)
    try:
        with (progress_bar() if options.progress else contextlib.nullcontext()) as progress:
            task = progress.add_task("training", total=run.total_steps, completed=run.step) if progress else None
            while run.step < run.total_steps:
                loss = run.train_epoch(lambda text: progress.update(task, advance=1, description=text)
                                       if progress else None)
                accuracy, best = run.validate_epoch(loss)
                entry = run.log["epochs"][-1]
                message = (f"epoch {run.epoch}: loss {loss:.4f}, validation accuracy {accuracy:.2f}"
                           + (f" without the reducers, as trained ({entry['validation_accuracy_with_reducers']:.2f} "
                              "with them)" if "validation_accuracy_with_reducers" in entry else "")
                           + (" (best so far, saved)" if best else f" (best {run.log['best_accuracy']:.2f})"))
                (progress.console.print if progress else _info)(message)
                _save(run.model, out, checkpoint, run.log, run.optimizer, run.scheduler, best)
    finally:
        run.model.set_pumer_config(run.pumer)
        run.model.eval()
    return run.log


def _info(message: str) -> None:
    from .console import info

    info(message)


class _Run:
    """One fine-tuning run: the model, its data, optimizer and schedule, and the log; an epoch at a time."""

    def __init__(self, checkpoint: Path, train: Sequence[Question], validation: Sequence[Question] | None,
                 options: FinetuneOptions, progress=None):
        from transformers import get_cosine_schedule_with_warmup

        from . import models
        from . import methods
        from .checkpoints import load_pumer_model
        from .datasets import encode_questions, subset
        from .processing import load_processor
        from .schedule import input_size

        self.options = options
        if options.threads:
            torch.set_num_threads(options.threads)
        if options.reduction not in REDUCTION_MODES:
            raise PumerExportError(f"reduction must be one of {', '.join(REDUCTION_MODES)}, got {options.reduction!r}")
        if options.device == "cuda" and not torch.cuda.is_available():
            raise PumerExportError("--device cuda: no CUDA device is visible to PyTorch; use --device cpu")
        # 1. the checkpoint (with the method to train attached), its processor, the data and the labels
        model = load_pumer_model(checkpoint)
        method = methods.get(options.method) if options.method else methods.for_model(model)
        self.model = model = method.for_training(model, options)
        self.family = models.for_model(model)
        processor = load_processor(checkpoint)
        if not train:
            raise PumerExportError("the training data holds no questions")
        if validation is None:
            train, validation = hold_out(train, options.val_fraction, options.seed)
        self.validation = subset(validation, options.val_limit, seed=options.seed)
        train = oversampled(train, options.oversample)
        check_labels(model, train, options.relabel)
        self.pumer = model.pumer_config
        if options.reduction == "on" and not self.pumer.enabled:
            raise PumerExportError("--pumer on: the checkpoint has no PuMer reduce layers; set them with `apply` first")
        self.train_pumer = self.pumer.without_reduction() if options.reduction == "off" else self.pumer
        # 2. inputs, once per distinct image; soft targets
        image_size, text_length = input_size(model.config)
        sizes = dict(image_size=image_size, text_length=text_length, progress=progress)
        self.encoded = encode_questions(self.family, processor, train, **sizes)
        self.encoded_val = encode_questions(self.family, processor, self.validation, **sizes)
        label2id = {str(k): int(v) for k, v in model.config.label2id.items()}
        self.targets = torch.from_numpy(answer_targets(train, label2id))
        # 3. the method's objective (None: the task loss alone), optimizer and schedule (no weight decay on biases,
        #    norms and embeddings; the objective may scale a parameter's learning rate)
        torch.manual_seed(options.seed)
        model.to(options.device)
        self.steps_per_epoch = math.ceil(len(self.encoded) / options.batch_size)
        self.total_steps = self.steps_per_epoch * options.epochs
        if options.max_steps is not None:
            self.total_steps = min(self.total_steps, options.max_steps)
        self.objective = method.objective(model, options, self.total_steps)
        groups: dict[tuple[bool, float], list] = {}
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                scale = self.objective.lr_scale(name) if self.objective is not None else 1.0
                groups.setdefault((parameter.ndim >= 2 and "embeddings" not in name, scale), []).append(parameter)
        self.optimizer = torch.optim.AdamW(
            [{"params": params, "weight_decay": options.weight_decay if decayed else 0.0, "lr": options.lr * scale}
             for (decayed, scale), params in sorted(groups.items(), key=lambda item: item[0])], lr=options.lr)
        self.scheduler = get_cosine_schedule_with_warmup(self.optimizer, int(options.warmup * self.total_steps),
                                                         self.total_steps)
        self.log: dict[str, Any] = {"checkpoint": str(checkpoint), "options": _options_dict(options), "epochs": [],
                                    "train_questions": len(train), "validation_questions": len(self.validation),
                                    "total_steps": self.total_steps, "best_accuracy": None, "best_step": None,
                                    "step": 0, "seconds": 0.0}
        self.generator = torch.Generator().manual_seed(options.seed)
        self.started = time.perf_counter()

    @property
    def step(self) -> int:
        return self.log["step"]

    @property
    def epoch(self) -> int:
        return len(self.log["epochs"])

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a saved state: weights, optimizer, schedule, RNG (dropout), batch order, log."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])  # dropout goes on as it would have
        self.log = state["log"]
        self.started = time.perf_counter() - self.log["seconds"]
        for _ in range(self.step // self.steps_per_epoch):  # the permutations of the epochs that ran
            torch.randperm(len(self.encoded), generator=self.generator)
        _info(f"resuming at step {self.step} of {self.total_steps} (best validation accuracy so far "
              f"{self.log['best_accuracy']:.2f})")

    def train_epoch(self, report) -> float:
        """Train up to the end of the current epoch (or the last step); returns the epoch's mean loss."""
        options, model = self.options, self.model
        model.set_pumer_config(self.train_pumer)
        model.train()
        order = torch.randperm(len(self.encoded), generator=self.generator)  # one permutation per epoch, seeded
        epoch = self.step // self.steps_per_epoch
        losses = []
        for index in range(self.step - epoch * self.steps_per_epoch, self.steps_per_epoch):  # a resumed epoch
            rows = order[index * options.batch_size:(index + 1) * options.batch_size].numpy()  # skips what ran
            batch = self.encoded.batch(rows)
            if options.augment:
                batch = flip_images(batch, np.random.default_rng([options.seed, self.step]),
                                    transpose=options.augment == "dihedral")
            feeds, target = _to_torch(batch, options.device), self.targets[rows].to(options.device)
            if self.objective is None:  # the family's VQA loss
                logits = self.family.reference_forward(model, feeds).logits
                loss, stats = task_loss(logits, target), {}
            else:
                loss, stats = self.objective.loss(feeds, target, self.step)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            self.optimizer.step()
            self.scheduler.step()
            self.log["step"] += 1
            losses.append(loss.item())
            report(f"epoch {epoch + 1}/{options.epochs} loss {np.mean(losses[-50:]):.4f}"
                   + "".join(f" {k} {v:.3f}" for k, v in stats.items()))
            if self.step >= self.total_steps:
                break
        return float(np.mean(losses)) if losses else float("nan")

    def validate_epoch(self, loss: float) -> tuple[float, bool]:
        """Validation accuracy as the model trains (``--pumer off``: without the reducers), which picks the best
        epoch, and, when that differs from the checkpoint's own settings, also with those; logged; (accuracy,
        whether it is the best)."""
        options = self.options
        self.model.set_pumer_config(self.train_pumer)
        accuracy_ = accuracy(self.model, self.encoded_val, self.validation, options.eval_batch_size, options.device)
        log = self.log
        entry = {"epoch": self.epoch + 1, "step": self.step, "loss": loss, "validation_accuracy": accuracy_}
        if self.train_pumer != self.pumer:
            self.model.set_pumer_config(self.pumer)
            entry["validation_accuracy_with_reducers"] = accuracy(self.model, self.encoded_val, self.validation,
                                                                  options.eval_batch_size, options.device)
        self.model.set_pumer_config(self.pumer)  # saved as the checkpoint will run
        eligible = True
        if self.objective is not None:  # what the method realises on the validation data, and whether it may win
            entry.update(self.objective.validate(self.encoded_val, self.options.eval_batch_size, self.options.device))
            eligible = self.objective.eligible(entry)
        log["epochs"].append(entry)
        log["seconds"] = time.perf_counter() - self.started
        # the first epoch, or an eligible one better than the best (or than an ineligible best kept so far)
        best = log["best_accuracy"] is None or (eligible and (not log.get("best_eligible", True)
                                                             or accuracy_ > log["best_accuracy"]))
        if best:
            log["best_accuracy"], log["best_step"], log["best_eligible"] = accuracy_, self.step, eligible
        return accuracy_, best


def _options_dict(options: FinetuneOptions) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(options).items() if k not in ("progress", "force", "resume")}


def resume_state(out: Path, options: FinetuneOptions) -> dict[str, Any] | None:
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
    saved, current = state["log"]["options"], _options_dict(options)
    defaults = _options_dict(FinetuneOptions())  # a setting a run from an earlier version did not record
    changed = [k for k in ("batch_size", "epochs", "lr", "seed", "max_steps", "reduction", "relabel", "augment",
                           "oversample", "method", "trim_settings", "trim_training")
               if saved.get(k, defaults.get(k)) != current.get(k)]
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
