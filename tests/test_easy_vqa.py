"""Real data: the easy-VQA reader, fine-tuning, the shipped trained checkpoints, eval on a dataset, the sweep."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pumer_export import models
from pumer_export.config import PumerConfig
from pumer_export.datasets import EASY_VQA_ANSWERS, encode_questions, load_dataset, subset
from conftest import interrupt_after_first_save, one_line_error

easy_vqa = pytest.importorskip("easy_vqa", reason="easy-vqa is not installed (pip install -e '.[test]' brings it)")


@pytest.fixture(scope="module")
def train_questions():
    return load_dataset("easy-vqa", "train")


@pytest.fixture(scope="module")
def tiny_init(tmp_path_factory) -> Path:
    """A small untrained ViLT with easy-VQA's labels and a vocabulary that covers its questions."""
    from pumer_export.models.vilt.presets import tiny_vilt_model

    model = tiny_vilt_model(seed=0, num_layers=2, hidden_size=32, num_heads=2, vocab_size=64, image_size=32,
                            patch_size=8, max_text_length=12, num_labels=len(EASY_VQA_ANSWERS),
                            labels=EASY_VQA_ANSWERS,
                            pumer=PumerConfig(reduce_layers=(1,), prune_ratio=0.2, image_merge_ratio=0.2,
                                              text_merge_ratio=0.2))
    path = tmp_path_factory.mktemp("tiny-easy") / "init"
    model.save_pretrained(path)
    models.get("vilt").tiny_processor(model.config).save(path)
    return path


@pytest.fixture(scope="module")
def tiny_meter_init(tmp_path_factory) -> Path:
    """A small untrained METER (dropout in its cross layers) with easy-VQA's labels."""
    from pumer_export.models.meter.presets import tiny_meter_model

    model = tiny_meter_model(seed=0, vocab_size=64, image_size=32, patch_size=8, max_text_length=12,
                             num_labels=len(EASY_VQA_ANSWERS), labels=EASY_VQA_ANSWERS, num_cross_layers=2,
                             vision_layers=1, text_layers=1, hidden_size=32, vision_width=32,
                             pumer=PumerConfig(reduce_layers=(0,), prune_ratio=0.2, image_merge_ratio=0.2,
                                               text_merge_ratio=0.2))
    path = tmp_path_factory.mktemp("tiny-meter") / "init"
    model.save_pretrained(path)
    models.get("meter").tiny_processor(model.config).save(path)
    return path


# ---------------------------------------------------------------------- the data
def test_easy_vqa_records(train_questions):
    test = load_dataset("easy-vqa", "test")
    assert (len(train_questions), len(test)) == (38575, 9673)
    assert tuple(sorted(easy_vqa.get_answers())) == EASY_VQA_ANSWERS
    assert {a for q in test for a in q.answers} == set(EASY_VQA_ANSWERS)
    types = {q.answer_type for q in test}
    assert types == {"yes/no", "color", "shape"}
    yes_no = [q for q in test if q.answer_type == "yes/no"]
    assert {q.answers[0] for q in yes_no} == {"yes", "no"} and 0.7 < len(yes_no) / len(test) < 0.8
    assert all(Path(q.image).is_file() for q in test[:50])
    assert not {q.image for q in test} & {q.image for q in train_questions}


def test_one_data_reader_for_every_command(cli, tmp_path):
    code, _, err = cli("eval", tmp_path, "--dataset", "easy-vqa", "--split", "dev", "--report", tmp_path / "r")
    one_line_error(code, err, "splits train, test")
    code, _, err = cli("eval", tmp_path, "--dataset", "easy-vqa", "--jsonl", tmp_path / "x.jsonl",
                       "--report", tmp_path / "r")
    one_line_error(code, err, "one data source")


def test_answer_types_select_questions(cli, tiny_init, train_questions, tmp_path):
    """--answer-types keeps the questions of the named types only (e.g. to measure the shape questions alone); a
    type the data lacks, or the option without data, is one line."""
    import argparse

    from pumer_export.commands._common import add_data_arguments, questions_from_args
    from pumer_export.datasets import of_answer_types

    shape = of_answer_types(train_questions, ["shape"])
    assert shape and {q.answers[0] for q in shape} == {"circle", "rectangle", "triangle"}
    both = of_answer_types(train_questions, ["shape", "color"])
    assert len(both) == len(shape) + sum(q.answer_type == "color" for q in train_questions)
    assert [q.question_id for q in both] == sorted(q.question_id for q in both)  # order kept
    parser = argparse.ArgumentParser()
    add_data_arguments(parser, split="train")
    args = parser.parse_args(["--dataset", "easy-vqa", "--answer-types", "shape"])
    assert [q.question_id for q in questions_from_args(args)] == [q.question_id for q in shape]
    code, _, err = cli("eval", tiny_init, "--dataset", "easy-vqa", "--answer-types", "number",
                       "--report", tmp_path / "r")
    one_line_error(code, err, "'number'", "color, shape, yes/no")
    code, _, err = cli("eval", tiny_init, "--dataset", "easy-vqa", "--answer-types", ",", "--report", tmp_path / "r")
    assert code == 2 and "comma-separated names" in err
    code, _, err = cli("finetune", tiny_init, tmp_path / "o", "--answer-types", "shape")
    one_line_error(code, err, "--answer-types selects from data")
    assert not (tmp_path / "r").exists() and not (tmp_path / "o").exists()


def test_oversample_repeats_one_answer_type(cli, tiny_init, train_questions, tmp_path):
    from pumer_export.finetune import oversampled

    questions = train_questions[:400]
    shape = [q for q in questions if q.answer_type == "shape"]
    out = oversampled(questions, {"shape": 3})
    assert len(out) == len(questions) + 2 * len(shape) and out[:len(questions)] == questions
    assert sorted(q.question_id for q in out if q.answer_type == "shape") == sorted(
        q.question_id for q in shape for _ in range(3))
    assert oversampled(questions, {}) == questions
    with pytest.raises(Exception, match="no training question has the answer type number"):
        oversampled(questions, {"number": 2})
    code, _, err = cli("finetune", tiny_init, tmp_path / "o", "--dataset", "easy-vqa", "--oversample", "shape=0")
    assert code == 2 and "TYPE=K" in err
    code, _, err = cli("finetune", tiny_init, tmp_path / "o", "--dataset", "easy-vqa", "--limit", "60",
                       "--oversample", "number=2", "--no-progress")
    one_line_error(code, err, "--oversample", "number")
    assert not (tmp_path / "o").exists()


def test_missing_extra_is_one_line(cli, tiny_init, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "easy_vqa", None)  # as if the package were not installed
    code, _, err = cli("finetune", tiny_init, tmp_path / "out", "--dataset", "easy-vqa")
    one_line_error(code, err, "pumer-export[datasets]")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("family_name", ["vilt", "meter"])
def test_encoded_questions_equal_the_family_encode(family_name, train_questions):
    """Inputs prepared once per distinct image are the family's own encode of each (image, question) pair."""
    from pumer_export.processing import load_image

    family = models.get(family_name)
    model = family.preset_model("easy-vqa")
    processor = family.tiny_processor(model.config)
    questions = train_questions[:25]  # about three images, ten questions each
    size = (model.config.image_size, model.config.image_size)
    encoded = encode_questions(family, processor, questions, image_size=size, text_length=16)
    assert len(encoded.images["pixel_values"]) == len({q.image for q in questions}) < len(questions)
    rows = np.array([24, 3, 11])
    expected = family.encode(processor, [load_image(questions[i].image) for i in rows],
                             [questions[i].question for i in rows], image_size=size, text_length=16)
    got = encoded.batch(rows)
    assert set(got) == set(expected) == set(family.INPUT_NAMES)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])
    ids = got["input_ids"]
    assert (ids != processor.tokenizer.unk_token_id).all(), "easy-VQA words must be in the built-in vocabulary"


# ---------------------------------------------------------------------- finetune
def test_finetune_learns_from_a_random_checkpoint(cli, tiny_init, train_questions, tmp_path):
    out = tmp_path / "tuned"
    code, _, err = cli("finetune", tiny_init, out, "--dataset", "easy-vqa", "--limit", "3000", "--epochs", "3",
                       "--batch-size", "32", "--lr", "3e-3", "--val-limit", "300", "--threads", "1", "--no-progress")
    assert code == 0, err
    log = json.loads((out / "training.json").read_text())
    losses = [e["loss"] for e in log["epochs"]]
    accuracies = [e["validation_accuracy"] for e in log["epochs"]]
    majority = max(np.mean([q.answers[0] == a for q in train_questions]) for a in EASY_VQA_ANSWERS) * 100
    assert losses[-1] < 0.6 * losses[0]
    assert max(accuracies) > majority + 20, (accuracies, majority)
    assert log["best_accuracy"] == max(accuracies)
    # the best checkpoint is an ordinary one: labels, PuMer settings, processor files
    from pumer_export.checkpoints import load_pumer_model

    model = load_pumer_model(out)
    assert tuple(model.config.id2label[i] for i in range(13)) == EASY_VQA_ANSWERS
    assert model.pumer_config.reduce_layers == (1,)
    assert (out / "tokenizer.json").is_file() and (out / "preprocessor_config.json").is_file()
    # and run answers with it
    code, text, err = cli("run", out, "--backend", "torch", "--image", train_questions[0].image,
                          "--question", "what color is the shape?", "--json")
    assert code == 0, err
    assert json.loads(text)["answers"][0]["answer"] in EASY_VQA_ANSWERS


def test_finetune_without_the_reducers_validates_as_it_trains(tiny_init, train_questions, tmp_path):
    """--pumer off: the epoch's validation accuracy (which picks the best epoch) is the model's without the reducers;
    the accuracy with the checkpoint's PuMer is logged beside it; the checkpoint keeps its PuMer settings."""
    from pumer_export.checkpoints import load_pumer_model
    from pumer_export.finetune import FinetuneOptions, accuracy, hold_out, run_finetune
    from pumer_export.processing import copy_processor_files, load_processor
    from pumer_export.schedule import input_size

    init = load_pumer_model(tiny_init)  # PuMer from the first layer on, hard enough to change answers
    init.set_pumer_config(PumerConfig(reduce_layers=(0, 1), prune_ratio=0.7, image_merge_ratio=0.5,
                                      text_merge_ratio=0.3))
    init.save_pretrained(tmp_path / "init")
    copy_processor_files(tiny_init, tmp_path / "init")
    data = subset(train_questions, 2400, seed=2)
    options = FinetuneOptions(epochs=2, batch_size=32, lr=3e-3, progress=False, threads=1, val_limit=300,
                              reduction="off")
    log = run_finetune(tmp_path / "init", tmp_path / "out", data, options)
    entry = log["epochs"][-1]
    model = load_pumer_model(tmp_path / "out")
    assert model.pumer_config.reduce_layers == (0, 1)
    _, validation = hold_out(data, options.val_fraction, options.seed)
    validation = subset(validation, options.val_limit, seed=options.seed)
    image_size, text_length = input_size(model.config)
    encoded = encode_questions(models.for_model(model), load_processor(tmp_path / "out"), validation,
                               image_size=image_size, text_length=text_length)
    with_reducers = accuracy(model, encoded, validation, 64, "cpu")
    model.set_pumer_config(model.pumer_config.without_reduction())
    assert entry["validation_accuracy"] == pytest.approx(accuracy(model, encoded, validation, 64, "cpu"))
    assert entry["validation_accuracy_with_reducers"] == pytest.approx(with_reducers)
    assert with_reducers != pytest.approx(entry["validation_accuracy"])  # the two settings answer differently


@pytest.mark.parametrize("init", ["tiny_init", "tiny_meter_init"])
def test_resume_continues_where_the_run_stopped(init, request, train_questions, tmp_path, monkeypatch):
    """An interrupted run resumed ends with exactly the weights of an uninterrupted one (METER: with dropout)."""
    from pumer_export import finetune
    from pumer_export.finetune import FinetuneOptions, run_finetune

    tiny_init = request.getfixturevalue(init)
    data = subset(train_questions, 400, seed=1)
    options = dict(epochs=2, batch_size=32, lr=2e-3, progress=False, threads=1, val_limit=50)
    run_finetune(tiny_init, tmp_path / "straight", data, FinetuneOptions(**options))

    interrupt_after_first_save(monkeypatch, finetune,
                               lambda: run_finetune(tiny_init, tmp_path / "resumed", data, FinetuneOptions(**options)))
    assert len(json.loads((tmp_path / "resumed" / "training.json").read_text())["epochs"]) == 1
    with pytest.raises(Exception, match="--lr"):
        run_finetune(tiny_init, tmp_path / "resumed", data, FinetuneOptions(**{**options, "lr": 1e-3}, resume=True))
    log = run_finetune(tiny_init, tmp_path / "resumed", data, FinetuneOptions(**options, resume=True))
    assert [e["epoch"] for e in log["epochs"]] == [1, 2]
    straight = torch.load(tmp_path / "straight" / finetune.STATE_FILE, weights_only=False)["model"]
    resumed = torch.load(tmp_path / "resumed" / finetune.STATE_FILE, weights_only=False)["model"]
    for name, value in straight.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=1e-6)


def test_finetune_bad_inputs(cli, tiny_init, tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    # labels that cannot hold the data's answers (the tiny model's labels are not easy-VQA's)
    other = tmp_path / "other-labels"
    model = models.get("vilt").preset_model("tiny")
    model.save_pretrained(other)
    models.get("vilt").tiny_processor(model.config).save(other)
    code, _, err = cli("finetune", other, out, "--dataset", "easy-vqa", "--limit", "200")
    one_line_error(code, err, "not labels of the checkpoint", "--relabel")
    assert not out.exists()
    # a checkpoint without processor files, OUT a file, OUT taken, --resume without a run, conflicting flags
    code, _, err = cli("finetune", tiny_checkpoint, out, "--dataset", "easy-vqa", "--limit", "50")
    one_line_error(code, err, "no processor files")
    (tmp_path / "file").write_text("x")
    code, _, err = cli("finetune", tiny_init, tmp_path / "file", "--dataset", "easy-vqa")
    one_line_error(code, err, "is a file")
    (out / "x").mkdir(parents=True)
    code, _, err = cli("finetune", tiny_init, out, "--dataset", "easy-vqa", "--limit", "50")
    one_line_error(code, err, "already exists", "--resume", "--force")
    code, _, err = cli("finetune", tiny_init, tmp_path / "new", "--dataset", "easy-vqa", "--resume")
    one_line_error(code, err, "training_state.pt")
    code, _, err = cli("finetune", tiny_init, out, "--dataset", "easy-vqa", "--resume", "--force")
    one_line_error(code, err, "not both")
    code, _, err = cli("finetune", tiny_init, tmp_path / "n2")
    one_line_error(code, err, "--dataset easy-vqa")
    code, _, err = cli("finetune", tmp_path / "nothing", tmp_path / "n3", "--dataset", "easy-vqa", "--limit", "20")
    one_line_error(code, err, "nothing")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "other-labels", "out"]


def test_flip_augmentation_flips_only_images():
    from pumer_export.finetune import flip_images

    rng = np.random.default_rng(0)
    feeds = {"input_ids": np.arange(8 * 4).reshape(8, 4), "pixel_values": rng.random((8, 3, 5, 6)),
             "pixel_mask": (rng.random((8, 5, 6)) > 0.5).astype(np.int64)}
    out = flip_images(feeds, np.random.default_rng(7))
    np.testing.assert_array_equal(out["input_ids"], feeds["input_ids"])
    draw = np.random.default_rng(7)
    horizontal, vertical = draw.random(8) < 0.5, draw.random(8) < 0.5
    assert horizontal.any() and vertical.any() and not (horizontal & vertical).all()
    for i in range(8):
        for name in ("pixel_values", "pixel_mask"):
            want = feeds[name][i]
            want = np.flip(want, -1) if horizontal[i] else want
            want = np.flip(want, -2) if vertical[i] else want
            np.testing.assert_array_equal(out[name][i], want)


def test_dihedral_augmentation_gives_the_eight_symmetries():
    """--augment dihedral: flips and a random transpose of square images (all 8 rotations and reflections appear);
    a non-square image is refused in one line."""
    from pumer_export.errors import PumerExportError
    from pumer_export.finetune import flip_images

    image = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    feeds = {"input_ids": np.zeros((64, 2), dtype=np.int64), "pixel_values": np.repeat(image, 64, axis=0)}
    out = flip_images(feeds, np.random.default_rng(3), transpose=True)
    symmetries = {np.rot90(m, k).tobytes() for m in (image[0, 0], image[0, 0].T) for k in range(4)}
    seen = {sample[0].tobytes() for sample in out["pixel_values"]}
    assert seen == symmetries and len(symmetries) == 8
    with pytest.raises(PumerExportError, match="square"):
        flip_images({"pixel_values": np.zeros((16, 3, 4, 6))}, np.random.default_rng(0), transpose=True)


def test_relabel_replaces_the_answer_head(cli, tmp_path):
    other = tmp_path / "other-labels"
    model = models.get("vilt").preset_model("tiny")
    model.save_pretrained(other)
    models.get("vilt").tiny_processor(model.config).save(other)
    code, _, err = cli("finetune", other, tmp_path / "out", "--dataset", "easy-vqa", "--limit", "2000",
                       "--max-steps", "2", "--relabel", "--no-progress", "--val-limit", "20")
    assert code == 0, err
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert sorted(config["id2label"].values()) == list(EASY_VQA_ANSWERS)
    from pumer_export.checkpoints import load_pumer_model

    assert load_pumer_model(tmp_path / "out").classifier[-1].out_features == len(EASY_VQA_ANSWERS)


@pytest.mark.slow
def test_finetune_meter_trains(tiny_meter_init, tmp_path, train_questions):
    """METER's loop runs with its reducers in place and lowers the loss."""
    from pumer_export.finetune import FinetuneOptions, run_finetune

    log = run_finetune(tiny_meter_init, tmp_path / "out", subset(train_questions, 1500, seed=0), FinetuneOptions(
        epochs=2, batch_size=32, lr=3e-3, progress=False, threads=1, val_limit=200))
    assert log["epochs"][-1]["loss"] < 0.7 * log["epochs"][0]["loss"]


def test_finetune_smarttrim_reaches_its_target(cli, tiny_meter_init, tmp_path):
    """``--method smarttrim`` attaches trimmers to a plain METER and trains them toward the target share of FLOPs:
    the saved checkpoint is a SmartTrim one that realises (on its validation data, reference decisions) a share
    near the target, and its trimmers left the keep-everything start. Its locations cannot be changed on a
    SmartTrim checkpoint."""
    import json

    from pumer_export import methods
    from pumer_export.checkpoints import load_pumer_model

    out = tmp_path / "st"
    code, _, err = cli("finetune", tiny_meter_init, out, "--dataset", "easy-vqa", "--limit", "1200", "--epochs", "3",
                       "--batch-size", "32", "--lr", "3e-3", "--method", "smarttrim", "--vit-layers", "0",
                       "--target-keep", "0.6", "--curriculum", "0.3", "--val-limit", "200", "--threads", "1",
                       "--no-progress")
    assert code == 0, err
    log = json.loads((out / "training.json").read_text())
    last = log["epochs"][-1]
    assert last["flops_share"] < 0.75 and log["best_eligible"], log["epochs"]
    assert last["kept_share"]["vit0.image"] < 1.0
    model = load_pumer_model(out)
    assert methods.for_model(model).NAME == "smarttrim" and model.smarttrim_config.vit_layers == (0,)
    code, _, err = cli("finetune", out, tmp_path / "again", "--dataset", "easy-vqa", "--limit", "200",
                       "--method", "smarttrim", "--vit-layers", "1")
    one_line_error(code, err, "already has trimmers")


def test_sweep_puts_smarttrim_beside_pumer(cli, tmp_path):
    """sweep over easy-vqa-meter (a PuMer grid) and easy-vqa-meter-smarttrim (a tau axis) in one report: every point
    against easy-vqa-meter untrimmed, a larger tau keeps fewer tokens (a larger realised FLOP-ideal speedup), and
    each SmartTrim point stands beside the PuMer point nearest in FLOPs."""
    for name, folder in (("easy-vqa-meter", "m"), ("easy-vqa-meter-smarttrim", "st")):
        code, _, err = cli("pretrained", name, tmp_path / folder)
        assert code == 0, err
    code, out, err = cli("sweep", tmp_path / "m", tmp_path / "st", "--dataset", "easy-vqa", "--limit", "120",
                         "--tau=-4,0,4", "--layers", "0,1", "--prune", "0.1,0.5", "--merge", "0.5",
                         "--text-merge", "0", "--backends", "torch", "--iters", "2", "--warmup", "0", "--threads",
                         "2", "--report", tmp_path / "s", "--no-progress")
    assert code == 0, err
    sweep = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert [(r["method"], r["label"]) for r in sweep["points"]] == [
        ("pumer", "layers 0,1 prune 0.1 merge 0.5 text 0"), ("pumer", "layers 0,1 prune 0.5 merge 0.5 text 0"),
        ("smarttrim", "tau -4"), ("smarttrim", "tau 0"), ("smarttrim", "tau 4")]
    pumer, trimmed = sweep["points"][:2], sweep["points"][2:]
    assert 1 < pumer[0]["flop_ideal"] < pumer[1]["flop_ideal"]
    ideals = [r["flop_ideal"] for r in trimmed]
    assert 1 <= ideals[0] < ideals[1] < ideals[2], ideals
    base = sweep["baseline"]["accuracy"]["accuracy"]
    for row in sweep["points"]:
        assert row["speed"]["torch"]["speedup"] > 0 and row["accuracy_drop"] == pytest.approx(
            base - row["accuracy"]["accuracy"])
    # the baseline is easy-vqa-meter untrimmed; the SmartTrim weights answer otherwise without their trimmers
    first, second = sweep["checkpoints"]
    assert first["accuracy_without_reduction"] == base and second["method"] == "smarttrim"
    nearest = {p["point"]: p["nearest"] for p in sweep["matched_flops"]}
    for row in trimmed:
        expected = min(pumer, key=lambda p: abs(math.log(p["flop_ideal"] / row["flop_ideal"])))
        assert nearest[row["point"]] == expected["point"]
    report = (tmp_path / "s" / "sweep.md").read_text()
    assert "PuMer against SmartTrim-style" in report and "At matched FLOPs" in report
    assert report.count("| SmartTrim-style (pumer-export design) tau") == 3  # the matched-FLOPs rows


def test_sweep_refuses_checkpoints_of_different_models(cli, tiny_init, tmp_path):
    code, _, err = cli("pretrained", "easy-vqa-meter", tmp_path / "m")
    assert code == 0, err
    code, _, err = cli("sweep", tiny_init, tmp_path / "m", "--dataset", "easy-vqa", "--report", tmp_path / "s")
    one_line_error(code, err, "one model against one baseline", "METER")
    assert not (tmp_path / "s").exists()


# ---------------------------------------------------------------- shipped models
def test_pretrained_list_and_untrained(cli, tmp_path):
    code, out, err = cli("pretrained", "--list")
    assert code == 0, err
    assert "easy-vqa-vilt" in out and "easy-vqa-meter" in out
    code, _, err = cli("pretrained", "easy-vqa-vit", tmp_path / "x")
    one_line_error(code, err, "unknown pretrained model", "easy-vqa-vilt")
    code, _, err = cli("pretrained", "easy-vqa-vilt")
    one_line_error(code, err, "--list")
    code, _, err = cli("pretrained", "easy-vqa-vilt", tmp_path / "u", "--untrained", "--seed", "3")
    assert code == 0, err
    from pumer_export import zoo
    from pumer_export.checkpoints import load_pumer_model

    written = load_pumer_model(tmp_path / "u")
    fresh = zoo.untrained("easy-vqa-vilt", seed=3)
    for (name, a), b in zip(written.state_dict().items(), fresh.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


def test_zoo_stores_float16_and_loads_float32(tiny_init, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from pumer_export import zoo
    from pumer_export.checkpoints import load_pumer_model

    monkeypatch.setattr(zoo, "ROOT", tmp_path)
    folder = zoo.store(tiny_init, "easy-vqa-vilt", {"summary": ["a line"]})
    stored = load_file(str(folder / "model.safetensors"))
    assert {v.dtype for v in stored.values()} == {torch.float16}
    assert (folder / "card.json").is_file() and (folder / "tokenizer.json").is_file()
    loaded, original = zoo.pretrained("easy-vqa-vilt"), load_pumer_model(tiny_init)
    for (name, a), b in zip(loaded.state_dict().items(), original.state_dict().values()):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b.half().float(), rtol=0, atol=0, msg=name)
    assert zoo.card("easy-vqa-vilt") == {"summary": ["a line"]}


@pytest.mark.parametrize("name", ["easy-vqa-vilt", "easy-vqa-meter", "easy-vqa-meter-smarttrim"])
def test_shipped_checkpoints_answer_easy_vqa(cli, name, tmp_path):
    """The shipped weights, written as an ordinary checkpoint, answer the first 300 test questions as their card's
    full-split figures say, with and without their reduction (PuMer, SmartTrim), and ONNX Runtime agrees with
    PyTorch."""
    from pumer_export import zoo

    code, _, err = cli("pretrained", name, tmp_path / "ck")
    assert code == 0, err
    card = zoo.card(name)
    assert card["training"]["command"]
    code, _, err = cli("eval", tmp_path / "ck", "--dataset", "easy-vqa", "--limit", "300", "--backends", "torch,ort",
                       "--report", tmp_path / "r", "--no-progress", "--batch-size", "64", "--threads", "2")
    assert code == 0, err
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    measured = card["test"]  # the whole test split, measured when the weights were stored
    reduced = "smarttrim" if "smarttrim" in name else "pumer"  # the card's name of eval's reduced variant
    for backend in ("torch", "ort"):
        for variant, key in (("baseline", "baseline"), ("pumer", reduced)):
            got = report["results"][backend][variant]["accuracy"]
            # far above the majority answer (37 %), and near the card's full-split figure (300 questions: +-7)
            assert got > 60 and abs(got - measured[backend][key]["accuracy"]) < 7, (backend, variant, got)
    assert set(report["agreement"]) == {"ort vs torch (baseline)", f"ort vs torch ({reduced})"}  # named by method
    assert min(report["agreement"].values()) >= 0.99


#: easy-VQA's shape colours (RGB as its images have them) and shapes.
DRAWN_COLORS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0),
                "teal": (0, 128, 128), "brown": (165, 42, 42), "gray": (128, 128, 128), "black": (0, 0, 0)}


def draw_shape(shape: str, color: str, rng: np.random.Generator):
    """A new easy-VQA-style image: one solid shape of random size and place on a random near-white background."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (64, 64), tuple(int(v) for v in rng.integers(230, 256, 3)))
    draw = ImageDraw.Draw(image)
    size = int(rng.integers(12, 30))
    x, y = (int(v) for v in rng.integers(0, 64 - size, 2))
    fill = DRAWN_COLORS[color]
    if shape == "circle":
        draw.ellipse([x, y, x + size, y + size], fill=fill)
    elif shape == "rectangle":
        height = int(rng.integers(10, 30))
        y = min(y, 63 - height)
        draw.rectangle([x, y, x + size, y + height], fill=fill)
    else:
        draw.polygon([(x + size / 2, y), (x, y + size), (x + size, y + size)], fill=fill)
    return image


@pytest.mark.parametrize("name", ["easy-vqa-vilt", "easy-vqa-meter"])
def test_shipped_checkpoints_answer_shapes_they_have_never_seen(name, tmp_path):
    """On images drawn here (not easy-VQA's), each shape in turn in a random colour, easy-VQA-style questions about
    colour, shape and presence are answered as the drawing says (the answers come from the drawing, not a model)."""
    from pumer_export import zoo
    from pumer_export.runtime import VqaPipeline

    zoo.write(name, tmp_path / "ck")
    rng = np.random.default_rng(0)
    shapes = ("circle", "rectangle", "triangle")
    images, questions, answers = [], [], []
    for i in range(24):
        shape, color = shapes[i % 3], list(DRAWN_COLORS)[int(rng.integers(len(DRAWN_COLORS)))]
        image = draw_shape(shape, color, rng)
        for question, answer in (("what color is the shape?", color), ("what shape is in the image?", shape),
                                 (f"is there a {shape} in the image?", "yes"),
                                 (f"does the image contain a {shapes[(i + 1) % 3]}?", "no")):
            images.append(image), questions.append(question), answers.append(answer)
    got = [top[0]["answer"] for top in VqaPipeline(tmp_path / "ck", backend="torch")(images, questions, top_k=1)]
    right = np.array([g == a for g, a in zip(got, answers)])
    assert right.mean() >= 0.85 and right[0::4].mean() >= 0.85 and right[1::4].mean() >= 0.85, \
        [(q, a, g) for q, a, g, ok in zip(questions, answers, got, right) if not ok]


# ------------------------------------------------------------------------- sweep
def test_sweep_int8_axis(cli, tiny_init, tmp_path):
    """--int8 adds each point's dynamic-int8 ONNX Runtime export as a row of its own (accuracy with ONNX Runtime,
    speed against the float32 baseline)."""
    report = tmp_path / "sweep"
    code, _, err = cli("sweep", tiny_init, "--dataset", "easy-vqa", "--limit", "40", "--prune", "0.2", "--merge", "0.3",
                       "--text-merge", "0", "--iters", "2", "--warmup", "0", "--batch-size", "2", "--int8",
                       "--backends", "ort", "--report", report, "--no-progress", "--threads", "1")
    assert code == 0, err
    sweep = json.loads((report / "sweep.json").read_text())
    assert len(sweep["points"]) == 2
    rows = {p["precision"]: p for p in sweep["points"]}
    assert set(rows) == {"fp32", "int8"} and rows["int8"]["accuracy_backend"] == "ort int8"
    assert rows["int8"]["flop_ideal"] == rows["fp32"]["flop_ideal"] and set(rows["int8"]["speed"]) == {"ort"}
    assert (report / "exports" / "point0-int8" / "manifest.json").is_file()
    assert "int8" in (report / "sweep.md").read_text()


def test_pareto_front():
    from pumer_export.sweep import pareto_front

    points = [(1.0, 90.0), (1.5, 89.0), (1.4, 88.0), (2.0, 80.0), (1.5, 89.0), (0.9, 91.0)]
    # (1.4, 88) is beaten by (1.5, 89); equal points are both on the front
    assert pareto_front(points) == [0, 1, 3, 4, 5]


def test_sweep_reports_accuracy_and_speed(cli, tiny_init, tmp_path):
    report = tmp_path / "sweep"
    code, _, err = cli("sweep", tiny_init, "--dataset", "easy-vqa", "--limit", "60", "--prune", "0,0.2",
                       "--merge", "0.3", "--text-merge", "0", "--iters", "2", "--warmup", "0", "--batch-size", "2",
                       "--report", report, "--no-progress", "--threads", "1")
    assert code == 0, err
    sweep = json.loads((report / "sweep.json").read_text())
    assert [p["pumer"]["prune_ratio"] for p in sweep["points"]] == [0.2]  # prune 0 does nothing on ViLT: skipped
    assert any("prune 0 merge 0.3" in note and "does nothing" in note for note in sweep["notes"])
    for point in sweep["points"]:
        assert set(point["speed"]) == {"torch", "ort"} and point["flop_ideal"] > 1
        assert point["accuracy_drop"] == pytest.approx(
            sweep["baseline"]["accuracy"]["accuracy"] - point["accuracy"]["accuracy"])
    assert any(p["pareto"] for p in sweep["points"])
    assert (report / "sweep.png").stat().st_size > 0 and "Pareto" in (report / "sweep.md").read_text()
    code, _, err = cli("sweep", tiny_init, "--dataset", "easy-vqa", "--report", report)
    one_line_error(code, err, "--force")
    code, _, err = cli("sweep", tiny_init, "--dataset", "easy-vqa", "--backends", "torch", "--int8", "--report",
                       tmp_path / "s4")
    one_line_error(code, err, "add ort")
    code, _, err = cli("sweep", tiny_init, "--dataset", "easy-vqa", "--layers", "7", "--report", tmp_path / "s2")
    one_line_error(code, err, "outside the model's 2 layers")
    code, _, err = cli("sweep", tiny_init, "--dataset", "easy-vqa", "--finetune-steps", "3", "--report",
                       tmp_path / "s3")
    one_line_error(code, err, "--finetune-dataset")
