"""Training SmartTrim-style trimmers (pumer-export design): the relaxation of the binary decisions and the objective.

What the paper states (abstract and press text): the binary masks are made trainable by re-parameterisation, the
objective adds a computation-cost term to the task loss, self-distillation pulls the trimmed model toward its
full-capacity counterpart, and a curriculum stabilises training. Everything concrete below is **this project's
choice** (the method section could not be read):

* **Relaxation** (:class:`Relaxation`): hard Gumbel-softmax with a straight-through gradient over each trimmer's
  two logits: the forward uses the 0/1 decision ``keep - drop + (g_keep - g_drop) >= tau`` (Gumbel noise ``g`` in
  training; none at ``noise=False``, which is the reference's decision), the backward the gradient of
  ``softmax(logits + g) / temperature``'s keep entry. Dropped tokens stay in place with a 0 in their stream's policy
  and attention weighs keys by it (:func:`.reference.policy_softmax`), so with hard decisions the surrogate computes
  what removal computes. Token 0 stays kept, pads are never alive, a dropped token stays dropped (the policy is a
  running product).
* **Cost** (:func:`cost_loss`): ``(FLOPs share - target)^2`` over the batch mean of each sample's realised FLOPs
  share (its own per-sample counts, as batch 1 runs it; head masks save no FLOPs in this project's count, so heads
  are pushed only by ``head_target``, a separate term on the mean share of heads kept, off by default).
* **Curriculum** (:func:`target_at`): the target goes linearly from 1 (keep everything) to ``target_keep`` over the
  first ``curriculum`` share of the steps, then stays.
* **Self-distillation** (:func:`distill_loss`): the teacher is the same weights with the trimmers keeping
  everything (no separate teacher ships); the student's answer scores are pulled toward the teacher's sigmoid
  scores with the family's VQA loss (binary cross-entropy, times the label count).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from .reference import keep_margin


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """The SmartTrim part of ``finetune``'s options."""

    target_keep: float = 0.5  # the FLOPs share the trimmed model keeps at the end of the curriculum
    curriculum: float = 0.5  # share of the steps over which the target falls from 1 to target_keep
    cost_weight: float = 10.0
    distill_weight: float = 1.0
    head_target: float | None = None  # mean share of heads kept; None: no cost on heads
    temperature: float = 1.0
    freeze_backbone: bool = False
    trimmer_lr_scale: float = 10.0  # the trimmers' learning rate over the backbone's (they start from scratch)


@dataclasses.dataclass(frozen=True)
class Relaxation:
    """How a training forward makes its decisions (see the module doc). ``noise=False``: the reference's decision,
    with the straight-through gradient still attached."""

    temperature: float = 1.0
    noise: bool = True
    generator: torch.Generator | None = None

    def _decide(self, logits: torch.Tensor, tau: float, keep_index: int) -> torch.Tensor:
        if self.noise:
            uniform = torch.rand(logits.shape, generator=self.generator, dtype=logits.dtype).to(logits.device)
            logits = logits - torch.log(-torch.log(uniform.clamp(1e-10, 1 - 1e-7)))
        soft = torch.softmax(logits / self.temperature, dim=-1)[..., keep_index]
        hard = (keep_margin(logits, keep_index) >= tau).to(soft.dtype)
        return hard + soft - soft.detach()

    def tokens(self, logits: torch.Tensor, policy: torch.Tensor, tau: float, keep_index: int) -> torch.Tensor:
        """The stream's next policy [B, N]: the previous one times the decisions, token 0 kept."""
        keep = self._decide(logits, tau, keep_index)
        keep = torch.cat([torch.ones_like(keep[:, :1]), keep[:, 1:]], dim=1)
        return policy * keep

    def heads(self, logits: torch.Tensor, tau: float, keep_index: int) -> torch.Tensor:
        """The head masks [B, H] (0/1 forward, straight-through backward)."""
        return self._decide(logits, tau, keep_index)


def target_at(step: int, total_steps: int, options: TrainOptions) -> float:
    """The curriculum's FLOPs-share target at ``step``."""
    span = max(1, round(options.curriculum * total_steps))
    progress = min(1.0, step / span) if options.curriculum > 0 else 1.0
    return 1.0 - (1.0 - options.target_keep) * progress


def cost_loss(flops_share: torch.Tensor, target: float) -> torch.Tensor:
    """``(mean FLOPs share - target)^2`` (one-sided: keeping less than the target costs nothing)."""
    return torch.clamp(flops_share.mean() - target, min=0.0) ** 2


def distill_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The VQA loss of the student's logits against the teacher's answer scores."""
    from ...finetune import task_loss

    return task_loss(student, torch.sigmoid(teacher))


class Objective:
    """SmartTrim's training objective for ``finetune``: task + distillation + cost, on the family's relaxed forward
    (``model.relaxed_forward``). ``finetune`` calls :meth:`loss` per step and :meth:`validation` after each epoch."""

    name = "smarttrim"

    def __init__(self, model, options: TrainOptions, total_steps: int, seed: int):
        self.model, self.options, self.total_steps = model, options, total_steps
        self.generator = torch.Generator().manual_seed(seed)
        if options.freeze_backbone:
            for name, parameter in model.named_parameters():
                parameter.requires_grad_(name.startswith("smarttrim."))

    def lr_scale(self, parameter_name: str) -> float:
        return self.options.trimmer_lr_scale if parameter_name.startswith("smarttrim.") else 1.0

    def loss(self, feeds: dict[str, torch.Tensor], targets: torch.Tensor, step: int) -> tuple[torch.Tensor, dict]:
        options, model = self.options, self.model
        relaxation = Relaxation(options.temperature, noise=True, generator=self.generator)
        out = model.relaxed_forward(**feeds, relaxation=relaxation)
        from ...finetune import task_loss

        task = task_loss(out.logits, targets)
        with torch.no_grad():
            teacher = model.untrimmed_logits(**feeds)
        target = target_at(step, self.total_steps, options)
        loss = task + options.distill_weight * distill_loss(out.logits, teacher)
        loss = loss + options.cost_weight * cost_loss(out.flops_share, target)
        if options.head_target is not None and out.head_share is not None:
            loss = loss + options.cost_weight * cost_loss(out.head_share, options.head_target)
        stats = {"flops": float(out.flops_share.detach().mean()), "target": target}
        return loss, stats

    @torch.no_grad()
    def validate(self, encoded, batch_size: int, device: str) -> dict[str, Any]:
        """What the trimmers realise on the validation inputs (an ``EncodedSet``), the reference's decisions: the
        FLOPs share at each sample's own counts and its FLOP-ideal speedup, the kept share per trimmer location."""
        was_training = self.model.training
        self.model.eval()
        batches = ({name: torch.from_numpy(np.ascontiguousarray(value)).to(device)
                    for name, value in encoded.batch(slice(start, start + batch_size)).items()}
                   for start in range(0, len(encoded), batch_size))
        stats = self.model.trim_statistics(batches)
        self.model.train(was_training)
        return {"flops_share": 1.0 / stats["flop_ideal"]["per_sample"],
                "flop_ideal": stats["flop_ideal"]["per_sample"],
                "kept_share": {where: round(v["mean"], 4) for where, v in stats["kept_share"].items()}}

    def eligible(self, validation: dict[str, Any]) -> bool:
        """Whether an epoch may be kept as the best: the curriculum has reached its target and the realised FLOPs
        share is within 0.02 of it (an early, barely-trimmed epoch must not win on accuracy)."""
        return validation["step"] >= round(self.options.curriculum * self.total_steps) and \
            validation["flops_share"] <= self.options.target_keep + 0.02
