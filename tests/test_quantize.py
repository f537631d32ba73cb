"""``pumer-export quantize``: int8 / fp8 export folders, what stays float, the quantized parity gate, and the
numbers bench and eval print beside fp32."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from pumer_export.config import PumerConfig
from pumer_export.datasets import load_dataset
from conftest import one_line_error
from pumer_export.quantize import (QuantizeOptions, calibration_inputs, check_float_region, float_region, keep_float,
                                   quantize_export)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def train_questions():
    return load_dataset("easy-vqa", "train")


@pytest.fixture(scope="module")
def vilt(tmp_path_factory):
    """The shipped easy-VQA ViLT, its PuMer export and its baseline export."""
    from pumer_export.checkpoints import load_pumer_model
    from pumer_export.onnx.export import export_onnx
    from pumer_export.zoo import write

    root = tmp_path_factory.mktemp("quant-vilt")
    ck = write("easy-vqa-vilt", root / "ck")
    model = load_pumer_model(ck)
    export_onnx(model, root / "ex", validate=False, processor_dir=ck)
    export_onnx(model, root / "base", validate=False, reduction=False, processor_dir=ck)
    return ck, root / "ex", root / "base"


@pytest.fixture(scope="module")
def vilt_dynamic(vilt, tmp_path_factory):
    out = tmp_path_factory.mktemp("quant-dyn") / "q"
    quantize_export(vilt[1], out, QuantizeOptions(mode="dynamic"))
    return out


def _calibrated(vilt, questions, folder: Path, **options) -> Path:
    calibration = calibration_inputs(vilt[1], questions=questions[::600], num_samples=32)
    quantize_export(vilt[1], folder, QuantizeOptions(calibration=calibration, **options))
    return folder


@pytest.fixture(scope="module")
def vilt_static(vilt, train_questions, tmp_path_factory):
    return _calibrated(vilt, train_questions, tmp_path_factory.mktemp("quant-static") / "qs", mode="static")


@pytest.fixture(scope="module")
def vilt_tensorrt(vilt, train_questions, tmp_path_factory):
    return _calibrated(vilt, train_questions, tmp_path_factory.mktemp("quant-trt") / "qt", target="tensorrt")


def _function_bytes(path: Path) -> dict[str, bytes]:
    return {f.name: f.SerializeToString(deterministic=True) for f in onnx.load(str(path)).functions}


# ----------------------------------------------------------------------------- what stays float
def test_float_region_is_the_decision_matmuls(vilt):
    """Per reduce layer: ViLT's prune reads the text queries and the keys, and the merge metric is the keys (two
    matrix products); the pumer nodes and the hidden states they carry are not traced."""
    model = onnx.load(str(vilt[1] / "model.onnx"))
    region = float_region(model)
    kinds = Counter(n.op_type for n in model.graph.node if n.name in region.pumer_nodes)
    assert kinds == {"PumerPrune": 2, "PumerMerge": 4}
    assert len(region.nodes) == 2 * 2
    producers = {o: n for n in model.graph.node for o in n.output}
    assert all(producers[t].op_type != "MatMul" or producers[t].name in region.nodes for t in region.tensors)
    carried = {n.input[0] for n in model.graph.node if n.domain == "pumer"}
    assert not carried & set(region.tensors)


def test_meter_float_region(tmp_path):
    """METER: cross-attention query and key, and the text self-attention key (the text merge metric)."""
    from pumer_export.models.meter.presets import tiny_meter_model
    from pumer_export.onnx.export import export_onnx

    model = tiny_meter_model(seed=0, pumer=PumerConfig(reduce_layers=(0, 1), prune_ratio=0.2, image_merge_ratio=0.2,
                                                       text_merge_ratio=0.2))
    export_onnx(model, tmp_path / "ex", validate=False)
    region = float_region(onnx.load(str(tmp_path / "ex" / "model.onnx")))
    assert len(region.pumer_nodes) == 6 and len(region.nodes) == 3 * 2


def test_quantization_leaves_the_first_decisions_alone(tmp_path):
    """With reduce layer 0, everything before the first decision is float (embeddings, layer norm), so the kept
    tokens of layer 0 equal the float export's exactly; quantizing the decision matrix products too moves them
    (the control shows the test can fail)."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from pumer_export.models.vilt.presets import random_inputs, tiny_vilt_model
    from pumer_export.onnx.export import export_onnx

    model = tiny_vilt_model(seed=3, pumer=PumerConfig(reduce_layers=(0, 2), prune_ratio=0.3, image_merge_ratio=0.3,
                                                      text_merge_ratio=0.2))
    export_onnx(model, tmp_path / "ex", validate=False)
    quantize_export(tmp_path / "ex", tmp_path / "q", QuantizeOptions(mode="dynamic"))
    quantize_dynamic(tmp_path / "ex" / "model.onnx", tmp_path / "all.onnx", op_types_to_quantize=["MatMul"],
                     per_channel=True, weight_type=QuantType.QInt8)
    feeds = {k: v.numpy() for k, v in random_inputs(model.config, 32, seed=1).items()}

    def kept(path):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(["layer0.keep_idx"], feeds)[0]

    reference = kept(tmp_path / "ex" / "model.onnx")
    np.testing.assert_array_equal(kept(tmp_path / "q" / "model.onnx"), reference)
    assert not np.array_equal(kept(tmp_path / "all.onnx"), reference)


def test_float_region_check_catches_qdq_before_a_decision(vilt, train_questions, tmp_path):
    """ONNX Runtime's static QDQ puts one pair on a tensor for all its consumers, the excluded key projection
    included: the check refuses that, and keep_float bypasses the pair."""
    from onnxruntime.quantization import QuantFormat, quantize_static

    from pumer_export.errors import PumerExportError
    from pumer_export.quantize import _Reader

    src = vilt[1] / "model.onnx"
    original = onnx.load(str(src))
    region = float_region(original)
    calibration = calibration_inputs(vilt[1], questions=train_questions[::900], num_samples=8)
    quantize_static(src, tmp_path / "raw.onnx", _Reader(calibration.batches), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["MatMul"], nodes_to_exclude=region.nodes + region.pumer_nodes)
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    with pytest.raises(PumerExportError, match="feeds a token decision"):
        check_float_region(original, raw, region)
    keep_float(original, raw, region)
    check_float_region(original, raw, region)


# ----------------------------------------------------------------------------- the quantized folders
@pytest.mark.parametrize("which", ["vilt_dynamic", "vilt_static", "vilt_tensorrt"])
def test_quantized_folder_keeps_pumer_nodes_and_bodies(which, vilt, request):
    folder = request.getfixturevalue(which)
    import onnxruntime as ort

    path = folder / "model.onnx"
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert _function_bytes(path) == _function_bytes(vilt[1] / "model.onnx")
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops["PumerPrune"] == 2 and ops["PumerMerge"] == 4
    region = float_region(onnx.load(str(vilt[1] / "model.onnx")))
    producers = {o: n for n in model.graph.node for o in n.output}
    for node in (n for n in model.graph.node if n.domain == "pumer"):  # fed by float tensors, no Q/DQ before them
        assert all(producers.get(i) is None or producers[i].op_type not in ("DequantizeLinear", "QuantizeLinear")
                   for i in node.input)
    manifest = json.loads((folder / "manifest.json").read_text())
    record = manifest["quantization"]
    assert record["float"]["matmul_nodes"] == region.nodes and record["versions"]["onnxruntime"]
    assert manifest["processor"] and all((folder / f).is_file() for f in manifest["processor"])
    meta = {p.key: json.loads(p.value) for p in model.metadata_props}
    assert meta["pumer.quantization"]["label"] == record["label"]
    assert meta["pumer.model_sha256"]  # the export's own records are kept
    # ONNX Runtime runs it as it is (the bodies, no custom library registered)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: (np.zeros if "float" in i.type else np.ones)([2, *i.shape[1:]]).astype(
        np.float32 if "float" in i.type else np.int64) for i in session.get_inputs()}
    logits = session.run(["logits"], feeds)[0]
    assert logits.shape == (2, 13) and np.isfinite(logits).all()


def test_dynamic_quantizes_the_matmuls(vilt_dynamic, vilt):
    model = onnx.load(str(vilt_dynamic / "model.onnx"))
    ops = Counter(n.op_type for n in model.graph.node)
    region = float_region(onnx.load(str(vilt[1] / "model.onnx")))
    float_matmuls = [n.name for n in model.graph.node if n.op_type == "MatMul"]
    assert set(region.nodes) <= set(float_matmuls)
    assert ops["MatMulInteger"] >= 20
    assert (vilt_dynamic / "model.onnx").stat().st_size < 0.6 * (vilt[1] / "model.onnx").stat().st_size


def test_tensorrt_output_has_qdq_around_the_matmuls(vilt_tensorrt, vilt):
    """Every quantized matrix product reads its weight and its activation through DequantizeLinear; the float
    region's read float tensors."""
    model = onnx.load(str(vilt_tensorrt / "model.onnx"))
    producers = {o: n for n in model.graph.node for o in n.output}
    constants = {i.name for i in model.graph.initializer} | {n.output[0] for n in model.graph.node
                                                              if n.op_type == "Constant"}

    def through_qdq(tensor):  # the tensor a DequantizeLinear(QuantizeLinear(x)) pair reads, else None
        dq = producers.get(tensor)
        if dq is None or dq.op_type != "DequantizeLinear":
            return None
        q = producers.get(dq.input[0])
        return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else dq.input[0]

    region = set(float_region(onnx.load(str(vilt[1] / "model.onnx"))).nodes)
    weighted = [n for n in model.graph.node if n.op_type == "MatMul"
                and any(i in constants or through_qdq(i) in constants for i in n.input)]
    assert len(weighted) >= 20
    for node in weighted:
        quantized = [through_qdq(i) is not None for i in node.input]
        if node.name in region:
            assert not any(quantized), node.name
        else:
            assert all(quantized), node.name


# ----------------------------------------------------------------------------- the gate, bench, eval, build
def test_validate_gates_quantized_exports_by_task_metrics(cli, vilt, vilt_dynamic, tmp_path):
    code, out, err = cli("validate", vilt[0], "--onnx", vilt_dynamic, "--dataset", "easy-vqa", "--num-samples", "32",
                         "--batch-size", "16", "--report", tmp_path / "rep")
    assert code == 0, out + err
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    names = {c["name"] for c in report["checks"]}
    assert {"top1", "scores", "layer1.keep_idx", "layer2.keep_idx"} <= names
    assert report["tolerances"]["quantized"]["label"] == "int8"
    entry = report["comparison"]["backends"]["onnxruntime"]
    assert set(entry["indices"]) >= {"layer1.image_slots", "layer2.text_slots"}  # merges reported
    assert "samples whose decisions moved" in (tmp_path / "rep" / "report.md").read_text()
    code, out, err = cli("validate", vilt[0], "--onnx", vilt_dynamic, "--atol", "1e-3")
    one_line_error(code, err, "quantized", "--atol")


def test_validate_fails_a_broken_quantization(cli, vilt, vilt_dynamic, tmp_path):
    """A planted bug (the weight scales of the quantized matrix products tripled) fails the gate."""
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(vilt_dynamic, broken)
    model = onnx.load(str(broken / "model.onnx"))
    changed = 0
    for init in model.graph.initializer:
        if init.name.endswith("_scale") and init.data_type == onnx.TensorProto.FLOAT:
            array = onnx.numpy_helper.to_array(init) * 3
            init.CopyFrom(onnx.numpy_helper.from_array(array.astype(np.float32), init.name))
            changed += 1
    assert changed
    onnx.save(model, str(broken / "model.onnx"))
    code, out, err = cli("validate", vilt[0], "--onnx", broken / "model.onnx", "--dataset", "easy-vqa",
                         "--num-samples", "32", "--batch-size", "16")
    assert code == 1 and "validation failed" in err, out + err


def test_bench_measures_int8_beside_fp32(vilt, tmp_path):
    from pumer_export.bench import BenchOptions, run_bench

    bench = run_bench(vilt[0], BenchOptions(backends=["torch", "ort"], dtypes=["fp32", "int8"], batch_sizes=(2,),
                                            warmup=1, iters=2, report_dir=tmp_path / "b", memory="off",
                                            progress=False, threads=1))
    rows = {(r["backend"], r["dtype"], r["variant"]): r for r in bench["results"]}
    assert ("ort", "int8", "pumer") in rows and ("torch", "int8", "pumer") not in rows
    assert rows[("ort", "int8", "pumer")]["model_mb"] < 0.6 * rows[("ort", "fp32", "pumer")]["model_mb"]
    eager = {(r["dtype"]): r for r in bench["vs_torch_eager"]}
    assert eager["int8"]["torch_dtype"] == "fp32"
    assert any("torch int8 skipped" in n for n in bench["notes"])
    md = (tmp_path / "b" / "bench.md").read_text()
    assert "int8 (torch fp32)" in md and "model MB" in md


def test_eval_shows_int8_accuracy_beside_fp32(cli, vilt, vilt_static, tmp_path):
    """int8 (made by eval) and a given int8-static export pair: accuracy within 2 points of fp32 on 300 easy-VQA
    test questions (measured on the whole test split: see the README)."""
    code, out, err = cli("eval", vilt[0], "--dataset", "easy-vqa", "--limit", "300", "--batch-size", "64",
                         "--backends", "torch,ort", "--dtype", "fp32,int8", "--report", tmp_path / "e", "--no-progress")
    assert code == 0, out + err
    report = json.loads((tmp_path / "e" / "report.json").read_text())
    assert set(report["results"]) == {"torch", "ort", "ort int8"}
    cost = report["quantization_cost"]["ort int8"]
    assert abs(cost["pumer"]) <= 2.0 and abs(cost["baseline"]) <= 2.0
    code, out, err = cli("eval", vilt[0], "--dataset", "easy-vqa", "--limit", "20", "--onnx", vilt_static / "..",
                         "--report", tmp_path / "e1")
    one_line_error(code, err, "holds no model.onnx")
    # a given quantized export alone: measured as what it is, the baseline made in the same precision (dynamic int8)
    dynamic = tmp_path / "e" / "exports" / "int8-pumer"
    code, out, err = cli("eval", vilt[0], "--dataset", "easy-vqa", "--limit", "20", "--backends", "ort", "--onnx",
                         dynamic, "--report", tmp_path / "e3", "--no-progress")
    assert code == 0, out + err
    assert set(json.loads((tmp_path / "e3" / "report.json").read_text())["results"]) == {"ort int8"}
    code, out, err = cli("eval", vilt[0], "--dataset", "easy-vqa", "--limit", "20", "--dtype", "int8-static",
                         "--onnx", vilt_static, "--onnx-baseline", vilt[2], "--report", tmp_path / "e2")
    one_line_error(code, err, "different precisions", "pumer int8-static", "baseline fp32")


def test_build_refuses_onnx_runtime_quantizations(vilt_dynamic, vilt_tensorrt, tmp_path):
    from pumer_export.errors import PumerExportError
    from pumer_export.tensorrt.engine import plan_build

    with pytest.raises(PumerExportError, match="--for tensorrt"):
        plan_build(vilt_dynamic / "model.onnx", tmp_path / "a.plan")
    with pytest.raises(PumerExportError, match="drop --fp16"):
        plan_build(vilt_tensorrt / "model.onnx", tmp_path / "b.plan", fp16=True)
    assert plan_build(vilt_tensorrt / "model.onnx", tmp_path / "c.plan").needs_plugins


def test_runtime_and_run_take_a_quantized_folder(cli, vilt, vilt_dynamic):
    """The pipeline and `run` take the quantized folder as it is and answer easy-VQA test questions as the float
    export does."""
    from pumer_export.runtime import VqaPipeline

    questions = load_dataset("easy-vqa", "test")[:16]
    images, texts = [str(q.image) for q in questions], [q.question for q in questions]
    int8 = [a[0]["answer"] for a in VqaPipeline(vilt_dynamic)(images, texts, top_k=1)]
    fp32 = [a[0]["answer"] for a in VqaPipeline(vilt[1])(images, texts, top_k=1)]
    assert sum(a == b for a, b in zip(int8, fp32)) >= 15
    code, out, err = cli("run", vilt_dynamic, "--image", images[0], "--question", texts[0], "--json")
    assert code == 0 and json.loads(out)["answers"][0]["answer"] == int8[0], out + err


# ----------------------------------------------------------------------------- bad inputs
def test_quantize_bad_inputs(cli, vilt, vilt_dynamic, tmp_path):
    from pumer_export.models.meter.presets import tiny_meter_model
    from pumer_export.parity.inputs import save_npz

    out = tmp_path / "out"
    one_line_error(*cli("quantize", vilt[0], out)[::2], "no manifest.json")          # a checkpoint, not an export
    one_line_error(*cli("quantize", vilt_dynamic, out)[::2], "quantized already")
    one_line_error(*cli("quantize", vilt[1], out, "--mode", "static")[::2], "calibrat")
    one_line_error(*cli("quantize", vilt[1], out, "--precision", "fp8")[::2], "--for tensorrt")
    code, _, err = cli("quantize", vilt[1], out, "--mode", "sometimes")
    assert code == 2 and "invalid choice" in err
    # calibration data of the other family (METER's inputs for a ViLT export)
    meter = tiny_meter_model(seed=0)
    from pumer_export.models.meter.presets import random_inputs

    feeds = {k: v.numpy() for k, v in random_inputs(meter.config, 2).items()}
    save_npz(tmp_path / "meter.npz", [feeds])
    one_line_error(*cli("quantize", vilt[1], out, "--mode", "static", "--calibration-inputs",
                        tmp_path / "meter.npz")[::2], "meter.npz")
    # an OUT that cannot be written (a read-only place even for root)
    one_line_error(*cli("quantize", vilt[1], "/proc/pumer-quantized")[::2], "/proc")
    one_line_error(*cli("quantize", tmp_path / "nothing", out)[::2], "does not exist")
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
