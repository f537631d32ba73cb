"""Using exports in applications: self-contained export folders, the runtime and VQA pipeline, `run`, `eval`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pumer_export import models
from pumer_export.vqa_eval import normalize_answer, vqa_accuracy
from conftest import one_line_error

VQA_TINY = Path(__file__).parent / "data" / "vqa_tiny"


@pytest.fixture(scope="module", params=["vilt", "meter"])
def deployed(request, tmp_path_factory):
    """A tiny checkpoint of each family with its processor, and its ONNX export folder."""
    from pumer_export.checkpoints import load_pumer_model
    from pumer_export.onnx.export import export_onnx

    family = models.get(request.param)
    root = tmp_path_factory.mktemp(request.param)
    model = family.preset_model("tiny", seed=3)
    model.save_pretrained(root / "checkpoint")
    family.tiny_processor(model.config).save(root / "checkpoint")
    model = load_pumer_model(root / "checkpoint")
    export_onnx(model, root / "export", processor_dir=root / "checkpoint",  # the checkpoint's own input sizes
                validation_options={"batch_sizes": (1, 2)})
    image = root / "picture.png"
    Image.fromarray((np.random.default_rng(0).random((50, 80, 3)) * 255).astype(np.uint8)).save(image)
    return {"family": family, "checkpoint": root / "checkpoint", "export": root / "export", "image": image,
            "root": root}


# ------------------------------------------------------------------ export folders
def test_export_folder_is_self_contained(deployed):
    from pumer_export.manifest import file_sha256, read_manifest

    folder = deployed["export"]
    manifest = read_manifest(folder)
    family = deployed["family"]
    assert manifest["family"] == family.NAME and manifest["backend"] == "onnx"
    assert [i["name"] for i in manifest["inputs"]] == list(family.INPUT_NAMES)
    assert manifest["outputs"][0]["name"] == "logits" and manifest["inputs"][0]["shape"][0] == "batch"
    assert manifest["text_length"] == 40 and manifest["batch"] == {"min": 1, "max": 4096}
    assert manifest["id2label"][0] == "yes" and len(manifest["id2label"]) == 10
    assert "tokenizer.json" in manifest["processor"] and "preprocessor_config.json" in manifest["processor"]
    assert all((folder / name).is_file() for name in manifest["processor"])
    assert manifest["sha256"]["model.onnx"] == file_sha256(folder / "model.onnx")
    assert manifest["schedule"]["layers"] and manifest["pumer"]["reduce_layers"]


def test_engine_folder_manifest_from_an_onnx_folder(deployed, tmp_path):
    """The engine folder's manifest (written by `build`; the engine itself needs TensorRT): backend, batch range
    of the profile and the processor travel along."""
    from pumer_export.manifest import read_manifest
    from pumer_export.tensorrt import sidecar
    from pumer_export.tensorrt.engine import write_engine_folder

    plan = tmp_path / "engine" / "model.plan"
    plan.parent.mkdir()
    plan.write_bytes(b"not a real engine")
    record = {"profile": {"batch": {"min": 1, "opt": 8, "max": 16}}, "tensorrt_version": "10.3.0",
              "precision": {"onnx_dtype": "fp32"}, "plugin_library": {"path": "/opt/libpumer_plugins.so"}}
    sidecar.sidecar_path(plan).write_text(json.dumps(record))
    write_engine_folder(deployed["export"], plan, record)
    manifest = read_manifest(plan.parent)
    assert manifest["backend"] == "tensorrt" and manifest["model_file"] == "model.plan"
    assert manifest["batch"] == {"min": 1, "max": 16} and manifest["family"] == deployed["family"].NAME
    assert (plan.parent / "tokenizer.json").is_file()
    with pytest.raises(Exception, match="outside the ONNX export folder"):
        write_engine_folder(deployed["export"], deployed["export"] / "model.plan", record)


# ------------------------------------------------------------------------ pipeline
def test_run_answers_with_labels_and_torch_agrees(cli, deployed):
    code, out, err = cli("run", deployed["export"], "--image", deployed["image"], "--question", "what is it?",
                         "--json", "--top-k", "3")
    assert code == 0, err
    answers = json.loads(out)["answers"]
    assert len(answers) == 3 and all(isinstance(a["answer"], str) for a in answers)
    scores = [a["score"] for a in answers]
    assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    # a checkpoint directory runs with PyTorch unless told otherwise
    code, out, err = cli("run", deployed["checkpoint"], "--image", deployed["image"],
                         "--question", "what is it?", "--json", "--top-k", "3")
    assert code == 0, err
    torch_answers = json.loads(out)["answers"]
    assert torch_answers[0]["answer"] == answers[0]["answer"]
    assert torch_answers[0]["score"] == pytest.approx(answers[0]["score"], abs=1e-4)


def test_pipeline_batches_match_single_runs(deployed):
    from pumer_export.runtime import VqaPipeline

    pipeline = VqaPipeline(deployed["export"], "ort")
    image = Image.open(deployed["image"])
    images = [image, image.rotate(90, expand=True), np.asarray(image), str(deployed["image"]), image]
    questions = ["what color is it?", "how many are there?", "is it red?", "what color is it?", "what is it?"]
    together = pipeline.logits(images, questions, batch_size=2)
    alone = np.concatenate([pipeline.logits([i], [q]) for i, q in zip(images, questions)])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(together[0], together[3], atol=1e-6)  # PIL image == the same file


def test_ort_sessions_spin_only_while_a_run_is_active(deployed):
    """The runtime's and the benchmark's ONNX Runtime sessions stop their threads spinning when a run returns (with
    several sessions in one process, as bench and generation have, idle spinning pools take each other's cores)."""
    from pumer_export.bench import _OrtVariant
    from pumer_export.runtime import load_backend

    for session in (load_backend(deployed["export"], "ort", threads=2).session,
                    _OrtVariant(deployed["export"] / "model.onnx", "cpu", 2).session):
        options = session.get_session_options()
        assert options.get_session_config_entry("session.force_spinning_stop") == "1"
        assert options.intra_op_num_threads == 2


def test_images_are_fitted_to_the_canvas(deployed):
    from pumer_export.runtime import VqaPipeline

    pipeline = VqaPipeline(deployed["export"], "ort")
    height, width = pipeline.info.image_size
    wide = Image.new("RGB", (width * 2, height), (200, 10, 10))  # twice as wide as the canvas
    feeds = pipeline.encode([wide], ["what color is it?"])
    assert feeds["pixel_values"].shape == (1, 3, height, width)
    if "pixel_mask" in feeds:  # ViLT: resized to fit (half height), padded below, the mask marks the image
        mask = feeds["pixel_mask"][0]
        assert mask[: height // 2].all() and not mask[height // 2:].any()
        assert not feeds["pixel_values"][0, :, height // 2:].any()


def test_long_questions_are_truncated_with_a_warning(deployed, caplog):
    from pumer_export.runtime import VqaPipeline

    pipeline = VqaPipeline(deployed["export"], "ort")
    with caplog.at_level(logging.WARNING):
        feeds = pipeline.encode([str(deployed["image"])], [" ".join(["what"] * 50) + "?"])
    assert feeds["input_ids"].shape == (1, 40) and feeds["attention_mask"].all()
    assert "truncated" in caplog.text


def test_run_bad_inputs(cli, deployed, tmp_path):
    export, image = deployed["export"], deployed["image"]
    code, _, err = cli("run", export, "--image", tmp_path / "missing.png", "--question", "what?")
    one_line_error(code, err, "missing.png")
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    code, _, err = cli("run", export, "--image", bad, "--question", "what?")
    one_line_error(code, err, "cannot read image")
    code, _, err = cli("run", export, "--image", image, "--question", "  ")
    one_line_error(code, err, "question 1 is empty")
    code, _, err = cli("run", tmp_path, "--image", image, "--question", "what?")
    one_line_error(code, err, "no manifest.json")
    from pumer_export.parity.runners import tensorrt_available

    code, _, err = cli("run", export, "--backend", "trt", "--image", image, "--question", "what?")
    one_line_error(code, err, "holds an ONNX export" if tensorrt_available() else "TensorRT is not installed")
    code, _, err = cli("run", export, "--backend", "torch", "--image", image, "--question", "what?")
    one_line_error(code, err, "the torch backend runs the checkpoint")
    code, _, err = cli("run", export, "--image", image)
    one_line_error(code, err, "--question")


def test_a_changed_model_file_is_refused(cli, deployed, tmp_path):
    import shutil

    folder = shutil.copytree(deployed["export"], tmp_path / "export")
    with open(folder / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    code, _, err = cli("run", folder, "--image", deployed["image"], "--question", "what?")
    one_line_error(code, err, "changed since export")


def test_run_pairs_file(cli, deployed, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps({"image": str(deployed["image"]), "question": q})
                               for q in ("what is it?", "is it red?")) + "\n")
    code, out, err = cli("run", deployed["export"], "--pairs", pairs, "--json", "--top-k", "2")
    assert code == 0, err
    results = json.loads(out)
    assert [r["question"] for r in results] == ["what is it?", "is it red?"]
    assert all(len(r["answers"]) == 2 for r in results)


# ---------------------------------------------------------------------- accuracy
def test_vqa_accuracy_worked_examples():
    assert vqa_accuracy("yes", ["yes"] * 10) == 1.0
    assert vqa_accuracy("no", ["yes"] * 10) == 0.0
    # three matching humans of ten: leave-one-out gives (3 x 2/3 + 7 x 1) / 10
    assert vqa_accuracy("red", ["red"] * 3 + ["blue"] * 7) == pytest.approx(0.9)
    assert vqa_accuracy("red", ["red"] * 4 + ["blue"] * 6) == 1.0
    assert vqa_accuracy("red", ["red"] + ["blue"] * 9) == pytest.approx(0.3)
    # the humans disagree, so the prediction is normalised: number words, articles, punctuation
    assert vqa_accuracy("Two.", ["2"] * 5 + ["3"] * 5) == 1.0
    assert vqa_accuracy("a dog", ["dog"] * 4 + ["cat"] * 6) == 1.0
    assert vqa_accuracy("dont know", ["don't know"] * 3 + ["no"] * 7) == pytest.approx(0.9)
    # when every human gave the same answer the comparison is exact (the official rule)
    assert vqa_accuracy("Yes", ["yes"] * 10) == 0.0
    assert normalize_answer("The  Three, apples!") == "3 apples"


def test_eval_reports_accuracy_drop_and_agreement(cli, deployed, tmp_path):
    report_dir = tmp_path / "report"
    code, out, err = cli("eval", deployed["checkpoint"], "--questions", VQA_TINY / "questions.json",
                         "--annotations", VQA_TINY / "annotations.json", "--images", VQA_TINY / "images",
                         "--backends", "torch,ort", "--report", report_dir, "--no-progress", "--batch-size", "3")
    assert code == 0, err
    report = json.loads((report_dir / "report.json").read_text())
    assert report["num_questions"] == 8 and set(report["results"]) == {"torch", "ort"}
    for result in report["results"].values():
        assert set(result) >= {"baseline", "pumer", "accuracy_drop", "speedup"}
        assert result["accuracy_drop"] == pytest.approx(result["baseline"]["accuracy"] - result["pumer"]["accuracy"])
    assert report["agreement"] == {"ort vs torch (baseline)": 1.0, "ort vs torch (pumer)": 1.0}
    assert (report_dir / "report.md").read_text().startswith("# VQA accuracy")
    code, _, err = cli("eval", deployed["checkpoint"], "--questions", VQA_TINY / "questions.json",
                       "--annotations", VQA_TINY / "annotations.json", "--images", VQA_TINY / "images",
                       "--report", report_dir)
    one_line_error(code, err, "--force")


def test_eval_accuracy_counts_right_answers(cli, deployed, tmp_path):
    """Human answers built from the model's own torch predictions for half the questions: exactly 50 %."""
    from pumer_export.runtime import VqaPipeline

    pipeline = VqaPipeline(deployed["checkpoint"], "torch")
    images = sorted((VQA_TINY / "images").iterdir())
    questions = ["what color is the shape?", "is there a circle?"] * 2
    predictions = [a[0]["answer"] for a in pipeline(images, questions, top_k=1)]
    lines = []
    for i, (image, question, predicted) in enumerate(zip(images, questions, predictions)):
        answers = [predicted] * 10 if i % 2 == 0 else ["nothing the model says"] * 10
        lines.append(json.dumps({"image": str(image), "question": question, "answers": answers}))
    data = tmp_path / "set.jsonl"
    data.write_text("\n".join(lines) + "\n")
    code, _, err = cli("eval", deployed["checkpoint"], "--jsonl", data, "--backends", "torch",
                       "--report", tmp_path / "r", "--no-progress")
    assert code == 0, err
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["results"]["torch"]["baseline"]["accuracy"] == pytest.approx(50.0)


def test_eval_bad_inputs(cli, deployed, tmp_path):
    code, _, err = cli("eval", deployed["checkpoint"], "--questions", VQA_TINY / "questions.json",
                       "--annotations", VQA_TINY / "annotations.json", "--images", tmp_path, "--report", tmp_path / "r")
    one_line_error(code, err, "has no image for image_id 1", "COCO_val2014_000000000001.jpg")
    code, _, err = cli("eval", deployed["checkpoint"], "--questions", tmp_path / "q.json",
                       "--annotations", VQA_TINY / "annotations.json", "--images", VQA_TINY / "images",
                       "--report", tmp_path / "r")
    one_line_error(code, err, "q.json")
    code, _, err = cli("eval", deployed["checkpoint"], "--report", tmp_path / "r")
    one_line_error(code, err, "--questions")


# ------------------------------------------------------------------- edge recipes
def test_build_prints_trtexec_and_polygraphy_commands(cli, deployed, tmp_path):
    import onnx

    from pumer_export.onnx.functions import DOMAIN

    family = deployed["family"]
    code, out, err = cli("build", deployed["export"], tmp_path / "e" / "model.plan", "--print-trtexec",
                         "--trt-version", "10.3", "--batch", "1:4:8", "--fp16", "--timing-cache", "trt.cache")
    assert code == 0, err
    trtexec = next(line for line in out.splitlines() if line.startswith("trtexec "))
    prepared = deployed["export"] / "model.plugins.onnx"
    assert f"--onnx={prepared}" in trtexec and "--staticPlugins=" in trtexec
    assert "--fp16" in trtexec and "--stronglyTyped" not in trtexec  # TensorRT 10, fp32 model with fp16 kernels
    assert "--timingCacheFile=trt.cache" in trtexec
    shapes = {kind: next(t for t in trtexec.split() if t.startswith(f"--{kind}Shapes=")) for kind in ("min", "max")}
    assert "input_ids:1x" in shapes["min"] and "input_ids:8x" in shapes["max"]
    assert len(shapes["min"].split(",")) == len(family.INPUT_NAMES)
    assert any(line.startswith("polygraphy convert ") and "--trt-max-shapes" in line for line in out.splitlines())
    model = onnx.load(str(prepared))  # the stripped copy: the pumer nodes stay, their bodies are gone
    assert not model.functions and sum(n.domain == DOMAIN for n in model.graph.node) > 0

    code, out, err = cli("build", deployed["export"], tmp_path / "e" / "model.plan", "--print-trtexec",
                         "--trt-version", "11.1")
    assert code == 0, err
    assert "--stronglyTyped" in out and "--fp16" not in out
    code, _, err = cli("build", deployed["export"], tmp_path / "e" / "model.plan", "--print-trtexec",
                       "--trt-version", "11.1", "--fp16")
    one_line_error(code, err, "needs a float16 ONNX model")
