"""``pumer-export bench`` on the tiny model: files and fields (never timing values)."""

from __future__ import annotations

import json

import pytest


def test_bench_writes_results_speedups_and_plot(cli, tiny_checkpoint, tmp_path):
    out = tmp_path / "bench"
    code, stdout, err = cli("bench", tiny_checkpoint, "--backends", "torch,ort", "--batch-sizes", "1,2",
                            "--text-length", "16", "--warmup", "1", "--iters", "2", "--report", out, "--no-progress")
    assert code == 0, err
    for name in ("bench.json", "bench.md", "bench.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bench = json.loads((out / "bench.json").read_text())
    assert len(bench["results"]) == 2 * 2 * 2  # backends x batch sizes x variants
    for entry in bench["results"]:
        assert entry["backend"] in ("torch", "ort") and entry["batch_size"] in (1, 2)
        assert entry["dtype"] == "fp32" and entry["variant"] in ("baseline", "pumer")
        assert set(entry["latency_ms"]) >= {"p50", "p90", "p99"}
        assert entry["throughput"] > 0 and entry["peak_memory_mb"] > 0
    assert len(bench["speedups"]) == 2 * 2
    for entry in bench["speedups"]:
        assert set(entry) >= {"backend", "batch_size", "dtype", "speedup", "flop_ideal", "fraction_of_ideal"}
        assert entry["flop_ideal"] > 1
    assert bench["environment"]["versions"]["onnxruntime"]
    assert bench["settings"]["text_length"] == 16
    assert (out / "exports" / "fp32-pumer" / "model.onnx").is_file()
    assert "Speedup" in (out / "bench.md").read_text()

    # a second run reuses the exports (same settings) and the given-file path works
    code, _, err = cli("bench", tiny_checkpoint, "--backends", "ort", "--batch-sizes", "1", "--warmup", "0",
                       "--iters", "1", "--report", tmp_path / "again", "--no-progress",
                       "--onnx", out / "exports" / "fp32-pumer" / "model.onnx",
                       "--onnx-baseline", out / "exports" / "fp32-baseline" / "model.onnx")
    assert code == 0, err
    again = json.loads((tmp_path / "again" / "bench.json").read_text())
    assert again["settings"]["text_length"] == 16 and len(again["results"]) == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (("--backends", "tpu"), "unknown backend"),
        (("--image-size", "100x100"), "not a multiple of the patch size"),
        (("--text-length", "999"), "position table"),
        (("--backends", ""), "--backends is empty"),
        (("--warmup", "-1"), "non-negative integer"),
        (("--backends", "torch", "--onnx", "x.onnx"), "only used by the ort / trt backend"),
        (("--backends", "torch,ort", "--engine", "x.plan"), "only used by the trt backend"),
        (("--backends", "ort", "--onnx", "{missing}"), "does not exist"),
        (("--backends", "ort", "--onnx", "{foreign}"), "not a model export of pumer-export"),
        (("--device", "cuda", "--backends", "torch"), "no CUDA device"),
        (("--ort-provider", "cuda", "--backends", "ort"), "no CUDAExecutionProvider"),
        (("--report", "{file}"), "is a file, not a directory"),
    ],
)
def test_bench_errors(cli, tiny_checkpoint, tmp_path, args, message):
    import onnx
    import onnxruntime
    import torch
    from onnx import TensorProto, helper

    if "--device" in args and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    if "--ort-provider" in args and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(tmp_path / "foreign.onnx"))
    (tmp_path / "file").write_text("")
    args = [a.format(missing=tmp_path / "missing.onnx", foreign=tmp_path / "foreign.onnx", file=tmp_path / "file")
            for a in args]
    if "--report" not in args:
        args += ["--report", str(tmp_path / "b")]
    code, out, err = cli("bench", tiny_checkpoint, *args, "--no-progress")
    assert code == 2 and message in err, err
    assert out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "b").exists()


def test_bench_refuses_swapped_exports(cli, tiny_checkpoint, tmp_path):
    from pumer_export.checkpoints import load_pumer_model
    from pumer_export.onnx.export import export_onnx

    model = load_pumer_model(tiny_checkpoint)
    base = export_onnx(model, tmp_path / "base", image_size=(96, 96), text_length=8, reduction=False,
                       validate=False).path
    code, _, err = cli("bench", tiny_checkpoint, "--backends", "ort", "--onnx", base, "--report", tmp_path / "b")
    assert code == 2 and "is a baseline export; pass it as --onnx-baseline" in err


def test_bench_trt_without_tensorrt(cli, tiny_checkpoint, tmp_path):
    from pumer_export.parity.runners import tensorrt_available

    if tensorrt_available():
        pytest.skip("TensorRT is installed here")
    code, _, err = cli("bench", tiny_checkpoint, "--backends", "trt", "--report", tmp_path / "b", "--no-progress")
    assert code == 2 and "TensorRT" in err
