"""Victor's training: the paper trains as LLaVA-1.5 does (the next-token loss on the answer, none on the image or
register slots: :func:`pumer_export.models.llava.training.answer_loss`), with Victor active in both stages: stage 1
trains the projector and the registers, stage 2 also the language model (:func:`trainable`).
"""

from __future__ import annotations

import torch


def trainable(model, language_model: bool = False) -> list[torch.nn.Parameter]:
    """Freeze what the stage keeps fixed and return what it trains: the registers and the projector (stage 1),
    and with ``language_model`` the decoder and its head too (stage 2); the vision tower stays frozen."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    modules = [model.model.multi_modal_projector]
    if language_model:
        modules += [model.model.language_model, model.lm_head]
    parameters = [model.victor_registers] + [p for module in modules for p in module.parameters()]
    for parameter in parameters:
        parameter.requires_grad_(True)
    return parameters
