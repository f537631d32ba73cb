"""PuMer on METER (CLIP ViT image tower, RoBERTa text tower, co-attention cross blocks): the PyTorch reference.

Built on transformers' modules where they compute the same thing as the official METER / PuMer code:

* image tower: CLIP's vision embeddings and encoder layers (QuickGELU), ``ln_post`` on *all* tokens, no projection,
  no position interpolation (the input size must equal ``image_size``); the official tower has ``layers - 1``
  residual blocks, the converted checkpoint stores the real count;
* text tower: ``RobertaModel`` without pooler (standard additive mask, position ids from the padding id);
* cross blocks: transformers' BERT layer with cross-attention as the parameter container (official names:
  ``attention``, ``crossattention``, ``intermediate``, ``output``); the forward is written here because PuMer
  reduces tokens between the text side's cross-attention and its FFN, and converted official checkpoints use
  PuMer's P7 softmax (:func:`pumer_export.reduce.masked_softmax`) in both attentions.

Official semantics reproduced (M1-M8 of the PuMer METER contract): the reducer sits in the text-side cross layer of
the reduced blocks; scores come from the text-to-image cross-attention (head mean, all text rows, divided by the
text-mask sum) through the same ``pumer::prune`` op as ViLT (``image_start=0``); the image merge metric is the
cross-attention keys, the text merge metric the text self-attention keys; pruning only takes effect with an image
merge (M5); the image side of a block attends to the text the text side just produced (M6); pooling takes the first
token of each stream.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, CLIPVisionConfig, PretrainedConfig, PreTrainedModel, RobertaConfig, RobertaModel
from transformers.modeling_outputs import ModelOutput
from transformers.models.bert.modeling_bert import BertLayer
from transformers.models.clip.modeling_clip import CLIPEncoderLayer, CLIPVisionEmbeddings

from ... import ops, reduce
from ...config import PumerConfig, get_pumer_config, set_pumer_config
from ...errors import ConfigError
from ...schedule import LayerCounts, TokenSchedule, token_schedule

#: CLIP's pixel normalisation (METER's image processor).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class MeterConfig(PretrainedConfig):
    """Configuration of a PuMer METER model (self-describing: the two towers' configs are stored inside).

    ``num_hidden_layers`` is the number of co-attention (cross) blocks: PuMer's ``reduce_layers`` index them.
    ``max_text_length`` is the padded text length the checkpoint was trained with (the default input length);
    the text position table allows up to :attr:`max_position_embeddings`.
    """

    model_type = "meter"

    def __init__(
        self,
        hidden_size: int = 768,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        num_hidden_layers: int = 6,
        cross_layer_norm_eps: float = 1e-12,
        classifier_layer_norm_eps: float = 1e-5,
        max_text_length: int = 40,
        vision_config: dict | None = None,
        text_config: dict | None = None,
        **kwargs: Any,
    ):
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.cross_layer_norm_eps = cross_layer_norm_eps
        self.classifier_layer_norm_eps = classifier_layer_norm_eps
        self.max_text_length = max_text_length
        self.vision_config = dict(vision_config or {})
        self.text_config = dict(text_config or {})
        super().__init__(**kwargs)

    # the sub-configs, built on demand (config.json keeps plain dicts)
    def vision(self) -> CLIPVisionConfig:
        config = CLIPVisionConfig(**{"hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, **self.vision_config})
        config._attn_implementation = "sdpa"
        return config

    def text(self) -> RobertaConfig:
        config = RobertaConfig(**self.text_config)
        config._attn_implementation = "sdpa"
        return config

    def cross(self) -> BertConfig:
        return BertConfig(
            hidden_size=self.hidden_size, num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size, layer_norm_eps=self.cross_layer_norm_eps, hidden_act="gelu",
            is_decoder=True, add_cross_attention=True,
        )

    @property
    def image_size(self) -> int:
        return int(self.vision_config.get("image_size", 224))

    @property
    def patch_size(self) -> int:
        return int(self.vision_config.get("patch_size", 16))

    @property
    def vocab_size(self) -> int:
        return int(self.text_config.get("vocab_size", 50265))

    @property
    def max_position_embeddings(self) -> int:
        """The longest text: RoBERTa's position table minus the padding offset."""
        text = self.text()
        return int(text.max_position_embeddings) - int(text.pad_token_id) - 1


def check_model_config(config: MeterConfig) -> None:
    """Raise :class:`ConfigError` for METER settings the reference does not reproduce."""
    if config.hidden_size % config.num_attention_heads:
        raise ConfigError(f"hidden_size {config.hidden_size} is not a multiple of num_attention_heads "
                          f"{config.num_attention_heads}")
    vision = config.vision()
    if vision.image_size % vision.patch_size:
        raise ConfigError(f"image_size {vision.image_size} is not a multiple of patch_size {vision.patch_size}")
    if vision.hidden_size % vision.num_attention_heads:
        raise ConfigError("the vision width is not a multiple of its head count")
    pumer = get_pumer_config(config)
    if pumer is not None:
        pumer.check_depth(config.num_hidden_layers)
        if pumer.score != "mean":
            raise ConfigError("METER scores image tokens with the head mean of the cross-attention (score 'mean')")


# --------------------------------------------------------------------------- outputs
@dataclasses.dataclass
class PumerMeterOutput(ModelOutput):
    """Output of :class:`PumerMeterForQuestionAnswering` (same reduction fields as the ViLT model's).

    ``cross_states`` (with ``output_hidden_states``): per cross block, ``(text, text_mask, image)`` after it.
    """

    logits: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    cross_input: tuple[torch.Tensor, torch.Tensor] | None = None
    cross_states: tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], ...] | None = None
    reduction_indices: dict[str, torch.Tensor] | None = None
    reduction_records: list[dict[str, Any]] | None = None


# ----------------------------------------------------------------------------- towers
class MeterVisionTower(nn.Module):
    """CLIP ViT as METER uses it: embeddings, ``ln_pre``, the residual blocks, ``ln_post`` on every token."""

    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.embeddings = CLIPVisionEmbeddings(config)
        self.pre_layrnorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(CLIPEncoderLayer(config) for _ in range(config.num_hidden_layers))
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.pre_layrnorm(self.embeddings(pixel_values))
        for layer in self.layers:
            x = layer(x, None)
        return self.post_layernorm(x)


class MeterPooler(nn.Module):
    def __init__(self, hidden_size: int):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(x[:, 0]))


# ------------------------------------------------------------------------- attention
def _attention(module, hidden: torch.Tensor, context: torch.Tensor, key_mask: torch.Tensor, masking: str,
               head_mask: torch.Tensor | None = None, softmax=None):
    """A BERT attention sub-layer (``module``: ``attention`` or ``crossattention``) of ``hidden`` over ``context``.

    Returns (post-LN sub-layer output, queries, keys) with queries / keys [B, H, N, d]. ``official`` masking is
    PuMer's P7 softmax in float32; ``standard`` runs ``scaled_dot_product_attention`` with the additive log-mask.
    ``head_mask`` [B, H] (0/1) multiplies each head's context before the output projection (SmartTrim's heads);
    ``softmax`` (scores [B, H, Nq, Nk] -> probabilities) replaces the masking rule (SmartTrim's training surrogate).
    """
    attn = module.self
    heads, head_dim = attn.num_attention_heads, attn.attention_head_size

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(t.shape[0], t.shape[1], heads, head_dim).transpose(1, 2)

    query, key, value = split(attn.query(hidden)), split(attn.key(context)), split(attn.value(context))
    if softmax is not None:
        out = torch.matmul(softmax(torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(head_dim)), value)
    elif masking == "standard":
        bias = reduce.log_mask_bias(key_mask)[:, None, None, :].to(query.dtype)
        bias = bias.expand(key_mask.shape[0], 1, hidden.shape[1], key_mask.shape[1])
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=bias)
    else:
        scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(head_dim)
        probs = reduce.masked_softmax(scores, key_mask, reduce.MASKINGS[masking])
        out = torch.matmul(probs.to(value.dtype), value)
    if head_mask is not None:
        out = out * head_mask[:, :, None, None].to(out.dtype)
    out = out.transpose(1, 2).reshape(hidden.shape[0], hidden.shape[1], heads * head_dim)
    return module.output(out, hidden), query, key


def text_mask_of(input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                 pixel_values: torch.Tensor | None) -> torch.Tensor:
    """The text mask of a forward's inputs (all ones when not given); images are required."""
    if pixel_values is None:
        raise ValueError("pixel_values is required")
    return torch.ones_like(input_ids) if attention_mask is None else attention_mask


def _ffn(layer: BertLayer, x: torch.Tensor) -> torch.Tensor:
    return layer.output(layer.intermediate(x), x)


def _reduce(
    image: torch.Tensor,
    text: torch.Tensor,
    text_mask: torch.Tensor,
    image_mask: torch.Tensor,
    cross_queries: torch.Tensor,
    cross_keys: torch.Tensor,
    self_keys: torch.Tensor,
    counts: LayerCounts,
    masking: int,
    indices: dict[str, torch.Tensor],
    records: list[dict[str, Any]] | None,
):
    """One PuMer reducer of a METER text-side cross layer: prune and merge the image tokens, merge the text."""
    prefix = f"layer{counts.layer}"
    text_len = counts.text_in
    record: dict[str, Any] | None = None
    if records is not None:
        record = {"layer": counts.layer, "counts": counts}
        records.append(record)
    if counts.image_merge:  # M5: pruning only takes effect together with an image merge
        image_metric = cross_keys.mean(dim=1)
        image, image_metric, keep_idx = ops.prune(
            image, image_metric, cross_queries, cross_keys, image_mask, text_mask, text_len, counts.keep,
            reduce.MEAN_OF_HEADS, 0, masking,
        )
        indices[f"{prefix}.keep_idx"] = keep_idx
        ones = torch.ones(image.shape[:2], dtype=torch.float32, device=image.device)
        if record is not None:
            scores = reduce.text_informed_scores(cross_queries, cross_keys, image_mask, text_mask, 0,
                                                 reduce.MEAN_OF_HEADS, masking)
            record.update(prune_scores=scores, keep_idx=keep_idx, keep_scores=scores.gather(1, keep_idx),
                          image_plan=reduce.bipartite_plan(image_metric, counts.image_merge))
        image, _, indices[f"{prefix}.image_slots"] = ops.merge(image, image_metric, ones, counts.image_merge)
    if counts.text_merge:
        text_metric = self_keys.mean(dim=1)
        if record is not None:
            record["text_plan"] = reduce.bipartite_plan(text_metric, counts.text_merge)
        text, text_mask, indices[f"{prefix}.text_slots"] = ops.merge(text, text_metric, text_mask, counts.text_merge)
    image_mask = torch.ones(image.shape[:2], dtype=image_mask.dtype, device=image.device)
    return image, text, text_mask, image_mask


# ---------------------------------------------------------------------------- models
class PumerMeterPreTrainedModel(PreTrainedModel):
    config_class = MeterConfig
    base_model_prefix = "meter"
    main_input_name = "input_ids"

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding, nn.Conv2d)):
            module.weight.data.normal_(mean=0.0, std=0.02)
            if getattr(module, "bias", None) is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()
        elif isinstance(module, CLIPVisionEmbeddings):
            module.class_embedding.data.normal_(mean=0.0, std=0.02)

    @property
    def pumer_config(self) -> PumerConfig:
        return get_pumer_config(self.config) or PumerConfig()

    def set_pumer_config(self, pumer: PumerConfig) -> None:
        set_pumer_config(self.config, pumer)

    def token_schedule(self, text_tokens: int, image_size: tuple[int, int] | None = None) -> TokenSchedule:
        """Token counts for a padded text length (METER's image size is fixed: ``image_size`` must equal it)."""
        side = self.config.image_size
        if image_size is not None and tuple(image_size) != (side, side):
            raise ConfigError(f"METER runs at its fixed image size {side}x{side} (no position interpolation), "
                              f"not {image_size[0]}x{image_size[1]}")
        image_tokens = (side // self.config.patch_size) ** 2 + 1
        return token_schedule(self.pumer_config, num_layers=self.config.num_hidden_layers, text_tokens=text_tokens,
                              image_tokens=image_tokens, rules="meter")


class PumerMeterModel(PumerMeterPreTrainedModel):
    """METER's towers and co-attention blocks with PuMer (parameter names as the official state dict's)."""

    def __init__(self, config: MeterConfig):
        super().__init__(config)
        check_model_config(config)
        hidden = config.hidden_size
        vision, text = config.vision(), config.text()
        self.vit_model = MeterVisionTower(vision)
        self.text_transformer = RobertaModel(text, add_pooling_layer=False)
        self.cross_modal_text_transform = nn.Linear(text.hidden_size, hidden)
        self.cross_modal_image_transform = nn.Linear(vision.hidden_size, hidden)
        self.token_type_embeddings = nn.Embedding(2, hidden)
        cross = config.cross()
        self.cross_modal_text_layers = nn.ModuleList(BertLayer(cross) for _ in range(config.num_hidden_layers))
        self.cross_modal_image_layers = nn.ModuleList(BertLayer(cross) for _ in range(config.num_hidden_layers))
        self.cross_modal_text_pooler = MeterPooler(hidden)
        self.cross_modal_image_pooler = MeterPooler(hidden)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_reduction_records: bool = False,
        **kwargs: Any,
    ) -> PumerMeterOutput:
        attention_mask = text_mask_of(input_ids, attention_mask, pixel_values)
        pumer = self.pumer_config
        masking = pumer.attention_masking
        text = self.text_transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        x = self.cross_modal_text_transform(text)
        y = self.cross_modal_image_transform(self.vit_model(pixel_values))
        cross_input = (x, y)
        text_mask = attention_mask.to(torch.float32)
        image_mask = torch.ones(y.shape[:2], dtype=torch.float32, device=y.device)
        x = x + self.token_type_embeddings(torch.zeros_like(attention_mask))
        y = y + self.token_type_embeddings(torch.ones(y.shape[:2], dtype=torch.long, device=y.device))

        schedule = token_schedule(pumer, num_layers=self.config.num_hidden_layers, text_tokens=x.shape[1],
                                  image_tokens=y.shape[1], rules="meter")
        indices: dict[str, torch.Tensor] = OrderedDict()
        records: list[dict[str, Any]] | None = [] if output_reduction_records else None
        states = []
        for index, (text_layer, image_layer) in enumerate(zip(self.cross_modal_text_layers,
                                                                self.cross_modal_image_layers)):
            attended, _, self_keys = _attention(text_layer.attention, x, x, text_mask, masking)
            crossed, cross_queries, cross_keys = _attention(text_layer.crossattention, attended, y, image_mask,
                                                            masking)
            counts = schedule.at(index)
            if counts is not None and counts.active:
                y, crossed, text_mask, image_mask = _reduce(
                    y, crossed, text_mask, image_mask, cross_queries, cross_keys, self_keys, counts,
                    reduce.MASKINGS[masking], indices, records,
                )
            x = _ffn(text_layer, crossed)
            # M6: the image side attends to the text this block just produced
            attended, _, _ = _attention(image_layer.attention, y, y, image_mask, masking)
            crossed, _, _ = _attention(image_layer.crossattention, attended, x, text_mask, masking)
            y = _ffn(image_layer, crossed)
            if output_hidden_states:
                states.append((x, text_mask, y))
        pooled = torch.cat([self.cross_modal_text_pooler(x), self.cross_modal_image_pooler(y)], dim=-1)
        return PumerMeterOutput(
            pooler_output=pooled,
            cross_input=cross_input if output_hidden_states else None,
            cross_states=tuple(states) if output_hidden_states else None,
            reduction_indices=indices,
            reduction_records=records,
        )


class PumerMeterForQuestionAnswering(PumerMeterPreTrainedModel):
    """METER VQA model with PuMer: ``forward(input_ids, attention_mask, pixel_values)`` returns ``.logits``."""

    def __init__(self, config: MeterConfig):
        super().__init__(config)
        self.meter = PumerMeterModel(config)
        width = 2 * config.hidden_size
        self.vqa_classifier = nn.Sequential(
            nn.Linear(width, width),
            nn.LayerNorm(width, eps=config.classifier_layer_norm_eps),
            nn.GELU(),
            nn.Linear(width, config.num_labels),
        )
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_reduction_records: bool = False,
        **kwargs: Any,
    ) -> PumerMeterOutput:
        out = self.meter(input_ids, attention_mask, pixel_values, output_hidden_states=output_hidden_states,
                         output_reduction_records=output_reduction_records)
        out.logits = self.vqa_classifier(out.pooler_output)
        return out

