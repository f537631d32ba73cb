"""Kernel test cases shared by the GPU harness (``test_kernels_cuda.py``) and the CPU emulation tests
(``test_kernels_emulation.py``): input generators (random and adversarial) and the checks of a kernel's outputs
against the PyTorch reference (``pumer_export.reduce``). Inputs are generated on the CPU from a seed, then moved to
the requested device, so both harnesses see the same values.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pumer_export import reduce

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Value tolerances for outputs in each dtype (the merge means are computed in float32, then rounded once).
ATOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
RTOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
SCORE_TOL = 1e-5  # float32 scores/similarities: near-ties within this may legitimately resolve differently
# Merged masks are float32 means of up to thousands of values: a reference scatter_add in another order and the
# kernel's fixed order may differ by a few ulps of the sum, i.e. ~1e-6 of the mean.
MASK_TOL = 1e-5

PLUGINS = Path(__file__).resolve().parent.parent / "plugins"


def load_extension(build_dir: Path, name: str = "pumer_kernels_ext"):
    """Build (or reuse) the PyTorch CUDA extension over the kernel launchers (plugins/tests/torch_binding.cpp)."""
    from torch.utils.cpp_extension import load

    return load(
        name=name,
        sources=[
            str(PLUGINS / "tests" / "torch_binding.cpp"),
            str(PLUGINS / "pumerPrunePlugin" / "pumerPruneKernel.cu"),
            str(PLUGINS / "pumerMergePlugin" / "pumerMergeKernel.cu"),
            str(PLUGINS / "pumerCompactPlugin" / "pumerCompactKernel.cu"),
            str(PLUGINS / "common" / "pumerHostLogic.cpp"),
            str(PLUGINS / "common" / "pumerVersion.cpp"),
        ],
        extra_include_paths=[str(PLUGINS / "common")],
        extra_cuda_cflags=["--expt-relaxed-constexpr", "-lineinfo"],
        build_directory=str(build_dir),
        verbose=False,
    )


def cuda_median_ms(fn, repeats: int = 50, warmup: int = 5) -> float:
    """Median wall time of ``fn`` on the GPU in ms (CUDA events around every call)."""
    import statistics

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


ATTN_KINDS = ("random", "equal", "levels", "nan", "signed_zero")
MASK_KINDS = ("ones", "padded", "fractional", "zeros")
METRIC_KINDS = ("random", "equal", "duplicates", "nan", "signed_zero")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def prune_inputs(
    batch, tokens, text_len, heads, channels, dim, t_dtype, a_dtype, seed,
    attn_kind="random", mask_kind="ones", device="cpu", head_dim=8, image_start=None,
):
    """x [B,Nk,C], metric [B,Nk,D] (t_dtype), queries [B,H,text_len,d], keys [B,H,Nk,d] (a_dtype), key_mask [B,Nk],
    text_mask [B,text_len] float32.

    ``image_start`` None: ViLT's joint sequence (Nk = ``tokens`` = text + image, the key mask's text part is the
    text mask, image keys from text_len); 0: a cross-attention whose ``tokens`` keys are the image tokens.

    attn kinds: ``random``; ``equal`` (zero queries: every logit 0, so every image key scores the same);
    ``levels`` (coarse exact entries, the image keys repeating three base keys: exact ties between equal columns
    in any implementation);
    ``nan`` (a NaN in one image key: NaN logits make that batch row's scores NaN, which sort first);
    ``signed_zero`` (image keys from {+0, -0, a random key}: logits +0 and -0 tie). Mask kinds: ``ones``,
    ``padded`` (text mostly padding), ``fractional``, ``zeros`` (every score divided by 0: inf / NaN).
    """
    g = _gen(seed)
    start = text_len if image_start is None else image_start
    images = tokens - start
    x = torch.randn(batch, tokens, channels, generator=g).to(t_dtype)
    metric = torch.randn(batch, tokens, dim, generator=g).to(t_dtype)
    queries = torch.randn(batch, heads, text_len, head_dim, generator=g)
    keys = torch.randn(batch, heads, tokens, head_dim, generator=g)
    if attn_kind == "equal":
        queries.zero_()
    elif attn_kind in ("levels", "signed_zero"):
        # Entries in {-1, -1/2, 0, 1/2, 1}: every dot product is exact in float32 in any summation order, so equal
        # columns give bit-equal logits in every implementation (a BLAS matmul of random floats need not).
        coarse = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0])
        queries = coarse[torch.randint(0, 5, queries.shape, generator=g)]
        keys = coarse[torch.randint(0, 5, keys.shape, generator=g)]
        base = coarse[torch.randint(0, 5, (batch, heads, 3, head_dim), generator=g)]
        if attn_kind == "signed_zero":
            base[:, :, 0] = 0.0
            base[:, :, 1] = -0.0
        keys[:, :, start:] = base[:, :, torch.randint(0, 3, (images,), generator=g)]
    elif attn_kind == "nan":
        keys[:, :, start + images // 2, 0] = float("nan")
    elif attn_kind != "random":
        raise ValueError(attn_kind)
    if mask_kind == "ones":
        text_mask = torch.ones(batch, text_len)
    elif mask_kind == "padded":
        text_mask = torch.zeros(batch, text_len)
        text_mask[:, : max(1, text_len // 16)] = 1.0
    elif mask_kind == "fractional":
        text_mask = torch.rand(batch, text_len, generator=g)
        text_mask[:, 0] = 1.0
    elif mask_kind == "zeros":
        text_mask = torch.zeros(batch, text_len)
    else:
        raise ValueError(mask_kind)
    key_mask = torch.ones(batch, tokens)
    if image_start is None:
        key_mask[:, :text_len] = text_mask
    out = (x, metric, queries.to(a_dtype), keys.to(a_dtype), key_mask, text_mask)
    return tuple(t.to(device) for t in out)


def merge_inputs(batch, tokens, channels, dim, dtype, seed, kind="random", device="cpu"):
    """x [B,t,C], metric [B,t,D] (dtype), mask [B,t] float32 (fractional, every third 1).

    metric kinds: ``random``; ``equal`` / ``duplicates`` (+-1 entries with D a power of 4: norms, normalised rows
    and similarities are exact in any summation order, so ties are exact ties; ``equal``: one row repeated,
    ``duplicates``: three distinct rows); ``nan`` (duplicates with a zero b-token row: 0/0 similarities, which
    argmax picks and sort puts first); ``signed_zero`` (D = 16, four +-1 entries per row and +-0.0 elsewhere:
    exact similarities, many exact zeros of either sign).
    """
    g = _gen(seed)
    x = torch.randn(batch, tokens, channels, generator=g).to(dtype)
    if kind == "random":
        metric = torch.randn(batch, tokens, dim, generator=g)
    elif kind in ("equal", "duplicates", "nan"):
        assert dim in (4, 16, 64, 256)
        n_base = 1 if kind == "equal" else 3
        base = torch.randint(0, 2, (n_base, dim), generator=g).float() * 2 - 1
        metric = base[torch.randint(0, n_base, (batch, tokens), generator=g)]
        if kind == "nan" and tokens > 5:
            metric[:, 5] = 0.0  # b-token 2
    elif kind == "signed_zero":
        assert dim == 16
        signs = torch.randint(0, 2, (batch, tokens, dim), generator=g).float() * 2 - 1
        keep = torch.rand(batch, tokens, dim, generator=g).argsort(-1) < 4  # exactly four nonzero entries: norm 2
        metric = torch.where(keep, signs, signs * 0.0)  # +-1 or +-0.0
    else:
        raise ValueError(kind)
    metric = metric.to(dtype)
    mask = torch.rand(batch, tokens, generator=g)
    mask[:, ::3] = 1.0
    return x.to(device), metric.to(device), mask.to(device)


def check_prune(got, x, metric, queries, keys, key_mask, text_mask, keep, score_head, image_start, masking, exact):
    """``got`` = the kernel's (x_kept, metric_kept, keep_idx) on the inputs' device."""
    got_x, got_m, got_idx = got
    ref_x, ref_m, ref_idx = reduce.prune(x, metric, queries, keys, key_mask, text_mask, keep, score_head, image_start,
                                         masking)
    assert got_idx.dtype == torch.int64 and got_idx.shape == ref_idx.shape
    assert got_x.dtype == x.dtype and got_x.shape == ref_x.shape
    assert got_m.dtype == metric.dtype and got_m.shape == ref_m.shape
    if torch.equal(got_idx, ref_idx):
        assert torch.equal(got_x, ref_x) and torch.equal(got_m, ref_m), "gathered rows differ"
        return
    # A difference is only acceptable between (float32) near-tied scores. Columns with identical keys tie exactly
    # in the kernel, but not always in the reference: PyTorch's vectorised exp and matmul treat a row's tail with
    # other code than its body, so equal inputs can differ in the last bit there. With ``exact`` the kernel's own
    # tie rule is checked instead: within every group of identical columns, lower index first.
    scores = reduce.text_informed_scores(queries, keys, key_mask, text_mask, image_start, score_head, masking)
    if exact:
        groups = column_groups(keys, key_mask, image_start)
        for b in range(got_idx.shape[0]):
            kept = got_idx[b].tolist()
            for group in set(groups[b].tolist()):
                members = [i for i in kept if groups[b, i] == group]
                first = torch.nonzero(groups[b] == group).flatten().tolist()[: len(members)]
                assert members == first, f"tie rule broken in row {b}: kept {members} of the equal columns {first}..."
    assert all(len(set(row.tolist())) == keep for row in got_idx), "keep_idx has duplicates"
    got_s = scores.gather(1, got_idx)
    ref_s = scores.gather(1, ref_idx)
    assert torch.allclose(got_s, ref_s, atol=SCORE_TOL, rtol=SCORE_TOL), "keep_idx differs beyond near-ties"
    assert torch.equal(got_x, reduce._gather_tokens(x[:, image_start:], got_idx))
    assert torch.equal(got_m, reduce._gather_tokens(metric[:, image_start:], got_idx))


def column_groups(keys, key_mask, image_start):
    """[B, images] group ids: image keys with bit-identical key vectors (every head) and mask share an id."""
    k = keys[:, :, image_start:].transpose(1, 2).contiguous()  # [B, images, H, d]
    rows = torch.cat([k.reshape(*k.shape[:2], -1).float(), key_mask[:, image_start:, None].float()], dim=-1)
    out = torch.empty(rows.shape[:2], dtype=torch.int64)
    for b in range(rows.shape[0]):
        out[b] = torch.unique(rows[b].view(torch.int32), dim=0, return_inverse=True)[1].cpu()
    return out


def plan_from_slots(slots, tokens, r):
    """Rebuild a MergePlan (src in a-index order) from slots, checking its structure."""
    na, nb = (tokens + 1) // 2, tokens // 2
    kept = na - r
    batch = slots.shape[0]
    slot_a, slot_b = slots[:, ::2], slots[:, 1::2]
    assert torch.equal(slot_b, kept + torch.arange(nb, device=slots.device).expand(batch, -1)), "b-token slots"
    merged = slot_a >= kept
    assert bool((merged.sum(1) == r).all()), "not exactly r merged tokens"
    assert not bool(merged[:, 0].any()), "token 0 was merged"
    src, dst, unm = [], [], []
    for row, m in zip(slot_a, merged):
        src.append(torch.nonzero(m).flatten())
        dst.append(row[m] - kept)
        keep_rows = torch.nonzero(~m).flatten()
        assert torch.equal(row[keep_rows], torch.arange(kept, device=slots.device)), "kept a-tokens not ascending"
        unm.append(keep_rows)
    return reduce.MergePlan(torch.stack(src), torch.stack(dst), torch.stack(unm))


def check_merge(got, x, metric, mask, r, exact):
    """``got`` = the kernel's (x_out, mask_out, slots) on the inputs' device."""
    tokens = x.shape[1]
    got_x, got_mask, got_slots = got
    ref_x, ref_mask, ref_slots = reduce.merge(x, metric, mask, r)
    assert got_x.shape == ref_x.shape and got_x.dtype == x.dtype
    assert got_mask.shape == ref_mask.shape and got_mask.dtype == torch.float32
    assert got_slots.shape == ref_slots.shape and got_slots.dtype == torch.int64
    if r == 0:
        assert torch.equal(got_slots, ref_slots) and torch.equal(got_x, x) and torch.equal(got_mask, mask)
        return
    if exact or torch.equal(got_slots, ref_slots):
        assert torch.equal(got_slots, ref_slots), f"slots differ from the reference:\n{got_slots}\n{ref_slots}"
        torch.testing.assert_close(got_x, ref_x, atol=ATOL[x.dtype], rtol=RTOL[x.dtype])
        torch.testing.assert_close(got_mask, ref_mask, atol=MASK_TOL, rtol=MASK_TOL)
        return
    # Random inputs: the kernel's plan must be a valid ToMe plan that differs only between near-ties.
    plan = plan_from_slots(got_slots, tokens, r)
    m = metric.float()
    m = m / m.norm(dim=-1, keepdim=True)
    sim = m[:, ::2] @ m[:, 1::2].transpose(-1, -2)
    sim[:, 0, :] = -torch.inf
    best = sim.max(dim=-1).values
    chosen = sim.gather(-1, plan.dst_idx.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(chosen, best.gather(-1, plan.src_idx), atol=SCORE_TOL), "merged into a non-best b-token"
    worst_merged = best.gather(-1, plan.src_idx).min(dim=-1).values
    unm_best = best.gather(-1, plan.unm_idx)[:, 1:] if plan.unm_idx.shape[1] > 1 else None
    if unm_best is not None and unm_best.numel():
        assert bool((worst_merged >= unm_best.max(dim=-1).values - SCORE_TOL).all()), "not the r best a-tokens"
    torch.testing.assert_close(got_x, reduce.apply_merge(x, plan), atol=ATOL[x.dtype], rtol=RTOL[x.dtype])
    torch.testing.assert_close(
        got_mask, reduce.apply_merge(mask.unsqueeze(-1), plan).squeeze(-1), atol=MASK_TOL, rtol=MASK_TOL
    )
