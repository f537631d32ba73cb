"""The converted official checkpoint reproduces the outputs recorded from the official PuMer code."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from pumer_export.checkpoints import load_pumer_model
from pumer_export.config import PumerConfig

LOGIT_ATOL = 1e-4


@pytest.fixture(scope="module")
def reduced_reference(official_dir):
    return load_file(str(official_dir / "outputs_A_reduce_mh.safetensors"))


@pytest.fixture(scope="module")
def model(converted_official):
    return load_pumer_model(converted_official)


def run(model, inputs, **kwargs):
    with torch.no_grad():
        return model(**inputs, **kwargs)


def test_converted_settings(model):
    assert model.pumer_config == PumerConfig((1, 3, 4), 0.1, 0.3, 0.2, score="mean", attention_masking="official")
    assert model.config.layer_norm_eps == 1e-6
    assert model.vilt.embeddings.text_embeddings.LayerNorm.eps == 1e-12


def test_reduction_matches_the_official_run(model, official_inputs, reduced_reference):
    ref = reduced_reference
    out = run(model, official_inputs, output_reduction_records=True, output_hidden_states=True,
              patch_index=ref["visual.patch_index"])
    torch.testing.assert_close(out.logits, ref["logits"], atol=LOGIT_ATOL, rtol=0)
    torch.testing.assert_close(out.pooler_output, ref["cls_feats"], atol=LOGIT_ATOL, rtol=0)
    for i, (hidden, mask) in enumerate(zip(out.hidden_states, out.hidden_masks)):
        torch.testing.assert_close(hidden, ref[f"layer_{i}.hidden"], atol=1e-4, rtol=0)
        torch.testing.assert_close(mask, ref[f"layer_{i}.mask"], atol=1e-6, rtol=0)
    assert [r["layer"] for r in out.reduction_records] == [1, 3, 4]
    for record in out.reduction_records:
        key = f"reduce_{record['layer']}"
        torch.testing.assert_close(record["prune_scores"], ref[f"{key}.prune_scores"], atol=1e-5, rtol=0)
        torch.testing.assert_close(record["keep_scores"], ref[f"{key}.keep_scores"], atol=1e-5, rtol=0)
        assert torch.equal(record["keep_idx"], ref[f"{key}.keep_idx"])
        for plan, name in ((record["image_plan"], "img_merge"), (record["text_plan"], "txt_merge")):
            for field in ("src_idx", "dst_idx", "unm_idx"):
                assert torch.equal(getattr(plan, field), ref[f"{key}.{name}.{field}"]), (key, name, field)
    # the ops' indices agree with the records
    assert torch.equal(out.reduction_indices["layer1.keep_idx"], ref["reduce_1.keep_idx"])


def test_fractional_text_masks_appear_as_in_the_official_run(reduced_reference):
    # Sample 3 has 5 real tokens of 32: merging real tokens with pads gives fractional mask values.
    mask = reduced_reference["layer_1.mask"][3, :26]
    assert ((mask > 0) & (mask < 1)).any()


def test_raster_patch_order_gives_the_same_logits(model, official_inputs, reduced_reference):
    # The official code shuffles patches at random; pruning re-sorts by score, so the order only
    # changes float rounding.
    out = run(model, official_inputs)
    torch.testing.assert_close(out.logits, reduced_reference["logits"], atol=LOGIT_ATOL, rtol=0)


def test_without_reduction_matches_the_official_run(converted_official, official_inputs, official_dir):
    ref = load_file(str(official_dir / "outputs_A_noreduce.safetensors"))
    model = load_pumer_model(converted_official)
    model.set_pumer_config(model.pumer_config.without_reduction())
    out = run(model, official_inputs, output_hidden_states=True, patch_index=ref["visual.patch_index"])
    torch.testing.assert_close(out.logits, ref["logits"], atol=LOGIT_ATOL, rtol=0)
    torch.testing.assert_close(out.hidden_states[-1], ref["layer_5.hidden"], atol=1e-4, rtol=0)
    assert out.reduction_indices == {}


def test_official_pixel_mask_rule_is_used_without_a_pixel_mask(model, official_inputs, reduced_reference):
    inputs = {k: v for k, v in official_inputs.items() if k != "pixel_mask"}
    out = run(model, inputs)
    torch.testing.assert_close(out.logits, reduced_reference["logits"], atol=LOGIT_ATOL, rtol=0)


def test_first_head_scores_drive_pruning(converted_official, official_inputs):
    # The model must pass head 0 to the prune op when the checkpoint says "first_head".
    model = load_pumer_model(converted_official)
    mean = run(model, official_inputs, output_reduction_records=True).reduction_records[0]
    model.set_pumer_config(model.pumer_config.replace(score="first_head"))
    first = run(model, official_inputs, output_reduction_records=True).reduction_records[0]
    assert not torch.allclose(first["prune_scores"], mean["prune_scores"])
    expected = torch.sort(first["prune_scores"], dim=1, descending=True, stable=True).indices[:, :46]
    assert torch.equal(first["keep_idx"], expected)
