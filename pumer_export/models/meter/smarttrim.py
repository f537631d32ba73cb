"""METER's hook for SmartTrim-style trimming (pumer-export design): where the trimmers sit and how blocks run on the
tokens that survive. The trimmers and the rules are :mod:`pumer_export.methods.smarttrim.reference`.

* Image tower: an image token trimmer before each block of ``vit_layers``; its cross-modal signal is its own
  projection of the mean of the text tower's final states (the text tower runs first).
* Co-attention blocks: before each block of ``cross_layers`` one token trimmer per stream, both deciding on the same
  pre-block states; before the attention modules of each block of ``head_layers`` a head trimmer each (text and image
  side, self- and cross-attention).
* The blocks themselves are this family's (:mod:`.modeling`): the image side attends to the text the block just
  produced, as PuMer's METER does (the official METER updates both streams from the previous block's states; the
  trimmed model keeps the semantics of the checkpoint it is trained from).
* Standard attention masking only: PuMer's official P7 softmax gives masked keys a small weight, so a padded batch
  would not equal its per-sample runs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from ... import ops  # noqa: F401  (defines torch.ops.pumer.compact)
from ...errors import ConfigError
from ...methods.smarttrim.config import SmartTrimConfig, get_smarttrim_config
from ...methods.smarttrim.reference import (HeadTrimmer, TokenTrimmer, attention_bias, head_decision,
                                            keep_margin, masked_mean, policy_softmax, token_decision)
from ...methods.smarttrim.training import Relaxation
from .modeling import (MeterConfig, PumerMeterForQuestionAnswering, PumerMeterOutput, _attention, _ffn,
                       text_mask_of)

HEAD_MODULES = ("text_self", "text_cross", "image_self", "image_cross")
#: The suffix of the kept-position outputs (``vit1.image_kept``, ``cross0.text_kept``: [B, n] original positions,
#: -1 on a row's padding slots).
KEPT = "_kept"
#: Initial keep bias of the token and head trimmers: an untrained trimmer keeps everything (training starts from the
#: untrimmed model).
INITIAL_KEEP_BIAS = 3.0


@dataclasses.dataclass
class SmartTrimMeterOutput(PumerMeterOutput):
    """:class:`PumerMeterOutput` with ``trim_records`` (``output_trim_records=True``): per trimmer location the
    original positions of the tokens alive after it, per sample, and the head masks."""

    trim_records: list[dict[str, Any]] | None = None
    #: (``output_trim_records``) the rows each image-tower block and each co-attention block ran on: ``vit`` a list
    #: of (batch rows, per-sample rows [B]), ``cross`` a list of {"text": (...), "image": (...)} (see
    #: :func:`realised_flops`)
    trim_counts: dict[str, list] | None = None
    #: (``relaxed_forward``) each sample's FLOPs share of the untrimmed model [B] and share of heads kept [B]
    flops_share: torch.Tensor | None = None
    head_share: torch.Tensor | None = None


class _NoTrimmers:
    """What a forward sees when every trimmer keeps everything (the self-distillation teacher)."""

    cross = heads = vit = {}


_NO_TRIMMERS = _NoTrimmers()


def _clip_block(layer, h: torch.Tensor, alive: torch.Tensor, relaxed: bool) -> torch.Tensor:
    """A CLIP encoder layer (transformers' ``CLIPEncoderLayer``, computed as its forward computes it) on the alive
    tokens: removal (the keys masked by ``alive``; sdpa called here, since transformers' attention wrapper branches on
    the query length, which an export with data-dependent lengths cannot do) or, ``relaxed``, the training surrogate
    (keys weighed by the policy ``alive``, :func:`policy_softmax`)."""
    attn = layer.self_attn
    x = layer.layer_norm1(h)
    shape = (*x.shape[:-1], -1, attn.head_dim)
    query, key, value = (proj(x).view(shape).transpose(1, 2) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
    if relaxed:
        context = torch.matmul(policy_softmax(torch.matmul(query, key.transpose(-1, -2)) * attn.scale, alive), value)
    else:
        context = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_bias(alive, h.shape[1], h.dtype), scale=attn.scale)
    h = h + attn.out_proj(context.transpose(1, 2).reshape(*x.shape[:-1], -1))
    return h + layer.mlp(layer.layer_norm2(h))


class SmartTrimModules(nn.Module):
    """The trimmers of one METER model (parameter names: ``smarttrim.cross.<block>.<stream>``,
    ``smarttrim.heads.<block>.<module>``, ``smarttrim.vit.<block>``)."""

    def __init__(self, config: MeterConfig, settings: SmartTrimConfig):
        super().__init__()
        hidden, vision, text = config.hidden_size, config.vision(), config.text()
        heads = config.cross().num_attention_heads
        width = settings.width or max(hidden // 2, 2)
        self.cross = nn.ModuleDict({str(layer): nn.ModuleDict({"text": TokenTrimmer(hidden, width),
                                                               "image": TokenTrimmer(hidden, width)})
                                    for layer in settings.cross_layers})
        self.heads = nn.ModuleDict({str(layer): nn.ModuleDict({name: HeadTrimmer(hidden, heads, max(width // 2, 2))
                                                               for name in HEAD_MODULES})
                                    for layer in settings.head_layers})
        self.vit = nn.ModuleDict({str(layer): TokenTrimmer(vision.hidden_size, settings.width or
                                                           max(vision.hidden_size // 2, 2), other=text.hidden_size)
                                  for layer in settings.vit_layers})

    def keep_everything_at_first(self, keep_index: int = 1) -> None:
        """An untrained trimmer's last layer: zero weights, a keep bias (see :data:`INITIAL_KEEP_BIAS`)."""
        with torch.no_grad():
            lasts = [t.head[-1] for group in self.cross.values() for t in group.values()]
            lasts += [t.head[-1] for t in self.vit.values()]
            for last in lasts:
                last.weight.zero_()
                last.bias.zero_()
                last.bias[keep_index] = INITIAL_KEEP_BIAS
            for group in self.heads.values():
                for trimmer in group.values():
                    last = trimmer.mlp[-1]
                    last.weight.zero_()
                    bias = last.bias.view(trimmer.heads, 2)
                    bias.zero_()
                    bias[:, keep_index] = INITIAL_KEEP_BIAS


class SmartTrimMeterForQuestionAnswering(PumerMeterForQuestionAnswering):
    """METER VQA with SmartTrim-style trimmers (PuMer's reducers off): ``forward`` as the family's, per-input token
    counts. Batch 1 removes the dropped tokens; a batch compacts and pads (equal to its per-sample runs)."""

    def __init__(self, config: MeterConfig):
        super().__init__(config)
        settings = self.smarttrim_config
        settings.check_depth(config.num_hidden_layers, config.vision().num_hidden_layers)
        if self.pumer_config.enabled:
            raise ConfigError("a SmartTrim checkpoint runs without PuMer's reducers: its pumer reduce_layers must be "
                              "empty")
        if self.pumer_config.attention_masking != "standard":
            raise ConfigError("SmartTrim needs standard attention masking (PuMer's official P7 softmax weighs masked "
                              "keys, so a padded batch would differ from its per-sample runs)")
        self.smarttrim = SmartTrimModules(config, settings)
        #: False runs the same weights with no trimmer at all (the untrimmed baseline of bench and export)
        self.trimming_enabled = True
        self.post_init()
        self.smarttrim.keep_everything_at_first(settings.keep_index)

    @property
    def smarttrim_config(self) -> SmartTrimConfig:
        return get_smarttrim_config(self.config) or SmartTrimConfig()

    def set_smarttrim_config(self, settings: SmartTrimConfig) -> None:
        """Change the deployment knobs (``tau``, ``head_tau``) of a loaded model; the trimmer locations are fixed by
        its weights."""
        current = self.smarttrim_config
        if (settings.cross_layers, settings.vit_layers, settings.head_layers, settings.width) != (
                current.cross_layers, current.vit_layers, current.head_layers, current.width):
            raise ConfigError("the trimmer locations and width are fixed by the checkpoint's weights; only tau and "
                              "head_tau change")
        self.config.smarttrim = settings.to_dict()

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_reduction_records: bool = False,
        output_trim_records: bool = False,
        **kwargs: Any,
    ) -> SmartTrimMeterOutput:
        """The reference: dropped tokens are removed (a batch compacts and pads)."""
        return self._run(input_ids, attention_mask, pixel_values, output_hidden_states=output_hidden_states,
                         output_trim_records=output_trim_records, output_reduction_records=output_reduction_records,
                         keep_all=not self.trimming_enabled)

    def relaxed_forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                        pixel_values: torch.Tensor | None = None, *, relaxation: Relaxation) -> SmartTrimMeterOutput:
        """The training surrogate (:mod:`pumer_export.methods.smarttrim.training`): the dropped tokens stay in place
        with a 0 in their stream's policy; ``flops_share`` [B] and ``head_share`` carry the gradient of the
        decisions. With ``Relaxation(noise=False)`` its logits are the reference's."""
        return self._run(input_ids, attention_mask, pixel_values, relaxation=relaxation)

    @torch.no_grad()
    def untrimmed_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                         pixel_values: torch.Tensor | None = None) -> torch.Tensor:
        """The same weights with every trimmer keeping everything (the self-distillation teacher)."""
        return self._run(input_ids, attention_mask, pixel_values, keep_all=True).logits

    def _run(self, input_ids, attention_mask, pixel_values, *, output_hidden_states: bool = False,
             output_trim_records: bool = False, output_reduction_records: bool = False,
             relaxation: Relaxation | None = None, keep_all: bool = False) -> SmartTrimMeterOutput:
        attention_mask = text_mask_of(input_ids, attention_mask, pixel_values)
        settings, meter = self.smarttrim_config, self.meter
        trim = _NO_TRIMMERS if keep_all else self.smarttrim
        masking = self.pumer_config.attention_masking
        records: list[dict[str, Any]] | None = [] if output_trim_records else None
        counts: dict[str, list] = {"vit": [], "cross": []}
        batch = input_ids.shape[0]
        relaxed = relaxation is not None
        head_shares: list[torch.Tensor] = []
        #: per trimmer location and stream, each sample's kept original positions (-1: padding): the outputs an
        #: export carries, and (output_reduction_records) the margins behind them, for the near-tie rule
        indices: dict[str, torch.Tensor] = {}
        details: dict[str, dict[str, Any]] | None = {} if output_reduction_records else None

        def rows(states: torch.Tensor, alive: torch.Tensor, compacted: bool) -> tuple[int, torch.Tensor]:
            # (the rows the batch computes, the rows each sample computes at batch 1): a stream holds every
            # position, pads included, until a trimmer first decides on it
            full = torch.full((batch,), states.shape[1], dtype=alive.dtype if relaxed else torch.long,
                              device=alive.device if relaxed else "cpu")
            if not compacted:
                return states.shape[1], full
            return states.shape[1], alive.sum(dim=1) if relaxed else alive.sum(dim=1).cpu()

        def decide(logits: torch.Tensor, alive: torch.Tensor, states: torch.Tensor, index: torch.Tensor,
                   key: str, width: int):
            """A token trimmer's decision applied: removal (reference) or the policy (training surrogate)."""
            if relaxed:
                return relaxation.tokens(logits, alive, settings.tau, settings.keep_index), states, index
            keep = token_decision(logits, alive, settings.tau, settings.keep_index)
            if details is not None:
                details[key] = {"margins": _margin_rows(logits, alive, index, width, settings), "tau": settings.tau}
            states, alive, local, _ = torch.ops.pumer.compact(keep, states)  # one node in an export
            index = index.gather(1, local)
            indices[key] = torch.where(alive, index, -1)
            return alive, states, index

        text_states = meter.text_transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        text_alive = attention_mask.bool()
        text_alive[:, 0] = True
        if relaxed:
            text_alive = text_alive.to(text_states.dtype)
        text_index = torch.arange(text_alive.shape[1], device=input_ids.device).expand(batch, -1)

        # ---- image tower, trimmed before the blocks of vit_layers
        tower = meter.vit_model
        h = tower.pre_layrnorm(tower.embeddings(pixel_values))
        image_alive = torch.ones(h.shape[:2], dtype=h.dtype if relaxed else torch.bool, device=h.device)
        image_index = torch.arange(h.shape[1], device=h.device).expand(batch, -1)
        text_width, image_width = text_alive.shape[1], h.shape[1]
        image_compacted = text_compacted = False
        for number, layer in enumerate(tower.layers):
            trimmer = trim.vit[str(number)] if str(number) in trim.vit else None
            if trimmer is not None:
                projected = trimmer.proj(h)
                logits = trimmer(projected, masked_mean(projected, image_alive),
                                 trimmer.other_proj(masked_mean(text_states, text_alive)))
                margins = _margins(logits, image_alive, image_index, settings) if records is not None else None
                image_alive, h, image_index = decide(logits, image_alive, h, image_index,
                                                     f"vit{number}.image{KEPT}", image_width)
                image_compacted = True
                if records is not None:
                    records.append({"where": f"vit{number}", "image": _alive_positions(image_index, image_alive),
                                    "image_margins": margins})
            if records is not None or relaxed:
                counts["vit"].append(rows(h, image_alive, image_compacted))
            h = _clip_block(layer, h, image_alive, relaxed)
        y = meter.cross_modal_image_transform(tower.post_layernorm(h))
        x = meter.cross_modal_text_transform(text_states)
        x = x + meter.token_type_embeddings(torch.zeros(x.shape[:2], dtype=torch.long, device=x.device))
        y = y + meter.token_type_embeddings(torch.ones(y.shape[:2], dtype=torch.long, device=y.device))

        # ---- co-attention blocks
        states = []
        for number, (text_layer, image_layer) in enumerate(zip(meter.cross_modal_text_layers,
                                                                 meter.cross_modal_image_layers)):
            pair = trim.cross[str(number)] if str(number) in trim.cross else None
            if pair is not None:  # both streams decide on the same pre-block states
                projected_text, projected_image = pair["text"].proj(x), pair["image"].proj(y)
                text_global = masked_mean(projected_text, text_alive)
                image_global = masked_mean(projected_image, image_alive)
                text_logits = pair["text"](projected_text, text_global, image_global)
                image_logits = pair["image"](projected_image, image_global, text_global)
                if records is not None:
                    margins = {"text_margins": _margins(text_logits, text_alive, text_index, settings),
                               "image_margins": _margins(image_logits, image_alive, image_index, settings)}
                text_alive, x, text_index = decide(text_logits, text_alive, x, text_index, f"cross{number}.text{KEPT}",
                                                   text_width)
                image_alive, y, image_index = decide(image_logits, image_alive, y, image_index,
                                                     f"cross{number}.image{KEPT}", image_width)
                text_compacted = image_compacted = True
            if records is not None or relaxed:
                counts["cross"].append({"text": rows(x, text_alive, text_compacted),
                                        "image": rows(y, image_alive, image_compacted)})
            heads = trim.heads[str(number)] if str(number) in trim.heads else None

            head_margins: dict[str, torch.Tensor] = {}

            def mask(name: str, queries_input: torch.Tensor, alive: torch.Tensor) -> torch.Tensor | None:
                if heads is None:
                    return None
                logits = heads[name](queries_input, alive)
                head_margins[name] = keep_margin(logits, settings.keep_index).detach()
                if relaxed:
                    decided = relaxation.heads(logits, settings.head_tau, settings.keep_index)
                    head_shares.append(decided.mean(dim=1))
                    return decided
                return head_decision(logits, settings.head_tau, settings.keep_index)

            text_keys, image_keys = text_alive.float(), image_alive.float()
            text_softmax = image_softmax = None
            if relaxed:
                text_softmax = lambda scores, keys=text_alive: policy_softmax(scores, keys)  # noqa: E731
                image_softmax = lambda scores, keys=image_alive: policy_softmax(scores, keys)  # noqa: E731
            head_masks = {"text_self": mask("text_self", x, text_alive)}
            attended, _, _ = _attention(text_layer.attention, x, x, text_keys, masking, head_masks["text_self"],
                                        text_softmax)
            head_masks["text_cross"] = mask("text_cross", attended, text_alive)
            crossed, _, _ = _attention(text_layer.crossattention, attended, y, image_keys, masking,
                                       head_masks["text_cross"], image_softmax)
            x = _ffn(text_layer, crossed)
            head_masks["image_self"] = mask("image_self", y, image_alive)
            attended, _, _ = _attention(image_layer.attention, y, y, image_keys, masking, head_masks["image_self"],
                                        image_softmax)
            head_masks["image_cross"] = mask("image_cross", attended, image_alive)
            crossed, _, _ = _attention(image_layer.crossattention, attended, x, text_keys, masking,
                                       head_masks["image_cross"], text_softmax)
            y = _ffn(image_layer, crossed)
            if records is not None and (pair is not None or heads is not None):
                records.append({"where": f"cross{number}", "text": _alive_positions(text_index, text_alive),
                                "image": _alive_positions(image_index, image_alive),
                                "heads": {k: v for k, v in head_masks.items() if v is not None},
                                "head_margins": head_margins,
                                **(margins if pair is not None else {})})
            if output_hidden_states:
                states.append((x, text_alive.float(), y))
        pooled = torch.cat([meter.cross_modal_text_pooler(x), meter.cross_modal_image_pooler(y)], dim=-1)
        out = SmartTrimMeterOutput(logits=self.vqa_classifier(pooled), pooler_output=pooled,
                                   cross_states=tuple(states) if output_hidden_states else None,
                                   reduction_indices=indices, trim_records=records,
                                   reduction_records=[{"details": details}] if details is not None else None,
                                   trim_counts=counts if records is not None else None)
        if relaxed:
            untrimmed = self._untrimmed_flops(int(input_ids.shape[1]))
            out.flops_share = sample_flops(self.config, counts, int(input_ids.shape[1])) / untrimmed
            out.head_share = torch.stack(head_shares, dim=1).mean(dim=1) if head_shares else None
        return out

    def trim_statistics(self, batches) -> dict[str, Any]:
        """:func:`trim_statistics` of this model."""
        return trim_statistics(self, batches)

    def _untrimmed_flops(self, text_tokens: int) -> int:
        """The untrimmed model's FLOPs for one sample with ``text_tokens`` text positions (the family's count; this
        model's PuMer settings reduce nothing, checked at construction)."""
        from . import encoder_flops

        return encoder_flops(self.config, self.token_schedule(text_tokens))


def realised_flops(config: MeterConfig, counts: dict[str, list], text_tokens: int, sample: int | None = None) -> int:
    """The backbone FLOPs one sample costs under the counts a forward recorded (``trim_counts``): at ``sample``'s own
    batch-1 token counts, or (``sample=None``) at the padded batch's. Counted as the family counts them
    (:func:`pumer_export.models.meter.encoder_flops`: with every token kept they are equal); head masks zero a head's
    context but do not skip its compute, so they do not change the count; the trimmers' own FLOPs are left out."""
    if sample is None:
        return int(_flops(config, counts, text_tokens, lambda entry: entry[0]))
    return int(_flops(config, counts, text_tokens, lambda entry: entry[1][sample]))


def sample_flops(config: MeterConfig, counts: dict[str, list], text_tokens: int) -> torch.Tensor:
    """Every sample's FLOPs at its own counts [B] (tensors: differentiable in the relaxed forward's soft counts)."""
    return _flops(config, counts, text_tokens, lambda entry: entry[1])


def _flops(config: MeterConfig, counts: dict[str, list], text_tokens: int, pick):
    from . import _layer_flops

    vision, text = config.vision(), config.text()
    total = sum(_layer_flops(n, n, vision.hidden_size, vision.intermediate_size, n)
                for n in (pick(entry) for entry in counts["vit"]))
    total = total + text.num_hidden_layers * _layer_flops(text_tokens, text_tokens, text.hidden_size,
                                                          text.intermediate_size, text_tokens)
    hidden, intermediate = config.hidden_size, config.intermediate_size
    for block in counts["cross"]:
        words, image = pick(block["text"]), pick(block["image"])
        total = total + _layer_flops(words, words, hidden, 0, 0) + _layer_flops(words, image, hidden, intermediate,
                                                                                words)
        total = total + _layer_flops(image, image, hidden, 0, 0) + _layer_flops(image, words, hidden, intermediate,
                                                                                image)
    return total


@torch.no_grad()
def trim_statistics(model: SmartTrimMeterForQuestionAnswering, batches) -> dict[str, Any]:
    """What the trimmers realise on ``batches`` (dicts of model inputs): per trimmer location the kept share of the
    tokens alive before it (mean and standard deviation over the samples), and the FLOPs against the untrimmed
    model's: the mean over the samples at their own batch-1 counts (``per_sample``) and at their batch's padded
    counts (``padded``), each with its FLOP-ideal speedup."""
    shares: dict[str, list[float]] = {}
    flops = {"per_sample": [], "padded": []}
    untrimmed = None
    for inputs in batches:
        text_tokens = int(inputs["input_ids"].shape[1])
        out = model(**inputs, output_trim_records=True)
        for record in out.trim_records:
            for stream in ("text", "image"):
                before = record.get(f"{stream}_margins")
                if before is None:
                    continue
                for kept, alive in zip(record[stream], before):
                    shares.setdefault(f"{record['where']}.{stream}", []).append(len(kept) / max(len(alive), 1))
        batch = int(inputs["input_ids"].shape[0])
        padded = realised_flops(model.config, out.trim_counts, text_tokens)
        flops["padded"] += [padded] * batch
        flops["per_sample"] += [realised_flops(model.config, out.trim_counts, text_tokens, i) for i in range(batch)]
        untrimmed = model._untrimmed_flops(text_tokens)
    if untrimmed is None:
        raise ValueError("no batches")
    summary = {name: sum(values) / len(values) for name, values in flops.items()}
    return {
        "kept_share": {where: {"mean": float(torch.tensor(v).mean()), "std": float(torch.tensor(v).std(unbiased=False))}
                       for where, v in shares.items()},
        "flops": {"untrimmed": untrimmed, **summary},
        "flop_ideal": {name: untrimmed / value for name, value in summary.items()},
    }


def _margins(logits: torch.Tensor, alive: torch.Tensor, index: torch.Tensor, settings: SmartTrimConfig
             ) -> list[dict[int, float]]:
    """Per sample, ``keep - drop`` of each token alive before the decision, by original position (near-ties are judged
    on these)."""
    margin = keep_margin(logits, settings.keep_index).detach()
    return [{int(i): float(m) for i, m, a in zip(row_index, row, row_alive) if a}
            for row_index, row, row_alive in zip(index, margin, alive)]


def _margin_rows(logits: torch.Tensor, alive: torch.Tensor, index: torch.Tensor, width: int,
                 settings: SmartTrimConfig):
    """``keep - drop`` of every token alive before a decision, at its original position ([B, width] numpy, nan
    where a token was not alive): what the near-tie rule of the parity gates reads."""
    import numpy as np

    margin = keep_margin(logits, settings.keep_index).detach().float()
    rows = torch.full((logits.shape[0], width), float("nan"))
    rows.scatter_(1, index.cpu(), torch.where(alive.bool(), margin, float("nan")).cpu())
    return rows.numpy().astype(np.float64)


def _alive_positions(index: torch.Tensor, alive: torch.Tensor) -> list[torch.Tensor]:
    """Per sample, the original positions of its alive tokens (in order)."""
    return [row[keep] for row, keep in zip(index, alive)]


def build_model(config: MeterConfig) -> SmartTrimMeterForQuestionAnswering:
    return SmartTrimMeterForQuestionAnswering(config)


def attach(model: PumerMeterForQuestionAnswering, settings: SmartTrimConfig) -> SmartTrimMeterForQuestionAnswering:
    """``model``'s weights with SmartTrim-style trimmers at ``settings``' locations (untrained: they keep everything
    at first); PuMer's reducers off."""
    import copy

    from ...config import set_pumer_config
    from ...methods.smarttrim.config import set_smarttrim_config

    config = copy.deepcopy(model.config)
    set_pumer_config(config, model.pumer_config.without_reduction())
    set_smarttrim_config(config, settings, cross_depth=config.num_hidden_layers,
                         vit_depth=config.vision().num_hidden_layers)
    trimmed = SmartTrimMeterForQuestionAnswering(config)
    missing, unexpected = trimmed.load_state_dict(model.state_dict(), strict=False)
    if unexpected or any(not name.startswith("smarttrim.") for name in missing):
        raise ConfigError(f"the METER weights do not fit (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return trimmed.eval()
