"""ONNX export of a LLaVA with a decoder method (Victor, FastV) as three graphs: vision (+ projector), prefill,
decode, with the KV cache as explicit inputs and outputs per layer and two symbolic past lengths. D below is how many
prompt positions leave before layer k (Victor: the N image tokens; FastV: N - R).

* ``vision.onnx``: ``pixel_values [B, 3, H, W]`` -> ``image_features [B, N, d]``;
* ``prefill.onnx``: ``input_ids [B, L]``, ``attention_mask [B, L]``, ``image_features [B, N, d]`` -> ``logits [B,
  1, V]`` (the last position), ``attention_mask_short [B, L - D]`` (the mask of the positions that stayed, which
  the decode loop extends) and ``present.{i}.key`` / ``.value``: ``[B, H_kv, L, d_h]`` for layers ``i < k``,
  ``[B, H_kv, L - D, d_h]`` for ``i >= k``; Victor's registers are a constant of the graph; the drop is a gather
  on an index computed in the graph (from the image's start; FastV: a TopK-style sort of attention), with a fixed
  count, so no shape depends on the data;
* ``decode.onnx``: ``input_ids [B, 1]``, ``position_ids [B, 1]``, ``attention_mask_full [B, P + 1]``,
  ``attention_mask_short [B, P - D + 1]`` (the new token included, as Hugging Face passes masks) and
  ``past.{i}.key`` / ``.value`` (``P`` for ``i < k``, ``P - D`` for ``i >= k``) -> ``logits [B, 1, V]`` and the
  presents one token longer. ONNX cannot state ``past_short = past_full - D``: the two are separate symbols
  (``past_full``, ``past_short``) and ``generation.json`` records D.

Every graph runs the reference's own functions (:mod:`pumer_export.models.llava.decoding` with the method's rule)
and uses standard ONNX operators only. Exported with batch 2 examples (a batch-1 example fixes the batch dimension).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import PumerExportError
from ..fsutil import atomic_output_dir
from ..models.llava import decoding, image_tokens

GRAPHS = ("vision", "prefill", "decode")
MANIFEST = "generation.json"
DEFAULT_OPSET = 18


def cache_names(prefix: str, layers: int) -> list[str]:
    return [f"{prefix}.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]


class _Vision(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return decoding.image_features(self.model, pixel_values)


class _Prefill(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, image_features):
        model = self.model
        embeds, select = model.prepare(input_ids, image_features)
        logits, state = decoding.prefill(model, model.drop_layer, attention_mask, embeds, select, logits_to_keep=1)
        return (logits, state.mask_short, *[t for cache in state.caches for t in cache])


class _Decode(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, position_ids, attention_mask_full, attention_mask_short, past):
        caches = [(past[2 * i], past[2 * i + 1]) for i in range(len(past) // 2)]
        state = decoding.State(caches, attention_mask_full[:, :-1], attention_mask_short[:, :-1], position_ids[:, 0])
        logits, state = decoding.decode(self.model, self.model.drop_layer, input_ids, state)
        return (logits, *[t for cache in state.caches for t in cache])


def _export(module, args, path: Path, input_names, output_names, dynamic_shapes, opset: int) -> None:
    from .export import _quiet_exporter

    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(module, args, dynamo=True, opset_version=opset, input_names=input_names,
                                    output_names=output_names, dynamic_shapes=dynamic_shapes, optimize=True,
                                    verbose=False)
        program.save(str(path))


def example_prompt(model, batch: int = 2, text_length: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded example inputs of the prompt layout (rows of different prefix lengths, left padded)."""
    config = model.config
    n, m = image_tokens(config), model.registers
    generator = torch.Generator().manual_seed(seed)
    vocab = config.text_config.vocab_size
    special = {config.image_token_id, getattr(config, "register_token_id", None)}
    words = torch.tensor([t for t in range(vocab) if t not in special])
    rows = []
    for b in range(batch):
        prefix = words[torch.randint(len(words), (1 + b % 2,), generator=generator)]
        text = words[torch.randint(len(words), (text_length,), generator=generator)]
        rows.append(torch.cat([prefix, torch.full((n,), config.image_token_id),
                               torch.full((m,), getattr(config, "register_token_id", None) or 0), text]))
    length = max(len(r) for r in rows)
    ids = torch.zeros(batch, length, dtype=torch.long)
    mask = torch.zeros(batch, length, dtype=torch.long)
    for b, row in enumerate(rows):
        ids[b, length - len(row):], mask[b, length - len(row):] = row, 1
    vision = config.vision_config
    pixels = torch.randn(batch, 3, vision.image_size, vision.image_size, generator=generator)
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels}


def export_generation(model, outdir: str | Path, *, opset: int = DEFAULT_OPSET, force: bool = False,
                      processor=None) -> Path:
    """Write the three graphs and ``generation.json`` into ``outdir`` (atomically), with ``processor``'s files when
    given (so the export folder answers questions on its own)."""
    from ..checkpoints import model_fingerprint
    from ..models.llava.reduced import ReducedLlavaMixin

    if not isinstance(model, ReducedLlavaMixin):
        raise PumerExportError("export_generation takes a LLaVA model in a decoder-method class (stock: "
                               "pumer_export.models.llava.stock.stock; Victor: pumer_export.models.llava.victor."
                               "attach; FastV: pumer_export.models.llava.fastv.attach; a checkpoint folder: "
                               "pumer_export.models.llava.checkpoint.load)")
    model = model.eval()
    config = model.config
    layers = config.text_config.num_hidden_layers
    drop_layer = model.drop_layer
    n = image_tokens(config)
    example = example_prompt(model)
    batch = torch.export.Dim("batch", min=1, max=1024)
    sequence = torch.export.Dim("sequence", min=n + model.registers + 1, max=config.text_config.max_position_embeddings)
    past_full = torch.export.Dim("past_full", min=n + 1, max=config.text_config.max_position_embeddings)
    past_short = torch.export.Dim("past_short", min=1, max=config.text_config.max_position_embeddings)
    with torch.no_grad():
        features = decoding.image_features(model, example["pixel_values"])
        _, state = model.prefill(example["input_ids"], example["attention_mask"], example["pixel_values"])
    past = [t for cache in state.caches for t in cache]
    b = example["input_ids"].shape[0]
    decode_args = (torch.zeros(b, 1, dtype=torch.long), state.next_position[:, None],
                   torch.cat([state.mask_full, torch.ones(b, 1, dtype=torch.long)], 1),
                   torch.cat([state.mask_short, torch.ones(b, 1, dtype=torch.long)], 1), past)
    past_dims = [{0: batch, 2: past_full if i < drop_layer else past_short}
                 for i in range(layers) for _ in ("key", "value")]
    with atomic_output_dir(outdir, force=force) as tmp:
        _export(_Vision(model), (example["pixel_values"],), tmp / "vision.onnx", ["pixel_values"],
                ["image_features"], ({0: batch},), opset)
        _export(_Prefill(model), (example["input_ids"], example["attention_mask"], features), tmp / "prefill.onnx",
                ["input_ids", "attention_mask", "image_features"],
                ["logits", "attention_mask_short", *cache_names("present", layers)],
                ({0: batch, 1: sequence}, {0: batch, 1: sequence}, {0: batch}), opset)
        _export(_Decode(model), decode_args, tmp / "decode.onnx",
                ["input_ids", "position_ids", "attention_mask_full", "attention_mask_short",
                 *cache_names("past", layers)],
                ["logits", *cache_names("present", layers)],
                ({0: batch}, {0: batch}, {0: batch, 1: past_full + 1}, {0: batch, 1: past_short + 1}, past_dims),
                opset)
        manifest: dict[str, Any] = {
            "format": 1, "method": {"name": model.METHOD, "settings": model.method_settings()}, "graphs": list(GRAPHS),
            "image_tokens": n, "dropped_tokens": model.dropped_tokens, "layers": layers, "drop_layer": drop_layer,
            "image_token_id": config.image_token_id, "register_token_id": getattr(config, "register_token_id", None),
            "eos_token_id": config.text_config.eos_token_id, "pad_token_id": config.text_config.pad_token_id,
            "max_positions": config.text_config.max_position_embeddings, "opset": opset,
            "model_sha256": model_fingerprint(model),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if processor is not None:
            from ..processing import quiet_transformers

            with quiet_transformers():
                processor.save_pretrained(tmp)
    return Path(outdir)
