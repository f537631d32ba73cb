"""FastV on LLaVA: the model class (no new weights; config.json ``"fastv"``) and ``attach`` for a stock checkpoint.
The rule is :mod:`pumer_export.methods.fastv.reference`'s, run by :mod:`.decoding`."""

from __future__ import annotations

import torch

from ...errors import PumerExportError
from ...methods.fastv import reference
from ...methods.fastv.config import CONFIG_KEY, FastVConfig
from . import decoding, image_tokens, num_layers
from .reduced import ReducedLlavaMixin, llava_class


def fastv_settings(config) -> FastVConfig | None:
    data = getattr(config, CONFIG_KEY, None)
    return None if data is None else FastVConfig.from_dict(data)


class FastVLlavaForConditionalGeneration(ReducedLlavaMixin, llava_class()):
    """A stock ``LlavaForConditionalGeneration`` whose config carries FastV's settings."""

    def __init__(self, config):
        super().__init__(config)
        settings = fastv_settings(config)
        if settings is None:
            raise PumerExportError("a FastV LLaVA config needs its settings (config.json \"fastv\")")
        settings.check_against(num_layers(config), image_tokens(config))

    @property
    def fastv(self) -> FastVConfig:
        return fastv_settings(self.config)

    METHOD = CONFIG_KEY

    @property
    def drop_layer(self) -> int:
        return self.fastv.drop_layer

    @property
    def kept_image_tokens(self) -> int:
        return self.fastv.keep_tokens

    def prepare(self, input_ids: torch.Tensor, image_features: torch.Tensor
                ) -> tuple[torch.Tensor, decoding.Select]:
        where = self.layout(input_ids)
        embeds = decoding.embed(self, input_ids, image_features, None, where)
        return embeds, reference.select(where, input_ids.shape[1], self.fastv.keep_tokens)


def attach(model, settings: FastVConfig):
    """The FastV model of a stock LLaVA ``model`` (the same weights; training-free)."""
    import copy

    settings.check_against(num_layers(model.config), image_tokens(model.config))
    config = copy.deepcopy(model.config)
    setattr(config, CONFIG_KEY, settings.to_dict())
    config.architectures = [FastVLlavaForConditionalGeneration.__name__]
    fastv = FastVLlavaForConditionalGeneration(config)
    fastv.load_state_dict(model.state_dict())
    return fastv.to(model.dtype).eval()
