"""Victor on LLaVA: the model class with its registers, and ``attach`` for a stock checkpoint.

The computation is :mod:`pumer_export.methods.victor.reference`'s (run by :mod:`.decoding`); this module holds the
weights (the stock LLaVA's plus the registers ``[M, d]``, cast to the embeddings' dtype where they are placed) and
the settings (config.json ``"victor"`` with ``register_token_id``), and gives the reference the model's own layout.
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import PumerExportError
from ...methods.victor import reference
from ...methods.victor.config import CONFIG_KEY, VictorConfig
from . import decoding, num_layers
from .reduced import ReducedLlavaMixin, llava_class


class VictorLlavaForConditionalGeneration(ReducedLlavaMixin, llava_class()):
    """A stock ``LlavaForConditionalGeneration`` with ``victor_registers`` [M, d]; its config carries the settings
    (``victor``) and the register placeholder's id (``register_token_id``)."""

    def __init__(self, config):
        super().__init__(config)
        settings = victor_settings(config)
        if settings is None:
            raise PumerExportError("a Victor LLaVA config needs its settings (config.json \"victor\")")
        settings.check_against(num_layers(config))
        if settings.registers and getattr(config, "register_token_id", None) is None:
            raise PumerExportError("a Victor LLaVA config needs register_token_id (the <reg> placeholder's id)")
        self.victor_registers = nn.Parameter(torch.zeros(settings.registers, config.text_config.hidden_size))

    @property
    def victor(self) -> VictorConfig:
        return victor_settings(self.config)

    METHOD = CONFIG_KEY

    @property
    def drop_layer(self) -> int:
        return self.victor.drop_layer

    @property
    def registers(self) -> int:
        return self.victor.registers

    def prepare(self, input_ids: torch.Tensor, image_features: torch.Tensor
                ) -> tuple[torch.Tensor, decoding.Select]:
        """The input embeddings (image features and registers in their slots) and Victor's drop for them."""
        where = self.layout(input_ids)
        embeds = decoding.embed(self, input_ids, image_features, self.victor_registers, where)
        return embeds, reference.select(where, input_ids.shape[1])


def victor_settings(config) -> VictorConfig | None:
    data = getattr(config, CONFIG_KEY, None)
    return None if data is None else VictorConfig.from_dict(data)


def attach(model, settings: VictorConfig, register_token_id: int | None, seed: int = 0):
    """A Victor model from a stock LLaVA ``model``: its weights, plus registers initialised as this project chose
    (the paper says only "learnable"): N(0, sigma), sigma the standard deviation of the input embeddings, so they
    start on the scale of real token embeddings."""
    import copy

    settings.check_against(num_layers(model.config))
    config = copy.deepcopy(model.config)
    setattr(config, CONFIG_KEY, settings.to_dict())
    config.register_token_id = register_token_id
    config.architectures = [VictorLlavaForConditionalGeneration.__name__]
    victor = VictorLlavaForConditionalGeneration(config)
    missing, unexpected = victor.load_state_dict(model.state_dict(), strict=False)
    if unexpected or set(missing) - {"victor_registers"}:
        raise PumerExportError(f"the LLaVA weights do not fit: missing {missing}, unexpected {unexpected}")
    sigma = float(model.get_input_embeddings().weight.detach().float().std())
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        victor.victor_registers.copy_(torch.randn(victor.victor_registers.shape, generator=generator) * sigma)
    return victor.to(model.dtype).eval()
