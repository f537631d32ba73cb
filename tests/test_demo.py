"""``pumer-export demo`` end to end (tiny model, CPU)."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
@pytest.mark.parametrize("family", ["vilt", "meter"])
def test_demo_end_to_end(cli, tmp_path, family):
    out = tmp_path / "demo"
    code, _, err = cli("demo", "--out", out, "--model", family, "--iters", "2", "--no-progress")
    assert code == 0, err
    assert json.loads((out / "checkpoint" / "config.json").read_text())["model_type"] == family
    for path in ("report.md", "checkpoint/config.json", "onnx/pumer/model.onnx", "onnx/baseline/model.onnx",
                 "validate/pumer/report.json", "validate/pumer/junit.xml", "validate/baseline/report.md",
                 "eval/report.json", "bench/bench.json", "bench/bench.md", "bench/bench.png"):
        assert (out / path).is_file(), path
    assert json.loads((out / "validate" / "pumer" / "report.json").read_text())["passed"] is True
    report = (out / "report.md").read_text()
    assert "PASSED" in report and "FLOP-ideal" in report and "## Accuracy" in report
    accuracy = json.loads((out / "eval" / "report.json").read_text())
    assert accuracy["num_questions"] == 1000
    for backend in ("torch", "ort"):  # the shipped trained model: far above easy-VQA's majority answer (37 %)
        assert accuracy["results"][backend]["baseline"]["accuracy"] > 65
        assert accuracy["results"][backend]["pumer"]["accuracy"] > 65
    assert "exports" not in [p.name for p in (out / "eval").iterdir()]  # the demo's own exports were reused

    # the demo's export folder is self-contained: an application answers questions with it
    from PIL import Image

    Image.new("RGB", (120, 90), (30, 120, 200)).save(tmp_path / "img.png")
    code, printed, err = cli("run", out / "onnx" / "pumer", "--image", tmp_path / "img.png", "--question",
                             "what is it?", "--json", "--top-k", "3")
    assert code == 0, err
    answers = json.loads(printed)["answers"]
    assert len(answers) == 3 and answers[0]["score"] >= answers[1]["score"] >= answers[2]["score"]
    code, printed, err = cli("run", out / "checkpoint", "--backend", "torch", "--image", tmp_path / "img.png",
                             "--question", "what is it?", "--json")
    assert code == 0, err
    assert json.loads(printed)["answers"][0]["answer"] == answers[0]["answer"]

    code, _, err = cli("demo", "--out", out, "--no-progress")
    assert code == 2 and "--force" in err


def test_failed_demo_leaves_nothing_behind(cli, tmp_path, monkeypatch):
    from pumer_export import bench
    from pumer_export.errors import PumerExportError

    def broken_bench(*args, **kwargs):
        raise PumerExportError("benchmark failed on purpose")

    monkeypatch.setattr(bench, "run_bench", broken_bench)
    out = tmp_path / "demo"
    code, _, err = cli("demo", "--out", out, "--iters", "1", "--no-progress")
    assert code == 2 and "benchmark failed on purpose" in err
    assert not out.exists()
