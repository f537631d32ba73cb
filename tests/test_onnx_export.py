"""``pumer-export onnx`` / ``inspect``: one file, pumer nodes + function bodies, parity in ONNX Runtime."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from pumer_export.checkpoints import load_pumer_model
from pumer_export.cli import main
from pumer_export import ops
from pumer_export.onnx import functions
from pumer_export.onnx.export import check_static_token_dims, export_onnx, read_metadata
from pumer_export.onnx.validation import make_session, validate_onnx
from pumer_export.ops import op_spec_hash

TINY_SIZE = ("64x96", (64, 96))
TINY_TEXT = 24


def _export(checkpoint: Path, outdir: Path, *extra: str) -> Path:
    code = main(["onnx", str(checkpoint), str(outdir), "--image-size", TINY_SIZE[0], "--text-length", str(TINY_TEXT),
                 *extra])
    assert code == 0
    return outdir / "model.onnx"


@pytest.fixture(scope="module")
def tiny_onnx(tiny_checkpoint, tmp_path_factory) -> Path:
    return _export(tiny_checkpoint, tmp_path_factory.mktemp("onnx") / "tiny", "--batch-sizes", "1,3,8")


@pytest.fixture(scope="module")
def tiny_model(tiny_checkpoint):
    return load_pumer_model(tiny_checkpoint)


def _pumer_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.domain == "pumer"]


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def test_file_holds_one_node_per_step_with_counts_and_bodies(tiny_onnx, tiny_model):
    model = onnx.load(str(tiny_onnx))
    onnx.checker.check_model(model, full_check=True)
    schedule = tiny_model.token_schedule(TINY_TEXT, image_size=TINY_SIZE[1])
    expected = []
    for c in schedule.layers:
        if not c.active:
            continue
        expected.append(("PumerPrune", f"layer{c.layer}.prune", {"text_len": c.text_in, "keep": c.keep, "score_head": -1,
                                                                 "image_start": c.text_in, "masking": 0}))
        if c.image_merge:
            expected.append(("PumerMerge", f"layer{c.layer}.image_merge", {"r": c.image_merge}))
        if c.text_merge:
            expected.append(("PumerMerge", f"layer{c.layer}.text_merge", {"r": c.text_merge}))
    nodes = _pumer_nodes(model)
    assert sorted((n.op_type, n.name) for n in nodes) == sorted((op, name) for op, name, _ in expected)
    by_name = {n.name: n for n in nodes}
    for op_type, name, counts in expected:
        attrs = _attrs(by_name[name])
        assert attrs == {**counts, "plugin_namespace": b"pumer",
                         "plugin_version": ops.op_spec()["plugin_version"].encode()}
        kinds = {a.name: a.type for a in by_name[name].attribute}
        assert all(kinds[k] == onnx.AttributeProto.INT for k in counts)
        assert kinds["plugin_namespace"] == kinds["plugin_version"] == onnx.AttributeProto.STRING
    assert not any(onnx.defs.has(op) for op in functions.OP_TYPES)  # not standard ONNX op types
    bodies = {(f.domain, f.name): f for f in model.functions}
    assert set(bodies) == {("pumer", "PumerPrune"), ("pumer", "PumerMerge")}
    for body in bodies.values():
        assert [(i.domain, i.version) for i in body.opset_import] == [("", functions.model_opset(model))]
    assert ("pumer", functions.DOMAIN_VERSION) in [(i.domain, i.version) for i in model.opset_import]
    # Dynamic batch, every token dimension concrete after shape inference.
    for value in list(model.graph.input) + list(model.graph.output):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    check_static_token_dims(onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True))


def test_onnxruntime_matches_reference_at_batch_1_3_8_from_one_file(tiny_onnx, tiny_model):
    report = validate_onnx(tiny_onnx, tiny_model, image_size=TINY_SIZE[1], text_length=TINY_TEXT,
                           batch_sizes=(1, 3, 8), atol=1e-4, rtol=0.0, show=False)
    assert report.ok
    assert {c.batch_size for c in report.checks} == {1, 3, 8}
    for check in report.checks:
        if check.is_index:
            assert check.agreement == 1.0, check
        else:
            assert check.max_abs < 1e-4, check
    assert sum(c.is_index for c in report.checks) == 3 * 6  # 2 reduce layers x 3 index outputs


def test_no_attention_probabilities_reach_the_pumer_nodes(tiny_onnx, tiny_model):
    """Standard masking: the prune op reads queries and keys; no [B, heads, N, N] tensor (N the full sequence) and no
    softmax output feeds a pumer node, so the attention stays one standard pattern that runtimes fuse."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(tiny_onnx)), data_prop=True)
    assert tiny_model.pumer_config.attention_masking == "standard"
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim]
              for v in list(model.graph.value_info) + list(model.graph.input)}
    producers = {out: node for node in model.graph.node for out in node.output}
    heads = tiny_model.config.num_attention_heads
    full = TINY_TEXT + tiny_model.token_schedule(TINY_TEXT, image_size=TINY_SIZE[1]).image_tokens
    prunes = [n for n in _pumer_nodes(model) if n.op_type == "PumerPrune"]
    assert prunes
    for node in _pumer_nodes(model):
        for name in node.input:
            shape = shapes.get(name)
            assert shape is not None, name
            assert not (len(shape) == 4 and shape[1] == heads and shape[2] == shape[3] == full), (node.name, name, shape)
            producer = producers.get(name)
            while producer is not None and producer.op_type in ("Cast", "Identity", "Reshape", "Transpose"):
                producer = producers.get(producer.input[0])
            assert producer is None or producer.op_type != "Softmax", (node.name, name)
    for node in prunes:  # queries: the text rows only; keys: every token
        q, k = shapes[node.input[2]], shapes[node.input[3]]
        assert q[1] == k[1] == heads and q[2] == _attrs(node)["text_len"] and k[2] >= q[2]


def test_function_bodies_are_what_lets_onnxruntime_run_it(tiny_onnx, tmp_path):
    make_session(tiny_onnx)  # loads
    model = onnx.load(str(tiny_onnx))
    functions.strip_functions(model)
    assert not model.functions and _pumer_nodes(model)
    stripped = tmp_path / "stripped.onnx"
    onnx.save(model, str(stripped))
    with pytest.raises(Exception, match="not a registered function/op"):
        ort.InferenceSession(str(stripped), providers=["CPUExecutionProvider"])


def test_metadata(tiny_onnx, tiny_model):
    meta = read_metadata(onnx.load(str(tiny_onnx), load_external_data=False))
    assert meta["pumer.config"] == tiny_model.pumer_config.to_dict()
    assert meta["pumer.schedule"] == tiny_model.token_schedule(TINY_TEXT, image_size=TINY_SIZE[1]).to_dict()
    assert meta["pumer.image_size"] == list(TINY_SIZE[1]) and meta["pumer.text_length"] == TINY_TEXT
    assert meta["pumer.op_spec_hash"] == op_spec_hash()
    assert meta["pumer.dtype"] == "fp32" and meta["pumer.opset"] == functions.DEFAULT_OPSET
    assert meta["pumer.reduction"] is True
    assert {"pumer_export", "torch", "transformers", "onnx", "onnxscript"} <= set(meta["pumer.versions"])
    assert meta["pumer.outputs"][0] == "logits" and meta["pumer.inputs"][0] == "input_ids"


def test_inspect(tiny_onnx, cli):
    code, out, err = cli("inspect", tiny_onnx)
    assert code == 0, err
    for text in ("PumerPrune", "PumerMerge", "layer1.prune", "plugin_namespace=pumer", "function bodies",
                 "token schedule", "op counts", "yes (function bodies present)"):
        assert text in out
    code, out, _ = cli("inspect", tiny_onnx.parent, "--json")
    data = json.loads(out)
    assert data["runs_without_plugins"] is True and data["op_spec_hash_matches"] is True
    assert data["op_counts"]["pumer::PumerPrune"] == 2
    assert data["function_bodies"]["PumerMerge"]["opset"] == {"ai.onnx": functions.DEFAULT_OPSET}


def test_inspect_reports_missing_bodies(tiny_onnx, tmp_path, cli):
    model = onnx.load(str(tiny_onnx))
    onnx.save(functions.strip_functions(model), str(tmp_path / "stripped.onnx"))
    code, out, _ = cli("inspect", tmp_path / "stripped.onnx", "--json")
    data = json.loads(out)
    assert code == 0 and data["runs_without_plugins"] is False and data["function_bodies"]["PumerPrune"] is None


def test_no_reduction_baseline(tiny_checkpoint, tmp_path, tiny_model):
    path = _export(tiny_checkpoint, tmp_path / "base", "--no-reduction")
    model = onnx.load(str(path))
    assert not _pumer_nodes(model) and not model.functions
    assert [o.name for o in model.graph.output] == ["logits"]
    meta = read_metadata(model)
    assert meta["pumer.reduction"] is False and meta["pumer.config"]["reduce_layers"] == []
    assert tiny_model.pumer_config.enabled  # the loaded model is untouched
    report = validate_onnx(path, tiny_model, image_size=TINY_SIZE[1], text_length=TINY_TEXT, reduction=False,
                           batch_sizes=(2,), show=False)
    assert report.ok


def test_fp16_export(tiny_checkpoint, tmp_path, tiny_model):
    path = _export(tiny_checkpoint, tmp_path / "fp16", "--dtype", "fp16")
    model = onnx.load(str(path))
    sizes = {onnx.TensorProto.FLOAT: 0, onnx.TensorProto.FLOAT16: 0}
    for t in model.graph.initializer:
        if t.data_type in sizes:
            sizes[t.data_type] += int(np.prod(t.dims))
    assert sizes[onnx.TensorProto.FLOAT16] > 0.99 * sum(sizes.values())  # the weights (fp32: small constants)
    types = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    assert types["pixel_values"] == onnx.TensorProto.FLOAT16
    assert {o.type.tensor_type.elem_type for o in model.graph.output if o.name == "logits"} == {
        onnx.TensorProto.FLOAT16}
    assert len(_pumer_nodes(model)) == 6
    report = validate_onnx(path, tiny_model, dtype="fp16", image_size=TINY_SIZE[1], text_length=TINY_TEXT,
                           batch_sizes=(1, 3), show=False)
    logits = [c for c in report.checks if c.name == "logits"]
    assert all(c.max_abs < 1e-2 for c in logits), logits


def test_official_fixture_export_matches_in_onnxruntime(converted_official, official_inputs, tmp_path):
    path = tmp_path / "official" / "model.onnx"
    height, width = official_inputs["pixel_values"].shape[-2:]
    text_length = official_inputs["input_ids"].shape[1]
    assert main(["onnx", str(converted_official), str(path.parent), "--batch-sizes", "1,3,8",
                 "--image-size", f"{height}x{width}", "--text-length", str(text_length)]) == 0
    model = load_pumer_model(converted_official)
    session = make_session(path)
    # The fixture's real inputs (padded texts, the fixture's images) through the same file.
    inputs = {k: v for k, v in official_inputs.items()}
    feed = {k: v.numpy() for k, v in inputs.items()}
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
    with torch.no_grad():
        ref = model(**inputs, trim_image_padding=False)
    np.testing.assert_allclose(got["logits"], ref.logits.numpy(), atol=1e-4, rtol=0)
    for name, value in ref.reduction_indices.items():
        np.testing.assert_array_equal(got[name], value.numpy(), err_msg=name)


def test_official_fixture_fused_attention_option(converted_official, official_inputs, tmp_path, tiny_checkpoint, cli):
    """--fused-official-attention: P7 as an additive mask in a standard fused attention (smoothing left out). On the
    fixture's own padded inputs the logits stay within 1e-4 of the exact reference (measured: 1.4e-5) and every
    reduction decision is the same."""
    path = tmp_path / "fused" / "model.onnx"
    height, width = official_inputs["pixel_values"].shape[-2:]
    text_length = official_inputs["input_ids"].shape[1]
    code, _, err = cli("onnx", converted_official, path.parent, "--fused-official-attention", "--batch-sizes", "1,3",
                       "--image-size", f"{height}x{width}", "--text-length", text_length)
    assert code == 0, err
    meta = read_metadata(onnx.load(str(path), load_external_data=False))
    assert meta["pumer.fused_official_attention"] is True
    model = load_pumer_model(converted_official)
    got = dict(zip([o.name for o in make_session(path).get_outputs()],
                   make_session(path).run(None, {k: v.numpy() for k, v in official_inputs.items()})))
    with torch.no_grad():
        ref = model(**official_inputs, trim_image_padding=False)
    np.testing.assert_allclose(got["logits"], ref.logits.numpy(), atol=1e-4, rtol=0)
    for name, value in ref.reduction_indices.items():
        np.testing.assert_array_equal(got[name], value.numpy(), err_msg=name)
    export_onnx(model, tmp_path / "api", image_size=(height, width), text_length=text_length, validate=False,
                fused_official_attention=True)
    assert not model.vilt.fused_official_attention  # an export option, never left on the model
    code, _, err = cli("onnx", tiny_checkpoint, tmp_path / "std", "--fused-official-attention")
    _one_line_error(code, err, "official masking")


# ---------------------------------------------------------------------------- errors
def _no_outdir(outdir: Path) -> None:
    assert not outdir.exists()
    assert not [p for p in outdir.parent.iterdir() if p.name.startswith(f".{outdir.name}.")]


def _one_line_error(code, err, *needles):
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_not_a_pumer_checkpoint(tmp_path, cli):
    src = tmp_path / "plain"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": "vilt"}))
    code, _, err = cli("onnx", src, tmp_path / "out")
    _one_line_error(code, err, "not a pumer-export checkpoint")
    _no_outdir(tmp_path / "out")


@pytest.mark.parametrize("args,needle", [
    (["--opset", "13"], "opset 13 is not supported"),
    (["--opset", "99"], "opset 99 is not supported"),
    (["--image-size", "100x96"], "not a multiple of the patch size 16"),
    (["--text-length", "41"], "text length 41"),
])
def test_bad_settings(tiny_checkpoint, tmp_path, cli, args, needle):
    code, _, err = cli("onnx", tiny_checkpoint, tmp_path / "out", *args)
    _one_line_error(code, err, needle)
    _no_outdir(tmp_path / "out")


def test_outdir_that_cannot_be_a_directory_fails_before_exporting(tiny_checkpoint, tmp_path, cli):
    (tmp_path / "file").write_text("mine")
    for outdir in (tmp_path / "file", tmp_path / "file" / "sub"):
        code, _, err = cli("onnx", tiny_checkpoint, outdir, "--force")
        _one_line_error(code, err, "is a file, not a directory")
        assert "done loading" not in err  # refused before the slow steps
    assert (tmp_path / "file").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_file_system_errors_are_one_line(tiny_checkpoint, tmp_path, cli, monkeypatch):
    import pumer_export.onnx.export as export_module

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "out"))

    monkeypatch.setattr(export_module, "export_onnx", refuse)
    code, _, err = cli("onnx", tiny_checkpoint, tmp_path / "out", "--skip-validation")
    _one_line_error(code, err, "Permission denied", str(tmp_path / "out"))


def test_inspect_refuses_a_foreign_onnx_file(tmp_path, cli):
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(tmp_path / "foreign.onnx"))
    code, out, err = cli("inspect", tmp_path / "foreign.onnx")
    _one_line_error(code, err, "is not a pumer-export export")
    assert out == ""


def test_existing_outdir_needs_force(tiny_checkpoint, tmp_path, cli):
    (tmp_path / "out").mkdir()
    code, _, err = cli("onnx", tiny_checkpoint, tmp_path / "out")
    _one_line_error(code, err, "already exists")


def test_validation_failure_is_an_error_naming_the_output(tiny_checkpoint, tmp_path, cli):
    code, out, err = cli("onnx", tiny_checkpoint, tmp_path / "out", "--image-size", TINY_SIZE[0],
                         "--text-length", str(TINY_TEXT), "--atol", "0", "--rtol", "0")
    _one_line_error(code, err, "validation failed", "'logits'")
    assert "NO" in out  # the table marks the failing rows
    _no_outdir(tmp_path / "out")


def test_api_opset_range_and_external_data(tiny_model, tmp_path):
    result = export_onnx(tiny_model, tmp_path / "ext", opset=functions.MAX_OPSET, image_size=TINY_SIZE[1],
                         text_length=TINY_TEXT, external_data=True, validate=False)
    assert (tmp_path / "ext" / "model.onnx.data").is_file()
    model = onnx.load(str(result.path))
    assert functions.model_opset(model) == functions.MAX_OPSET
    report = validate_onnx(result.path, tiny_model, image_size=TINY_SIZE[1], text_length=TINY_TEXT,
                           batch_sizes=(2,), show=False)
    assert report.ok


# --------------------------------------------------------------------- ViLT-B/32 size
@pytest.mark.slow
def test_vilt_b32_shaped_export_matches(tmp_path):
    # The export time is printed (run with -s), never asserted: tests do not time things.
    from pumer_export.models.vilt.presets import vilt_b32_model

    model = vilt_b32_model(seed=0)
    start = time.perf_counter()
    result = export_onnx(model, tmp_path / "b32", image_size=(384, 384), text_length=40)
    print(f"ViLT-B/32-shaped export + validation: {time.perf_counter() - start:.1f}s")
    assert result.validation.ok
    nodes = _pumer_nodes(onnx.load(str(result.path), load_external_data=False))
    assert [n.name for n in nodes if n.op_type == "PumerPrune"] == ["layer2.prune", "layer5.prune", "layer8.prune"]
