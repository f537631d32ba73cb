"""TensorRT engines of a LLaVA export (Victor): the optimization profiles ``build`` plans in plain Python, checked by
running each graph in ONNX Runtime at every profile point (min, opt, max) with the shapes the profile gives; the
command's one-line refusals; and, where TensorRT and a GPU exist, the engines' greedy tokens against ONNX Runtime's.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pumer_export.tensorrt.generation import plan_generation_build

N, M, DROP_LAYER, LAYERS = 16, 4, 2, 4  # the tiny preset's image tokens; Victor's registers and drop layer


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A random tiny Victor LLaVA (M = 4, k = 2) and its ONNX export."""
    from pumer_export.cli import main
    from pumer_export.models.llava import processing
    from pumer_export.models.llava.presets import llava_model

    root = tmp_path_factory.mktemp("llava-trt")
    stock = llava_model("tiny", seed=0)
    stock.save_pretrained(root / "stock")
    processing.tiny_processor(stock.config).save_pretrained(root / "stock")
    assert main(["apply", str(root / "stock"), str(root / "victor"), "--method", "victor", "--registers", str(M),
                 "--drop-layer", str(DROP_LAYER)]) == 0
    assert main(["onnx", str(root / "victor"), str(root / "export"), "--skip-validation"]) == 0
    return root / "export"


def _feeds(graph: str, shapes: dict[str, list[int]], meta: dict) -> dict[str, np.ndarray]:
    """Valid inputs of the given shapes: prompts laid out as the processor lays them out (image placeholders,
    registers, text), all-ones masks, zero caches."""
    feeds = {}
    for name, shape in shapes.items():
        if graph == "prefill" and name == "input_ids":
            ids = np.full(shape, 7, dtype=np.int64)
            ids[:, :N], ids[:, N:N + M] = meta["image_token_id"], meta["register_token_id"]
            feeds[name] = ids
        elif name == "position_ids":
            feeds[name] = np.full(shape, shapes["attention_mask_full"][1] - 1, dtype=np.int64)
        elif name in ("input_ids",) or name.startswith("attention_mask"):
            feeds[name] = np.ones(shape, dtype=np.int64)
        else:
            feeds[name] = np.zeros(shape, dtype=np.float32)
    return feeds


def test_profiles_fit_every_graph_at_every_point(export, tmp_path):
    import onnxruntime as ort

    plan = plan_generation_build(export, tmp_path / "engines", batch="1:2:3", new_tokens=8)
    ranges = plan.ranges
    positions = plan.meta["max_positions"]
    assert (ranges["sequence"].min, ranges["sequence"].max) == (N + M + 1, positions - 8)
    assert (ranges["past_full"].min, ranges["past_full"].max) == (N + M + 1, positions - 1)
    for key in ("min", "opt", "max"):
        assert getattr(ranges["past_short"], key) == getattr(ranges["past_full"], key) - N  # Victor drops all N
    for graph, shapes in plan.shapes.items():
        session = ort.InferenceSession(str(export / f"{graph}.onnx"), providers=["CPUExecutionProvider"])
        assert set(shapes) == {i.name for i in session.get_inputs()}
        names = [o.name for o in session.get_outputs()]
        for key in ("min", "opt", "max"):
            point = {name: shape[key] for name, shape in shapes.items()}
            outputs = dict(zip(names, session.run(None, _feeds(graph, point, plan.meta))))
            batch = getattr(ranges["batch"], key)
            if graph == "prefill":
                length = getattr(ranges["sequence"], key)
                assert outputs["present.0.key"].shape[:3] == (batch, 2, length)
                assert outputs[f"present.{DROP_LAYER}.key"].shape[2] == length - N
            if graph == "decode":
                past = getattr(ranges["past_full"], key)
                assert point["past.0.key"][2] == past and point[f"past.{DROP_LAYER}.key"][2] == past - N
                assert outputs["present.0.key"].shape[2] == past + 1
                assert outputs[f"present.{LAYERS - 1}.value"].shape[2] == past - N + 1
            assert np.isfinite(outputs["logits" if graph != "vision" else "image_features"]).all()


def test_a_prompt_range_the_model_cannot_hold_is_refused(export, tmp_path):
    from pumer_export.errors import PumerExportError

    with pytest.raises(PumerExportError, match="prompts hold 21 to"):
        plan_generation_build(export, tmp_path / "e", prompt="8:16:32")
    with pytest.raises(PumerExportError, match="fewer --new-tokens"):
        plan_generation_build(export, tmp_path / "e", new_tokens=1000)
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("argv, message", [
    (["--prompt", "1:2"], "--prompt expects MIN:OPT:MAX"),
    (["--new-tokens", "0"], "at least 1"),
    (["--plugins", "lib.so"], "standard ONNX operators only"),
    (["--batch", "4:2:8"], "MIN <= OPT <= MAX"),
])
def test_build_refusals_are_one_line_and_write_nothing(cli, export, tmp_path, argv, message):
    from conftest import one_line_error

    code, _, err = cli("build", export, tmp_path / "engines", *argv)
    one_line_error(code, err, message)
    assert not (tmp_path / "engines").exists()


def test_an_engine_folder_is_not_run_on_onnx_runtime(cli, export, tmp_path):
    """A folder whose generation.json says it holds engines: ort refuses it in one line naming --backend trt."""
    from PIL import Image

    folder = shutil.copytree(export, tmp_path / "engines")
    meta = json.loads((folder / "generation.json").read_text())
    (folder / "generation.json").write_text(json.dumps({**meta, "backend": "tensorrt"}))
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    code, _, err = cli("run", folder, "--image", tmp_path / "a.png", "--question", "what color?")
    assert code == 2 and "--backend trt" in err.strip().splitlines()[-1], err


def test_without_tensorrt_build_says_so_and_writes_nothing(cli, export, tmp_path):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("TensorRT is installed here: the engines are built by test_engines_generate_as_onnxruntime")
    from conftest import one_line_error

    code, _, err = cli("build", export, tmp_path / "engines")
    one_line_error(code, err, "TensorRT is not installed")
    assert not (tmp_path / "engines").exists()


@pytest.mark.slow
def test_engines_generate_as_onnxruntime(export, tmp_path):
    """With TensorRT and a GPU: build the three engines, then the greedy tokens of the engine folder equal ONNX
    Runtime's on the export, and the first logits agree."""
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (pip install tensorrt from NVIDIA's index)")
    from pumer_export import runtime
    from pumer_export.onnx.generation import example_prompt
    from pumer_export.tensorrt import device
    from pumer_export.tensorrt.generation import build_generation

    if device.current_gpu() is None:
        pytest.skip(f"no CUDA GPU: {device.cuda_info().error}")
    build_generation(export, tmp_path / "engines", batch="1:2:4", new_tokens=8)
    from pumer_export.models.llava import checkpoint

    prompt = example_prompt(checkpoint.load(export.parent / "victor"), batch=3, text_length=5)
    feeds = [prompt[k].numpy() for k in ("input_ids", "attention_mask", "pixel_values")]
    trt_backend, ort_backend = runtime.TrtGeneration(tmp_path / "engines"), runtime.OrtGeneration(export)
    assert np.array_equal(runtime.generate(trt_backend, *feeds, 6, stop_at_eos=False),
                          runtime.generate(ort_backend, *feeds, 6, stop_at_eos=False))
    features = ort_backend.image_features(feeds[2])
    np.testing.assert_allclose(trt_backend.prefill(feeds[0], feeds[1], features)[0],
                               ort_backend.prefill(feeds[0], feeds[1], features)[0], atol=1e-3, rtol=1e-3)
