"""``pumer-export validate``: pass, tampered weights, another PuMer configuration, inputs, near-ties."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

TEXT_LENGTH = 16
IMAGE_SIZE = (96, 96)


@pytest.fixture(scope="module")
def exports(tiny_checkpoint, tmp_path_factory) -> dict[str, Path]:
    """PuMer and baseline exports of the tiny checkpoint, one from other PuMer settings, one tampered."""
    import onnx
    from onnx import numpy_helper

    from pumer_export.checkpoints import load_pumer_model
    from pumer_export.onnx.export import export_onnx

    root = tmp_path_factory.mktemp("exports")
    model = load_pumer_model(tiny_checkpoint)
    kw = dict(image_size=IMAGE_SIZE, text_length=TEXT_LENGTH, validate=False)
    paths = {
        "pumer": export_onnx(model, root / "pumer", **kw).path,
        "baseline": export_onnx(model, root / "baseline", reduction=False, **kw).path,
    }
    model.set_pumer_config(model.pumer_config.replace(prune_ratio=0.25, image_merge_ratio=0.2))
    paths["other"] = export_onnx(model, root / "other", **kw).path

    proto = onnx.load(str(paths["pumer"]))
    for init in proto.graph.initializer:
        array = numpy_helper.to_array(init)
        if "classifier" in init.name and array.ndim == 2:
            array = array.copy()
            array[0, :] += 0.05  # perturb one row of a classifier weight
            init.CopyFrom(numpy_helper.from_array(array, init.name))
            break
    else:  # pragma: no cover
        raise AssertionError("no classifier weight found")
    (root / "tampered").mkdir()
    paths["tampered"] = root / "tampered" / "model.onnx"
    onnx.save(proto, str(paths["tampered"]))
    return paths


def test_pass_writes_all_reports(cli, tiny_checkpoint, exports, tmp_path):
    code, out, err = cli("validate", tiny_checkpoint, "--onnx", exports["pumer"], "--report", tmp_path / "r",
                         "--num-samples", "6", "--batch-size", "3")
    assert code == 0, err
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["passed"] is True
    assert report["inputs"]["num_samples"] == 6
    backend = report["comparison"]["backends"]["onnxruntime"]
    assert set(backend["outputs"]) == {"logits"}
    assert backend["outputs"]["logits"]["atol"] == 1e-4
    for key in ("max_abs", "mean_abs", "p50_abs", "p90_abs", "p99_abs"):
        assert key in backend["outputs"]["logits"]["stats"]
    assert "layer1.keep_idx" in backend["indices"] and backend["indices"]["layer1.keep_idx"]["exact_rate"] == 1.0
    assert backend["task"]["top1_agreement"] == 1.0
    assert report["environment"]["versions"]["onnxruntime"]
    assert report["settings"]["text_length"] == TEXT_LENGTH
    assert "PASSED" in (tmp_path / "r" / "report.md").read_text()
    suites = ET.parse(tmp_path / "r" / "junit.xml").getroot()
    assert suites.get("failures") == "0" and int(suites.get("tests")) >= 3
    assert "logits" in {case.get("name") for case in suites.iter("testcase")}


def test_tampered_weight_fails_naming_output(cli, tiny_checkpoint, exports, tmp_path):
    code, out, err = cli("validate", tiny_checkpoint, "--onnx", exports["tampered"], "--report", tmp_path / "r")
    assert code == 1
    assert "logits" in err and "validation failed" in err
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["passed"] is False and "onnxruntime: logits" in report["failures"]
    suites = ET.parse(tmp_path / "r" / "junit.xml").getroot()
    assert int(suites.get("failures")) >= 1


def test_other_pumer_configuration_fails(cli, tiny_checkpoint, exports):
    code, out, err = cli("validate", tiny_checkpoint, "--onnx", exports["other"])
    assert code == 1
    assert "settings" in err and "prune_ratio" in err
    assert "layer1.keep_idx" in err  # other token counts


def test_baseline_export(cli, tiny_checkpoint, exports):
    code, _, err = cli("validate", tiny_checkpoint, "--onnx", exports["baseline"], "--baseline")
    assert code == 0, err
    # the export's metadata says it is a baseline: no --baseline needed
    code, _, err = cli("validate", tiny_checkpoint, "--onnx", exports["baseline"])
    assert code == 0, err


def test_export_folder_accepted_and_model_after_options(cli, tiny_checkpoint, exports):
    """--onnx takes the export folder (as inspect and build do); --atol takes one value, so MODEL may follow it."""
    folder = exports["pumer"].parent
    code, _, err = cli("validate", "--atol", "1e-4", tiny_checkpoint, "--onnx", folder, "--num-samples", "2")
    assert code == 0, err
    code, _, err = cli("validate", tiny_checkpoint, "--onnx", folder.parent / "nowhere")
    assert code == 2 and err.startswith("error: ONNX model") and "does not exist" in err


def test_npz_inputs(cli, tiny_checkpoint, exports, tmp_path):
    from pumer_export.models.vilt.presets import random_inputs
    from pumer_export.checkpoints import load_pumer_model

    config = load_pumer_model(tiny_checkpoint).config
    batch = {k: v.numpy() for k, v in random_inputs(config, 3, text_length=TEXT_LENGTH, image_size=IMAGE_SIZE,
                                                     seed=5).items()}
    np.savez(tmp_path / "batch.npz", input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
             pixel_values=batch["pixel_values"])
    code, _, err = cli("validate", tiny_checkpoint, "--onnx", exports["pumer"], "--inputs", tmp_path / "batch.npz",
                       "--report", tmp_path / "r")
    assert code == 0, err
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["inputs"]["num_samples"] == 3 and report["inputs"]["source"].startswith("npz")

    np.savez(tmp_path / "bad.npz", input_ids=batch["input_ids"][:, :8], pixel_values=batch["pixel_values"])
    code, _, err = cli("validate", tiny_checkpoint, "--onnx", exports["pumer"], "--inputs", tmp_path / "bad.npz")
    assert code == 2 and "input_ids has shape" in err and len(err.strip().splitlines()) == 1

    np.savez(tmp_path / "float_ids.npz", input_ids=batch["input_ids"].astype(np.float32), pixel_values=batch["pixel_values"])
    code, _, err = cli("validate", tiny_checkpoint, "--onnx", exports["pumer"], "--inputs", tmp_path / "float_ids.npz")
    assert code == 2 and "integer" in err

    np.savez(tmp_path / "extra.npz", input_ids=batch["input_ids"], pixel_values=batch["pixel_values"], foo=batch["input_ids"])
    code, _, err = cli("validate", tiny_checkpoint, "--onnx", exports["pumer"], "--inputs", tmp_path / "extra.npz")
    assert code == 2 and "foo" in err


@pytest.mark.parametrize(
    "args, message",
    [
        ((), "nothing to validate"),
        (("--onnx", "missing.onnx"), "ONNX model missing.onnx does not exist"),
        (("--onnx", "{pumer}", "--inputs", "missing.npz"), "--inputs missing.npz does not exist"),
        (("--onnx", "{pumer}", "--inputs", "{images}"), "processor files"),
        (("--onnx", "{pumer}", "--atol", "layer1.keep_idx:1"), "compared exactly"),
        (("--onnx", "{pumer}", "--atol", "nope:1e-3"), "does not have"),
        (("--onnx", "{pumer}", "--atol", "logits:abc"), "expected VALUE"),
        (("--onnx", "{pumer}", "--text-length", "12"), "differs from the export"),
        (("--onnx", "{pumer}", "--image-size", "64x64"), "--image-size 64x64 differs from the export's 96x96"),
        (("--onnx", "{foreign}"), "not a model export of pumer-export"),
        (("--onnx", "{pumer}", "--inputs", "{garbage}"), "not a .npz file (not a zip archive)"),
        (("--onnx", "{pumer}", "--report", "{garbage}"), "is a file, not a directory"),
    ],
)
def test_bad_inputs_are_one_line_errors(cli, tiny_checkpoint, exports, tmp_path, args, message):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (40, 30), (10, 20, 30)).save(images / "a.png")
    (images / "a.txt").write_text("what color is it?")
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(tmp_path / "foreign.onnx"))
    (tmp_path / "garbage.npz").write_text("not a zip")
    args = [str(a).format(pumer=exports["pumer"], images=images, foreign=tmp_path / "foreign.onnx",
                          garbage=tmp_path / "garbage.npz") for a in args]
    code, out, err = cli("validate", tiny_checkpoint, *args)
    assert code == 2 and out == ""
    assert err.strip().startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_image_folder_with_local_processor(cli, tiny_checkpoint, exports, tmp_path):
    from PIL import Image
    from transformers import BertTokenizer, ViltImageProcessor, ViltProcessor

    model_dir = shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(100)] + ["what", "color", "is", "it", "?"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    processor = ViltProcessor(image_processor=ViltImageProcessor(), tokenizer=BertTokenizer(str(tmp_path / "vocab.txt")))
    processor.save_pretrained(model_dir)
    images = tmp_path / "images"
    images.mkdir()
    for i, color in enumerate([(200, 10, 10), (10, 200, 10), (10, 10, 200)]):
        Image.new("RGB", (64 + 8 * i, 48), color).save(images / f"img{i}.png")
    (images / "questions.json").write_text(json.dumps({f"img{i}.png": "what color is it?" for i in range(3)}))
    code, _, err = cli("validate", model_dir, "--onnx", exports["pumer"], "--inputs", images, "--report", tmp_path / "r")
    assert code == 0, err
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["inputs"]["sample_names"] == ["img0.png", "img1.png", "img2.png"]


# ------------------------------------------------------------------------ near-ties
def test_prune_near_tie_is_not_a_mismatch():
    from pumer_export.parity.compare import judge_indices

    scores = np.array([0.5, 0.3, 0.3 + 1e-7, 0.1], dtype=np.float32)
    ref = np.array([0, 2])
    assert judge_indices("layer1.keep_idx", {"scores": scores}, ref, ref.copy(), 1e-4) == "exact"
    assert judge_indices("layer1.keep_idx", {"scores": scores}, ref, np.array([0, 1]), 1e-4) == "near_tie"
    assert judge_indices("layer1.keep_idx", {"scores": scores}, ref, np.array([0, 3]), 1e-4) == "mismatch"
    assert judge_indices("layer1.keep_idx", None, ref, np.array([0, 1]), 1e-4) == "mismatch"


def test_merge_near_tie_is_not_a_mismatch():
    import torch

    from pumer_export import reduce
    from pumer_export.parity.compare import judge_indices
    from pumer_export.parity.runners import merge_similarities

    torch.manual_seed(0)
    metric = torch.randn(1, 7, 8)
    metric[0, 2] = metric[0, 1] + 1e-6  # a-token 1 (position 2) is as close to b-token 0 as to itself: a tie
    metric[0, 4] = metric[0, 1] * 1.0000001  # a-token 2 ties with a-token 1 for the merge
    _, _, slots = reduce.merge(metric, metric, torch.ones(1, 7), 1)
    detail = merge_similarities(metric, 1)
    detail = {"sim": detail["sim"][0], "r": 1}
    ref = slots[0].numpy()
    assert judge_indices("layer1.image_slots", detail, ref, ref.copy(), 1e-4) == "exact"
    # the other tied a-token merges instead (swap the merged / kept a-tokens 1 and 2)
    swapped = ref.copy()
    kept = 4 - 1
    merged_a = [a for a in range(4) if ref[2 * a] >= kept][0]
    other = 2 if merged_a == 1 else 1
    swapped[2 * other], swapped[2 * merged_a] = ref[2 * merged_a], 1  # other merges, merged_a keeps slot 1
    swapped[2 * (3 - 0)] = 2 if 3 not in (merged_a, other) else swapped[6]
    verdict = judge_indices("layer1.image_slots", detail, ref, swapped, 1e-4)
    assert verdict == "near_tie"
    broken = ref.copy()
    broken[1] = 0  # a b-token moved: not a valid plan at all
    assert judge_indices("layer1.image_slots", detail, ref, broken, 1e-4) == "mismatch"


def test_tolerance_syntax():
    from pumer_export.parity.tolerances import parse_tolerances

    tol = parse_tolerances("fp32", ["1e-3", "logits:5e-4"], ["*:1e-2"])
    assert tol.for_output("logits") == (5e-4, 1e-2)
    assert tol.for_output("layer1.keep_idx") == (0.0, 0.0)
    assert parse_tolerances("fp16").for_output("logits") == (5e-2, 5e-2)


def test_report_markdown_is_readable(cli, tiny_checkpoint, exports, tmp_path):
    """Percentages and tolerances as a reader writes them (not 1 / {'': 0.0001}); files world-readable."""
    import os
    import stat

    code, _, err = cli("validate", tiny_checkpoint, "--onnx", exports["pumer"], "--report", tmp_path / "r",
                       "--num-samples", "2", "--batch-size", "2", "--atol", "1e-4", "--atol", "logits:5e-4")
    assert code == 0, err
    text = (tmp_path / "r" / "report.md").read_text()
    assert "| 100.0% | 100.0% |" in text
    assert "atol 0.0001 (logits 0.0005)" in text and "{" not in text.split("## Settings")[1]
    umask = os.umask(0)
    os.umask(umask)
    for name in ("report.json", "report.md", "junit.xml"):
        assert stat.S_IMODE((tmp_path / "r" / name).stat().st_mode) == 0o666 & ~umask


def test_validate_takes_every_vqa_data_source(cli, tmp_path):
    """The VQAv2 sample that eval reads also feeds validate (one reader), as do named datasets; --inputs and a data
    source together are refused."""
    from pathlib import Path

    from pumer_export import models
    from pumer_export.checkpoints import load_pumer_model
    from pumer_export.onnx.export import export_onnx

    vqa = Path(__file__).parent / "data" / "vqa_tiny"
    family = models.get("vilt")
    model = family.preset_model("tiny", seed=2)
    model.save_pretrained(tmp_path / "ck")
    family.tiny_processor(model.config).save(tmp_path / "ck")
    export = export_onnx(load_pumer_model(tmp_path / "ck"), tmp_path / "ex", text_length=12, validate=False).path
    code, _, err = cli("validate", tmp_path / "ck", "--onnx", export, "--questions", vqa / "questions.json",
                       "--annotations", vqa / "annotations.json", "--images", vqa / "images", "--num-samples", "5",
                       "--report", tmp_path / "r")
    assert code == 0, err
    import json

    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["passed"] and report["inputs"]["source"] == "5 VQA questions", report["inputs"]
    lines = tmp_path / "set.jsonl"
    lines.write_text(json.dumps({"image": str(next((vqa / "images").iterdir())), "question": "what is it?",
                                 "answers": ["red"]}) + "\n")
    code, _, err = cli("validate", tmp_path / "ck", "--onnx", export, "--jsonl", lines, "--inputs",
                       tmp_path, "--report", tmp_path / "r2")
    assert code == 2 and "not both" in err
