"""Without reduction the reference is transformers' ViLT; padded images follow ViLT's embedding rules."""

from __future__ import annotations

import pytest
import torch
from transformers import ViltForQuestionAnswering

from pumer_export.config import PumerConfig
from pumer_export.models.vilt.presets import random_inputs, tiny_vilt_model


def hf_twin(model):
    hf = ViltForQuestionAnswering(model.config).eval()
    hf.load_state_dict(model.state_dict())
    return hf


def padded_batch(config, batch=3, seed=0):
    inputs = random_inputs(config, batch, text_length=16, image_size=(96, 128), seed=seed)
    # sample 0 keeps the full image; the others are padded at the bottom and/or right (zeros)
    for b, (h, w) in enumerate([(96, 128), (64, 128), (80, 96)][:batch]):
        inputs["pixel_values"][b, :, h:, :] = 0
        inputs["pixel_values"][b, :, :, w:] = 0
        inputs["pixel_mask"][b, h:, :] = 0
        inputs["pixel_mask"][b, :, w:] = 0
    return inputs


@pytest.mark.parametrize("batch", [1, 4])
def test_logits_match_transformers_without_reduction(batch):
    model = tiny_vilt_model(seed=1, pumer=PumerConfig())
    inputs = random_inputs(model.config, batch, text_length=20, seed=batch)
    with torch.no_grad():
        ours, theirs = model(**inputs).logits, hf_twin(model)(**inputs).logits
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


def test_padded_images_match_transformers_without_reduction():
    model = tiny_vilt_model(seed=2, pumer=PumerConfig(), image_size=64)
    inputs = padded_batch(model.config)
    with torch.no_grad():
        ours, theirs = model(**inputs).logits, hf_twin(model)(**inputs).logits
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


def test_visual_embedding_is_vilts_in_raster_order():
    # transformers draws patches at random; compare token by token through its patch index.
    model = tiny_vilt_model(seed=3, pumer=PumerConfig(), image_size=64)
    inputs = padded_batch(model.config, batch=2)
    emb = model.vilt.embeddings
    with torch.no_grad():
        ours, our_mask, our_index = emb.visual_embed(inputs["pixel_values"], inputs["pixel_mask"])
        theirs, their_mask, (their_index, _) = super(type(emb), emb).visual_embed(
            inputs["pixel_values"], inputs["pixel_mask"], max_image_length=-1
        )
    assert ours.shape == theirs.shape  # trimmed to the batch's largest valid extent, like ViLT
    torch.testing.assert_close(ours[:, 0], theirs[:, 0])  # image CLS
    for b in range(2):
        valid = their_mask[b, 1:].bool()
        theirs_by_patch = {tuple(p): t for p, t, v in zip(their_index[b].tolist(), theirs[b, 1:], valid) if v}
        ours_by_patch = {tuple(p): t for p, t, v in zip(our_index[b].tolist(), ours[b, 1:], our_mask[b, 1:]) if v}
        assert theirs_by_patch.keys() == ours_by_patch.keys()
        for patch, token in ours_by_patch.items():
            torch.testing.assert_close(token, theirs_by_patch[patch], atol=1e-6, rtol=1e-5)
    # valid patches come first, in raster order
    valid_positions = our_index[1][our_mask[1, 1:].bool()].tolist()
    assert valid_positions == sorted(valid_positions)


def test_full_grid_is_kept_when_asked():
    model = tiny_vilt_model(seed=3, image_size=64)
    inputs = padded_batch(model.config, batch=3)
    inputs["pixel_mask"][0, 64:, :] = 0  # now every image is padded
    inputs["pixel_values"][0, :, 64:, :] = 0
    with torch.no_grad():
        trimmed = model(**inputs, output_hidden_states=True)
        full = model(**inputs, output_hidden_states=True, trim_image_padding=False)
    grid = (96 // 16) * (128 // 16)
    assert full.hidden_states[0].shape[1] == 16 + 1 + grid
    assert trimmed.hidden_states[0].shape[1] == 16 + 1 + 4 * 8  # largest valid extent 64x128 -> 4x8 patches


def test_retrieval_and_image_pair_heads_match_transformers_without_reduction():
    from transformers import ViltForImageAndTextRetrieval, ViltForImagesAndTextClassification

    from pumer_export import PumerViltForImageAndTextRetrieval, PumerViltForImagesAndTextClassification
    from pumer_export.models.vilt.presets import tiny_vilt_config

    config = tiny_vilt_config(pumer=PumerConfig(), num_labels=2)
    config.num_images = 2
    config.modality_type_vocab_size = 3
    inputs = random_inputs(config, 2, text_length=10, seed=7)
    pair = {**inputs, "pixel_values": torch.stack([inputs["pixel_values"], inputs["pixel_values"].flip(-1)], 1),
            "pixel_mask": torch.stack([inputs["pixel_mask"]] * 2, 1)}
    for ours_cls, theirs_cls, batch in (
        (PumerViltForImageAndTextRetrieval, ViltForImageAndTextRetrieval, inputs),
        (PumerViltForImagesAndTextClassification, ViltForImagesAndTextClassification, pair),
    ):
        torch.manual_seed(0)
        ours = ours_cls(config).eval()
        theirs = theirs_cls(config).eval()
        theirs.load_state_dict(ours.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(ours(**batch).logits, theirs(**batch).logits, atol=1e-4, rtol=0)
    # with PuMer each image of the pair is reduced on its own
    ours.set_pumer_config(PumerConfig((1,), 0.2, 0.3, 0.2))
    with torch.no_grad():
        out = ours(**pair)
    assert len(out.reduction_indices) == 2 and "layer1.keep_idx" in out.reduction_indices[1]
