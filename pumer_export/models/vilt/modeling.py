"""PuMer on Hugging Face ViLT: the PyTorch reference model.

The classes reuse transformers' ViLT modules (so parameter names, ``from_pretrained`` and
``save_pretrained`` are those of ``ViltForQuestionAnswering``) and replace the forward pass:

* a deterministic, export-friendly visual embedding (patches in raster order, valid patches
  first; position embeddings resized per image with the same bilinear rule as ViLT);
* attention through ``scaled_dot_product_attention`` with a standard additive log-mask, or the
  official PuMer masked softmax (see :class:`pumer_export.config.PumerConfig`); the reducers get
  the layer's queries and keys, never its attention probabilities;
* in every reduce layer, after the attention residual and before the MLP: text-informed
  pruning of image tokens, then ToMe merging of image tokens and of text tokens (with the
  text mask), through the ``pumer`` custom ops.

Token counts come from :func:`pumer_export.schedule.token_schedule`.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import ViltConfig
from transformers.modeling_outputs import ModelOutput
from transformers.models.vilt.modeling_vilt import (
    ViltEmbeddings,
    ViltLayer,
    ViltPooler,
    ViltPreTrainedModel,
)

from ... import ops, reduce
from ...config import PumerConfig, get_pumer_config, set_pumer_config
from ...errors import ConfigError
from ...schedule import LayerCounts, TokenSchedule, image_tokens_for, token_schedule

#: Extra config key: eps of the text-embedding LayerNorm when it differs from ``layer_norm_eps``
#: (official PuMer: 1e-12 there, 1e-6 in the encoder).
TEXT_LAYER_NORM_EPS_KEY = "text_layer_norm_eps"


# --------------------------------------------------------------------------- outputs
@dataclasses.dataclass
class PumerViltModelOutput(ModelOutput):
    """Output of :class:`PumerViltModel`.

    ``reduction_indices``: for every reduce layer L, ``layerL.keep_idx`` (pruning, image-part
    indices in score order), ``layerL.image_slots`` and ``layerL.text_slots`` (merging: output
    position of every input token), as produced by the pumer ops. ``reduction_records``
    (only with ``output_reduction_records=True``): per reduce layer, a dict with the counts,
    scores, kept indices and merge plans, for validation and debugging.
    """

    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    hidden_masks: tuple[torch.Tensor, ...] | None = None
    reduction_indices: dict[str, torch.Tensor] | None = None
    reduction_records: list[dict[str, Any]] | None = None


@dataclasses.dataclass
class PumerViltForQuestionAnsweringOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    hidden_masks: tuple[torch.Tensor, ...] | None = None
    reduction_indices: dict[str, torch.Tensor] | None = None
    reduction_records: list[dict[str, Any]] | None = None


# ------------------------------------------------------------------------ embeddings
def pixel_mask_from_values(pixel_values: torch.Tensor) -> torch.Tensor:
    """The official PuMer pixel mask: a pixel is valid iff its channel sum is non-zero."""
    return (pixel_values.sum(dim=1) != 0).long()


def _resize_weights(valid: torch.Tensor, out_size: int, in_size: int) -> torch.Tensor:
    """Bilinear (align_corners=True) resize of ``in_size`` positions to ``valid`` ones, zero-padded.

    Returns [B, out_size, in_size] weights: row i < valid[b] interpolates the ``in_size`` grid at
    ``i * (in_size - 1) / (valid[b] - 1)``; rows >= valid[b] are zero (padding).
    """
    positions = torch.arange(out_size, device=valid.device, dtype=torch.float32)
    denom = (valid - 1).clamp(min=1).to(torch.float32)
    scale = torch.where(valid > 1, (in_size - 1) / denom, torch.zeros_like(denom))
    src = scale.unsqueeze(-1) * positions
    low = src.floor().clamp(max=in_size - 1)
    frac = src - low
    high = (low + 1).clamp(max=in_size - 1)
    grid = torch.arange(in_size, device=valid.device, dtype=torch.float32)
    weights = (1 - frac).unsqueeze(-1) * (grid == low.unsqueeze(-1)) + frac.unsqueeze(-1) * (
        grid == high.unsqueeze(-1)
    )
    inside = positions < valid.unsqueeze(-1).to(torch.float32)
    return weights * inside.unsqueeze(-1)


class PumerViltEmbeddings(ViltEmbeddings):
    """ViLT embeddings with a deterministic visual embedding.

    Patches are taken in raster order, valid ones first, then padded ones (ViLT draws them at
    random). The position grid is resized per image to its valid extent (valid rows in column 0,
    valid columns in row 0) and zero-padded, as in ViLT. With ``trim_padding`` the image sequence
    is cut to the batch's largest valid extent, as ViLT does; export keeps the full grid.
    """

    def visual_embed(self, pixel_values, pixel_mask, trim_padding: bool = True, patch_index=None):  # type: ignore[override]
        patches = self.patch_embeddings(pixel_values)
        batch, channels, grid_h, grid_w = patches.shape
        patch_mask = F.interpolate(pixel_mask[:, None].float(), size=(grid_h, grid_w))[:, 0].long()
        valid_h = patch_mask[:, :, 0].sum(dim=1)
        valid_w = patch_mask[:, 0, :].sum(dim=1)

        pos_dim = self.config.image_size // self.config.patch_size
        spatial = self.position_embeddings[0, 1:].reshape(pos_dim, pos_dim, channels)
        rows = _resize_weights(valid_h, grid_h, pos_dim).to(spatial.dtype)
        cols = _resize_weights(valid_w, grid_w, pos_dim).to(spatial.dtype)
        pos = torch.einsum("bip,pqc,bjq->bijc", rows, spatial, cols).reshape(batch, grid_h * grid_w, channels)

        tokens = patches.flatten(2).transpose(1, 2)
        flat_mask = patch_mask.flatten(1)
        if patch_index is not None:  # a given patch order, e.g. one recorded from the official code
            order = patch_index[..., 0] * grid_w + patch_index[..., 1]
        else:
            order = torch.sort(1 - flat_mask, dim=1, stable=True).indices
        if trim_padding and patch_index is None:
            order = order[:, : int((valid_h * valid_w).max())]
        gather = order.unsqueeze(-1).expand(-1, -1, channels)
        tokens = tokens.gather(1, gather) + pos.gather(1, gather)
        image_mask = flat_mask.gather(1, order)

        cls = self.cls_token.expand(batch, -1, -1) + self.position_embeddings[:, :1]
        embeddings = self.dropout(torch.cat([cls, tokens], dim=1))
        image_mask = torch.cat([torch.ones_like(image_mask[:, :1]), image_mask], dim=1)
        patch_index = torch.stack([order // grid_w, order % grid_w], dim=-1)
        return embeddings, image_mask, patch_index

    def forward(  # type: ignore[override]
        self, input_ids, attention_mask, token_type_ids, pixel_values, pixel_mask, image_token_type_idx=1,
        trim_padding=True, patch_index=None,
    ):
        text = self.text_embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        image, image_mask, _ = self.visual_embed(pixel_values, pixel_mask, trim_padding, patch_index)
        text = text + self.token_type_embeddings(torch.zeros_like(input_ids))
        image = image + self.token_type_embeddings(torch.full_like(image_mask, image_token_type_idx))
        embeddings = torch.cat([text, image], dim=1)
        masks = torch.cat([attention_mask.to(torch.float32), image_mask.to(torch.float32)], dim=1)
        return embeddings, masks


# ------------------------------------------------------------------------- attention
def masked_softmax(scores: torch.Tensor, key_mask: torch.Tensor, masking: str) -> torch.Tensor:
    """Attention probabilities (float32) under ``masking`` ("standard" / "official"): see
    :func:`pumer_export.reduce.masked_softmax`, the one definition every backend follows."""
    return reduce.masked_softmax(scores, key_mask, reduce.MASKINGS[masking])


def attention_bias(mask: torch.Tensor, dtype: torch.dtype, official: bool = False) -> torch.Tensor:
    """The additive mask [B, 1, N, N] for ``scaled_dot_product_attention``, computed once per token set.

    ``standard`` rule: log(m) per key (a view in eager; ONNX's Attention op in ONNX Runtime wants the query length
    in the mask's shape, not a broadcastable [B, 1, 1, N]). With ``official``, PuMer's P7 softmax as an additive
    mask: log(m + (1 - m) [key == query]), so a masked query still attends to its own key; only P7's 1e-6
    smoothing is left out (see :attr:`PumerViltModel.fused_official_attention`).
    """
    length = mask.shape[1]
    if not official:
        return reduce.log_mask_bias(mask)[:, None, None, :].to(dtype).expand(mask.shape[0], 1, length, length)
    m = mask.float()[:, None, :]
    eye = torch.eye(length, dtype=torch.float32, device=mask.device)
    weights = m + (1 - m) * eye  # [B, N, N]
    bias = torch.where(weights > 0, torch.log(weights.clamp(min=1e-30)), torch.finfo(torch.float32).min)
    return bias[:, None].to(dtype)


def _attention(layer: ViltLayer, x: torch.Tensor, mask: torch.Tensor, masking: str, bias: torch.Tensor | None = None,
               fused_official: bool = False):
    """Self-attention of ``layer`` on ``x``: returns (attention output, queries, keys), both [B, H, N, d].

    ``standard`` masking runs ``scaled_dot_product_attention`` with the additive log-mask, so eager GPU runs use
    fused attention kernels and exports carry the standard attention pattern; the attention probabilities are
    never materialised for anything else (the prune op recomputes the text rows from queries and keys).
    ``official`` masking (PuMer's P7 softmax, which converted official checkpoints were trained with) keeps the
    exact matmul + float32 softmax path.
    """
    attn = layer.attention.attention
    batch, length, _ = x.shape
    heads, head_dim = attn.num_attention_heads, attn.attention_head_size

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(batch, length, heads, head_dim).transpose(1, 2)

    query, key, value = split(attn.query(x)), split(attn.key(x)), split(attn.value(x))
    if masking == "standard" or fused_official:
        bias = attention_bias(mask, query.dtype, official=masking == "official") if bias is None else bias
        dropout = attn.dropout.p if attn.training else 0.0
        context = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, dropout_p=dropout)
    else:
        scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(head_dim)
        probs = masked_softmax(scores, mask, masking)
        context = torch.matmul(attn.dropout(probs).to(value.dtype), value)
    context = context.transpose(1, 2).reshape(batch, length, heads * head_dim)
    return layer.attention.output(context, x), query, key


# ------------------------------------------------------------------------- reduction
def _reduce(
    x: torch.Tensor,
    mask: torch.Tensor,
    queries: torch.Tensor,
    keys: torch.Tensor,
    counts: LayerCounts,
    pumer: PumerConfig,
    indices: dict[str, torch.Tensor],
    records: list[dict[str, Any]] | None,
):
    """One PuMer reducer: prune image tokens, merge image tokens, merge text tokens."""
    text_len = counts.text_in
    score_head = reduce.MEAN_OF_HEADS if pumer.score == "mean" else 0
    masking = reduce.MASKINGS[pumer.attention_masking]
    metric = keys.mean(dim=1)
    text_mask = mask[:, :text_len]
    text_queries = queries[:, :, :text_len]
    prefix = f"layer{counts.layer}"

    # ViLT's joint sequence: the keys are text + image tokens, the image keys start after the text
    image, image_metric, keep_idx = ops.prune(x, metric, text_queries, keys, mask, text_mask, text_len, counts.keep,
                                              score_head, text_len, masking)
    indices[f"{prefix}.keep_idx"] = keep_idx
    record: dict[str, Any] | None = None
    if records is not None:
        scores = reduce.text_informed_scores(text_queries, keys, mask, text_mask, text_len, score_head, masking)
        record = {"layer": counts.layer, "counts": counts, "prune_scores": scores, "keep_idx": keep_idx,
                  "keep_scores": scores.gather(1, keep_idx)}
        records.append(record)

    if counts.image_merge:
        ones = torch.ones(image.shape[:2], dtype=torch.float32, device=image.device)
        if record is not None:
            record["image_plan"] = reduce.bipartite_plan(image_metric, counts.image_merge)
        image, _, indices[f"{prefix}.image_slots"] = ops.merge(image, image_metric, ones, counts.image_merge)

    text = x[:, :text_len]
    if counts.text_merge:
        if record is not None:
            record["text_plan"] = reduce.bipartite_plan(metric[:, :text_len], counts.text_merge)
        text, text_mask, indices[f"{prefix}.text_slots"] = ops.merge(
            text, metric[:, :text_len], text_mask, counts.text_merge
        )

    image_mask = torch.ones(image.shape[:2], dtype=mask.dtype, device=mask.device)
    return torch.cat([text, image], dim=1), torch.cat([text_mask, image_mask], dim=1)


# ---------------------------------------------------------------------------- models
class _PumerMixin:
    """PuMer settings access shared by the model classes."""

    config: ViltConfig

    @property
    def pumer_config(self) -> PumerConfig:
        return get_pumer_config(self.config) or PumerConfig()

    def set_pumer_config(self, pumer: PumerConfig) -> None:
        """Replace the PuMer settings (PuMer has no parameters: the weights stay)."""
        set_pumer_config(self.config, pumer)

    def token_schedule(self, text_tokens: int, image_size: tuple[int, int]) -> TokenSchedule:
        """The token counts for a padded text length and an (H, W) image without padding."""
        return token_schedule(
            self.pumer_config,
            num_layers=self.config.num_hidden_layers,
            text_tokens=text_tokens,
            image_tokens=image_tokens_for(image_size, self.config.patch_size),
        )


def check_model_config(config: ViltConfig) -> None:
    """Raise :class:`ConfigError` for ViLT settings the reference does not reproduce."""
    if isinstance(config.image_size, (list, tuple)) or isinstance(config.patch_size, (list, tuple)):
        raise ConfigError("image_size and patch_size must be single integers (square position grid)")
    if config.image_size % config.patch_size:
        raise ConfigError(f"image_size {config.image_size} is not a multiple of patch_size {config.patch_size}")
    if config.max_image_length not in (-1, None) and config.max_image_length > 0:
        raise ConfigError(
            f"max_image_length={config.max_image_length} makes ViLT sample random patches, which cannot be "
            "exported; set it to -1 in config.json"
        )
    pumer = get_pumer_config(config)
    if pumer is not None:
        pumer.check_depth(config.num_hidden_layers)


class PumerViltModel(_PumerMixin, ViltPreTrainedModel):
    """ViLT encoder with PuMer token reduction (parameters named as in transformers' ``ViltModel``)."""

    def __init__(self, config: ViltConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        check_model_config(config)
        self.embeddings = PumerViltEmbeddings(config)
        text_eps = getattr(config, TEXT_LAYER_NORM_EPS_KEY, None)
        if text_eps is not None:
            self.embeddings.text_embeddings.LayerNorm.eps = float(text_eps)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList([ViltLayer(config) for _ in range(config.num_hidden_layers)])
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pooler = ViltPooler(config) if add_pooling_layer else None
        #: ``official`` masking only: run the attention as ``scaled_dot_product_attention`` with P7 as an additive
        #: mask (:func:`attention_bias`) instead of the exact matmul + P7 softmax. Not a checkpoint setting: an
        #: export option (``pumer-export onnx --fused-official-attention``); the prune op stays exact P7.
        self.fused_official_attention = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.text_embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.text_embeddings.word_embeddings = value

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        image_token_type_idx: int = 1,
        output_hidden_states: bool = False,
        output_reduction_records: bool = False,
        trim_image_padding: bool = True,
        patch_index: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> PumerViltModelOutput:
        """Run the encoder.

        Args:
            input_ids, attention_mask, token_type_ids, pixel_values, pixel_mask: as in ``ViltModel``.
                Without ``pixel_mask``, official-masking models use the official rule (a pixel is
                valid iff its channel sum is non-zero), others treat every pixel as valid.
            output_hidden_states: also return the output and mask of every layer.
            output_reduction_records: also return per-reduce-layer records (scores, plans, counts).
            trim_image_padding: cut the image sequence to the batch's largest valid extent (ViLT's
                behaviour); ``False`` keeps the full patch grid (fixed shapes for export).
            patch_index: optional [B, P, 2] (row, col) of each image token in the order to use
                instead of raster order (e.g. the order an official run recorded).
        """
        if pixel_values is None:
            raise ValueError("pixel_values is required")
        pumer = self.pumer_config
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if pixel_mask is None:
            if pumer.attention_masking == "official":
                pixel_mask = pixel_mask_from_values(pixel_values)
            else:
                pixel_mask = torch.ones(pixel_values.shape[0], *pixel_values.shape[2:], dtype=torch.long,
                                        device=pixel_values.device)
        x, mask = self.embeddings(
            input_ids, attention_mask, token_type_ids, pixel_values, pixel_mask,
            image_token_type_idx=image_token_type_idx, trim_padding=trim_image_padding, patch_index=patch_index,
        )
        text_len = input_ids.shape[1]
        schedule = token_schedule(
            pumer, num_layers=self.config.num_hidden_layers, text_tokens=text_len,
            image_tokens=x.shape[1] - text_len,
        )
        indices: dict[str, torch.Tensor] = OrderedDict()
        records: list[dict[str, Any]] | None = [] if output_reduction_records else None
        hidden_states, hidden_masks = [], []
        bias = None  # the fused attention's mask, rebuilt only when a reducer changes the tokens
        fused = pumer.attention_masking == "standard" or self.fused_official_attention
        for index, layer in enumerate(self.encoder.layer):
            if fused and bias is None:
                bias = attention_bias(mask, x.dtype, official=pumer.attention_masking == "official")
            attended, queries, keys = _attention(layer, layer.layernorm_before(x), mask, pumer.attention_masking, bias,
                                                 self.fused_official_attention)
            x = attended + x
            counts = schedule.at(index)
            if counts is not None and counts.active:
                x, mask = _reduce(x, mask, queries, keys, counts, pumer, indices, records)
                bias = None
            x = layer.output(layer.intermediate(layer.layernorm_after(x)), x)
            if output_hidden_states:
                hidden_states.append(x)
                hidden_masks.append(mask)
        x = self.layernorm(x)
        return PumerViltModelOutput(
            last_hidden_state=x,
            pooler_output=self.pooler(x) if self.pooler is not None else None,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            hidden_masks=tuple(hidden_masks) if output_hidden_states else None,
            reduction_indices=indices,
            reduction_records=records,
        )


class PumerViltForQuestionAnswering(_PumerMixin, ViltPreTrainedModel):
    """ViLT VQA model with PuMer (parameters named as in transformers' ``ViltForQuestionAnswering``)."""

    def __init__(self, config: ViltConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vilt = PumerViltModel(config)
        self.classifier = nn.Sequential(
            nn.Linear(config.hidden_size, config.hidden_size * 2),
            nn.LayerNorm(config.hidden_size * 2),
            nn.GELU(),
            nn.Linear(config.hidden_size * 2, config.num_labels),
        )
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_reduction_records: bool = False,
        trim_image_padding: bool = True,
        patch_index: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> PumerViltForQuestionAnsweringOutput:
        """VQA logits; arguments as :meth:`PumerViltModel.forward`, ``labels`` as in transformers."""
        out = self.vilt(
            input_ids, attention_mask, token_type_ids, pixel_values, pixel_mask,
            output_hidden_states=output_hidden_states, output_reduction_records=output_reduction_records,
            trim_image_padding=trim_image_padding, patch_index=patch_index,
        )
        logits = self.classifier(out.pooler_output)
        loss = None
        if labels is not None:
            loss = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype)) * labels.shape[1]
        return PumerViltForQuestionAnsweringOutput(
            loss=loss,
            logits=logits,
            pooler_output=out.pooler_output,
            hidden_states=out.hidden_states,
            hidden_masks=out.hidden_masks,
            reduction_indices=out.reduction_indices,
            reduction_records=out.reduction_records,
        )


@dataclasses.dataclass
class PumerViltHeadOutput(ModelOutput):
    """Output of the retrieval and image-pair heads: ``logits`` and, per encoder pass, the
    reduction indices (one dict per image for the image-pair head)."""

    logits: torch.Tensor | None = None
    reduction_indices: list[dict[str, torch.Tensor]] | None = None
    reduction_records: list[list[dict[str, Any]] | None] | None = None


class PumerViltForImageAndTextRetrieval(_PumerMixin, ViltPreTrainedModel):
    """Image-text retrieval score with PuMer (parameters as transformers' ``ViltForImageAndTextRetrieval``)."""

    def __init__(self, config: ViltConfig):
        super().__init__(config)
        self.vilt = PumerViltModel(config)
        self.rank_output = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, pixel_values=None, pixel_mask=None,
                output_reduction_records: bool = False, trim_image_padding: bool = True, **kwargs: Any):
        out = self.vilt(input_ids, attention_mask, token_type_ids, pixel_values, pixel_mask,
                        output_reduction_records=output_reduction_records, trim_image_padding=trim_image_padding)
        return PumerViltHeadOutput(logits=self.rank_output(out.pooler_output),
                                   reduction_indices=[out.reduction_indices],
                                   reduction_records=[out.reduction_records])


class PumerViltForImagesAndTextClassification(_PumerMixin, ViltPreTrainedModel):
    """NLVR2-style image-pair classification with PuMer (parameters as transformers'
    ``ViltForImagesAndTextClassification``): each image runs through the encoder with its own
    modality embedding (1, 2, ...) and its own reduction."""

    def __init__(self, config: ViltConfig):
        super().__init__(config)
        if config.num_images < 1:
            raise ConfigError("num_images must be set (e.g. 2 for NLVR2) for the image-pair head")
        self.vilt = PumerViltModel(config)
        width = config.hidden_size * config.num_images
        self.classifier = nn.Sequential(
            nn.Linear(width, width), nn.LayerNorm(width), nn.GELU(), nn.Linear(width, config.num_labels)
        )
        self.post_init()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, pixel_values=None, pixel_mask=None,
                output_reduction_records: bool = False, trim_image_padding: bool = True, **kwargs: Any):
        if pixel_values is None or pixel_values.ndim != 5 or pixel_values.shape[1] != self.config.num_images:
            raise ValueError(f"pixel_values must be [batch, {self.config.num_images}, channels, height, width]")
        pooled, indices, records = [], [], []
        for i in range(self.config.num_images):
            out = self.vilt(
                input_ids, attention_mask, token_type_ids, pixel_values[:, i],
                pixel_mask[:, i] if pixel_mask is not None else None, image_token_type_idx=i + 1,
                output_reduction_records=output_reduction_records, trim_image_padding=trim_image_padding,
            )
            pooled.append(out.pooler_output)
            indices.append(out.reduction_indices)
            records.append(out.reduction_records)
        return PumerViltHeadOutput(logits=self.classifier(torch.cat(pooled, dim=-1)),
                                   reduction_indices=indices, reduction_records=records)
