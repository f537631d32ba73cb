"""What a LLaVA model with a decoder method (Victor, FastV) does, once: the model class of each method mixes this in
and says ``drop_layer`` and ``prepare`` (its embeddings and its :class:`~.decoding.Select`)."""

from __future__ import annotations

import torch

from . import decoding


def llava_class():
    """transformers' ``LlavaForConditionalGeneration`` (imported when a model class is defined)."""
    from transformers import LlavaForConditionalGeneration

    return LlavaForConditionalGeneration


class ReducedLlavaMixin:
    """``prefill``, ``decode`` and ``generate_tokens`` of the method's reference (:mod:`.decoding`)."""

    drop_layer: int
    #: the method's name (a key of its settings in config.json)
    METHOD: str = ""
    #: register placeholders the prompt carries after the image (Victor's M; 0 otherwise)
    registers: int = 0

    @property
    def dropped_tokens(self) -> int:
        """D: how many prompt positions leave before layer k (Victor: N; FastV: N - R)."""
        from . import image_tokens

        return image_tokens(self.config) - self.kept_image_tokens

    #: image tokens that stay after the drop (FastV's R; Victor: 0)
    kept_image_tokens: int = 0

    def method_settings(self) -> dict:
        return dict(getattr(self.config, self.METHOD))

    def layout(self, input_ids: torch.Tensor) -> decoding.Layout:
        """Where the image is in each prompt, with the M register tokens after it (Victor; M = 0 otherwise)."""
        from . import image_tokens

        return decoding.layout(input_ids, self.config.image_token_id, image_tokens(self.config),
                               getattr(self.config, "register_token_id", None), self.registers)

    def prepare(self, input_ids: torch.Tensor, image_features: torch.Tensor
                ) -> tuple[torch.Tensor, decoding.Select]:  # pragma: no cover - interface
        raise NotImplementedError

    def prefill(self, input_ids, attention_mask, pixel_values):
        """Logits [B, L', V] at the positions that stay and the two-length cache state."""
        embeds, select = self.prepare(input_ids, decoding.image_features(self, pixel_values))
        return decoding.prefill(self, self.drop_layer, attention_mask, embeds, select)

    def decode(self, token_ids, state):
        return decoding.decode(self, self.drop_layer, token_ids, state)

    @torch.no_grad()
    def generate_tokens(self, input_ids, attention_mask, pixel_values, max_new_tokens: int,
                        sampling: decoding.Sampling = decoding.Sampling()) -> torch.Tensor:
        """[B, max_new_tokens] token ids (greedy by default), the reference's cached loop."""
        embeds, select = self.prepare(input_ids, decoding.image_features(self, pixel_values))
        text = self.config.text_config
        pad = text.pad_token_id if text.pad_token_id is not None else 0
        return decoding.generate(self, self.drop_layer, attention_mask, embeds, select, max_new_tokens,
                                 text.eos_token_id, pad, sampling)
