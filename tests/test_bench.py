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
    ],
)
def test_bench_errors(cli, tiny_checkpoint, tmp_path, args, message):
    code, _, err = cli("bench", tiny_checkpoint, *args, "--report", tmp_path / "b", "--no-progress")
    assert code == 2 and message in err


def test_bench_trt_without_tensorrt(cli, tiny_checkpoint, tmp_path):
    from pumer_export.parity.runners import tensorrt_available

    if tensorrt_available():
        pytest.skip("TensorRT is installed here")
    code, _, err = cli("bench", tiny_checkpoint, "--backends", "trt", "--report", tmp_path / "b", "--no-progress")
    assert code == 2 and "TensorRT" in err
