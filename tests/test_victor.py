"""Victor's reference on LLaVA: stock equivalence (M = 0, k = n, against transformers' own forward), the drop of the
image span only, the two-length KV cache, cached decode equal to an uncached forward at every step, bad inputs."""

from __future__ import annotations

import pytest
import torch

from pumer_export.errors import PumerExportError
from pumer_export.models.llava import decoding as reference
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
    keep = where.without_image(ids.shape[1])
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
    keep = where.without_image(ids.shape[1])
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
    model.config.text_config.eos_token_id = None  # no end-of-sequence: every row runs the six steps
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
    # a forced end-of-sequence: the row stops at the first step that emits it and is padded after it
    row = greedy[0].tolist()
    step = next(j for j in range(1, 6) if row[j] not in row[:j])
    model.config.text_config.eos_token_id = row[step]
    stopped = model.generate_tokens(ids, mask, pixels, 6)
    model.config.text_config.eos_token_id = None
    pad = model.config.text_config.pad_token_id
    assert stopped[0, :step + 1].tolist() == row[:step + 1] and set(stopped[0, step + 1:].tolist()) <= {pad}


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
    with pytest.raises(PumerExportError, match=r"unknown victor setting\(s\): m"):
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


# ------------------------------------------------------------------------- export and runtime
@pytest.fixture(scope="module")
def exported(stock, tmp_path_factory):
    """One Victor export (three graphs) of the tiny model, k = 2 of 4 layers, M = 3."""
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e '.[test]')")
    from pumer_export.onnx.generation import export_generation

    model = victor_of(stock)
    folder = export_generation(model, tmp_path_factory.mktemp("victor") / "export")
    return model, folder


def test_export_has_three_graphs_of_standard_ops_and_two_past_lengths(exported):
    import onnx

    from pumer_export.onnx.generation import GRAPHS

    model, folder = exported
    for name in GRAPHS:
        proto = onnx.load(folder / f"{name}.onnx")
        assert {node.domain for node in proto.graph.node} <= {"", "ai.onnx"}, name  # standard operators only
    decode = onnx.load(folder / "decode.onnx")
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in decode.graph.input}
    full, short = dims["past.0.key"][2], dims["past.3.key"][2]
    assert isinstance(full, str) and isinstance(short, str) and full != short
    assert dims["past.1.key"][2] == full and dims["past.2.key"][2] == short  # k = 2: layers 0, 1 full
    # the prefill's language-model head runs on the last position only (its cost must not grow with the prompt)
    prefill = onnx.load(folder / "prefill.onnx")
    vocab = model.config.text_config.vocab_size
    weights = {i.name for i in prefill.graph.initializer if vocab in i.dims}
    shapes = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*prefill.graph.value_info, *prefill.graph.input]}
    heads = [n for n in prefill.graph.node if n.op_type in ("MatMul", "Gemm") and set(n.input) & weights]
    assert len(heads) == 1 and [shapes[x][1] for x in heads[0].input if x not in weights] == [1]


def test_ort_prefill_and_greedy_tokens_equal_the_reference(exported):
    """On a batch of another size and other prefix lengths than the export's example: prefill logits, present lengths
    L and L - N, and the greedy tokens of ONNX Runtime's loop equal PyTorch's (the reference's own loop and the
    runtime loop over the reference's steps)."""
    from pumer_export.runtime import OrtGeneration, TorchGeneration, generate

    model, folder = exported
    ids, mask, pixels = prompts(model, [0, 3, 1], [6, 2, 4], registers=3, seed=11)
    ort_backend = OrtGeneration(folder, threads=1)
    assert all(session.get_session_options().get_session_config_entry("session.force_spinning_stop") == "1"
               for session in ort_backend.sessions.values())  # three graphs in turn: no idle spinning between
    features = ort_backend.image_features(pixels.numpy())
    logits, short_mask, presents = ort_backend.prefill(ids.numpy(), mask.numpy(), features)
    with torch.no_grad():
        reference_logits, state = model.prefill(ids, mask, pixels)
    assert abs(logits - reference_logits[:, -1:].numpy()).max() < 1e-4
    assert (short_mask == state.mask_short.numpy()).all()
    n = image_tokens(model.config)
    assert [p.shape[2] for p in presents[::2]] == [ids.shape[1]] * 2 + [ids.shape[1] - n] * 2
    expected = model.generate_tokens(ids, mask, pixels, max_new_tokens=8).numpy()
    assert (generate(TorchGeneration(model), ids.numpy(), mask.numpy(), pixels.numpy(), 8) == expected).all()
    assert (generate(ort_backend, ids.numpy(), mask.numpy(), pixels.numpy(), 8) == expected).all()
    sampling = reference.Sampling(temperature=0.8, top_k=10, seed=3)
    assert (generate(ort_backend, ids.numpy(), mask.numpy(), pixels.numpy(), 5, sampling)
            == model.generate_tokens(ids, mask, pixels, 5, sampling).numpy()).all()


def test_ort_decode_writes_the_cache_into_buffers_allocated_once_per_request(exported):
    """Within a request every decode step's presents are views into the same two sets of buffers (allocated at the
    first step, alternating: a step reads one set and writes the other), and the tokens equal those of a loop that
    lets ONNX Runtime allocate each step's cache."""
    import numpy as np

    from pumer_export.runtime import OrtGeneration, generate

    model, folder = exported
    ids, mask, pixels = prompts(model, [0, 2], [5, 3], registers=3, seed=5)
    backend = OrtGeneration(folder, threads=1)
    seen = []
    decode = backend.decode

    def recording(*args):
        logits, presents = decode(*args)
        seen.append((id(backend._request["buffers"]), presents[0], presents[-1]))
        return logits, presents

    backend.decode = recording
    tokens = generate(backend, ids.numpy(), mask.numpy(), pixels.numpy(), 7, stop_at_eos=False)
    buffers = backend._request["buffers"]
    assert len(seen) == 6 and {entry[0] for entry in seen} == {id(buffers)}
    for step, (_, first, last) in enumerate(seen):
        assert np.shares_memory(first, buffers[step % 2][0]) and np.shares_memory(last, buffers[step % 2][-1])
    plain = OrtGeneration(folder, threads=1)
    plain.start_request = lambda new_tokens: None  # no request buffers: ONNX Runtime allocates every present
    assert np.array_equal(tokens, generate(plain, ids.numpy(), mask.numpy(), pixels.numpy(), 7, stop_at_eos=False))


def test_decode_refuses_a_past_of_the_wrong_length(exported):
    import numpy as np

    from pumer_export.runtime import OrtGeneration

    model, folder = exported
    backend = OrtGeneration(folder, threads=1)
    ids, mask, pixels = prompts(model, [1], [3], registers=3)
    _, _, presents = backend.prefill(ids.numpy(), mask.numpy(), backend.image_features(pixels.numpy()))
    n = image_tokens(model.config)
    one = np.ones((1, 1), dtype=np.int64)
    full = np.concatenate([mask.numpy(), one], 1)
    short = full[:, n:]
    token, position = np.zeros((1, 1), dtype=np.int64), np.full((1, 1), ids.shape[1], dtype=np.int64)
    swapped = list(presents)
    swapped[0], swapped[6] = presents[6], presents[0]  # a short cache where layer 0 needs the full one
    with pytest.raises(PumerExportError, match="past.0.key holds"):
        backend.decode(token, position, full, short, swapped)
    with pytest.raises(PumerExportError, match="must be 16"):
        backend.decode(token, position, full, full, presents)
    logits, _ = backend.decode(token, position, full, short, presents)
    assert logits.shape[:2] == (1, 1)


def test_costs_follow_the_layout(stock):
    """KV bytes of the layers from the drop on are exactly (L - N) / L of the stock model's; prefill FLOPs shrink as
    the drop comes earlier and equal the stock count at k = n; a decode step's attention reads L - N + 1 keys after
    the drop (counted independently here: projections and MLP do not depend on the length)."""
    from pumer_export.models import llava

    config = stock.config
    n, length = image_tokens(config), 40
    victor = VictorConfig(registers=3, drop_layer=2)
    stock_kv, victor_kv = llava.kv_cache_bytes(config, length), llava.kv_cache_bytes(config, length, victor)
    assert victor_kv[:2] == stock_kv[:2]
    assert all(v * length == s * (length - n) for v, s in zip(victor_kv[2:], stock_kv[2:]))
    flops = [llava.prefill_flops(config, length, VictorConfig(registers=3, drop_layer=k)) for k in range(5)]
    assert flops == sorted(flops) and flops[4] == llava.prefill_flops(config, length)
    text = config.text_config
    saved = llava.decode_flops(config, length) - llava.decode_flops(config, length, victor)
    q_dim = text.num_attention_heads * (text.hidden_size // text.num_attention_heads)
    assert saved == 2 * (4 - 2) * (2 * 1 * n * q_dim)  # 2 FLOPs x 2 layers x (QK and AV over N fewer keys)


def test_processor_gives_the_victor_layout(stock):
    """The built-in processor expands the image placeholder to N tokens and puts the M register tokens right after
    it, left-padded; the Victor model reads that layout and generates from it."""
    from PIL import Image

    from pumer_export.models.llava import processing

    model = victor_of(stock)
    processor = processing.tiny_processor(model.config)
    images = [Image.new("RGB", (48, 48), "red"), Image.new("RGB", (64, 40), "blue")]
    batch = processing.encode(processor, images, ["what color is the shape?", "what shape?"], registers=3)
    ids = torch.from_numpy(batch["input_ids"])
    assert (ids == processing.IMAGE_TOKEN_ID).sum(1).tolist() == [image_tokens(model.config)] * 2
    assert (ids == processing.REGISTER_TOKEN_ID).sum(1).tolist() == [3, 3]
    assert batch["attention_mask"][1, 0] == 0 and batch["attention_mask"][:, -1].tolist() == [1, 1]  # left padding
    tokens = processor.tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist())
    assert tokens[-2:] == ["assistant", ":"] and "<unk>" not in tokens
    where = model.layout(ids)
    assert where.start.tolist() == [3, 6]  # <s> user : ...; the shorter question pads its row by 3
    out = model.generate_tokens(ids, torch.from_numpy(batch["attention_mask"]),
                                torch.from_numpy(batch["pixel_values"]), max_new_tokens=3)
    assert out.shape == (2, 3)


def test_answer_loss_is_the_next_token_loss_and_trains_the_registers(stock):
    """The loss equals the cross-entropy read off an independent full prefill at the positions before each answer
    token (padding in the answers not counted); stage 1 trains the registers and the projector only; a few stage-2
    steps halve the loss and leave the frozen vision tower as it was."""
    import copy

    from pumer_export.methods.victor.training import trainable
    from pumer_export.models.llava.training import answer_loss, with_answers

    model = copy.deepcopy(victor_of(stock))
    ids, mask, pixels = prompts(model, [1, 0, 2, 1], [3, 4, 2, 3], registers=3, seed=21)
    answers = torch.tensor([[40, 2], [41, 2], [42, 2], [43, 0]])
    answer_mask = torch.tensor([[1, 1], [1, 1], [1, 1], [1, 0]])  # the last answer has no EOS: padding
    loss = answer_loss(model, ids, mask, pixels, answers, answer_mask)
    with torch.no_grad():
        full_ids, full_mask = with_answers(ids, mask, answers, answer_mask)
        logits, _ = model.prefill(full_ids, full_mask, pixels)  # short layout: the last 3 positions are L-1, L, L+1
        log_probs = logits.log_softmax(-1)
        terms = [-log_probs[b, -3 + a, answers[b, a]] for b in range(4) for a in range(2) if answer_mask[b, a]]
    torch.testing.assert_close(loss.detach(), torch.stack(terms).mean())

    stage1 = {name for name, p in model.named_parameters() if p in set(trainable(model))}
    assert "victor_registers" in stage1 and all(n.startswith("model.multi_modal_projector") or n == "victor_registers"
                                                for n in stage1)
    parameters = trainable(model, language_model=True)  # stage 2: the decoder too, the vision tower frozen
    frozen = {name: p.detach().clone() for name, p in model.named_parameters() if not p.requires_grad}
    registers = model.victor_registers.detach().clone()
    optimizer = torch.optim.AdamW(parameters, lr=1e-2, weight_decay=0.0)
    first = None
    for _ in range(25):
        optimizer.zero_grad()
        step_loss = answer_loss(model, ids, mask, pixels, answers, answer_mask)
        first = float(step_loss.detach()) if first is None else first
        step_loss.backward()
        optimizer.step()
    assert float(answer_loss(model, ids, mask, pixels, answers, answer_mask).detach()) < 0.5 * first
    assert not torch.equal(model.victor_registers.detach(), registers)
    assert all(torch.equal(p, frozen[name]) for name, p in model.named_parameters() if name in frozen)
    assert frozen and all(name.startswith("model.vision_tower") for name in frozen)


def test_fastv_costs_count_the_tokens_it_keeps(stock):
    """FastV's layers after the drop hold L - N + R positions: its KV bytes there are (L - N + R) / L of stock."""
    from pumer_export.methods.fastv.config import FastVConfig
    from pumer_export.models import llava

    config = stock.config
    n, length = image_tokens(config), 40
    stock_kv = llava.kv_cache_bytes(config, length)
    fastv_kv = llava.kv_cache_bytes(config, length, FastVConfig(keep_tokens=4, drop_layer=2))
    assert fastv_kv[:2] == stock_kv[:2]
    assert all(f * length == s * (length - n + 4) for f, s in zip(fastv_kv[2:], stock_kv[2:]))
