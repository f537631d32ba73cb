"""SmartTrim-style exports (pumer-export design): the compaction op's ONNX body against the reference rule, and a
METER export whose token counts depend on the input, against per-sample PyTorch runs in ONNX Runtime."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch

from conftest import random_smarttrim_meter
from pumer_export.errors import PumerExportError
from pumer_export.methods.smarttrim.config import SmartTrimConfig
from pumer_export.methods.smarttrim.reference import compact_index
from pumer_export.models.meter.presets import random_inputs
from pumer_export.onnx import functions


# ----------------------------------------------------------------------------- the compaction op
def _run_compact(keep: np.ndarray, x: np.ndarray):
    import onnxruntime as ort

    model = functions.single_op_model("PumerCompact", float_type=onnx.helper.np_dtype_to_tensor_dtype(x.dtype))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"keep": keep, "x": x})


def _expected(keep: np.ndarray, x: np.ndarray):
    """The rule written out independently of the reference: row by row, kept positions in order, then the dropped
    ones in order, cut to the largest kept count."""
    count = int(keep.sum(axis=1).max())
    index = np.stack([np.concatenate([np.flatnonzero(row), np.flatnonzero(~row)])[:count] for row in keep])
    return x[np.arange(len(x))[:, None], index], np.take_along_axis(keep, index, 1), index, count


KEEPS = {
    "random": np.random.default_rng(0).random((4, 9)) < 0.5,
    "all kept": np.ones((3, 7), dtype=bool),
    "only token 0": np.eye(1, 8, dtype=bool).repeat(3, axis=0),
    "rows with different counts": np.array([[1, 0, 0, 0, 0, 1], [1, 1, 1, 1, 1, 1], [1, 0, 1, 0, 1, 0]], dtype=bool),
    "batch 1": np.array([[1, 0, 1, 1, 0, 0, 1]], dtype=bool),
    "one token in the batch": np.array([[0, 0, 1], [0, 0, 0]], dtype=bool),
}


@pytest.mark.parametrize("case", KEEPS)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_compaction_body_follows_the_rule(case, dtype):
    keep = KEEPS[case].copy()
    keep[:, 0] |= case not in ("one token in the batch",)  # SmartTrim keeps token 0; the op itself needs one token
    x = np.random.default_rng(1).standard_normal((*keep.shape, 5)).astype(dtype)
    x_out, alive, index, count = _run_compact(keep, x)
    want = _expected(keep, x)
    assert int(count) == want[3] and count.shape == ()
    np.testing.assert_array_equal(index, want[2])
    np.testing.assert_array_equal(alive, want[1])
    np.testing.assert_array_equal(x_out, want[0])  # gathered, bit for bit
    ref_index, ref_alive = compact_index(torch.from_numpy(keep))  # the reference agrees with the written-out rule
    np.testing.assert_array_equal(ref_index.numpy(), want[2])
    np.testing.assert_array_equal(ref_alive.numpy(), want[1])
    torch_out = torch.ops.pumer.compact(torch.from_numpy(keep), torch.from_numpy(x))
    np.testing.assert_array_equal(torch_out[0].numpy(), want[0])
    assert int(torch_out[3]) == want[3]


def test_compaction_op_refuses_nothing_kept():
    with pytest.raises(ValueError, match="at least one token"):
        torch.ops.pumer.compact(torch.zeros(2, 4, dtype=torch.bool), torch.zeros(2, 4, 3))


# ----------------------------------------------------------------------------- a METER export
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny METER with random trimmers everywhere (image tower, co-attention tokens, heads), tau at the median
    margin of the first trimmer (so samples keep different counts), exported with the export's own validation."""
    from pumer_export.onnx.export import export_onnx

    model = random_smarttrim_meter(SmartTrimConfig(cross_layers=(0, 2, 3), vit_layers=(1,), head_layers=(1, 3)))
    folder = tmp_path_factory.mktemp("st") / "export"
    result = export_onnx(model, folder, validation_options={"batch_sizes": (1, 3), "show": False})
    assert result.validation.ok
    ck = tmp_path_factory.mktemp("st") / "ck"
    model.save_pretrained(ck)
    return model, folder, ck


def test_export_runs_counts_it_never_saw(exported):
    """One file, batch 1 and batched: every sample equals its batch-1 PyTorch run (logits and kept positions), on
    inputs whose counts differ from the export's example inputs and from each other."""
    import onnxruntime as ort

    model, folder, _ = exported
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    assert names[0] == "logits" and all(n.endswith(("image_kept", "text_kept")) for n in names[1:])
    lengths = set()
    for batch, seed in ((1, 11), (2, 12), (5, 13), (1, 14)):
        inputs = random_inputs(model.config, batch, seed=seed)
        got = dict(zip(names, session.run(names, {k: v.numpy() for k, v in inputs.items()})))
        lengths.add(tuple(got[n].shape[1] for n in names[1:]))
        for i in range(batch):
            with torch.no_grad():
                one = model(**{k: v[i:i + 1] for k, v in inputs.items()})
            np.testing.assert_allclose(got["logits"][i:i + 1], one.logits.numpy(), atol=1e-4, rtol=1e-3)
            for name in names[1:]:
                row = got[name][i]
                np.testing.assert_array_equal(row[row >= 0], one.reduction_indices[name][0].numpy())
    assert len(lengths) > 1, "the inputs should give the export different token counts"


def test_token_dimensions_are_symbolic(exported):
    """Shape inference leaves every compaction's token dimension symbolic; a count frozen into the file fails."""
    from pumer_export.onnx.export import check_data_dependent_dims

    _, folder, _ = exported
    proto = onnx.shape_inference.infer_shapes(onnx.load(folder / "model.onnx"), data_prop=True)
    check_data_dependent_dims(proto)
    compaction = next(n for n in proto.graph.node if n.op_type == "PumerCompact")
    value = next(v for v in proto.graph.value_info if v.name == compaction.output[0])
    value.type.tensor_type.shape.dim[1].dim_value = 7  # what an exporter that freezes n_max would write
    with pytest.raises(PumerExportError, match="frozen"):
        check_data_dependent_dims(proto)


def test_metadata_names_the_method(exported):
    from pumer_export.onnx.metadata import read_metadata

    model, folder, _ = exported
    meta = read_metadata(onnx.load(folder / "model.onnx", load_external_data=False))
    assert meta["pumer.method"]["name"] == "smarttrim" and meta["pumer.reduction"] is True
    assert meta["pumer.method"]["settings"]["tau"] == pytest.approx(model.smarttrim_config.tau)


def test_validate_and_tensorrt_on_the_export(exported, cli, tmp_path):
    """validate passes on the checkpoint and its export; an export with other settings fails its settings check;
    the TensorRT preparation casts the compaction plugin's int32 alive / count back to the node's bool / int64."""
    model, folder, ck = exported
    code, out, err = cli("validate", ck, "--onnx", folder, "--num-samples", 4, "--batch-size", 2)
    assert code == 0, out + err
    assert "cross0.image_kept" in out
    other = model.smarttrim_config.replace(tau=model.smarttrim_config.tau + 1.0)
    model.set_smarttrim_config(other)
    model.save_pretrained(tmp_path / "other")
    model.set_smarttrim_config(other.replace(tau=other.tau - 1.0))
    code, out, err = cli("validate", tmp_path / "other", "--onnx", folder, "--num-samples", 2)
    assert code != 0 and "tau" in out + err
    code, out, err = cli("build", folder / "model.onnx", tmp_path / "engine.plan", "--print-trtexec",
                         "--trt-version", "10.8")
    assert code == 0, err
    prepared = onnx.load(folder / "model.plugins.onnx", load_external_data=False)
    assert not [f for f in prepared.functions if f.domain == "pumer"]
    compactions = [n for n in prepared.graph.node if n.op_type == "PumerCompact"]
    casts = {n.input[0]: n for n in prepared.graph.node if n.op_type == "Cast"}
    for node in compactions:
        for position, to in ((1, onnx.TensorProto.BOOL), (3, onnx.TensorProto.INT64)):
            cast = casts[node.output[position]]
            assert onnx.helper.get_attribute_value(cast.attribute[0]) == to
            assert node.output[position].endswith(".plugin")
    order = [n.name for n in prepared.graph.node]
    assert all(order.index(casts[n.output[1]].name) == order.index(n.name) + 1 for n in compactions)


def test_baseline_export_has_no_trimmer(exported, tmp_path):
    """--no-reduction exports the same weights with no trimmer at all (the baseline of bench and eval)."""
    from pumer_export.onnx.export import export_onnx

    model, _, _ = exported
    result = export_onnx(model, tmp_path / "base", reduction=False, validation_options={"show": False})
    proto = onnx.load(result.path)
    assert not [n for n in proto.graph.node if n.domain == "pumer"] and result.output_names == ["logits"]
    inputs = random_inputs(model.config, 2, seed=5)
    import onnxruntime as ort

    got = ort.InferenceSession(str(result.path)).run(["logits"], {k: v.numpy() for k, v in inputs.items()})[0]
    with torch.no_grad():
        untrimmed = model.untrimmed_logits(**inputs)
    np.testing.assert_allclose(got, untrimmed.numpy(), atol=1e-4, rtol=1e-3)
    assert not math.isclose(float(np.abs(got).sum()), 0.0)


def test_near_tie_rule_for_kept_positions():
    """A kept set may differ from the reference only in tokens whose reference margin lay within 1e-3 of tau; other
    differences, and tokens that were not alive before the decision, are mismatches. Padding slots (-1) do not
    count."""
    from pumer_export.parity.compare import judge_indices

    margins = np.array([5.0, 0.2 + 4e-4, -3.0, np.nan, 0.9])  # tau 0.2; position 3 was dropped earlier
    detail = {"margins": margins, "tau": 0.2}
    ref = np.array([0, 1, 4, -1])
    def judge(got):
        return judge_indices("cross0.image_kept", detail, ref, np.array(got), 1e-6)

    assert judge([0, 1, 4]) == "exact"
    assert judge([0, 4, -1]) == "near_tie"  # 1 flipped: its margin lay 4e-4 from tau
    assert judge([0, 1, -1]) == "mismatch"  # 4 dropped: its margin lay 0.7 from tau
    assert judge([0, 1, 3, 4]) == "mismatch"  # 3 was not alive before the decision
