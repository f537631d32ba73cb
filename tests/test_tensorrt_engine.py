"""Real TensorRT engines: build, load, run and compare with ONNX Runtime on an exported tiny model.

Needs TensorRT (``import tensorrt``), a CUDA GPU and the plugin library built
(``pumer-export build-plugins``, or ``PUMER_PLUGINS``); each missing piece skips with its reason.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

trt = pytest.importorskip(
    "tensorrt", reason="TensorRT is not installed (pip install tensorrt from NVIDIA's index); engine tests need it"
)

from pumer_export.errors import PumerExportError  # noqa: E402
from pumer_export.tensorrt import device, sidecar as sc  # noqa: E402
from pumer_export.tensorrt.engine import build_engine, find_plugins, load_engine  # noqa: E402

pytestmark = pytest.mark.slow

IMAGE_SIZE = (96, 96)
TEXT_LENGTH = 8


@pytest.fixture(scope="module")
def plugin_library():
    if device.current_gpu() is None:
        pytest.skip(f"no CUDA GPU: {device.cuda_info().error}")
    try:
        return find_plugins(None)
    except PumerExportError as exc:
        pytest.skip(f"plugin library not built: {exc}")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, plugin_library):
    from pumer_export.onnx.export import export_onnx
    from pumer_export.models.vilt.presets import tiny_vilt_model

    model = tiny_vilt_model()
    outdir = tmp_path_factory.mktemp("trt") / "export"
    export_onnx(model, outdir, image_size=IMAGE_SIZE, text_length=TEXT_LENGTH, validate=False)
    return model, outdir / "model.onnx"


@pytest.fixture(scope="module")
def engine_path(exported, plugin_library):
    _, onnx_path = exported
    out = onnx_path.parent.parent / "model.plan"
    result = build_engine(onnx_path, out, plugins=plugin_library, batch="1:2:4", workspace="1G",
                          timing_cache=onnx_path.parent.parent / "timing.cache")
    return result.plan


def _feeds(model, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    from pumer_export.onnx.export import example_inputs

    inputs = example_inputs(model.config, batch, text_length=TEXT_LENGTH, image_size=IMAGE_SIZE, seed=seed)
    return {name: tensor.numpy() for name, tensor in inputs.items()}


def test_build_writes_plan_sidecar_and_cache(engine_path, plugin_library):
    record = sc.read_sidecar(engine_path)
    assert record["tensorrt"]["version"] == trt.__version__
    assert record["gpu"]["sm"] == device.current_gpu().sm
    assert record["profile"]["batch"] == {"min": 1, "opt": 2, "max": 4}
    assert record["plugin_library"]["sha256"] == sc.sha256_file(plugin_library)
    assert record["function_policy"]["plugin_layers"] == record["function_policy"]["pumer_nodes"] > 0
    assert record["engine"]["sha256"] == sc.sha256_file(engine_path)
    assert (engine_path.parent / "timing.cache").stat().st_size > 0


@pytest.mark.parametrize("batch", [1, 3])
def test_engine_matches_onnxruntime(exported, engine_path, plugin_library, batch):
    import onnxruntime as ort

    model, onnx_path = exported
    feeds = _feeds(model, batch, seed=batch)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    expected = dict(zip(names, session.run(None, feeds)))
    got = load_engine(engine_path, plugins=plugin_library).infer(feeds)
    np.testing.assert_allclose(got["logits"], expected["logits"], atol=2e-3, rtol=2e-3)
    for name in names[1:]:  # the reduction indices: exact
        np.testing.assert_array_equal(got[name].astype(np.int64), expected[name], err_msg=name)


def test_load_refuses_a_sidecar_mismatch(engine_path, plugin_library, tmp_path):
    copy = tmp_path / "model.plan"
    copy.write_bytes(engine_path.read_bytes())
    record = json.loads(sc.sidecar_path(engine_path).read_text())
    record["tensorrt"]["version"] = "10.0.0.1" if not trt.__version__.startswith("10.0.0") else "10.1.0"
    record["gpu"]["sm"] = "1.0"
    sc.write_sidecar(copy, record)
    with pytest.raises(PumerExportError, match="built with TensorRT .*this GPU is"):
        load_engine(copy, plugins=plugin_library)


# ------------------------------------------------------------- SmartTrim: the compaction plugin in an engine
@pytest.fixture(scope="module")
def smarttrim_engine(tmp_path_factory, plugin_library):
    """A tiny SmartTrim METER (random trimmers: the samples of a batch keep different counts), its export and an
    engine whose batch profile covers 1 to 6."""
    from conftest import random_smarttrim_meter
    from pumer_export.methods.smarttrim.config import SmartTrimConfig
    from pumer_export.onnx.export import export_onnx

    root = tmp_path_factory.mktemp("trt-smarttrim")
    model = random_smarttrim_meter(SmartTrimConfig(cross_layers=(0, 2, 3), vit_layers=(1,), head_layers=(1, 3)))
    model.save_pretrained(root / "ck")
    export_onnx(model, root / "export", validate=False)
    result = build_engine(root / "export" / "model.onnx", root / "model.plan", plugins=plugin_library, batch="1:3:6",
                          workspace="1G")
    return root, result.plan


def test_smarttrim_engine_passes_validate(smarttrim_engine, cli, tmp_path):
    """PumerCompact under TensorRT (a size-tensor count, the token dimension data-dependent): validate runs the
    reference, ONNX Runtime and the engine on batches whose samples keep different counts, and every sample's logits
    and kept positions agree (near-ties reported, not failed)."""
    root, plan = smarttrim_engine
    record = sc.read_sidecar(plan)
    assert record["function_policy"]["plugin_layers"] == record["function_policy"]["pumer_nodes"] > 0
    code, out, err = cli("validate", root / "ck", "--onnx", root / "export", "--engine", plan, "--num-samples", 6,
                         "--batch-size", 3, "--report", tmp_path / "r")
    assert code == 0, out + err
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["passed"] is True
    engine = report["comparison"]["backends"]["tensorrt"]
    assert {"cross0.image_kept", "vit1.image_kept"} <= set(engine["indices"])
    assert engine["outputs"]["logits"]["stats"]["max_abs"] <= engine["outputs"]["logits"]["atol"]
