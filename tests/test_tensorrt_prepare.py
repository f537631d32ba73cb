"""Plain-Python ONNX preparation for TensorRT: versions, function policy, precision, profiles (no TensorRT)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pumer_export.errors import PumerExportError
from pumer_export.ops import DOMAIN, op_spec_hash
from pumer_export.tensorrt import prepare
from pumer_export.tensorrt.prepare import BatchProfile, TrtVersion

BATCH, TOKENS, CHANNELS, DIM, HEADS, TEXT = "batch", 10, 8, 4, 2, 3


def make_pumer_model(*, batch: str | int = BATCH, metadata: dict | None = None, with_function: bool = True,
                     dtype: int = TensorProto.FLOAT) -> onnx.ModelProto:
    """x * w -> pumer::PumerPrune(text_len=3, keep=4, score_head=-1, ...), with the function body and metadata."""
    from pumer_export.onnx import functions

    def vi(name, elem, *dims):
        return helper.make_tensor_value_info(name, elem, [batch, *dims])

    weight = numpy_helper.from_array(np.linspace(0.5, 1.5, CHANNELS, dtype=np.float32), "w")
    inputs = ["xw", "metric", "queries", "keys", "key_mask", "text_mask"]
    nodes = [
        helper.make_node("Mul", ["x", "w"], ["xw"], name="scale"),
        functions.make_node("PumerPrune", inputs, ["x_kept", "metric_kept", "keep_idx"],
                            name="prune0", text_len=TEXT, keep=4, score_head=-1, image_start=TEXT, masking=0),
    ]
    graph = helper.make_graph(
        nodes, "pumer_test",
        [vi("x", TensorProto.FLOAT, TOKENS, CHANNELS), vi("metric", TensorProto.FLOAT, TOKENS, DIM),
         vi("queries", TensorProto.FLOAT, HEADS, TEXT, DIM), vi("keys", TensorProto.FLOAT, HEADS, TOKENS, DIM),
         vi("key_mask", TensorProto.FLOAT, TOKENS), vi("text_mask", TensorProto.FLOAT, TEXT)],
        [vi("x_kept", TensorProto.FLOAT, 4, CHANNELS), vi("metric_kept", TensorProto.FLOAT, 4, DIM),
         vi("keep_idx", TensorProto.INT64, 4)],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", functions.DEFAULT_OPSET),
                                                    helper.make_opsetid(DOMAIN, functions.DOMAIN_VERSION)], ir_version=10)
    if with_function:
        functions.add_functions(model)
    if dtype != TensorProto.FLOAT:
        model.graph.input[0].type.tensor_type.elem_type = dtype
    meta = {"pumer.format": 1, "pumer.op_spec_hash": op_spec_hash(), "pumer.dtype": "fp32"}
    meta.update(metadata or {})
    for key, value in meta.items():
        if value is not None:
            model.metadata_props.add(key=key, value=json.dumps(value))
    return model


def save(model: onnx.ModelProto, path: Path, external: bool = False) -> Path:
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=0)
    else:
        onnx.save_model(model, str(path))
    return path


# -------------------------------------------------------------------------------- versions
@pytest.mark.parametrize("text, expected", [
    ("10.3.0.30", TrtVersion(10, 3, 0, 30)),
    ("10.15.1.post1", TrtVersion(10, 15, 1)),
    ("11.0", TrtVersion(11, 0)),
    (" 8.6.1 ", TrtVersion(8, 6, 1)),
    ("10.8.0.43+cuda12", TrtVersion(10, 8, 0, 43)),
])
def test_parse_trt_version(text, expected):
    assert prepare.parse_trt_version(text) == expected


def test_parse_trt_version_order_and_errors():
    assert prepare.parse_trt_version("10.10") > prepare.parse_trt_version("10.9.9")
    assert str(prepare.parse_trt_version("10.3.0.30")) == "10.3.0"
    with pytest.raises(PumerExportError, match="cannot read a TensorRT version"):
        prepare.parse_trt_version("ten")


# -------------------------------------------------------------------------- function policy
@pytest.mark.parametrize("version, winner", [
    ("10.0.0", "function"),
    ("10.3.0.30", "function"),  # JetPack 6
    ("10.6.0", "function"),
    ("10.7.0", "plugin"),
    ("10.14.1", "plugin"),
    ("10.15.0", "plugin"),
    ("11.0.0", "plugin"),
    ("11.4.1", "plugin"),
])  # fmt: skip
def test_function_policy_table(version, winner):
    policy = prepare.function_policy(version)
    assert policy.default_winner == winner
    assert policy.strip_functions is True  # every version: a missing plugin must fail the parse
    assert policy.version == str(prepare.parse_trt_version(version))


def test_function_policy_old_and_future_versions():
    with pytest.raises(PumerExportError, match="too old.*10.0"):
        prepare.function_policy("8.6.1")
    future = prepare.function_policy("12.1")
    assert future.strip_functions and "newer than this table" in future.reason


def test_parser_never_sets_plugin_override():
    """ENABLE_PLUGIN_OVERRIDE would turn standard ScatterND / ScatterElements / Split nodes into TensorRT's legacy
    plugins of those names (registered by init_libnvinfer_plugins): the engine build must not set it."""
    import inspect

    from pumer_export.tensorrt import trt_api

    source = inspect.getsource(trt_api)
    assert "ENABLE_PLUGIN_OVERRIDE" not in source and "parser.set_flag" not in source
    assert "plugin_override" not in inspect.signature(trt_api.build_serialized_engine).parameters


# ------------------------------------------------------------------------------- precision
@pytest.mark.parametrize("version, dtype, fp16, strongly, flag", [
    ("10.3", "float32", False, True, False),
    ("10.3", "float32", True, False, True),
    ("10.3", "fp16", False, True, False),
    ("10.3", "float16", True, True, False),
    ("10.8", "bfloat16", False, True, False),
    ("11.0", "float32", False, True, False),
    ("11.0", "float16", True, True, False),
])
def test_precision_policy(version, dtype, fp16, strongly, flag):
    plan = prepare.precision_policy(version, dtype, fp16)
    assert (plan.strongly_typed, plan.fp16_flag) == (strongly, flag)
    assert plan.onnx_dtype == prepare.normalize_dtype(dtype)


def test_precision_policy_trt11_refuses_fp16_flag_on_fp32_model():
    with pytest.raises(PumerExportError, match="--fp16 needs a float16 ONNX model on TensorRT 11"):
        prepare.precision_policy("11.0", "float32", fp16=True)
    with pytest.raises(PumerExportError, match="unknown dtype"):
        prepare.precision_policy("10.3", "int8")


def test_model_dtype_from_metadata_then_inputs():
    assert prepare.model_dtype(make_pumer_model()) == "float32"
    assert prepare.model_dtype(make_pumer_model(metadata={"pumer.dtype": "fp16"})) == "float16"
    no_meta = make_pumer_model(metadata={"pumer.dtype": None}, dtype=TensorProto.FLOAT16)
    assert prepare.model_dtype(no_meta) == "float16"


# -------------------------------------------------------------------------------- profiles
@pytest.mark.parametrize("text, expected", [
    ("1:8:32", BatchProfile(1, 8, 32)),
    (" 2 : 2 : 4 ", BatchProfile(2, 2, 4)),
    ("16", BatchProfile(16, 16, 16)),
])
def test_parse_batch_profile(text, expected):
    assert prepare.parse_batch_profile(text) == expected


@pytest.mark.parametrize("text, message", [
    ("1:8", "MIN:OPT:MAX"),
    ("a:b:c", "MIN:OPT:MAX"),
    ("1:-2:4", "MIN:OPT:MAX"),
    ("0:1:2", "at least 1"),
    ("4:2:8", "MIN <= OPT <= MAX"),
    ("1:8:4", "MIN <= OPT <= MAX"),
    ("", "MIN:OPT:MAX"),
])
def test_parse_batch_profile_errors(text, message):
    with pytest.raises(PumerExportError, match=message):
        prepare.parse_batch_profile(text)


@pytest.mark.parametrize("text, expected", [
    ("4G", 4 << 30), ("512M", 512 << 20), ("1.5GiB", 3 << 29), ("1048576", 1 << 20), ("64k", 64 << 10),
])
def test_parse_size(text, expected):
    assert prepare.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "4X", "-1G", "G", "0"])
def test_parse_size_errors(text):
    with pytest.raises(PumerExportError, match="--workspace"):
        prepare.parse_size(text)


def test_input_shapes_and_profile():
    model = make_pumer_model()
    inputs = prepare.graph_inputs(model)
    # the initializer is not an input
    assert [spec.name for spec in inputs] == ["x", "metric", "queries", "keys", "key_mask", "text_mask"]
    assert inputs[0].shape == (None, TOKENS, CHANNELS) and inputs[0].batch_dim == BATCH
    assert inputs[0].dtype == "float32"
    assert prepare.default_batch_profile(inputs) == prepare.DEFAULT_DYNAMIC_BATCH
    shapes = prepare.profile_shapes(inputs, BatchProfile(1, 8, 32))
    assert shapes["keys"] == {"min": [1, HEADS, TOKENS, DIM], "opt": [8, HEADS, TOKENS, DIM],
                              "max": [32, HEADS, TOKENS, DIM]}
    assert shapes["text_mask"]["max"] == [32, TEXT]


def test_fixed_batch_model_profile():
    inputs = prepare.graph_inputs(make_pumer_model(batch=2))
    assert inputs[0].shape[0] == 2
    assert prepare.default_batch_profile(inputs) == BatchProfile(2, 2, 2)
    assert prepare.profile_shapes(inputs, BatchProfile(2, 2, 2))["x"]["opt"] == [2, TOKENS, CHANNELS]
    with pytest.raises(PumerExportError, match="fixed batch of 2, so --batch must be 2:2:2"):
        prepare.profile_shapes(inputs, BatchProfile(1, 2, 4))


def test_dynamic_non_batch_dim_is_refused():
    model = make_pumer_model()
    dim = model.graph.input[0].type.tensor_type.shape.dim[1]
    dim.Clear()
    dim.dim_param = "tokens"
    with pytest.raises(PumerExportError, match=r"input 'x' has a dynamic dimension 1 \(tokens\)"):
        prepare.graph_inputs(model)


# -------------------------------------------------------------------------------- metadata
def test_metadata_and_pumer_nodes():
    model = make_pumer_model()
    meta = prepare.read_export_metadata(model)
    assert prepare.export_op_spec_hash(meta) == op_spec_hash()
    assert prepare.export_op_spec_hash({"pumer.settings": {"op_spec_hash": "abc"}}) == "abc"
    assert prepare.export_op_spec_hash({"other": "x"}) is None
    assert [n.op_type for n in prepare.pumer_nodes(model)] == ["PumerPrune"]
    prepare.check_pumer_nodes(model)


def test_check_pumer_nodes_wrong_plugin_namespace():
    model = make_pumer_model()
    node = model.graph.node[1]
    for attr in node.attribute:
        if attr.name == "plugin_namespace":
            attr.s = b"other"
    with pytest.raises(PumerExportError, match="plugin_namespace='other'.*'pumer'"):
        prepare.check_pumer_nodes(model)


# ----------------------------------------------------------------------------- the model
def _attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


@pytest.mark.parametrize("version", ["10.3.0", "10.8.0", "10.15.1", "11.0.0"])
def test_prepare_strips_functions_keeps_nodes_and_attributes(tmp_path, version):
    original = make_pumer_model()
    original.functions.append(helper.make_function("other.domain", "Keep", ["a"], ["b"],
                                                   [helper.make_node("Identity", ["a"], ["b"])],
                                                   [helper.make_opsetid("", 20)]))
    path = save(original, tmp_path / "model.onnx")
    before = path.read_bytes()

    prepared = prepare.prepare_onnx_for_tensorrt(path, version)
    pumer_functions = sorted(f.name for f in original.functions if f.domain == DOMAIN)
    assert "PumerPrune" in pumer_functions
    assert sorted(prepared.stripped_functions) == pumer_functions
    assert prepared.pumer_node_count == 1 and prepared.op_types == ["PumerPrune"]
    assert prepared.policy == prepare.function_policy(version)
    assert path.read_bytes() == before  # the file on disk is untouched

    stripped = onnx.load_from_string(prepared.model_bytes)
    assert [(f.domain, f.name) for f in stripped.functions] == [("other.domain", "Keep")]
    assert [n.op_type for n in stripped.graph.node] == [n.op_type for n in original.graph.node]
    prune = stripped.graph.node[1]
    assert prune.domain == DOMAIN
    assert _attrs(prune) == _attrs(original.graph.node[1])
    assert _attrs(prune)["plugin_namespace"] == b"pumer" and _attrs(prune)["plugin_version"] == b"2"
    assert list(stripped.metadata_props) == list(original.metadata_props)
    assert any(imp.domain == DOMAIN for imp in stripped.opset_import)


def test_prepare_keeps_external_data_references(tmp_path):
    path = save(make_pumer_model(), tmp_path / "model.onnx", external=True)
    data_file = tmp_path / "model.onnx.data"
    data_before = data_file.read_bytes()

    prepared = prepare.prepare_onnx_for_tensorrt(path, "10.3.0")
    assert prepared.source == path
    stripped = onnx.load_from_string(prepared.model_bytes)
    weight = stripped.graph.initializer[0]
    assert weight.data_location == TensorProto.EXTERNAL and not weight.raw_data
    assert {e.key: e.value for e in weight.external_data}["location"] == "model.onnx.data"
    assert data_file.read_bytes() == data_before
    # the parser resolves the location relative to the original path: same weights
    onnx.external_data_helper.load_external_data_for_model(stripped, str(tmp_path))
    np.testing.assert_array_equal(numpy_helper.to_array(stripped.graph.initializer[0]),
                                  np.linspace(0.5, 1.5, CHANNELS, dtype=np.float32))


def test_stripped_model_no_longer_runs_on_onnxruntime_but_original_does(tmp_path):
    """The bodies are what ONNX Runtime runs; TensorRT gets the bare nodes (its plugins)."""
    ort = pytest.importorskip("onnxruntime")
    path = save(make_pumer_model(), tmp_path / "model.onnx")
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((2, TOKENS, CHANNELS), dtype=np.float32),
             "metric": rng.standard_normal((2, TOKENS, DIM), dtype=np.float32),
             "queries": rng.standard_normal((2, HEADS, TEXT, DIM), dtype=np.float32),
             "keys": rng.standard_normal((2, HEADS, TOKENS, DIM), dtype=np.float32),
             "key_mask": np.ones((2, TOKENS), np.float32), "text_mask": np.ones((2, TEXT), np.float32)}
    outputs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    assert outputs[0].shape == (2, 4, CHANNELS) and outputs[2].shape == (2, 4)
    prepared = prepare.prepare_onnx_for_tensorrt(path, "10.3.0")
    with pytest.raises(Exception, match="PumerPrune"):
        ort.InferenceSession(prepared.model_bytes, providers=["CPUExecutionProvider"])


def test_load_onnx_errors(tmp_path):
    with pytest.raises(PumerExportError, match="does not exist"):
        prepare.load_onnx(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf \xff\xff\xff")
    with pytest.raises(PumerExportError, match="is not a readable ONNX model"):
        prepare.load_onnx(bad)
