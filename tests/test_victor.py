"""Victor's reference on LLaVA: stock equivalence (M = 0, k = n, against transformers' own forward), the drop of the
image span only, the two-length KV cache, cached decode equal to an uncached forward at every step, bad inputs."""

from __future__ import annotations

import pytest
import torch

from pumer_export.errors import PumerExportError
from pumer_export.methods.victor import reference
from pumer_export.methods.victor.config import VictorConfig
from pumer_export.models.llava import image_tokens
from pumer_export.models.llava.presets import llava_model
from pumer_export.models.llava.victor import VictorLlavaForConditionalGeneration, attach

IMAGE, REGISTER, EOS = 4, 5, 2


def prompts(model, prefix_lengths, text_lengths, registers, seed=0, vocab=(6, 96)):
    """A left-padded batch [prefix ; image ; registers ; text] with per-row prefix and text lengths."""
    n = image_tokens(model.config)
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for s, t in zip(prefix_lengths, text_lengths):
        prefix = torch.randint(*vocab, (s,), generator=generator)
        text = torch.randint(*vocab, (t,), generator=generator)
        rows.append(torch.cat([prefix, torch.full((n,), IMAGE), torch.full((registers,), REGISTER), text]))
    length = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, length - len(row):], mask[i, length - len(row):] = row, 1
    vision = model.config.vision_config
    pixels = torch.randn(len(rows), 3, vision.image_size, vision.image_size, generator=generator)
    return ids, mask, pixels


@pytest.fixture(scope="module")
def stock():
    return llava_model("tiny", seed=0)


def victor_of(stock, registers=3, drop_layer=2, seed=1):
    return attach(stock, VictorConfig(registers=registers, drop_layer=drop_layer), REGISTER, seed=seed)


def test_no_registers_and_no_drop_is_stock_llava(stock):
    """k = n with M = 0 computes what transformers' LlavaForConditionalGeneration computes, on a left-padded batch
    with different prefix lengths (positions passed explicitly: cumulative sum of the mask)."""
    model = victor_of(stock, registers=0, drop_layer=4)
    ids, mask, pixels = prompts(model, [3, 1, 0], [5, 7, 2], registers=0)
    logits, _ = model.prefill(ids, mask, pixels)
    with torch.no_grad():
        theirs = stock(input_ids=ids, attention_mask=mask, pixel_values=pixels,
                       position_ids=reference.positions(mask)).logits
    where = model.layout(ids)
    keep = where.keep_index(ids.shape[1])
    theirs = theirs.gather(1, keep[..., None].expand(-1, -1, theirs.shape[-1]))
    real = mask.gather(1, keep).bool()
    assert logits.shape == theirs.shape
    torch.testing.assert_close(logits[real], theirs[real], rtol=1e-5, atol=1e-5)


def test_drop_removes_the_image_span_only(stock):
    """After the drop the short sequence is prefix + registers + text of each row (not "the first N tokens"), and
    its positions are the full sequence's (the "keep" scheme)."""
    model = victor_of(stock)
    ids, mask, _ = prompts(model, [2, 0, 4], [3, 6, 1], registers=3)
    where = model.layout(ids)
    n = image_tokens(model.config)
    keep = where.keep_index(ids.shape[1])
    kept_ids = ids.gather(1, keep)
    for row in range(ids.shape[0]):
        expected = [int(t) for t in ids[row] if int(t) != IMAGE]
        assert kept_ids[row].tolist() == expected  # every non-image token, in order (padding included)
    positions = reference.positions(mask).gather(1, keep)
    start = where.start
    for row in range(ids.shape[0]):
        first_register = int((kept_ids[row] == REGISTER).long().argmax())
        assert int(positions[row, first_register]) == int(reference.positions(mask)[row, start[row] + n])


def test_cache_lengths_and_cached_decode_equal_the_uncached_forward(stock):
    """Prefill's present lengths are L (layers < k) and L - N (layers >= k); each decode step's logits equal the
    logits of an uncached prefill over the prompt plus the tokens generated so far, on a mixed-length batch."""
    model = victor_of(stock, registers=3, drop_layer=2)
    ids, mask, pixels = prompts(model, [2, 0, 3], [4, 6, 1], registers=3, seed=3)
    n = image_tokens(model.config)
    with torch.no_grad():
        logits, state = model.prefill(ids, mask, pixels)
        lengths = [cache[0].shape[2] for cache in state.caches]
        assert lengths == [ids.shape[1]] * 2 + [ids.shape[1] - n] * 2
        tokens = ids
        full_mask = mask
        for step in range(5):
            token = logits[:, -1].argmax(-1, keepdim=True)
            tokens = torch.cat([tokens, token], 1)
            full_mask = torch.cat([full_mask, torch.ones_like(token)], 1)
            logits, state = model.decode(token, state)
            uncached, _ = model.prefill(tokens, full_mask, pixels)
            torch.testing.assert_close(logits[:, -1], uncached[:, -1], rtol=1e-4, atol=1e-5)
            assert [c[0].shape[2] for c in state.caches] == [tokens.shape[1]] * 2 + [tokens.shape[1] - n] * 2


def test_the_drop_changes_what_later_layers_see(stock):
    """Victor is not stock LLaVA: with the image dropped before layer 2 the logits differ from the undropped model's
    with the same registers (so the equivalence test above can fail), and the registers matter."""
    dropped = victor_of(stock, registers=3, drop_layer=2)
    kept = victor_of(stock, registers=3, drop_layer=4)
    ids, mask, pixels = prompts(dropped, [2], [4], registers=3)
    with torch.no_grad():
        a, _ = dropped.prefill(ids, mask, pixels)
        b, _ = kept.prefill(ids, mask, pixels)
        other = victor_of(stock, registers=3, drop_layer=2, seed=7)
        c, _ = other.prefill(ids, mask, pixels)
    assert (a - b).abs().max() > 1e-3 and (a - c).abs().max() > 1e-3


def test_generation_greedy_and_sampled(stock):
    """Greedy generation is the argmax chain of the cached steps (deterministic), stops a row at EOS and pads it;
    sampling is seeded (same seed, same tokens)."""
    model = victor_of(stock)
    ids, mask, pixels = prompts(model, [1, 2], [3, 2], registers=3)
    greedy = model.generate_tokens(ids, mask, pixels, max_new_tokens=6)
    assert greedy.shape == (2, 6) and torch.equal(greedy, model.generate_tokens(ids, mask, pixels, 6))
    with torch.no_grad():
        logits, state = model.prefill(ids, mask, pixels)
        chain = []
        for _ in range(6):
            token = logits[:, -1].argmax(-1)
            chain.append(token)
            logits, state = model.decode(token[:, None], state)
    assert torch.equal(greedy, torch.stack(chain, 1))
    sampling = reference.Sampling(temperature=1.0, top_k=20, seed=5)
    first = model.generate_tokens(ids, mask, pixels, 6, sampling)
    assert torch.equal(first, model.generate_tokens(ids, mask, pixels, 6, sampling))
    # a forced end-of-sequence: the row stops there and is padded after it
    model.config.text_config.eos_token_id = int(greedy[0, 1])
    stopped = model.generate_tokens(ids, mask, pixels, 6)
    model.config.text_config.eos_token_id = None
    assert stopped[0, :2].tolist() == greedy[0, :2].tolist() and set(stopped[0, 2:].tolist()) == {0}


def test_checkpoint_round_trip(stock, tmp_path):
    model = victor_of(stock)
    model.save_pretrained(tmp_path / "ck")
    loaded = VictorLlavaForConditionalGeneration.from_pretrained(tmp_path / "ck").eval()
    assert loaded.victor == model.victor and loaded.config.register_token_id == REGISTER
    torch.testing.assert_close(loaded.victor_registers, model.victor_registers)
    ids, mask, pixels = prompts(model, [1], [3], registers=3)
    with torch.no_grad():
        torch.testing.assert_close(loaded.prefill(ids, mask, pixels)[0], model.prefill(ids, mask, pixels)[0])


def test_bad_settings_and_prompts_are_one_line(stock):
    with pytest.raises(PumerExportError, match="past the language model's 4 layers"):
        victor_of(stock, drop_layer=5)
    with pytest.raises(PumerExportError, match="at least 1"):
        victor_of(stock, registers=0, drop_layer=2)
    with pytest.raises(PumerExportError, match="registers must be an integer"):
        VictorConfig(registers=-1)
    with pytest.raises(PumerExportError, match="unknown victor settings: m"):
        VictorConfig.from_dict({"m": 3})
    model = victor_of(stock)
    ids, mask, pixels = prompts(model, [1], [3], registers=3)
    with pytest.raises(PumerExportError, match="exactly 16 image tokens"):
        model.prefill(ids[:, 2:], mask[:, 2:], pixels)
    no_registers, _, _ = prompts(model, [1], [3], registers=0)
    with pytest.raises(PumerExportError, match="register tokens"):
        model.layout(no_registers)
    split = ids.clone()
    split[0, 5], split[0, 0] = 7, IMAGE  # one image token moved into the prefix
    with pytest.raises(PumerExportError, match="one contiguous span"):
        model.layout(split)
