"""The ONNX function bodies of the pumer ops against their PyTorch ops, independent of any model.

Each case builds a one-node model (``pumer::PumerPrune`` / ``pumer::PumerMerge`` plus its
model-local function), runs it in ONNX Runtime on CPU and compares with ``torch.ops.pumer.*``:
indices exactly, values within a tight tolerance. Adversarial inputs use exactly representable
values so that ties are exact ties in every backend.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto

from pumer_export import ops, reduce  # ops registers torch.ops.pumer
from pumer_export.onnx import functions
from pumer_export.onnx.translation import pumer_merge, pumer_prune
from pumer_export.schedule import merge_cap

_TYPES = {torch.float32: TensorProto.FLOAT, torch.float16: TensorProto.FLOAT16}


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _compare(got, ref, atol):
    for name, g, r in zip(("0", "1", "2"), got, ref):
        r = r.numpy()
        assert g.dtype == r.dtype, (name, g.dtype, r.dtype)
        assert g.shape == r.shape, (name, g.shape, r.shape)
        if np.issubdtype(r.dtype, np.integer):
            np.testing.assert_array_equal(g, r, err_msg=f"output {name}")
        else:
            np.testing.assert_allclose(g.astype(np.float64), r.astype(np.float64), rtol=0, atol=atol,
                                       err_msg=f"output {name}")


def run_prune(x, metric, q, k, key_mask, text_mask, keep, score_head, image_start, masking,
              opset=functions.DEFAULT_OPSET):
    text_len = q.shape[2]
    model = functions.single_op_model("PumerPrune", opset=opset, float_type=_TYPES[x.dtype],
                                      attn_type=_TYPES[q.dtype], text_len=text_len, keep=keep,
                                      score_head=score_head, image_start=image_start, masking=masking)
    onnx.checker.check_model(model, full_check=True)
    feed = {"x": x.numpy(), "metric": metric.numpy(), "queries": q.numpy(), "keys": k.numpy(),
            "key_mask": key_mask.numpy(), "text_mask": text_mask.numpy()}
    got = _session(model).run(["x_kept", "metric_kept", "keep_idx"], feed)
    ref = torch.ops.pumer.prune(x, metric, q, k, key_mask, text_mask, text_len, keep, score_head, image_start,
                                masking)
    _compare(got, ref, atol=0.0)  # gathers move values: bit-exact
    return got


def run_merge(x, metric, mask, r, opset=functions.DEFAULT_OPSET, atol=1e-6):
    model = functions.single_op_model("PumerMerge", opset=opset, float_type=_TYPES[x.dtype], r=r)
    onnx.checker.check_model(model, full_check=True)
    got = _session(model).run(["x_out", "mask_out", "slots"],
                              {"x": x.numpy(), "metric": metric.numpy(), "mask": mask.numpy()})
    ref = torch.ops.pumer.merge(x, metric, mask, r)
    _compare(got, ref, atol=atol)
    return got


def _qk(gen, batch, heads, rows, n, dim=8):
    return torch.randn(batch, heads, rows, dim, generator=gen), torch.randn(batch, heads, n, dim, generator=gen)


MASKINGS = [reduce.STANDARD, reduce.OFFICIAL]


# ------------------------------------------------------------------------------ prune
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("text_len,images", [(5, 17), (4, 16), (1, 9)])
@pytest.mark.parametrize("score_head", [-1, 0, 2])
@pytest.mark.parametrize("masking", MASKINGS)
def test_prune_random(batch, text_len, images, score_head, masking):
    gen = torch.Generator().manual_seed(batch * 100 + text_len * 10 + images)
    n = text_len + images
    x, metric = torch.randn(batch, n, 8, generator=gen), torch.randn(batch, n, 6, generator=gen)
    key_mask = (torch.rand(batch, n, generator=gen) > 0.3).float()
    key_mask[:, 0] = key_mask[:, text_len] = 1
    text_mask = key_mask[:, :text_len]
    q, k = _qk(gen, batch, 4, text_len, n)
    for keep in (1, images // 2, images - 1, images):
        run_prune(x, metric, q, k, key_mask, text_mask, keep, score_head, text_len, masking)


@pytest.mark.parametrize("masking", MASKINGS)
def test_prune_keys_of_another_sequence(masking):
    """Cross-attention (METER): the keys are the image tokens (image_start 0), x aligned with them."""
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(2, 14, 5, generator=gen)
    q, k = _qk(gen, 2, 3, 6, 14)
    text_mask = torch.tensor([[1.0, 1, 1, 1, 0, 0], [1, 1, 0.5, 0, 0, 0]])
    for keep in (1, 7, 14):
        run_prune(x, x.clone(), q, k, torch.ones(2, 14), text_mask, keep, -1, 0, masking)


@pytest.mark.parametrize("opset", functions.SUPPORTED_OPSETS)
def test_prune_every_supported_opset(opset):
    gen = torch.Generator().manual_seed(opset)
    x, metric = torch.randn(2, 12, 8, generator=gen), torch.randn(2, 12, 4, generator=gen)
    q, k = _qk(gen, 2, 3, 4, 12)
    for masking in MASKINGS:
        run_prune(x, metric, q, k, torch.ones(2, 12), torch.ones(2, 4), 5, -1, 4, masking, opset=opset)


def test_prune_all_equal_scores_keep_lowest_indices_first():
    batch, text_len, images = 2, 4, 11
    n = text_len + images
    q = torch.zeros(batch, 2, text_len, 4)  # every logit 0: every key gets the same probability
    k = torch.randn(batch, 2, n, 4)
    x = torch.arange(batch * n * 3, dtype=torch.float32).reshape(batch, n, 3)
    for masking in MASKINGS:
        got = run_prune(x, x.clone(), q, k, torch.ones(batch, n), torch.ones(batch, text_len), 6, -1, text_len,
                        masking)
        np.testing.assert_array_equal(got[2], np.tile(np.arange(6), (batch, 1)))


def test_prune_partial_ties():
    """Image keys that repeat each other (equal logits, so exactly equal scores in every backend)."""
    batch, text_len, images = 2, 3, 10
    n = text_len + images
    gen = torch.Generator().manual_seed(4)
    q = torch.randn(batch, 2, text_len, 4, generator=gen)
    base = torch.randn(batch, 2, 4, 4, generator=gen)
    pattern = torch.tensor([0, 1, 0, 2, 1, 0, 3, 2, 1, 0])
    k = torch.cat([torch.randn(batch, 2, text_len, 4, generator=gen), base[:, :, pattern]], dim=2)
    x = torch.randn(batch, n, 4)
    for keep in range(1, images + 1):
        for head in (-1, 1):
            run_prune(x, x.clone(), q, k, torch.ones(batch, n), torch.ones(batch, text_len), keep, head, text_len,
                      reduce.STANDARD)


def test_prune_heavy_text_padding_and_fractional_mask():
    gen = torch.Generator().manual_seed(7)
    batch, text_len, images = 3, 12, 9
    n = text_len + images
    key_mask = torch.ones(batch, n)
    key_mask[:, 1:text_len] = 0  # only the CLS is real
    key_mask[1, 1] = 0.5  # merged real+pad
    key_mask[2, :3] = torch.tensor([1.0, 1 / 3, 2 / 3])
    x, metric = torch.randn(batch, n, 8, generator=gen), torch.randn(batch, n, 4, generator=gen)
    q, k = _qk(gen, batch, 4, text_len, n)
    for masking in MASKINGS:
        run_prune(x, metric, q, k, key_mask, key_mask[:, :text_len], 4, -1, text_len, masking)


def test_prune_fp16_tokens_fp32_and_fp16_attention():
    gen = torch.Generator().manual_seed(3)
    batch, text_len, images = 2, 5, 13
    n = text_len + images
    x, metric = torch.randn(batch, n, 8, generator=gen).half(), torch.randn(batch, n, 4, generator=gen).half()
    q, k = _qk(gen, batch, 4, text_len, n)
    ones = torch.ones(batch, n)
    run_prune(x, metric, q, k, ones, ones[:, :text_len], 7, -1, text_len, reduce.STANDARD)
    run_prune(x, metric, q.half(), k.half(), ones, ones[:, :text_len], 7, 0, text_len, reduce.OFFICIAL)


# ------------------------------------------------------------------------------ merge
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("tokens", [3, 4, 9, 10, 31])
def test_merge_random_every_r(batch, tokens):
    gen = torch.Generator().manual_seed(batch * 100 + tokens)
    x, metric = torch.randn(batch, tokens, 8, generator=gen), torch.randn(batch, tokens, 5, generator=gen)
    mask = torch.rand(batch, tokens, generator=gen)
    for r in range(0, merge_cap(tokens) + 1):
        run_merge(x, metric, mask, r)


@pytest.mark.parametrize("opset", functions.SUPPORTED_OPSETS)
def test_merge_every_supported_opset(opset):
    gen = torch.Generator().manual_seed(opset)
    x, metric = torch.randn(2, 11, 8, generator=gen), torch.randn(2, 11, 4, generator=gen)
    run_merge(x, metric, torch.ones(2, 11), 5, opset=opset)
    run_merge(x, metric, torch.ones(2, 11), 0, opset=opset)


@pytest.mark.parametrize("tokens", [1, 2, 5])
def test_merge_r0_is_identity_even_for_tiny_inputs(tokens):
    x = torch.randn(2, tokens, 4)
    got = run_merge(x, torch.randn(2, tokens, 3), torch.rand(2, tokens), 0, atol=0.0)
    np.testing.assert_array_equal(got[0], x.numpy())
    np.testing.assert_array_equal(got[2], np.tile(np.arange(tokens), (2, 1)))


@pytest.mark.parametrize("tokens", [7, 8])
def test_merge_all_equal_metric_rows(tokens):
    """Every similarity is exactly 1: edges and destinations are decided by the tie rules alone."""
    metric = torch.ones(2, tokens, 4)
    x = torch.arange(2 * tokens * 3, dtype=torch.float32).reshape(2, tokens, 3)
    for r in range(merge_cap(tokens) + 1):
        run_merge(x, metric, torch.ones(2, tokens), r)


def test_merge_one_hot_metric_ties():
    """Exact ties between a few distinct similarities (one-hot rows: every dot product is 0 or 1)."""
    tokens, dim = 13, 3
    pattern = torch.tensor([0, 0, 1, 2, 1, 1, 0, 2, 2, 0, 1, 0, 2])
    metric = torch.nn.functional.one_hot(pattern, dim).float().expand(2, -1, -1).clone()
    metric[1] = metric[1].flip(0)
    x = torch.randn(2, tokens, 6)
    for r in range(merge_cap(tokens) + 1):
        run_merge(x, metric, torch.ones(2, tokens), r)


def test_merge_heavy_padding_mask():
    gen = torch.Generator().manual_seed(11)
    tokens = 16
    mask = torch.zeros(3, tokens)
    mask[:, 0] = 1
    mask[1, :3] = torch.tensor([1.0, 0.5, 1 / 3])
    x, metric = torch.randn(3, tokens, 8, generator=gen), torch.randn(3, tokens, 4, generator=gen)
    metric[:, 4:] = metric[:, 4:5]  # identical pad rows, as real padding produces
    for r in (1, 3, merge_cap(tokens)):
        run_merge(x, metric, mask, r)


def test_merge_fp16():
    gen = torch.Generator().manual_seed(5)
    tokens = 15
    x, metric = torch.randn(2, tokens, 8, generator=gen).half(), torch.randn(2, tokens, 4, generator=gen).half()
    for r in (0, 1, 4, merge_cap(tokens)):
        run_merge(x, metric, torch.rand(2, tokens, generator=gen), r, atol=1e-3)


# ------------------------------------------------------------------ model-level facts
@pytest.mark.parametrize("op_type,counts", [("PumerPrune", dict(text_len=2, keep=3, score_head=-1, image_start=2,
                                                                 masking=0)),
                                            ("PumerMerge", dict(r=1))])
def test_without_function_body_onnxruntime_refuses(op_type, counts):
    model = functions.single_op_model(op_type, with_functions=False, **counts)
    with pytest.raises(Exception, match="not a registered function/op"):
        _session(model)
    # ... and with the body the very same node loads.
    _session(functions.single_op_model(op_type, **counts))


def test_nodes_carry_plugin_attributes_from_op_spec():
    spec = ops.op_spec()
    node = functions.make_node("PumerMerge", ["x", "metric", "mask"], ["a", "b", "c"], r=3)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert node.domain == spec["domain"] == "pumer"
    assert attrs == {"r": 3, "plugin_namespace": b"pumer", "plugin_version": spec["plugin_version"].encode()}
    assert {a.name: a.type for a in node.attribute}["plugin_version"] == onnx.AttributeProto.STRING
    # The translations (onnxscript) hard-code the same strings.
    for fn in (pumer_prune, pumer_merge):
        proto = fn.to_function_proto()
        (inner,) = [n for n in proto.node if n.domain == "pumer"]
        inner_attrs = {a.name: a for a in inner.attribute}
        assert inner_attrs["plugin_namespace"].s.decode() == spec["plugin_namespace"]
        assert inner_attrs["plugin_version"].s.decode() == spec["plugin_version"]


def test_function_bodies_use_only_standard_ops_at_the_model_opset():
    for opset in functions.SUPPORTED_OPSETS:
        for proto in functions.function_protos(opset):
            assert [(i.domain, i.version) for i in proto.opset_import] == [("", opset)]
            assert proto.domain == "pumer" and proto.name in functions.OP_TYPES

            def domains(nodes):
                for n in nodes:
                    yield n.domain
                    for a in n.attribute:
                        if a.type == onnx.AttributeProto.GRAPH:
                            yield from domains(a.g.node)

            assert set(domains(proto.node)) == {""}
    with pytest.raises(ValueError, match="not supported"):
        functions.function_protos(functions.MIN_OPSET - 1)


def test_op_types_are_not_standard_onnx_ops():
    for op_type in functions.OP_TYPES:
        assert not onnx.defs.has(op_type)
        assert not onnx.defs.has(op_type, "pumer")
