"""LLaVA through the commands a user runs: apply (Victor, FastV), info, onnx, validate, run, eval, bench, finetune,
and the one-line errors for bad inputs; the stock class against transformers' own forward."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import interrupt_after_first_save
from pumer_export.models.llava import checkpoint, decoding, processing
from pumer_export.models.llava.presets import llava_model


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A random tiny stock LLaVA in the llava-hf layout (made with transformers and the built-in processor), its
    Victor (M = 4, k = 2) and FastV (R = 6, k = 2) checkpoints made by ``apply``."""
    from pumer_export.cli import main

    root = tmp_path_factory.mktemp("llava")
    stock = llava_model("tiny", seed=0)
    stock.save_pretrained(root / "stock")  # transformers' own class: a stock llava-hf folder
    processing.tiny_processor(stock.config).save_pretrained(root / "stock")
    assert main(["apply", str(root / "stock"), str(root / "victor"), "--method", "victor", "--registers", "4",
                 "--drop-layer", "2"]) == 0
    assert main(["apply", str(root / "stock"), str(root / "fastv"), "--method", "fastv", "--keep-tokens", "6"]) == 0
    return root


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        path = root / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    lines = [{"image": p.name, "question": q, "answers": [a]} for p, (q, a) in
             zip(paths * 2, [("what color is the shape?", "red"), ("is there a circle in the image?", "no"),
                             ("what shape is it?", "circle"), ("is the shape green?", "yes"),
                             ("what color is it?", "blue"), ("does the image contain a triangle?", "no")])]
    (root / "questions.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root


def test_stock_class_is_transformers_llava(folders):
    """The stock class (the baseline every Victor / FastV figure is measured against) computes transformers'
    forward: logits at every real position of a left-padded batch, and greedy tokens equal to ``generate``."""
    theirs = llava_model("tiny", seed=0)
    ours = checkpoint.load(folders / "stock")
    assert type(ours).__name__ == "StockLlavaForConditionalGeneration"
    processor = checkpoint.load_processor(folders / "stock")
    from PIL import Image

    pictures = [Image.new("RGB", (32, 32), (200, 10, 10)), Image.new("RGB", (32, 32), (10, 10, 200))]
    feeds = processing.encode(processor, pictures, ["what color is the shape?", "is it a circle?"])
    ids, mask, pixels = (torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask", "pixel_values"))
    assert bool((mask == 0).any())  # left padding present
    logits, _ = ours.prefill(ids, mask, pixels)
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=mask, pixel_values=pixels,
                          position_ids=decoding.positions(mask)).logits
    real = mask.bool()
    torch.testing.assert_close(logits[real], expected[real], rtol=1e-5, atol=1e-5)


def test_info_shows_the_layout_and_costs(cli, folders):
    code, out, err = cli("info", folders / "victor", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["method"]["name"] == "victor" and data["layout"]["image"] == 16 and data["layout"]["registers"] == 4
    assert data["dropped_tokens"] == 16 and data["drop_layer"] == 2
    kv = data["costs"]["kv_bytes_per_layer"]["method"]
    length = data["layout"]["length"] + 16  # the prompt and 16 new tokens
    assert kv[2] * length == kv[0] * (length - 16)  # layers >= k hold exactly (L - N) / L of the others
    code, out, _ = cli("info", folders / "fastv")
    assert code == 0 and "FastV" in out and "keep_tokens" in out


def test_export_validate_run_and_eval(cli, folders, images, tmp_path):
    """onnx -> validate passes; run answers the same on ort and torch; eval scores stock and FastV on both
    backends with whole-answer agreement 1.0."""
    code, out, err = cli("onnx", folders / "fastv", tmp_path / "fx")
    assert code == 0, err
    assert {p.name for p in (tmp_path / "fx").iterdir()} >= {"vision.onnx", "prefill.onnx", "decode.onnx",
                                                             "generation.json", "tokenizer.json"}
    code, out, err = cli("validate", folders / "fastv", "--onnx", tmp_path / "fx", "--num-samples", "3",
                         "--report", tmp_path / "vr")
    assert code == 0, err + out
    checks = json.loads((tmp_path / "vr" / "report.json").read_text())["checks"]
    assert {c["name"].split(") ")[1] for c in checks} == {"image_features", "prefill logits", "present shapes",
                                                         "present values", "greedy tokens"}
    answers = {}
    for backend, source in (("ort", tmp_path / "fx"), ("torch", folders / "fastv")):
        code, out, err = cli("run", source, "--backend", backend, "--pairs", images / "questions.jsonl", "--json")
        assert code == 0, err
        answers[backend] = [row["answer"] for row in json.loads(out)]
    assert answers["ort"] == answers["torch"] and len(answers["ort"]) == 6
    code, out, err = cli("eval", folders / "fastv", "--jsonl", images / "questions.jsonl", "--report",
                         tmp_path / "ev", "--no-progress", "--onnx", tmp_path / "fx")
    assert code == 0, err
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert set(report["results"]) == {"stock", "fastv"} and set(report["results"]["fastv"]) == {"torch", "ort"}
    assert min(report["agreement"].values()) == 1.0 and "drop" in report["results"]["fastv"]["ort"]


def test_a_broken_export_fails_validation_and_other_weights_are_refused(cli, folders, tmp_path):
    """validate can fail: the checkpoint's own export with one decoder weight of the prefill graph perturbed fails
    the prefill checks (exit 1); an export of other weights (another seed) is refused before any check (exit 2)."""
    import onnx
    from onnx import numpy_helper

    code, _, err = cli("onnx", folders / "victor", tmp_path / "x", "--skip-validation")
    assert code == 0, err
    graph = onnx.load(str(tmp_path / "x" / "prefill.onnx"))
    weight = max(graph.graph.initializer, key=lambda t: int(np.prod(t.dims)))  # the largest: embeddings or head
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) + np.float32(0.05), weight.name))
    onnx.save(graph, str(tmp_path / "x" / "prefill.onnx"))
    code, out, err = cli("validate", folders / "victor", "--onnx", tmp_path / "x", "--num-samples", "2")
    assert code == 1 and "FAILED" in err and "prefill logits" in err, err
    code, _, err = cli("apply", folders / "stock", tmp_path / "v7", "--method", "victor", "--registers", "4",
                       "--drop-layer", "2", "--seed", "7")
    assert code == 0, err
    code, _, err = cli("onnx", tmp_path / "v7", tmp_path / "x7", "--skip-validation")
    assert code == 0, err
    code, out, err = cli("validate", folders / "victor", "--onnx", tmp_path / "x7", "--num-samples", "2")
    errors = [line for line in err.splitlines() if line.startswith("error:")]  # after the "loading" progress line
    assert code == 2 and len(errors) == 1 and "other weights" in errors[0], err


def test_bench_reports_both_variants_and_the_ideal(cli, folders, tmp_path):
    code, out, err = cli("bench", folders / "victor", "--backends", "torch", "--batch-sizes", "2", "--iters", "2",
                         "--warmup", "0", "--new-tokens", "2,3", "--report", tmp_path / "b", "--no-progress")
    assert code == 0, err
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    (result,) = report["results"]
    assert result["batch"] == 2 and result["stock"]["prefill_ms"] > 0 and result["method"]["decode_tokens_per_s"] > 0
    assert report["costs"]["prefill_flop_ideal"] > 1 and report["costs"]["kv_bytes_ratio"] < 1
    assert "FLOP-ideal prefill" in out


def test_finetune_victor_trains_the_registers_and_projector_only(cli, folders, images, tmp_path):
    code, out, err = cli("finetune", folders / "stock", tmp_path / "ft", "--method", "victor", "--registers", "2",
                         "--drop-layer", "3", "--jsonl", images / "questions.jsonl", "--epochs", "2",
                         "--batch-size", "3", "--lr", "1e-2", "--val-jsonl", images / "questions.jsonl",
                         "--no-progress")
    assert code == 0, err
    log = json.loads((tmp_path / "ft" / "training.json").read_text())
    assert log["method"] == "victor" and log["train"] == "projector" and len(log["epochs"]) == 2
    trained, start = checkpoint.load(tmp_path / "ft"), checkpoint.load(folders / "stock")
    assert trained.victor.registers == 2 and trained.victor.drop_layer == 3
    before, after = start.state_dict(), trained.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("multi_modal_projector" in k for k in changed)  # the tower and decoder stay frozen


def test_finetune_resume_continues_where_the_run_stopped(folders, images, tmp_path, monkeypatch):
    """An interrupted LLaVA run (Victor attached, registers and projector trained) resumed with --resume ends with
    exactly the weights of an uninterrupted one; other Victor settings or other parts are refused."""
    from pumer_export.datasets import load_jsonl
    from pumer_export.finetune import STATE_FILE, FinetuneOptions
    from pumer_export.generation import finetune
    from pumer_export.methods.victor.config import VictorConfig

    data = load_jsonl(images / "questions.jsonl")
    options = dict(epochs=2, batch_size=3, lr=1e-2, progress=False, threads=1, method="victor")
    settings = VictorConfig(registers=2, drop_layer=3)

    def train(out, *, parts="projector", victor=settings, **extra):
        return finetune.run_finetune(folders / "stock", tmp_path / out, data, FinetuneOptions(**options, **extra),
                                     parts=parts, victor_settings=victor, validation=data)

    train("straight")
    interrupt_after_first_save(monkeypatch, finetune, lambda: train("resumed"))
    assert len(json.loads((tmp_path / "resumed" / "training.json").read_text())["epochs"]) == 1
    with pytest.raises(Exception, match="--registers"):
        train("resumed", victor=VictorConfig(registers=3, drop_layer=3), resume=True)
    with pytest.raises(Exception, match="--train"):
        train("resumed", parts="projector+language", resume=True)
    log = train("resumed", resume=True)
    assert [e["epoch"] for e in log["epochs"]] == [1, 2] and log["step"] == 4
    straight = torch.load(tmp_path / "straight" / STATE_FILE, weights_only=False)["model"]
    resumed = torch.load(tmp_path / "resumed" / STATE_FILE, weights_only=False)["model"]
    for name, value in straight.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=1e-6)


def test_victor_adds_its_placeholder_to_a_tokenizer_without_one(cli, tmp_path):
    """A stock llava-hf folder whose tokenizer has no <reg> and whose vocabulary is full: apply adds the token and
    grows the embedding table; the Victor checkpoint then answers through the processor it wrote."""
    from PIL import Image
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import CLIPImageProcessor, LlavaProcessor, PreTrainedTokenizerFast

    words = ["<unk>", "<s>", "</s>", "<pad>", "<image>", "what", "color", "is", "it", "?", "user", "assistant", ":"]
    tokenizer = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", extra_special_tokens=["<image>"], padding_side="left")
    model = llava_model("tiny", vocab_size=len(words))
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    LlavaProcessor(image_processor=images, tokenizer=fast, patch_size=8, image_token="<image>",
                   vision_feature_select_strategy=model.config.vision_feature_select_strategy,
                   num_additional_image_tokens=1).save_pretrained(tmp_path / "stock")
    model.save_pretrained(tmp_path / "stock")
    code, _, err = cli("apply", tmp_path / "stock", tmp_path / "victor", "--method", "victor", "--registers", "2",
                       "--drop-layer", "1")
    assert code == 0, err
    victor = checkpoint.load(tmp_path / "victor")
    assert victor.config.register_token_id == len(words) and victor.config.text_config.vocab_size == len(words) + 1
    Image.new("RGB", (32, 32), (0, 200, 0)).save(tmp_path / "green.png")
    code, out, err = cli("run", tmp_path / "victor", "--image", tmp_path / "green.png",  # a checkpoint: PyTorch
                         "--question", "what color is it?", "--json")
    assert code == 0, err
    assert json.loads(out)[0]["question"] == "what color is it?"
    code, _, err = cli("run", tmp_path / "victor", "--backend", "ort", "--image", tmp_path / "green.png",
                       "--question", "what color is it?")
    assert code == 2 and "is a checkpoint" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("argv, message", [
    (["apply", "{stock}", "{tmp}/x", "--method", "victor", "--drop-layer", "9"], "past the language model's 4"),
    (["apply", "{stock}", "{tmp}/x", "--method", "victor", "--registers", "0", "--drop-layer", "2"], "at least 1"),
    (["apply", "{stock}", "{tmp}/x", "--method", "fastv"], "needs --keep-tokens"),
    (["apply", "{stock}", "{tmp}/x", "--method", "fastv", "--keep-tokens", "17"], "an image has 16"),
    (["apply", "{stock}", "{tmp}/x", "--layers", "1"], "apply --layers is for ViLT and METER"),
    (["apply", "{victor}", "{tmp}/x", "--method", "fastv", "--keep-tokens", "2"], "already carries victor"),
    (["sweep", "{victor}", "--jsonl", "{questions}", "--report", "{tmp}/b"], "is a LLaVA checkpoint"),
    (["validate", "{victor}"], "--onnx DIR"),
    (["bench", "{stock}", "--report", "{tmp}/b"], "stock LLaVA"),
    (["finetune", "{victor}", "{tmp}/x", "--jsonl", "{questions}", "--relabel"], "not LLaVA"),
])
def test_bad_inputs_are_one_line_and_write_nothing(cli, folders, images, tmp_path, argv, message):
    names = {"stock": folders / "stock", "victor": folders / "victor", "tmp": tmp_path,
             "questions": images / "questions.jsonl"}
    code, out, err = cli(*[a.format(**names) for a in argv])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x").exists() and not (tmp_path / "b").exists()


def test_a_checkpoint_without_an_image_token_is_one_line(cli, folders, tmp_path):
    import shutil

    shutil.copytree(folders / "stock", tmp_path / "broken")
    config = json.loads((tmp_path / "broken" / "config.json").read_text())
    config.pop("image_token_id", None)  # transformers' default (32000) is no token of this vocabulary
    config.pop("image_token_index", None)
    (tmp_path / "broken" / "config.json").write_text(json.dumps(config))
    code, _, err = cli("info", tmp_path / "broken")
    assert code == 2 and "image_token_id" in err and len(err.strip().splitlines()) == 1, err


def test_a_prompt_longer_than_the_positions_is_one_line(folders):
    from pumer_export import runtime
    from pumer_export.errors import PumerExportError

    model = checkpoint.load(folders / "victor")
    positions = model.config.text_config.max_position_embeddings
    ids = torch.full((1, positions), 7)
    ids[0, 3:3 + 16] = 4
    ids[0, 19:23] = 5
    mask = torch.ones_like(ids)
    pixels = torch.zeros(1, 3, 32, 32)
    with pytest.raises(PumerExportError, match="longer than the model's"):
        runtime.generate(runtime.TorchGeneration(model), ids.numpy(), mask.numpy(), pixels.numpy(), 4)


@pytest.mark.parametrize("name, variant", [("easy-vqa-llava", "stock"), ("easy-vqa-llava-victor", "victor")])
def test_shipped_llava_checkpoints_answer_easy_vqa(cli, name, variant, tmp_path):
    """The shipped LLaVA weights, written as an ordinary llava-hf folder, generate the answers of the first 200 test
    questions about as well as their card's figure for the whole measured set says."""
    from pumer_export import zoo

    code, _, err = cli("pretrained", name, tmp_path / "ck")
    assert code == 0, err
    card = zoo.card(name)
    assert card["training"]["command"]
    if variant == "stock":  # an ordinary llava-hf folder: transformers' class named
        config = json.loads((tmp_path / "ck" / "config.json").read_text())
        assert config["architectures"] == ["LlavaForConditionalGeneration"]
    code, _, err = cli("eval", tmp_path / "ck", "--dataset", "easy-vqa", "--limit", "200", "--backends", "torch",
                       "--report", tmp_path / "r", "--no-progress", "--batch-size", "64")
    assert code == 0, err
    got = json.loads((tmp_path / "r" / "report.json").read_text())["results"][variant]["torch"]["accuracy"]
    expected = card["test"]["torch"][variant]["accuracy"]
    # far above the majority answer's share (37 %), and near the card's figure (200 questions: +-8)
    assert got > 60 and abs(got - expected) < 8, (got, expected)
