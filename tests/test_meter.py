"""METER, the second model family: official checkpoints convert losslessly, the reference reproduces the official
outputs, the schedule follows METER's rules, and the model exports with the same pumer ops as ViLT."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import pumer_export
from pumer_export.config import PumerConfig
from pumer_export.schedule import layer_counts, token_schedule

OFFICIAL = Path(__file__).parent / "data" / "pumer_official_meter_small"
LOGIT_ATOL = 1e-4


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    from pumer_export.checkpoints import convert_official

    dst = tmp_path_factory.mktemp("meter") / "meter-small"
    convert_official(OFFICIAL / "model", dst)
    return dst


@pytest.fixture(scope="module")
def inputs() -> dict[str, torch.Tensor]:
    from pumer_export.models.meter.modeling import CLIP_MEAN, CLIP_STD

    raw = load_file(str(OFFICIAL / "inputs_A.safetensors"))
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    pixels = (raw["pixel_values_uint8"].float() / 255.0 - mean) / std
    return {"input_ids": raw["input_ids"], "attention_mask": raw["attention_mask"], "pixel_values": pixels}


def run(model, inputs, **kwargs):
    with torch.no_grad():
        return model(**inputs, output_hidden_states=True, **kwargs)


# ------------------------------------------------------------------ official parity
def test_converted_checkpoint_describes_itself(converted):
    config = json.loads((converted / "config.json").read_text())
    assert config["model_type"] == "meter"
    # M1: the official counter advances by 2 per block: [0, 2, 4, 6] are cross blocks 0-3
    assert config["pumer"]["reduce_layers"] == [0, 1, 2, 3]
    assert config["pumer"]["attention_masking"] == "official"
    assert config["text_config"]["num_hidden_layers"] == 2  # from text_encoder_config.json, not roberta-base
    assert config["vision_config"]["num_hidden_layers"] == 2  # the official tower's real block count (M7)


def test_reduction_matches_the_official_run(converted, inputs):
    ref = load_file(str(OFFICIAL / "outputs_A_reduce.safetensors"))
    model = pumer_export.load_pumer_model(converted)
    out = run(model, inputs, output_reduction_records=True)
    torch.testing.assert_close(out.logits, ref["logits"], atol=LOGIT_ATOL, rtol=0)
    torch.testing.assert_close(out.pooler_output, ref["cls_feats"], atol=LOGIT_ATOL, rtol=0)
    torch.testing.assert_close(out.cross_input[0], ref["cross_in.text"], atol=1e-4, rtol=0)
    torch.testing.assert_close(out.cross_input[1], ref["cross_in.image"], atol=1e-4, rtol=0)
    for i, (text, text_mask, image) in enumerate(out.cross_states):
        torch.testing.assert_close(text, ref[f"cross_{i}.text"], atol=1e-4, rtol=0)
        torch.testing.assert_close(text_mask, ref[f"cross_{i}.text_mask"], atol=1e-6, rtol=0)
        torch.testing.assert_close(image, ref[f"cross_{i}.image"], atol=1e-4, rtol=0)
    assert [r["layer"] for r in out.reduction_records] == [0, 1, 2, 3]
    for record in out.reduction_records:
        key = f"reduce_{record['layer']}"
        torch.testing.assert_close(record["prune_scores"], ref[f"{key}.prune_scores"], atol=1e-5, rtol=0)
        torch.testing.assert_close(record["keep_scores"], ref[f"{key}.keep_scores"], atol=1e-5, rtol=0)
        assert torch.equal(record["keep_idx"], ref[f"{key}.keep_idx"])
        assert torch.equal(out.reduction_indices[f"layer{record['layer']}.keep_idx"], ref[f"{key}.keep_idx"])
        for plan, name in ((record["image_plan"], "img_merge"), (record["text_plan"], "txt_merge")):
            for field in ("src_idx", "dst_idx", "unm_idx"):
                assert torch.equal(getattr(plan, field), ref[f"{key}.{name}.{field}"]), (key, name, field)
    # the README's token counts (block 0: 65->52->39 image, 32->26 text; block 3: 13->10->7, 17->14)
    assert [r["counts"].image_out for r in out.reduction_records] == [39, 23, 13, 7]
    assert [r["counts"].text_out for r in out.reduction_records] == [26, 21, 17, 14]
    # fractional text masks (a real token merged with a masked one) appear as in the official run
    assert ((ref["cross_0.text_mask"] > 0) & (ref["cross_0.text_mask"] < 1)).any()


def test_no_reduction_matches_the_official_run(converted, inputs):
    ref = load_file(str(OFFICIAL / "outputs_A_noreduce.safetensors"))
    model = pumer_export.load_pumer_model(converted)
    model.set_pumer_config(model.pumer_config.without_reduction())
    out = run(model, inputs)
    torch.testing.assert_close(out.logits, ref["logits"], atol=LOGIT_ATOL, rtol=0)
    for i, (text, _, image) in enumerate(out.cross_states):
        torch.testing.assert_close(text, ref[f"cross_{i}.text"], atol=1e-4, rtol=0)
        torch.testing.assert_close(image, ref[f"cross_{i}.image"], atol=1e-4, rtol=0)
    assert not out.reduction_indices


def test_convert_without_text_encoder_config_uses_roberta_base_and_says_why_it_fails(cli, tmp_path):
    src = shutil.copytree(OFFICIAL / "model", tmp_path / "src")
    (src / "text_encoder_config.json").unlink()
    code, _, err = cli("convert", src, tmp_path / "out")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "vocab_size 50265" in err and "text_encoder_config.json" in err
    assert not (tmp_path / "out").exists()


def test_convert_refuses_a_broken_official_meter_checkpoint(cli, tmp_path):
    src = shutil.copytree(OFFICIAL / "model", tmp_path / "src")
    weights = load_file(str(src / "model.safetensors"))
    weights.pop("meter.cross_modal_text_pooler.dense.weight")
    from safetensors.torch import save_file

    save_file(weights, str(src / "model.safetensors"))
    code, _, err = cli("convert", src, tmp_path / "out")
    assert code == 2 and "weight(s) missing" in err and "cross_modal_text_pooler" in err
    assert not (tmp_path / "out").exists()
    config = json.loads((src / "config.json").read_text())
    config["image_size"] = 96  # 6x6 patches, but the weights hold an 8x8 position table
    (src / "config.json").write_text(json.dumps(config))
    code, _, err = cli("convert", src, tmp_path / "out")
    assert code == 2 and "does not match the 65 vision position embeddings" in err


# ----------------------------------------------------------------------- schedule
def test_meter_schedule_rules_differ_from_vilt():
    pumer = PumerConfig((0,), prune_ratio=0.01, image_merge_ratio=0.3, text_merge_ratio=0.2)
    # round(0.01 * 20) == 0: ViLT's block does nothing, METER's still merges (it tests the ratio)
    assert not layer_counts(pumer, 0, 10, 20).active
    meter = layer_counts(pumer, 0, 10, 20, rules="meter")
    assert meter.active and meter.keep == 20 and meter.image_merge == 6 and meter.text_merge == 2
    # M5: without an image merge, pruning does not take effect
    counts = layer_counts(PumerConfig((0,), 0.5, 0.01, 0.2), 0, 10, 20, rules="meter")
    assert counts.active and counts.prune == 0 and counts.image_out == 20 and counts.text_merge == 2


def test_meter_b16_schedule_at_384():
    pumer = PumerConfig((0, 1, 2, 3), 0.2, 0.2, 0.2, attention_masking="official")
    schedule = token_schedule(pumer, num_layers=6, text_tokens=32, image_tokens=577, rules="meter")
    assert [(c.image_in, c.keep, c.image_out) for c in schedule.layers] == [
        (577, 462, 347), (347, 278, 209), (209, 167, 125), (125, 100, 75)]
    assert [32] + [c.text_out for c in schedule.layers] == [32, 26, 21, 17, 14]


def test_info_on_a_meter_b16_shaped_checkpoint(cli, tmp_path):
    from pumer_export.models.meter.presets import METER_PUMER, tiny_meter_model

    # METER-B/16's token layout (384x384 in 16-pixel patches, 6 cross blocks), narrow to keep the test small
    model = tiny_meter_model(image_size=384, patch_size=16, num_cross_layers=6, pumer=METER_PUMER,
                             max_text_length=50, vision_layers=1, text_layers=1)
    model.save_pretrained(tmp_path / "meter")
    code, out, err = cli("info", tmp_path / "meter", "--image-size", "384x384", "--text-length", "32", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["family"] == "meter"
    layers = data["schedule"]["layers"]
    assert [(c["image_in"], c["keep"], c["image_out"]) for c in layers] == [
        (577, 462, 347), (347, 278, 209), (209, 167, 125), (125, 100, 75)]
    assert [32] + [c["text_out"] for c in layers] == [32, 26, 21, 17, 14]
    flops = data["flops"]
    assert flops["flop_ideal_speedup"] == pytest.approx(flops["baseline_gflops"] / flops["pumer_gflops"])
    assert flops["flop_ideal_speedup"] > 1.0
    code, _, err = cli("info", tmp_path / "meter", "--image-size", "288x288")
    assert code == 2 and "METER runs at its own image size 384x384" in err


def test_meter_flops_agree_with_pytorchs_flop_counter():
    """The analytic count covers exactly what the reduction changes: against torch's FLOP counter, the remainder
    (patch embedding, poolers, classifier) is the same with and without reduction."""
    from torch.utils.flop_counter import FlopCounterMode

    from pumer_export import models
    from pumer_export.models.meter.presets import METER_PUMER, random_inputs, tiny_meter_model

    family = models.get("meter")
    model = tiny_meter_model(image_size=128, num_cross_layers=6, pumer=METER_PUMER)
    inputs = random_inputs(model.config, 1, text_length=32)
    rest = []
    for pumer in (METER_PUMER, METER_PUMER.without_reduction()):
        model.set_pumer_config(pumer)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(**inputs)
        rest.append(counter.get_total_flops() - family.encoder_flops(model.config, model.token_schedule(32)))
    assert rest[0] > 0 and rest[0] == pytest.approx(rest[1], rel=1e-6)


# ----------------------------------------------------------------- model behaviour
def test_m5_pruning_needs_an_image_merge():
    from pumer_export.models.meter.presets import tiny_meter_model

    model = tiny_meter_model(pumer=PumerConfig((0,), 0.3, 0.01, 0.2))
    from pumer_export.models.meter.presets import random_inputs

    inputs = random_inputs(model.config, 2, text_length=12)
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    _, text_mask, image = out.cross_states[0]
    assert image.shape[1] == 17 and text_mask.shape[1] == 12 - 2  # image untouched, text merged
    assert list(out.reduction_indices) == ["layer0.text_slots"]


def test_tiny_meter_export_matches_onnx_runtime(tmp_path, cli):
    from pumer_export.models.meter.presets import tiny_meter_model
    from pumer_export.onnx.export import export_onnx
    from pumer_export.onnx.functions import DOMAIN

    import onnx

    model = tiny_meter_model(seed=1)
    model.save_pretrained(tmp_path / "ckpt")
    result = export_onnx(model, tmp_path / "onnx", text_length=16,
                         validation_options={"batch_sizes": (1, 3)})
    assert result.validation.ok and len(result.validation.checks) >= 2, result.validation.failures
    proto = onnx.load(str(result.path))
    ops = [n.op_type for n in proto.graph.node if n.domain == DOMAIN]
    assert ops.count("PumerPrune") == 2 and ops.count("PumerMerge") == 4
    assert {f.name for f in proto.functions} == {"PumerPrune", "PumerMerge"}
    assert [i.name for i in proto.graph.input] == ["input_ids", "attention_mask", "pixel_values"]
    meta = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert meta["pumer.family"] == "meter" and meta["pumer.inputs"] == ["input_ids", "attention_mask", "pixel_values"]
    # the CI gate on the same export, at batch 3
    code, out, err = cli("validate", tmp_path / "ckpt", "--onnx", result.path, "--batch-size", "3",
                         "--num-samples", "6")
    assert code == 0, out + err


def test_meter_export_runs_in_onnx_runtime_with_the_official_masking(converted, inputs, tmp_path):
    import onnxruntime as ort

    from pumer_export.onnx.export import export_onnx

    model = pumer_export.load_pumer_model(converted)
    result = export_onnx(model, tmp_path / "onnx", text_length=32, validate=False)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    feed = {k: v.numpy() for k, v in inputs.items()}
    got = session.run(None, feed)
    ref = load_file(str(OFFICIAL / "outputs_A_reduce.safetensors"))
    np.testing.assert_allclose(got[0], ref["logits"].numpy(), atol=LOGIT_ATOL, rtol=0)
    names = [o.name for o in session.get_outputs()]
    assert np.array_equal(got[names.index("layer0.keep_idx")], ref["reduce_0.keep_idx"].numpy())


def test_meter_export_prepares_for_tensorrt_with_the_same_two_ops(tmp_path):
    """No METER-specific plugin: the TensorRT preparation sees the two pumer ops with their plugin attributes and
    a batch profile over METER's three inputs (the engine itself needs TensorRT and a GPU)."""
    import onnx

    from pumer_export.models.meter.presets import tiny_meter_model
    from pumer_export.onnx.export import export_onnx
    from pumer_export.tensorrt import prepare

    result = export_onnx(tiny_meter_model(seed=2), tmp_path / "onnx", text_length=12, validate=False)
    model = onnx.load(str(result.path))
    prepare.check_pumer_nodes(model)
    prepared = prepare.prepare_onnx_for_tensorrt(result.path, "10.3")
    assert prepared.op_types == ["PumerMerge", "PumerPrune"] and prepared.pumer_node_count == 6
    assert sorted(prepared.stripped_functions) == ["PumerMerge", "PumerPrune"]
    prune = next(n for n in model.graph.node if n.op_type == "PumerPrune")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in prune.attribute}
    assert attrs["image_start"] == 0 and attrs["plugin_namespace"] == b"pumer"
    inputs = prepare.graph_inputs(model)
    shapes = prepare.profile_shapes(inputs, prepare.parse_batch_profile("1:4:8"))
    assert shapes["pixel_values"] == {"min": [1, 3, 64, 64], "opt": [4, 3, 64, 64], "max": [8, 3, 64, 64]}
    assert set(shapes) == {"input_ids", "attention_mask", "pixel_values"}


def test_meter_fp16_export_with_official_masking_holds_parity(tmp_path):
    from pumer_export.models.meter.presets import METER_PUMER, tiny_meter_model
    from pumer_export.onnx.export import export_onnx

    result = export_onnx(tiny_meter_model(seed=1, pumer=METER_PUMER), tmp_path / "onnx16", text_length=16,
                         dtype="fp16", validation_options={"batch_sizes": (1, 3)})
    assert result.validation.ok and result.validation.dtype == "fp16"
    assert sum(c.name.endswith("keep_idx") for c in result.validation.checks) == 8  # 4 blocks x 2 batch sizes


@pytest.mark.parametrize("name", ["vilt", "meter", "llava"])
def test_every_family_implements_the_interface(name):
    from pumer_export import models

    family = models.get(name)
    interface = models.INTERFACE if family.TASK == "vqa" else models.GENERATION_INTERFACE
    missing = [attr for attr in interface if not hasattr(family, attr)]
    assert not missing, missing
    assert family.NAME == name and models.for_config({"model_type": family.MODEL_TYPE}) is family
    assert set(family.PRESETS) >= ({"tiny", "demo"} if family.TASK == "vqa" else {"tiny", "easy-vqa"})
