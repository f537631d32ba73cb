"""Running a LLaVA's Llama-style decoder in two layer groups: the machinery the decoder methods (Victor, FastV) share.

The functions run a Hugging Face ``LlavaForConditionalGeneration`` with its own weights, layer by layer, so that the
two groups can hold sequences (and KV caches) of different lengths:

* the prompt layout: ``[prefix (s) ; image (N) ; registers (M, Victor only) ; text (T)]``, one image per sample;
  left padding allowed (``s`` is per sample: the first image token); rotary positions count real tokens;
* layers ``0 .. k-1`` run on the whole sequence with plain causal attention (and the padding mask);
* before layer ``k`` a method's :class:`Select` names the positions that stay (a fixed count, so every shape is
  static); their rotary positions stay the full sequence's;
* the KV cache has two lengths: layers ``< k`` keep every prompt position (a generated token attends to the image
  there, as in teacher-forced training), layers ``>= k`` the selected ones (``P_short = P_full - dropped``).

What stays is each method's rule: Victor (:mod:`pumer_export.methods.victor.reference`) drops the image span, FastV
(:mod:`pumer_export.methods.fastv.reference`) keeps the image tokens the last prompt token attends to most.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ...errors import PumerExportError

#: One layer's cache: (keys, values), each [B, H_kv, P, d_h].
LayerCache = tuple[torch.Tensor, torch.Tensor]


@dataclasses.dataclass
class Layout:
    """Where the image is in each row of a prompt batch."""

    start: torch.Tensor  # [B] int64: s, the index of the first image token
    image_tokens: int  # N
    registers: int  # M

    def without_image(self, length: int) -> torch.Tensor:
        """[B, L - N] int64: every position but the image span's, in order (``j + N`` from the image on)."""
        j = torch.arange(length - self.image_tokens, device=self.start.device)
        return j[None, :] + self.image_tokens * (j[None, :] >= self.start[:, None]).long()


@dataclasses.dataclass
class State:
    """A generation's state after prefill: the two-length cache and the masks and position it continues from."""

    caches: list[LayerCache]  # per decoder layer; lengths P_full (layers < k) and P_short (layers >= k)
    mask_full: torch.Tensor  # [B, P_full] 1 = a real token
    mask_short: torch.Tensor  # [B, P_short]
    next_position: torch.Tensor  # [B] int64: the rotary position of the next token


@dataclasses.dataclass
class Select:
    """A method's drop rule: ``rule(attention)`` -> [B, L'] the positions that stay, in order; ``attention`` is the
    last prompt token's attention in layer k-1, averaged over heads ([B, L]), when ``needs_attention``."""

    rule: Callable[[torch.Tensor | None], torch.Tensor]
    needs_attention: bool = False

    def __call__(self, attention: torch.Tensor | None) -> torch.Tensor:
        return self.rule(attention)


# ----------------------------------------------------------------------- inputs
def image_features(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """[B, N, d]: the vision tower's chosen hidden state (CLS dropped under the "default" strategy) through the
    projector, as transformers' LLaVA computes it (the tower and projector are called directly: transformers 5's
    ``get_image_features`` returns a list, which fixes the batch under export)."""
    config = model.config
    layer, strategy = config.vision_feature_layer, config.vision_feature_select_strategy
    if not isinstance(layer, int):
        raise PumerExportError("LLaVA checkpoints with several vision_feature_layer values are not supported yet")
    hidden = model.model.vision_tower(pixel_values, output_hidden_states=True).hidden_states[layer]
    if strategy == "default":
        hidden = hidden[:, 1:]
    return model.model.multi_modal_projector(hidden)


def layout(input_ids: torch.Tensor, image_token_id: int, image_tokens: int, register_token_id: int | None,
           registers: int) -> Layout:
    """The layout of ``input_ids`` [B, L]: one span of N image tokens per row, followed by M register tokens.
    A prompt that does not have this shape is one line naming what is wrong."""
    is_image = input_ids == image_token_id
    start = is_image.long().argmax(dim=1)
    if torch.compiler.is_exporting():  # the checks read data; the exported graph trusts its runtime's prompts
        return Layout(start, image_tokens, registers)
    counts = is_image.sum(dim=1)
    if bool((counts != image_tokens).any()):
        raise PumerExportError(f"every prompt needs exactly {image_tokens} image tokens (id {image_token_id}) "
                               f"in one span; got {sorted(set(counts.tolist()))}: expand the image placeholder "
                               "with the checkpoint's processor")
    offsets = torch.arange(image_tokens + registers, device=input_ids.device)
    span = input_ids.gather(1, (start[:, None] + offsets[None, :]).clamp(max=input_ids.shape[1] - 1))
    if bool((span[:, :image_tokens] != image_token_id).any()) or start.max() + image_tokens + registers > \
            input_ids.shape[1]:
        raise PumerExportError("the image tokens of a prompt must form one contiguous span")
    if registers and bool((span[:, image_tokens:] != register_token_id).any()):
        raise PumerExportError(f"Victor needs its {registers} register tokens (id {register_token_id}) right "
                               "after the image tokens: prepare the prompt with the checkpoint's processor")
    return Layout(start, image_tokens, registers)


def embed(model, input_ids: torch.Tensor, features: torch.Tensor, registers: torch.Tensor | None,
          where: Layout) -> torch.Tensor:
    """[B, L, d] input embeddings: text embeddings, the image features in the image slots, the registers in the
    register slots (a select and a gather: no data-dependent shape, as the exports need)."""
    text = model.get_input_embeddings()(input_ids)
    j = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :] - where.start[:, None]  # [B, L]
    n = where.image_tokens
    in_image = (j >= 0) & (j < n)
    picked = features.to(text.dtype).gather(1, j.clamp(0, n - 1)[..., None].expand(-1, -1, features.shape[-1]))
    out = torch.where(in_image[..., None], picked, text)
    if where.registers:
        in_registers = (j >= n) & (j < n + where.registers)
        slots = (j - n).clamp(0, where.registers - 1)
        out = torch.where(in_registers[..., None], registers.to(text.dtype)[slots], out)
    return out


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Rotary positions of a left-padded batch: 0 at each row's first real token (padding gets 0)."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


# ----------------------------------------------------------------------- layers
def _bias(key_mask: torch.Tensor, query_length: int, dtype: torch.dtype) -> torch.Tensor:
    """[B, 1, T, P] additive mask: key j is visible to query i (the i-th of the last T) when real and not later."""
    batch, length = key_mask.shape
    query_at = torch.arange(length - query_length, length, device=key_mask.device)
    visible = (torch.arange(length, device=key_mask.device)[None, :] <= query_at[:, None])[None] \
        & key_mask.bool()[:, None, :]
    return torch.zeros(visible.shape, dtype=dtype, device=key_mask.device).masked_fill(
        ~visible, torch.finfo(dtype).min)[:, None]


def decoder_layer(layer, hidden: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor], bias: torch.Tensor,
                  past: LayerCache | None, last_attention: bool = False
                  ) -> tuple[torch.Tensor, LayerCache, torch.Tensor | None]:
    """One Llama-style decoder layer with an explicit cache: returns the hidden states, the layer's whole
    keys/values (past + new, the present of the exports) and, with ``last_attention``, the last query's attention
    probabilities averaged over the heads ([B, P]; what FastV ranks the image tokens by)."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    attention = layer.self_attn
    batch, length, _ = hidden.shape
    x = layer.input_layernorm(hidden)
    shape = (batch, length, -1, attention.head_dim)
    query = attention.q_proj(x).view(shape).transpose(1, 2)
    key = attention.k_proj(x).view(shape).transpose(1, 2)
    value = attention.v_proj(x).view(shape).transpose(1, 2)
    query, key = apply_rotary_pos_emb(query, key, *rotary)
    if past is not None:
        key, value = torch.cat([past[0], key], dim=2), torch.cat([past[1], value], dim=2)
    groups = query.shape[1] // key.shape[1]
    keys, values = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    out = F.scaled_dot_product_attention(query, keys, values, attn_mask=bias, scale=attention.scaling)
    probabilities = None
    if last_attention:
        scores = query[:, :, -1:] @ keys.transpose(2, 3) * attention.scaling + bias[:, :, -1:]
        probabilities = scores.float().softmax(dim=-1).mean(dim=1)[:, 0]
    hidden = hidden + attention.o_proj(out.transpose(1, 2).reshape(batch, length, -1))
    hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
    return hidden, (key, value), probabilities


def _run_layers(model, layers: Sequence[int], hidden: torch.Tensor, position_ids: torch.Tensor,
                key_mask: torch.Tensor, caches: list[LayerCache | None], last_attention: bool = False
                ) -> tuple[torch.Tensor, list[LayerCache], torch.Tensor | None]:
    """Run ``layers`` in order; with ``last_attention`` also return the last layer's last-query attention."""
    language = model.model.language_model
    rotary = language.rotary_emb(hidden, position_ids)
    bias = _bias(key_mask, hidden.shape[1], hidden.dtype)
    presents, probabilities = [], None
    for number, (index, past) in enumerate(zip(layers, caches)):
        wanted = last_attention and number == len(layers) - 1
        hidden, present, attention = decoder_layer(language.layers[index], hidden, rotary, bias, past, wanted)
        presents.append(present)
        probabilities = attention if wanted else probabilities
    return hidden, presents, probabilities


def _gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return x.gather(1, index.view(*index.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:]))


# ----------------------------------------------------------------------- prefill / decode
def prefill(model, drop_layer: int, attention_mask: torch.Tensor, inputs_embeds: torch.Tensor, select: Select,
            logits_to_keep: int = 0) -> tuple[torch.Tensor, State]:
    """The prompt pass: layers ``< drop_layer`` over the whole sequence, then ``select`` names the positions that
    stay ([B, L'] in order, a fixed L'), layers ``>= drop_layer`` run on those with their original positions.
    Returns logits [B, L', V] (the kept positions; with ``logits_to_keep`` = n only the last n, as generation needs:
    the language-model head's cost then does not grow with the prompt) and the generation state. ``drop_layer`` =
    the layer count selects after the last layer only (the logits' layout)."""
    language = model.model.language_model
    count = len(language.layers)
    position_ids = positions(attention_mask)
    hidden, early, attention = _run_layers(model, range(drop_layer), inputs_embeds, position_ids, attention_mask,
                                           [None] * drop_layer, last_attention=select.needs_attention)
    keep = select(attention)
    hidden, short_positions, short_mask = _gather(hidden, keep), position_ids.gather(1, keep), \
        attention_mask.gather(1, keep)
    hidden, late, _ = _run_layers(model, range(drop_layer, count), hidden, short_positions, short_mask,
                                  [None] * (count - drop_layer))
    if logits_to_keep:
        hidden = hidden[:, -logits_to_keep:]
    logits = model.lm_head(language.norm(hidden))
    state = State(early + late, attention_mask, short_mask, position_ids[:, -1] + 1)
    return logits, state


def decode(model, drop_layer: int, token_ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
    """One generated token per row (``token_ids`` [B, 1]): logits [B, 1, V] and the state one token longer. Layers
    ``< k`` attend over the full cache (every prompt position), layers ``>= k`` over the short one (the selected)."""
    language = model.model.language_model
    count = len(language.layers)
    one = torch.ones_like(token_ids, dtype=state.mask_full.dtype)
    mask_full, mask_short = torch.cat([state.mask_full, one], 1), torch.cat([state.mask_short, one], 1)
    position_ids = state.next_position[:, None]
    hidden = model.get_input_embeddings()(token_ids)
    hidden, early, _ = _run_layers(model, range(drop_layer), hidden, position_ids, mask_full,
                                   state.caches[:drop_layer])
    hidden, late, _ = _run_layers(model, range(drop_layer, count), hidden, position_ids, mask_short,
                                  state.caches[drop_layer:])
    logits = model.lm_head(language.norm(hidden))
    return logits, State(early + late, mask_full, mask_short, state.next_position + 1)


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How the next token is chosen: greedy (``temperature`` 0) or sampled from the softmax at ``temperature``,
    restricted to the ``top_k`` most likely tokens (0: all), with a seeded generator."""

    temperature: float = 0.0
    top_k: int = 0
    seed: int = 0

    def choose(self, logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if self.temperature <= 0:
            return logits.argmax(dim=-1)
        scaled = logits.float() / self.temperature
        if self.top_k:
            cutoff = scaled.topk(min(self.top_k, scaled.shape[-1]), dim=-1).values[..., -1:]
            scaled = scaled.masked_fill(scaled < cutoff, float("-inf"))
        return torch.multinomial(scaled.softmax(dim=-1), 1, generator=generator)[..., 0]


@torch.no_grad()
def generate(model, drop_layer: int, attention_mask: torch.Tensor, inputs_embeds: torch.Tensor, select: Select,
             max_new_tokens: int, eos_token_id: int | None, pad_token_id: int = 0,
             sampling: Sampling = Sampling()) -> torch.Tensor:
    """[B, max_new_tokens] generated ids (``pad_token_id`` after a row's end-of-sequence): prefill, then one
    cached decode step per token."""
    generator = torch.Generator().manual_seed(sampling.seed) if sampling.temperature > 0 else None
    logits, state = prefill(model, drop_layer, attention_mask, inputs_embeds, select, logits_to_keep=1)
    finished = torch.zeros(attention_mask.shape[0], dtype=torch.bool, device=attention_mask.device)
    out = []
    for step in range(max_new_tokens):
        token = sampling.choose(logits[:, -1], generator)
        token = torch.where(finished, torch.full_like(token, pad_token_id), token)
        out.append(token)
        if eos_token_id is not None:
            finished |= token == eos_token_id
        if step + 1 == max_new_tokens or bool(finished.all()):
            break
        logits, state = decode(model, drop_layer, token[:, None], state)
    generated = torch.stack(out, dim=1)
    if generated.shape[1] < max_new_tokens:
        generated = F.pad(generated, (0, max_new_tokens - generated.shape[1]), value=pad_token_id)
    return generated
