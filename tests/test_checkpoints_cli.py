"""convert / apply / info: checkpoints in, checkpoints out, one-line errors for bad input."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import ViltForQuestionAnswering

from pumer_export.checkpoints import load_pumer_model
from pumer_export.config import PumerConfig
from pumer_export.models.vilt.presets import random_inputs, tiny_vilt_config


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory):
    """A plain transformers ViltForQuestionAnswering checkpoint (no PuMer settings)."""
    config = tiny_vilt_config(pumer=None)
    del config.pumer
    torch.manual_seed(0)
    model = ViltForQuestionAnswering(config).eval()
    path = tmp_path_factory.mktemp("hf") / "vilt-vqa"
    model.save_pretrained(path)
    return path


def assert_one_line_error(code, err, *fragments):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# ----------------------------------------------------------------------- convert
def test_convert_cli_writes_a_self_describing_checkpoint(cli, official_dir, tmp_path):
    dst = tmp_path / "out"
    code, _, err = cli("convert", official_dir / "model", dst)
    assert code == 0, err
    config = json.loads((dst / "config.json").read_text())
    assert config["pumer"]["reduce_layers"] == [1, 3, 4]
    assert config["pumer"]["attention_masking"] == "official"
    assert (dst / "model.safetensors").is_file()
    assert not list(tmp_path.glob(".out.*"))  # no temporary leftovers
    # the result is also a valid transformers ViLT checkpoint
    ViltForQuestionAnswering.from_pretrained(dst)


def test_convert_reads_pytorch_bin(official_dir, tmp_path, official_inputs):
    from pumer_export.checkpoints import convert_official

    src = tmp_path / "bin"
    src.mkdir()
    shutil.copy(official_dir / "model" / "config.json", src)
    torch.save(load_file(str(official_dir / "model" / "model.safetensors")), src / "pytorch_model.bin")
    model = convert_official(src, tmp_path / "out")
    ref = load_file(str(official_dir / "outputs_A_reduce_mh.safetensors"))
    with torch.no_grad():
        logits = model(**official_inputs).logits
    torch.testing.assert_close(logits, ref["logits"], atol=1e-4, rtol=0)


def test_convert_honours_sim_method(official_dir, tmp_path):
    from pumer_export.checkpoints import convert_official

    src = shutil.copytree(official_dir / "model", tmp_path / "fh")
    config = json.loads((src / "config.json").read_text())
    config["sim_method"] = "fh"
    (src / "config.json").write_text(json.dumps(config))
    assert convert_official(src, tmp_path / "out").pumer_config.score == "first_head"


def broken_official(official_dir, tmp_path, how):
    src = shutil.copytree(official_dir / "model", tmp_path / f"src-{how}")
    weights = load_file(str(src / "model.safetensors"))
    if how == "missing_weight":
        weights.pop("vilt.transformer.blocks.2.mlp.fc1.weight")
        save_file(weights, str(src / "model.safetensors"))
    elif how == "unexpected_weight":
        weights["vilt.transformer.blocks.0.extra.weight"] = torch.zeros(2)
        save_file(weights, str(src / "model.safetensors"))
    elif how == "corrupt":
        (src / "model.safetensors").write_bytes(b"\x00" * 100)
    elif how == "no_weights":
        (src / "model.safetensors").unlink()
    elif how == "bad_layers":
        config = json.loads((src / "config.json").read_text())
        config["reduce_layers"] = [1, 9]
        (src / "config.json").write_text(json.dumps(config))
    elif how == "bad_json":
        (src / "config.json").write_text("{not json")
    elif how == "no_config":
        (src / "config.json").unlink()
    return src


@pytest.mark.parametrize(
    "how, fragments",
    [
        ("missing_weight", ["weight(s) missing", "vilt.encoder.layer.2.intermediate.dense.weight"]),
        ("unexpected_weight", ["unexpected weight(s)", "vilt.transformer.blocks.0.extra.weight"]),
        ("corrupt", ["cannot read weights"]),
        ("no_weights", ["has no weights"]),
        ("bad_layers", ["reduce_layers [9] are outside the model's 6 layers"]),
        ("bad_json", ["not valid JSON"]),
        ("no_config", ["has no config.json"]),
    ],
)
def test_convert_refuses_bad_checkpoints(cli, official_dir, tmp_path, how, fragments):
    src = broken_official(official_dir, tmp_path, how)
    dst = tmp_path / "out"
    code, _, err = cli("convert", src, dst)
    assert_one_line_error(code, err, *fragments)
    assert not dst.exists()
    assert [p.name for p in tmp_path.iterdir()] == [src.name]  # nothing half-written


def test_convert_refuses_missing_path_and_existing_destination(cli, official_dir, tmp_path):
    code, _, err = cli("convert", tmp_path / "nope", tmp_path / "out")
    assert_one_line_error(code, err, "does not exist")
    dst = tmp_path / "exists"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    code, _, err = cli("convert", official_dir / "model", dst)
    assert_one_line_error(code, err, "already exists", "--force")
    assert (dst / "keep.txt").read_text() == "mine"
    code, _, err = cli("convert", official_dir / "model", dst, "--force")
    assert code == 0 and not (dst / "keep.txt").exists() and (dst / "config.json").is_file()


def test_convert_output_permissions_and_file_destination(cli, official_dir, tmp_path):
    import os
    import stat

    (tmp_path / "file").write_text("mine")
    code, _, err = cli("convert", official_dir / "model", tmp_path / "file", "--force")
    assert_one_line_error(code, err, "is a file, not a directory")
    assert (tmp_path / "file").read_text() == "mine"
    code, _, err = cli("convert", official_dir / "model", tmp_path / "out")
    assert code == 0, err
    umask = os.umask(0)
    os.umask(umask)
    # a plain mkdir's permissions, not mkdtemp's 0700
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((tmp_path / "out" / "config.json").stat().st_mode) == 0o666 & ~umask


def test_hub_ids_are_tried_and_fail_in_one_line(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = cli("convert", "csarron/vilt-vqa2-p0.1-r0.3-t0.2-258", tmp_path / "out")
    assert_one_line_error(code, err, "could not be downloaded from the hub", "pass the local directory")


# -------------------------------------------------------------------------- apply
def test_apply_adds_pumer_to_a_transformers_checkpoint(cli, hf_checkpoint, tmp_path):
    dst = tmp_path / "pumer"
    code, _, err = cli("apply", hf_checkpoint, dst, "--layers", "1,3", "--prune", "0.2", "--merge", "0.3",
                       "--text-merge", "0.25")
    assert code == 0, err
    model = load_pumer_model(dst)
    assert model.pumer_config == PumerConfig((1, 3), 0.2, 0.3, 0.25)
    hf = ViltForQuestionAnswering.from_pretrained(hf_checkpoint).eval()
    model.set_pumer_config(PumerConfig())
    inputs = random_inputs(model.config, 2, text_length=12)
    with torch.no_grad():  # same weights: without reduction it is the transformers model
        torch.testing.assert_close(model(**inputs).logits, hf(**inputs).logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--layers", "1,9"], ["reduce_layers [9] are outside the model's 4 layers"]),
        (["--layers", "1,1"], ["more than once"]),
        (["--layers", "x"], ["comma-separated integers"]),
        (["--layers", "1", "--prune", "1.5"], ["expected a number in [0, 1)"]),
    ],
)
def test_apply_refuses_invalid_settings(cli, hf_checkpoint, tmp_path, args, fragments):
    code, _, err = cli("apply", hf_checkpoint, tmp_path / "out", *args)
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "out").exists()


def test_apply_refuses_non_vilt_and_official_configs(cli, official_dir, hf_checkpoint, tmp_path):
    code, _, err = cli("apply", official_dir / "model", tmp_path / "out", "--layers", "1")
    assert_one_line_error(code, err, "official PuMer checkpoint", "`pumer-export convert`")
    other = shutil.copytree(hf_checkpoint, tmp_path / "bert")
    config = json.loads((other / "config.json").read_text())
    config["model_type"] = "bert"
    (other / "config.json").write_text(json.dumps(config))
    code, _, err = cli("apply", other, tmp_path / "out", "--layers", "1")
    assert_one_line_error(code, err, "model_type 'bert' is not supported")


def test_apply_refuses_a_checkpoint_without_the_vqa_head(cli, hf_checkpoint, tmp_path):
    src = shutil.copytree(hf_checkpoint, tmp_path / "nohead")
    weights = {k: v for k, v in load_file(str(src / "model.safetensors")).items() if not k.startswith("classifier")}
    save_file(weights, str(src / "model.safetensors"))
    code, _, err = cli("apply", src, tmp_path / "out", "--layers", "1")
    assert_one_line_error(code, err, "weight(s) missing", "classifier.")


# --------------------------------------------------------------------------- info
def test_info_reports_the_vilt_b32_schedule(cli, tmp_path):
    # A ViLT-B/32-shaped config (12 layers, patch 32, 384 grid), narrow to keep the test small.
    config = tiny_vilt_config(num_layers=12, image_size=384, patch_size=32,
                              pumer=PumerConfig((2, 5, 8), 0.1, 0.3, 0.2))
    config.save_pretrained(tmp_path)
    code, out, err = cli("info", tmp_path, "--image-size", "384x384", "--text-length", "32")
    assert code == 0, err
    assert "image tokens: 145->131->87, 87->78->52, 52->47->31" in out
    assert "text tokens: 32->26->21->17" in out
    code, out, _ = cli("info", tmp_path, "--image-size", "384x384", "--text-length", "32", "--json")
    data = json.loads(out)
    assert [c["image_out"] for c in data["schedule"]["layers"]] == [87, 52, 31]
    assert data["flops"]["flop_ideal_speedup"] > 1.5


def test_info_refuses_bad_input(cli, tmp_path, hf_checkpoint, tiny_checkpoint):
    (tmp_path / "config.json").write_text("{}")
    code, _, err = cli("info", tmp_path / "config.json")
    assert_one_line_error(code, err, "is a file; pass the checkpoint directory")
    code, _, err = cli("info", hf_checkpoint)
    assert_one_line_error(code, err, "not a pumer-export checkpoint")
    code, _, err = cli("info", tiny_checkpoint, "--image-size", "100x96")
    assert_one_line_error(code, err, "not a multiple of the patch size 16")
    code, _, err = cli("info", tiny_checkpoint, "--text-length", "41")
    assert_one_line_error(code, err, "outside the model's text position table")
    code, _, err = cli("info", tiny_checkpoint, "--image-size", "big")
    assert_one_line_error(code, err, "expected HxW")


def test_help_metavars_are_consistent(cli):
    """The same option reads the same in every command: HxW, T, RATIO; no argparse-made LAYERS."""
    for command in ("info", "onnx", "bench", "validate"):
        code, out, _ = cli(command, "--help")
        assert code == 0
        assert "--image-size HxW" in out and "--text-length T" in out
        assert "IMAGE_SIZE" not in out and "TEXT_LENGTH" not in out
    code, out, _ = cli("apply", "--help")
    assert "--layers L1,L2,..." in out and "--prune RATIO" in out and "PRUNE" not in out
    code, out, _ = cli("validate", "--help")
    assert max(len(line) for line in out.splitlines()) < 120  # the description is wrapped
    assert "as `pumer-export onnx`" not in out  # validate's fp16 defaults differ from onnx's
