"""Training a LLaVA on a VQA set phrased as generation (``pumer-export finetune`` on a LLaVA checkpoint).

The target is the answer word followed by end-of-sequence, after the checkpoint's own prompt; the loss is the
next-token cross-entropy on those tokens with the model's method in place
(:func:`pumer_export.models.llava.training.answer_loss`), as LLaVA and Victor train. ``--method victor`` on a stock
checkpoint attaches the registers first (:func:`pumer_export.models.llava.victor.attach`). What trains (``parts``):

* ``all``: every weight (a model trained from scratch, e.g. ``easy-vqa-llava``);
* ``projector``: Victor's stage 1, the registers and the projector (:func:`pumer_export.methods.victor.training.
  trainable`);
* ``projector+language``: Victor's stage 2, also the language model (the vision tower stays frozen).

The rest follows the classification ``finetune`` (:mod:`pumer_export.finetune`): the validation hold-out by image,
oversampling by answer type, AdamW with warm-up and cosine decay, validation accuracy (greedy answers, the VQA
accuracy) after each epoch, the best checkpoint written atomically with its processor files and ``training.json``,
and the latest training state (``training_state.pt``) from which ``--resume`` continues at the next epoch.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..datasets import Question
from ..errors import PumerExportError
from ..finetune import STATE_FILE, FinetuneOptions, hold_out, oversampled, resume_state
from . import data

PARTS = ("all", "projector", "projector+language")
LOG_FILE = "training.json"


def trainable(model, parts: str) -> list[torch.nn.Parameter]:
    """Freeze what ``parts`` keeps fixed; the parameters that train."""
    from ..methods.victor import training as victor_training

    if parts not in PARTS:
        raise PumerExportError(f"--train must be one of {', '.join(PARTS)}, got {parts!r}")
    if parts == "all":
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        return list(model.parameters())
    if not getattr(model, "registers", 0):
        raise PumerExportError(f"--train {parts} is Victor's staged training (registers and projector); train a "
                               "stock or FastV LLaVA with --train all")
    return victor_training.trainable(model, language_model=parts == "projector+language")


def check_method(model, options: FinetuneOptions) -> None:
    """``--method``: Victor attaches to a stock checkpoint; otherwise the checkpoint trains the method it carries."""
    from ..models.llava import checkpoint

    present = checkpoint.method_of(model.config)
    if options.method in (None, present or None) or (options.method == "victor" and not present):
        return
    raise PumerExportError(f"--method {options.method}: a LLaVA checkpoint trains Victor (attached to a stock "
                           f"checkpoint) or the method it carries ({present or 'none'})")


def accuracy(model, prompts: data.Prompts, questions: Sequence[Question], processor, batch_size: int,
             max_new_tokens: int) -> float:
    """VQA accuracy (percent) of the model's greedy answers."""
    from ..vqa_eval import score

    model.eval()
    answers: list[str] = []
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            feeds = data.torch_batch(prompts.batch(np.arange(start, min(start + batch_size, len(prompts)))))
            ids = model.generate_tokens(feeds["input_ids"], feeds["attention_mask"], feeds["pixel_values"],
                                        max_new_tokens)
            answers += data.decode_answers(processor, ids.numpy())
    return score(questions, answers)["accuracy"]


def run_finetune(source: str | Path, out: str | Path, train: Sequence[Question], options: FinetuneOptions, *,
                 parts: str = "all", victor_settings=None, validation: Sequence[Question] | None = None,
                 max_new_tokens: int = 4) -> dict[str, Any]:
    """Train the LLaVA checkpoint ``source`` on ``train``; the best epoch (validation accuracy) ends up in ``out``.
    Returns the log (also ``out/training.json``)."""
    from transformers import get_cosine_schedule_with_warmup

    from ..console import progress_bar
    from ..datasets import subset
    from ..models.llava import checkpoint, victor
    from ..models.llava.training import answer_loss

    out = Path(out)
    state = resume_state(out, options)  # OUT free (or --force), or a run to continue with the same options
    if options.threads:
        torch.set_num_threads(options.threads)
    if not train:
        raise PumerExportError("the training data holds no questions")
    model, processor = checkpoint.load(source), checkpoint.load_processor(source)
    checkpoint.check_processor(model, processor, source)
    check_method(model, options)
    attached = None
    if options.method == "victor" and not checkpoint.method_of(model.config):
        from ..methods.victor.config import VictorConfig

        register_id = checkpoint.register_token(model, processor)
        attached = (victor_settings or VictorConfig()).to_dict()
        model = victor.attach(model, victor_settings or VictorConfig(), register_id, seed=options.seed)
    if state is not None:
        _check_resumable(state["log"], parts, attached)
    parameters = trainable(model, parts)
    if validation is None:
        train, validation = hold_out(train, options.val_fraction, options.seed)
    validation = subset(validation, options.val_limit, seed=options.seed)
    train = oversampled(train, options.oversample)
    with progress_bar() if options.progress else contextlib.nullcontext() as progress:
        encoded = data.encode(model, processor, train, progress=progress)
        encoded_val = data.encode(model, processor, validation, progress=progress)
    torch.manual_seed(options.seed)
    steps_per_epoch = math.ceil(len(encoded) / options.batch_size)
    total = steps_per_epoch * options.epochs if options.max_steps is None else \
        min(steps_per_epoch * options.epochs, options.max_steps)
    decayed = [p for p in parameters if p.ndim >= 2]
    others = [p for p in parameters if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decayed, "weight_decay": options.weight_decay},
                                   {"params": others, "weight_decay": 0.0}], lr=options.lr)
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(options.warmup * total), total)
    generator = torch.Generator().manual_seed(options.seed)
    log: dict[str, Any] = {"checkpoint": str(source), "method": checkpoint.method_of(model.config) or "stock",
                           "train": parts, "options": {k: v for k, v in vars(options).items()
                                                       if k not in ("progress", "force", "resume")},
                           "attached": attached, "train_questions": len(train),
                           "validation_questions": len(validation), "total_steps": total, "epochs": [],
                           "best_accuracy": None, "step": 0}
    started, step = time.perf_counter(), 0
    if state is not None:  # weights, optimizer, schedule, RNG and log as the last finished epoch left them
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        log = state["log"]
        step, started = log["step"], time.perf_counter() - log["seconds"]
        for _ in log["epochs"]:  # the batch orders of the epochs that ran
            torch.randperm(len(encoded), generator=generator)
        from ..console import info

        info(f"resuming at step {step} of {total} (best validation accuracy so far {log['best_accuracy']:.2f})")
    with progress_bar() if options.progress else contextlib.nullcontext() as progress:
        task = progress.add_task("training", total=total) if progress else None
        while step < total:
            model.train()
            order = torch.randperm(len(encoded), generator=generator).numpy()
            losses = []
            for index in range(steps_per_epoch):
                feeds = data.torch_batch(encoded.batch(order[index * options.batch_size:
                                                             (index + 1) * options.batch_size]))
                loss = answer_loss(model, feeds["input_ids"], feeds["attention_mask"], feeds["pixel_values"],
                                   feeds["answer_ids"], feeds["answer_mask"])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(parameters, 1.0)
                optimizer.step()
                scheduler.step()
                step += 1
                losses.append(loss.item())
                if progress:
                    progress.update(task, advance=1, description=f"epoch {len(log['epochs']) + 1}/{options.epochs} "
                                                                 f"loss {np.mean(losses[-50:]):.4f}")
                if step >= total:
                    break
            value = accuracy(model, encoded_val, validation, processor, options.eval_batch_size, max_new_tokens)
            best = log["best_accuracy"] is None or value > log["best_accuracy"]
            log["epochs"].append({"epoch": len(log["epochs"]) + 1, "step": step, "loss": float(np.mean(losses)),
                                  "validation_accuracy": value})
            log["step"], log["seconds"] = step, time.perf_counter() - started
            if best:
                log["best_accuracy"], log["best_step"] = value, step
            message = (f"epoch {len(log['epochs'])}: loss {np.mean(losses):.4f}, validation accuracy {value:.2f}"
                       + (" (best so far, saved)" if best else f" (best {log['best_accuracy']:.2f})"))
            if progress:
                progress.console.print(message)
            else:
                from ..console import info

                info(message)
            _save(model, processor, out, log, best, optimizer, scheduler)
    return log


def _check_resumable(saved: dict[str, Any], parts: str, attached: dict[str, Any] | None) -> None:
    """``--resume`` continues only the run it names: the same parts trained and the same Victor settings."""
    if saved.get("train") != parts:
        raise PumerExportError(f"--resume: --train {parts} differs from the interrupted run (--train "
                               f"{saved.get('train')}); pass the same settings")
    if saved.get("attached") != attached:
        raise PumerExportError(f"--resume: the Victor settings ({attached}) differ from the interrupted run's "
                               f"({saved.get('attached')}); pass the same --registers and --drop-layer")


def _save(model, processor, out: Path, log: dict[str, Any], best: bool, optimizer, scheduler) -> None:
    """OUT atomically: the best checkpoint so far (kept from before unless this epoch is better), the latest
    training state (for ``--resume``) and the log."""
    import shutil

    from ..fsutil import atomic_output_dir
    from ..processing import quiet_transformers

    with atomic_output_dir(out, force=True) as tmp:
        if best:
            model.eval()
            with quiet_transformers():
                model.save_pretrained(tmp)
                processor.save_pretrained(tmp)
        else:
            for item in out.iterdir():
                if item.name not in (STATE_FILE, LOG_FILE) and item.is_file():
                    shutil.copy2(item, tmp / item.name)
        torch.save({"model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "log": log,
                    "torch_rng": torch.get_rng_state()}, tmp / STATE_FILE)
        (tmp / LOG_FILE).write_text(json.dumps(log, indent=2, default=str) + "\n")
