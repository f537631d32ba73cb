"""FastV's reference on LLaVA (training-free): keeping every image token is stock LLaVA, the kept tokens are the
top-R of transformers' own attention weights, ties go to the earlier token, cached decode equals the uncached
forward, and ONNX Runtime's tokens equal PyTorch's."""

from __future__ import annotations

import pytest
import torch

from pumer_export.errors import PumerExportError
from pumer_export.methods.fastv.config import FastVConfig
from pumer_export.methods.fastv.reference import kept_image_positions
from pumer_export.models.llava import decoding, image_tokens
from pumer_export.models.llava.fastv import attach
from pumer_export.models.llava.presets import llava_model
from test_victor import prompts


@pytest.fixture(scope="module")
def stock():
    return llava_model("tiny", seed=2)


def test_keeping_every_image_token_is_stock_llava(stock):
    model = attach(stock, FastVConfig(keep_tokens=image_tokens(stock.config), drop_layer=2))
    ids, mask, pixels = prompts(model, [2, 0, 3], [4, 6, 1], registers=0, seed=5)
    logits, state = model.prefill(ids, mask, pixels)
    with torch.no_grad():
        theirs = stock(input_ids=ids, attention_mask=mask, pixel_values=pixels,
                       position_ids=decoding.positions(mask)).logits
    real = mask.bool()
    assert logits.shape == theirs.shape
    torch.testing.assert_close(logits[real], theirs[real], rtol=1e-5, atol=1e-5)


def test_kept_tokens_are_the_top_of_transformers_attention(stock):
    """The image tokens that stay are the R with the largest layer k-1 attention from the last prompt token (mean
    over heads), read from transformers' eager attention weights: an independent computation of the ranking."""
    k, keep = 2, 5
    model = attach(stock, FastVConfig(keep_tokens=keep, drop_layer=k))
    ids, mask, pixels = prompts(model, [1, 3], [5, 2], registers=0, seed=8)
    stock.config._attn_implementation = "eager"
    stock.config.text_config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            out = stock(input_ids=ids, attention_mask=mask, pixel_values=pixels,
                        position_ids=decoding.positions(mask), output_attentions=True)
    finally:
        stock.config._attn_implementation = "sdpa"
        stock.config.text_config._attn_implementation = "sdpa"
    attention = out.attentions[k - 1][:, :, -1, :].mean(dim=1)  # [B, L]
    where = model.layout(ids)
    n = image_tokens(model.config)
    for row in range(ids.shape[0]):
        start = int(where.start[row])
        scores = attention[row, start:start + n]
        expected = sorted((torch.topk(scores, keep).indices + start).tolist())
        got = kept_image_positions(attention, where, keep)[row].tolist()
        assert got == expected
    # and the model keeps exactly those: the short cache holds L - N + R positions, the kept image positions among them
    _, state = model.prefill(ids, mask, pixels)
    assert [c[0].shape[2] for c in state.caches] == [ids.shape[1]] * k + [ids.shape[1] - n + keep] * (4 - k)


def test_ties_go_to_the_earlier_token():
    where = decoding.Layout(torch.tensor([1, 0]), image_tokens=4, registers=0)
    attention = torch.tensor([[0.9, 0.2, 0.5, 0.5, 0.1, 0.0], [0.3, 0.3, 0.3, 0.3, 0.0, 0.0]])
    assert kept_image_positions(attention, where, 2).tolist() == [[2, 3], [0, 1]]
    assert kept_image_positions(attention, where, 1).tolist() == [[2], [0]]
    assert kept_image_positions(attention, where, 0).tolist() == [[], []]


def test_cached_decode_equals_the_uncached_forward(stock):
    model = attach(stock, FastVConfig(keep_tokens=3, drop_layer=1))
    ids, mask, pixels = prompts(model, [0, 2], [3, 5], registers=0, seed=9)
    with torch.no_grad():
        logits, state = model.prefill(ids, mask, pixels)
        tokens, full = ids, mask
        for _ in range(4):
            token = logits[:, -1].argmax(-1, keepdim=True)
            tokens, full = torch.cat([tokens, token], 1), torch.cat([full, torch.ones_like(token)], 1)
            logits, state = model.decode(token, state)
            # the uncached forward ranks with the generated tokens appended; FastV ranks once, at the prompt's last
            # token, so the comparison forces the prompt's choice: same rule, prompt-time attention
            uncached_embeds, _ = model.prepare(tokens, decoding.image_features(model, pixels))
            prompt_keep = _prompt_keep(model, ids, mask, pixels)
            extra = torch.arange(ids.shape[1], tokens.shape[1])[None].expand(ids.shape[0], -1)
            select = decoding.Select(lambda _a: torch.cat([prompt_keep, extra], 1))
            uncached, _ = decoding.prefill(model, model.drop_layer, full, uncached_embeds, select)
            torch.testing.assert_close(logits[:, -1], uncached[:, -1], rtol=1e-4, atol=1e-5)


def _prompt_keep(model, ids, mask, pixels):
    captured = {}
    embeds, select = model.prepare(ids, decoding.image_features(model, pixels))

    def rule(attention):
        captured["keep"] = select(attention)
        return captured["keep"]

    decoding.prefill(model, model.drop_layer, mask, embeds, decoding.Select(rule, needs_attention=True))
    return captured["keep"]


def test_export_and_ort_tokens_equal_pytorch(stock, tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e '.[test]')")
    from pumer_export.onnx.generation import export_generation
    from pumer_export.runtime import OrtGeneration, generate

    model = attach(stock, FastVConfig(keep_tokens=4, drop_layer=2))
    folder = export_generation(model, tmp_path / "fastv")
    ids, mask, pixels = prompts(model, [3, 0, 1], [2, 6, 4], registers=0, seed=12)
    expected = model.generate_tokens(ids, mask, pixels, max_new_tokens=6).numpy()
    backend = OrtGeneration(folder, threads=1)
    assert (generate(backend, ids.numpy(), mask.numpy(), pixels.numpy(), 6) == expected).all()
    _, short, presents = backend.prefill(ids.numpy(), mask.numpy(), backend.image_features(pixels.numpy()))
    n = image_tokens(model.config)
    assert short.shape[1] == ids.shape[1] - n + 4 and presents[-1].shape[2] == ids.shape[1] - n + 4


def test_bad_settings_are_one_line(stock):
    with pytest.raises(PumerExportError, match="drop_layer must be an integer of at least 1"):
        FastVConfig(keep_tokens=4, drop_layer=0)
    with pytest.raises(PumerExportError, match="an image has 16"):
        attach(stock, FastVConfig(keep_tokens=17))
    with pytest.raises(PumerExportError, match="past the language model's 4 layers"):
        attach(stock, FastVConfig(keep_tokens=4, drop_layer=5))
