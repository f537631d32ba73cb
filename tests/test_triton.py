"""Serving with Triton: repository configs against Triton's schema, and end to end against a real server.

The end-to-end tests need a Triton server with the Python backend (the nvidia-pytriton package's, or an unpacked
wheel in $PUMER_TRITON_ROOT) and numpy < 2 (that server's Python backend stub mis-reads string tensors with
numpy 2; nvidia-pytriton pins numpy<2 for this reason): they run in a serving environment made with
``pip install -e ".[serve,test]"``, which .ci/run sets up next to the main one.
"""

from __future__ import annotations

import json
import socket
import statistics
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pumer_export import models
from conftest import one_line_error, random_smarttrim_meter

pytest.importorskip("tritonclient", reason="tritonclient is not installed (pip install -e \".[serve]\")")


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """A tiny ViLT checkpoint with its processor and its ONNX export folder."""
    from pumer_export.checkpoints import load_pumer_model
    from pumer_export.onnx.export import export_onnx

    family = models.get("vilt")
    root = tmp_path_factory.mktemp("serve")
    model = family.preset_model("tiny", seed=5)
    model.save_pretrained(root / "checkpoint")
    family.tiny_processor(model.config).save(root / "checkpoint")
    export_onnx(load_pumer_model(root / "checkpoint"), root / "export", processor_dir=root / "checkpoint",
                validate=False)
    return root / "export"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    paths = []
    for i, size in enumerate([(64, 48), (48, 96), (100, 100), (30, 60)]):
        path = folder / f"img{i}.png"
        Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


QUESTIONS = ["what is it?", "what color is the circle?", "how many squares are there?", "is it red?"]


# ------------------------------------------------------------------------- configs
@pytest.mark.parametrize("step", ["python", "onnxruntime"])
def test_repository_configs_parse_against_the_triton_schema(cli, export, tmp_path, step):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    repo = tmp_path / "repo"
    code, _, err = cli("triton", export, repo, "--backend", step, "--max-batch-size", "8", "--top-k", "3")
    assert code == 0, err
    configs = {}
    for path in sorted(repo.glob("*/config.pbtxt")):
        configs[path.parent.name] = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    assert set(configs) == {"pumer_preprocess", "pumer_model", "pumer_postprocess", "pumer_vqa"}
    model = configs["pumer_model"]
    manifest = json.loads((export / "manifest.json").read_text())
    assert [i.name for i in model.input] == [i["name"] for i in manifest["inputs"]]
    assert [list(i.dims) for i in model.input] == [i["shape"][1:] for i in manifest["inputs"]]
    assert model.max_batch_size == 8 and model.dynamic_batching.max_queue_delay_microseconds == 2000
    if step == "onnxruntime":
        assert model.platform == "onnxruntime_onnx" and (repo / "pumer_model" / "1" / "model.onnx").is_file()
    else:
        assert model.backend == "python" and (repo / "pumer_model" / "1" / "export" / "manifest.json").is_file()
    steps = [s.model_name for s in configs["pumer_vqa"].ensemble_scheduling.step]
    assert steps == ["pumer_preprocess", "pumer_model", "pumer_postprocess"]
    assert list(configs["pumer_postprocess"].output[0].dims) == [3]
    assert "tritonserver" in (repo / "README.md").read_text()


def test_quantized_export_makes_a_repository_as_it_is(cli, export, tmp_path):
    """A `pumer-export quantize` folder is an ordinary export folder: the repository carries its int8 model."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from pumer_export.quantize import QuantizeOptions, quantize_export

    quantize_export(export, tmp_path / "q", QuantizeOptions(mode="dynamic"))
    repo = tmp_path / "repo"
    code, _, err = cli("triton", tmp_path / "q", repo, "--backend", "onnxruntime")
    assert code == 0, err
    served = repo / "pumer_model" / "1" / "model.onnx"
    assert served.read_bytes() == (tmp_path / "q" / "model.onnx").read_bytes()
    model = text_format.Parse((repo / "pumer_model" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    manifest = json.loads((tmp_path / "q" / "manifest.json").read_text())
    assert manifest["quantization"]["label"] == "int8"
    assert [i.name for i in model.input] == [i["name"] for i in manifest["inputs"]]


def test_tensorrt_repository_maps_the_gpu_to_the_plan(cli, export, tmp_path):
    """An engine folder (its manifest written as `build` writes it; the engine itself needs TensorRT)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from pumer_export.tensorrt.engine import write_engine_folder

    plan = tmp_path / "engine" / "model.plan"
    plan.parent.mkdir()
    plan.write_bytes(b"an engine")
    record = {"profile": {"batch": {"min": 1, "opt": 4, "max": 16}}, "gpu": {"sm": "8.7"},
              "precision": {"onnx_dtype": "fp32"}}
    write_engine_folder(export, plan, record)
    code, _, err = cli("triton", plan.parent, tmp_path / "repo", "--backend", "tensorrt", "--device", "gpu")
    assert code == 0, err
    config = text_format.Parse((tmp_path / "repo" / "pumer_model" / "config.pbtxt").read_text(),
                               model_config_pb2.ModelConfig())
    assert config.platform == "tensorrt_plan" and dict(config.cc_model_filenames) == {"8.7": "model.plan"}
    assert config.max_batch_size == 16 and config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert "LD_PRELOAD=" in (tmp_path / "repo" / "README.md").read_text()
    code, _, err = cli("triton", export, tmp_path / "repo2", "--backend", "tensorrt")
    one_line_error(code, err, "needs an engine folder")


def test_triton_bad_inputs(cli, tmp_path):
    code, _, err = cli("triton", tmp_path, tmp_path / "repo")
    one_line_error(code, err, "no manifest.json")
    code, _, err = cli("serve", tmp_path)
    one_line_error(code, err, "not a pumer-export Triton repository")
    code, _, err = cli("ask", "--url", "127.0.0.1:1", "--image", "x.png", "--question", "what?")
    one_line_error(code, err, "no Triton server answers")


# --------------------------------------------------------------------- real server
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(export: Path, root: Path):
    """A running Triton server on ``export``'s repository (a context: its ports); skips where none can run."""
    from pumer_export.errors import MissingDependencyError
    from pumer_export.triton.repository import write_repository
    from pumer_export.triton.server import find_server, running_server

    if int(np.__version__.split(".")[0]) >= 2:
        pytest.skip("the Triton Python backend stub needs numpy<2 (nvidia-pytriton's pin): run in a serving "
                    "environment (pip install -e \".[serve,test]\")")
    try:
        find_server()
    except MissingDependencyError as exc:
        pytest.skip(str(exc))
    write_repository(export, root / "repo", max_batch_size=16, top_k=3)
    ports = {"http_port": _free_port(), "grpc_port": _free_port(), "metrics_port": _free_port()}
    return running_server(root / "repo", log=root / "server.log", **ports), ports


@pytest.fixture(scope="module")
def server(export, tmp_path_factory):
    running, ports = _serve(export, tmp_path_factory.mktemp("triton"))
    with running:
        yield ports


def test_bundled_server_names_a_missing_backend(cli, server, export, tmp_path):
    """An onnxruntime repository on the bundled (Python-backend-only) server: the missing backend is named before
    anything starts."""
    code, _, err = cli("triton", export, tmp_path / "ort-repo", "--backend", "onnxruntime")
    assert code == 0, err
    code, _, err = cli("serve", tmp_path / "ort-repo", "--http-port", str(_free_port()), "--grpc-port",
                       str(_free_port()), "--metrics-port", str(_free_port()))
    one_line_error(code, err, "onnxruntime_onnx backend", "--tritonserver", "--backend python")


def test_ask_top_k(cli, server, export, images):
    code, out, err = cli("ask", "--url", f"127.0.0.1:{server['http_port']}", "--image", images[0], "--question",
                         "what is it?", "--json", "--top-k", "2")
    assert code == 0, err
    assert len(json.loads(out)["answers"]) == 2


def _local_answers(export, images, questions, top_k=3):
    from pumer_export.runtime import VqaPipeline

    return VqaPipeline(export, "ort")(images, questions, top_k=top_k)


def test_ensemble_answers_exactly_as_run(server, export, images):
    from pumer_export.triton.client import VqaClient

    client = VqaClient(f"127.0.0.1:{server['http_port']}")
    local = _local_answers(export, images, QUESTIONS)
    for image, question, expected in zip(images, QUESTIONS, local):
        (got,) = client.ask([image], [question])
        assert [a["answer"] for a in got] == [a["answer"] for a in expected]
        np.testing.assert_allclose([a["score"] for a in got], [a["score"] for a in expected], atol=1e-5)


def test_ask_cli_matches_run(cli, server, export, images):
    code, out, err = cli("ask", "--url", f"127.0.0.1:{server['http_port']}", "--image", images[0], "--question",
                         "what is it?", "--json")
    assert code == 0, err
    asked = json.loads(out)["answers"]
    code, out, err = cli("run", export, "--image", images[0], "--question", "what is it?", "--json", "--top-k", "3")
    assert code == 0, err
    assert asked[0]["answer"] == json.loads(out)["answers"][0]["answer"]


def test_bad_requests_get_errors_and_the_server_keeps_serving(server, images):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    from pumer_export.triton.client import VqaClient, request_inputs

    url = f"127.0.0.1:{server['http_port']}"
    raw = httpclient.InferenceServerClient(url)
    good = images[0].read_bytes()
    image_only = request_inputs([good], ["what?"])[:1]
    wrong_type = httpclient.InferInput("QUESTION", [1, 1], "INT32")
    wrong_type.set_data_from_numpy(np.array([[7]], dtype=np.int32))
    bad = {
        "missing input": image_only,
        "corrupt image": request_inputs([b"\x89PNG not really"], ["what is it?"]),
        "empty question": request_inputs([good], ["   "]),
        "wrong dtype": [request_inputs([good], ["x"])[0], wrong_type],
    }
    for name, inputs in bad.items():
        with pytest.raises(InferenceServerException):
            raw.infer("pumer_vqa", inputs)
        (answers,) = VqaClient(url).ask([images[1]], ["what is it?"])  # still serving
        assert len(answers) == 3, name


def test_bounded_load_loses_nothing_and_batches(server, export, images, capsys):
    """16 concurrent clients x 25 requests on loopback (time-limited): every answer equals the local runtime's.
    Prints p50/p99 latency, throughput and the dynamic batcher's average batch size (figures, not assertions)."""
    import tritonclient.http as httpclient

    from pumer_export.triton.client import parse_answers, request_inputs
    from pumer_export.triton.server import average_batch_size, metrics

    clients, per_client, deadline = 16, 25, time.monotonic() + 240
    cases = [(images[i % len(images)], QUESTIONS[(i // len(images)) % len(QUESTIONS)]) for i in range(16)]
    expected = _local_answers(export, [c[0] for c in cases], [c[1] for c in cases])
    blobs = [c[0].read_bytes() for c in cases]
    latencies, failures, mismatches = [], [], []
    lock = threading.Lock()

    def worker(index):
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server['http_port']}", network_timeout=120)
        for n in range(per_client):
            if time.monotonic() > deadline:
                with lock:
                    failures.append("time limit")
                return
            case = (index + n) % len(cases)
            start = time.perf_counter()
            try:
                result = client.infer("pumer_vqa", request_inputs([blobs[case]], [cases[case][1]]))
            except Exception as exc:  # noqa: BLE001 - counted, reported below
                with lock:
                    failures.append(repr(exc))
                continue
            elapsed = time.perf_counter() - start
            (answers,) = parse_answers(result)
            with lock:
                latencies.append(elapsed)
                if [a["answer"] for a in answers] != [a["answer"] for a in expected[case]]:
                    mismatches.append(case)

    before = metrics(server["metrics_port"])
    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    after = metrics(server["metrics_port"])
    delta = {k: after[k] - before.get(k, 0.0) for k in after}
    assert not failures, failures[:3]
    assert len(latencies) == clients * per_client and not mismatches
    batch = average_batch_size(delta, "pumer_model")
    ms = sorted(1000 * t for t in latencies)
    with capsys.disabled():
        print(f"\nTriton load test: {len(ms)} requests from {clients} clients in {wall:.1f} s: "
              f"{len(ms) / wall:.1f} req/s, latency p50 {statistics.median(ms):.1f} ms, "
              f"p99 {ms[int(0.99 * (len(ms) - 1))]:.1f} ms, pumer_model average batch {batch:.2f}")
    assert batch is not None and batch >= 1.0


def test_symbolic_output_dims_are_variable():
    """A SmartTrim export's kept positions have a data-dependent length: Triton gets -1 (variable), not a crash."""
    from pumer_export.triton.repository import _dims

    assert _dims(["batch", 13]) == [13] and _dims(["batch", "u0"]) == [-1] and _dims(["batch", "7", "u3"]) == [7, -1]


# --------------------------------------------------------------- SmartTrim: counts that depend on the input
@pytest.fixture(scope="module")
def smarttrim_export(tmp_path_factory) -> Path:
    """A tiny METER with SmartTrim-style trimmers (random weights, tau at the median margin of the image-tower
    trimmer, so the questions keep different token counts), its processor and its ONNX export folder."""
    from pumer_export.methods.smarttrim.config import SmartTrimConfig
    from pumer_export.onnx.export import export_onnx

    family = models.get("meter")
    root = tmp_path_factory.mktemp("serve-smarttrim")
    model = random_smarttrim_meter(SmartTrimConfig(cross_layers=(0, 2), vit_layers=(1,), head_layers=(1,)))
    model.save_pretrained(root / "checkpoint")
    family.tiny_processor(model.config).save(root / "checkpoint")
    export_onnx(model, root / "export", processor_dir=root / "checkpoint", validate=False)
    return root / "export"


@pytest.fixture(scope="module")
def smarttrim_server(smarttrim_export, tmp_path_factory):
    running, ports = _serve(smarttrim_export, tmp_path_factory.mktemp("triton-smarttrim"))
    with running:
        yield ports


def test_smarttrim_served_answers_as_run(smarttrim_server, smarttrim_export, images):
    """A SmartTrim export behind Triton: a request of several questions (one batch whose samples keep different
    counts, compacted and padded in the graph) and concurrent single requests (batched by the server) answer as
    the local ONNX Runtime pipeline answers each question on its own."""
    from concurrent.futures import ThreadPoolExecutor

    from pumer_export.runtime import VqaPipeline
    from pumer_export.triton.client import VqaClient

    url = f"127.0.0.1:{smarttrim_server['http_port']}"
    pipeline = VqaPipeline(smarttrim_export, "ort")
    alone_outputs = [pipeline.backend.run(pipeline.encode([image], [question]))
                     for image, question in zip(images, QUESTIONS)]
    counts = {tuple(int((out[k] >= 0).sum()) for k in sorted(out) if k.endswith("_kept")) for out in alone_outputs}
    assert len(counts) > 1, "the questions should keep different token counts"
    alone = [pipeline([image], [question], top_k=3)[0] for image, question in zip(images, QUESTIONS)]

    def answers(result):
        return [a["answer"] for a in result], [a["score"] for a in result]

    together = VqaClient(url).ask(images, QUESTIONS)
    with ThreadPoolExecutor(4) as pool:
        concurrent = list(pool.map(lambda pair: VqaClient(url).ask([pair[0]], [pair[1]])[0],
                                   list(zip(images, QUESTIONS)) * 3))
    for i, expected in enumerate(alone):
        for got in (together[i], concurrent[i], concurrent[4 + i], concurrent[8 + i]):
            assert answers(got)[0] == answers(expected)[0]
            np.testing.assert_allclose(answers(got)[1], answers(expected)[1], atol=1e-5)
