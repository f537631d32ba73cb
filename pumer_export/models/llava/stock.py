"""Stock LLaVA through the same two-group decoder as the methods: nothing leaves (k = the layer count), so its
prefill, decode and generation are transformers' own computation (tested against ``LlavaForConditionalGeneration``)
and the baseline every Victor and FastV figure is measured against runs the same code and the same graphs."""

from __future__ import annotations

import torch

from . import decoding, image_tokens, num_layers
from .reduced import ReducedLlavaMixin, llava_class


class StockLlavaForConditionalGeneration(ReducedLlavaMixin, llava_class()):
    """A ``LlavaForConditionalGeneration`` with the decoder methods' interface and no drop."""

    METHOD = ""

    @property
    def drop_layer(self) -> int:
        return num_layers(self.config)

    @property
    def kept_image_tokens(self) -> int:
        return image_tokens(self.config)

    def method_settings(self) -> dict:
        return {}

    def save_pretrained(self, save_directory, *args, **kwargs):
        """transformers' save, with config.json naming transformers' class: a stock folder stays an ordinary
        llava-hf checkpoint (``LlavaForConditionalGeneration.from_pretrained`` and the Auto classes load it)."""
        import json
        from pathlib import Path

        super().save_pretrained(save_directory, *args, **kwargs)
        path = Path(save_directory) / "config.json"
        data = json.loads(path.read_text())
        data["architectures"] = ["LlavaForConditionalGeneration"]
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

    def prepare(self, input_ids: torch.Tensor, image_features: torch.Tensor
                ) -> tuple[torch.Tensor, decoding.Select]:
        where = self.layout(input_ids)
        embeds = decoding.embed(self, input_ids, image_features, None, where)
        length = input_ids.shape[1]
        return embeds, decoding.Select(
            lambda _attention: torch.arange(length, device=input_ids.device)[None, :].expand(input_ids.shape[0], -1))


def stock(model) -> StockLlavaForConditionalGeneration:
    """The stock class over the weights of a ``LlavaForConditionalGeneration`` (or a method's model)."""
    import copy

    config = copy.deepcopy(model.config)
    for key in ("victor", "fastv", "register_token_id"):
        if hasattr(config, key):
            delattr(config, key)
    config.architectures = ["LlavaForConditionalGeneration"]
    plain = StockLlavaForConditionalGeneration(config)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    if missing or set(unexpected) - {"victor_registers"}:
        from ...errors import PumerExportError

        raise PumerExportError(f"the LLaVA weights do not fit: missing {missing}, unexpected {unexpected}")
    return plain.to(model.dtype).eval()
