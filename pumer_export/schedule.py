"""The token-count schedule: the ONE place where PuMer's token counts are computed.

Every component (the PyTorch reference, the ONNX exporter, the TensorRT plugins
through the exported count attributes, ``info`` and the benchmarks) takes its
counts from :func:`token_schedule`. Counts follow the official rules:

* ``n_img`` counts the image tokens including the image CLS;
* ``prune = round(prune_ratio * n_img)`` and ``image_merge = round(image_merge_ratio * n_img)``,
  both from the count *before* pruning, with Python's half-to-even :func:`round` on the float
  product; ``keep = max(n_img - prune, 1)``;
* ``text_merge = round(text_merge_ratio * text_in)`` on the current (padded) text length;
* ToMe's cap: a merge of ``t`` tokens merges at most ``(t - 1) // 2`` (the first token is protected);
* a layer whose prune count is 0 does nothing at all (no merging either).

METER (``rules="meter"``) differs in two official details: its reducer runs whenever the prune *ratio* is
positive (ViLT tests the rounded count), and pruning takes effect only when the requested image merge count is
positive (otherwise the image tokens pass unchanged, M5 of the semantics).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .config import PumerConfig


@dataclasses.dataclass(frozen=True)
class LayerCounts:
    """Token counts at one reduce layer (image counts include the image CLS)."""

    layer: int
    text_in: int
    image_in: int
    prune: int
    keep: int
    image_merge: int
    image_out: int
    text_merge: int
    text_out: int
    #: False when the layer's reducer does not run at all (ViLT: prune count 0; METER: prune ratio 0).
    active: bool = True

    @property
    def tokens_in(self) -> int:
        return self.text_in + self.image_in

    @property
    def tokens_out(self) -> int:
        return self.text_out + self.image_out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class TokenSchedule:
    """Counts at every reduce layer of a model for fixed input lengths."""

    num_layers: int
    text_tokens: int
    image_tokens: int
    layers: tuple[LayerCounts, ...]

    def at(self, layer: int) -> LayerCounts | None:
        """The counts of reduce layer ``layer``, or None if it does not reduce."""
        for counts in self.layers:
            if counts.layer == layer:
                return counts
        return None

    def tokens_per_layer(self) -> list[tuple[int, int]]:
        """For every encoder layer: (tokens its attention sees, tokens its MLP sees)."""
        n = self.text_tokens + self.image_tokens
        out = []
        for layer in range(self.num_layers):
            counts = self.at(layer)
            if counts is None:
                out.append((n, n))
            else:
                out.append((n, counts.tokens_out))
                n = counts.tokens_out
        return out

    @property
    def final_text_tokens(self) -> int:
        return self.layers[-1].text_out if self.layers else self.text_tokens

    @property
    def final_image_tokens(self) -> int:
        return self.layers[-1].image_out if self.layers else self.image_tokens

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_layers": self.num_layers,
            "text_tokens": self.text_tokens,
            "image_tokens": self.image_tokens,
            "layers": [counts.to_dict() for counts in self.layers],
        }


def merge_cap(tokens: int) -> int:
    """ToMe's largest merge count for ``tokens`` tokens with the first one protected."""
    return max((tokens - 1) // 2, 0)


def capped_merge(requested: int, tokens: int) -> int:
    """A requested merge count limited by :func:`merge_cap` (never negative)."""
    return max(min(requested, merge_cap(tokens)), 0)


#: Count rules per model family (see the module doc).
RULES = ("vilt", "meter")


def layer_counts(pumer: PumerConfig, layer: int, text_in: int, image_in: int, rules: str = "vilt") -> LayerCounts:
    """Counts of one reduce layer given its input lengths (the official rules of ``rules``, see module doc)."""
    if rules not in RULES:
        raise ValueError(f"rules must be one of {RULES}, got {rules!r}")
    prune = round(pumer.prune_ratio * image_in)
    requested_merge = round(pumer.image_merge_ratio * image_in)
    entered = prune > 0 if rules == "vilt" else pumer.prune_ratio > 0
    if not entered:
        return LayerCounts(layer, text_in, image_in, 0, image_in, 0, image_in, 0, text_in, active=False)
    if rules == "meter" and requested_merge == 0:
        prune = 0  # M5: without an image merge the pruned tokens are not used
    keep = max(image_in - prune, 1)
    image_merge = capped_merge(requested_merge, keep)
    text_merge = capped_merge(round(pumer.text_merge_ratio * text_in), text_in)
    return LayerCounts(
        layer=layer,
        text_in=text_in,
        image_in=image_in,
        prune=image_in - keep,
        keep=keep,
        image_merge=image_merge,
        image_out=keep - image_merge,
        text_merge=text_merge,
        text_out=text_in - text_merge,
    )


def token_schedule(
    pumer: PumerConfig, *, num_layers: int, text_tokens: int, image_tokens: int, rules: str = "vilt"
) -> TokenSchedule:
    """Token counts at every reduce layer.

    Args:
        pumer: the PuMer settings (its layers must exist in a model of ``num_layers`` layers).
        num_layers: encoder depth.
        text_tokens: padded text length entering the encoder.
        image_tokens: image tokens entering the encoder, image CLS included.
        rules: the model family's count rules (``"vilt"`` or ``"meter"``).
    """
    pumer.check_depth(num_layers)
    if text_tokens < 1 or image_tokens < 1:
        raise ValueError(f"need at least one text and one image token, got {text_tokens} and {image_tokens}")
    layers = []
    text, image = text_tokens, image_tokens
    for layer in pumer.reduce_layers:
        counts = layer_counts(pumer, layer, text, image, rules)
        layers.append(counts)
        text, image = counts.text_out, counts.image_out
    return TokenSchedule(num_layers, text_tokens, image_tokens, tuple(layers))


def input_size(config, image_size=None, text_length=None) -> tuple[tuple[int, int], int]:
    """The one rule for default input sizes (every command): the checkpoint's own square ``image_size`` and its
    trained text length (``max_text_length`` where the family has one, else the text position table size), unless
    given."""
    size = tuple(int(v) for v in image_size) if image_size else (config.image_size, config.image_size)
    return size, int(text_length or getattr(config, "max_text_length", None) or config.max_position_embeddings)


def image_tokens_for(image_size: tuple[int, int], patch_size: int) -> int:
    """Image tokens (image CLS included) of an image of ``image_size`` (H, W) in raster patches."""
    height, width = image_size
    return (height // patch_size) * (width // patch_size) + 1


def encoder_flops(schedule: TokenSchedule, hidden_size: int, intermediate_size: int) -> int:
    """Analytic FLOPs of the encoder (2 per multiply-add) for one sample under ``schedule``.

    Attention of a layer runs on the tokens that enter it; a reduce layer's MLP runs on the
    tokens that leave its reducer. LayerNorms, softmax and the reduction itself are left out
    (they are linear in the token count and small next to the matrix products).
    """
    h, i = hidden_size, intermediate_size
    total = 0
    for attn_tokens, mlp_tokens in schedule.tokens_per_layer():
        total += 2 * attn_tokens * h * 3 * h  # Q, K, V projections
        total += 2 * 2 * attn_tokens * attn_tokens * h  # scores and probabilities x V
        total += 2 * attn_tokens * h * h  # output projection
        total += 2 * 2 * mlp_tokens * h * i  # MLP up and down
    return total
