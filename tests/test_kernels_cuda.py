"""GPU harness: every kernel against the PyTorch reference ops (PuMer's ``pumer_export.reduce``, SmartTrim's
``pumer::compact``).

Builds a PyTorch C++/CUDA extension from the same kernel sources the TensorRT plugins use
(``plugins/tests/torch_binding.cpp`` + ``plugins/*/pumer*Kernel.cu``) and compares, on random and
adversarial inputs (exact ties, all-equal scores/similarities, r = 0, r at its cap, odd/even token counts,
batch 1, heavy text padding, the counting-rank fallback beyond 4096 sort keys, fp32/fp16/bf16 with
independent attention dtype), the decisions (keep_idx, slots) exactly and the values within float
tolerance. Timings of each kernel vs. the equivalent PyTorch ops (median of repeated runs) are printed,
never asserted: run with ``-s`` to see them.

Skipped when CUDA is not available (CPU-only PyTorch or no GPU).
"""

from __future__ import annotations

import itertools
import os
import shutil

import pytest
import torch

from kernel_cases import DTYPES, check_merge, check_prune, cuda_median_ms, load_extension, merge_inputs, prune_inputs
from pumer_export import reduce

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="CUDA is not available (CPU-only PyTorch or no GPU): the kernel harness needs a GPU",
)

@pytest.fixture(scope="module")
def ext(tmp_path_factory):
    if shutil.which("nvcc") is None and not os.environ.get("CUDA_HOME"):
        pytest.skip("nvcc not found (set CUDA_HOME): cannot build the kernel extension")
    from torch.utils.cpp_extension import is_ninja_available

    if not is_ninja_available():
        pytest.skip("ninja not found (pip install ninja): torch.utils.cpp_extension.load needs it")
    return load_extension(tmp_path_factory.mktemp("pumer_ext"))


def _prune_inputs(*args, **kwargs):
    return prune_inputs(*args, device="cuda", **kwargs)


def _check_prune(ext, inputs, keep, score_head, exact, image_start=None, masking=reduce.STANDARD):
    image_start = inputs[2].shape[2] if image_start is None else image_start
    text_len = inputs[2].shape[2]
    got = ext.prune(*inputs, text_len, keep, score_head, image_start, masking)
    torch.cuda.synchronize()
    check_prune(got, *inputs, keep, score_head, image_start, masking, exact)
    return got


MASKINGS = (reduce.STANDARD, reduce.OFFICIAL)


@pytest.mark.parametrize("masking", MASKINGS)
@pytest.mark.parametrize("t_dtype,a_dtype", list(itertools.product(DTYPES, DTYPES)))
def test_prune_random_all_dtypes(ext, t_dtype, a_dtype, masking):
    inputs = _prune_inputs(3, 185, 40, 12, 96, 64, t_dtype, a_dtype, seed=1, head_dim=64)
    for keep, head in ((72, -1), (1, -1), (145, -1), (100, 5)):
        _check_prune(ext, inputs, keep, head, exact=False, masking=masking)


@pytest.mark.parametrize("masking", MASKINGS)
@pytest.mark.parametrize("a_dtype", DTYPES)
@pytest.mark.parametrize("mask_kind", ["ones", "padded", "fractional", "zeros"])
def test_prune_exact_ties(ext, a_dtype, mask_kind, masking):
    # coarse exact entries, image keys repeating three base keys: equal columns tie exactly
    inputs = _prune_inputs(2, 77, 13, 8, 40, 16, torch.float16, a_dtype, seed=2, attn_kind="levels",
                           mask_kind=mask_kind)
    for keep, head in ((1, -1), (30, -1), (64, -1), (17, 7), (64, 0)):
        _check_prune(ext, inputs, keep, head, exact=True, masking=masking)


@pytest.mark.parametrize("batch", [1, 5])
def test_prune_all_equal_scores(ext, batch):
    inputs = _prune_inputs(batch, 60, 8, 12, 32, 8, torch.bfloat16, torch.float16, seed=3, attn_kind="equal",
                           mask_kind="padded")
    got = _check_prune(ext, inputs, 20, -1, exact=True)[2]
    assert torch.equal(got, torch.arange(20, device="cuda").expand(batch, -1))
    _check_prune(ext, inputs, 52, -1, exact=True, masking=reduce.OFFICIAL)


@pytest.mark.parametrize("attn_kind", ["nan", "signed_zero"])
def test_prune_nan_and_signed_zero(ext, attn_kind):
    inputs = _prune_inputs(2, 40, 5, 4, 12, 4, torch.float32, torch.float32, seed=5, attn_kind=attn_kind)
    for keep, masking in ((1, 0), (12, 1), (35, 0)):
        _check_prune(ext, inputs, keep, -1, exact=True, masking=masking)


@pytest.mark.parametrize("masking", MASKINGS)
def test_prune_keys_of_another_sequence(ext, masking):
    """A cross-attention (METER): the keys are the image tokens (image_start 0), x aligned with them."""
    inputs = _prune_inputs(3, 145, 40, 12, 96, 64, torch.float16, torch.float16, seed=8, image_start=0,
                           mask_kind="fractional", head_dim=64)
    for keep in (1, 100, 145):
        _check_prune(ext, inputs, keep, -1, exact=False, image_start=0, masking=masking)


def test_prune_sort_fallback_beyond_shared_memory(ext):
    # 4200 image tokens > kMaxSharedSortKeys (4096): the counting-rank path.
    inputs = _prune_inputs(1, 4208, 8, 1, 16, 8, torch.float32, torch.float16, seed=4, attn_kind="levels")
    _check_prune(ext, inputs, 1000, -1, exact=True)
    _check_prune(ext, inputs, 4200, 0, exact=True, masking=reduce.OFFICIAL)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels,dim", [(37, 5), (6, 1), (10, 3)])
def test_prune_odd_row_sizes(ext, dtype, channels, dim):
    # Rows whose byte size is not a multiple of 16 (or of 4 for fp16/bf16 with odd C): the narrower copy paths.
    inputs = _prune_inputs(2, 23, 5, 4, channels, dim, dtype, torch.float32, seed=31, attn_kind="levels", head_dim=3)
    for keep, head in ((1, -1), (9, -1), (18, -1), (7, 3)):
        _check_prune(ext, inputs, keep, head, exact=True)


@pytest.mark.parametrize("tokens", [2, 3, 9])
def test_prune_text_len_one(ext, tokens):
    # text_len = 1 (a single text row); tokens = 2 leaves a single image token (keep = 1 = N - text_len).
    inputs = _prune_inputs(1, tokens, 1, 2, 8, 4, torch.float16, torch.bfloat16, seed=37, attn_kind="levels")
    for keep in sorted({1, tokens - 1}):
        _check_prune(ext, inputs, keep, -1, exact=True)
        _check_prune(ext, inputs, keep, 1, exact=True, masking=reduce.OFFICIAL)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_prune_vilt_sizes(ext, dtype):
    """ViLT-B/32 sizes (text 40 + 145 image tokens, 12 heads of 64, C 768, D 64): values and decisions."""
    inputs = _prune_inputs(4, 185, 40, 12, 768, 64, dtype, dtype, seed=41, mask_kind="fractional", head_dim=64)
    for keep in (1, 100, 145):
        _check_prune(ext, inputs, keep, -1, exact=False)


def test_prune_rejects_bad_attributes(ext):
    inputs = _prune_inputs(1, 20, 4, 2, 8, 8, torch.float32, torch.float32, seed=5)
    with pytest.raises(RuntimeError, match="keep"):
        ext.prune(*inputs, 4, 17, -1, 4, 0)
    with pytest.raises(RuntimeError, match="score_head"):
        ext.prune(*inputs, 4, 3, 2, 4, 0)
    with pytest.raises(RuntimeError, match="masking"):
        ext.prune(*inputs, 4, 3, -1, 4, 2)


# --------------------------------------------------------------------------------------------------------------
# merge
# --------------------------------------------------------------------------------------------------------------


def _merge_inputs(*args, **kwargs):
    return merge_inputs(*args, device="cuda", **kwargs)


def _check_merge(ext, x, metric, mask, r, exact):
    got = ext.merge(x, metric, mask, r)
    torch.cuda.synchronize()
    check_merge(got, x, metric, mask, r, exact)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens", [145, 144, 9, 40])
def test_merge_random(ext, dtype, tokens):
    x, metric, mask = _merge_inputs(3, tokens, 96, 64, dtype, seed=tokens)
    cap = (tokens - 1) // 2
    for r in sorted({0, 1, cap // 2, cap}):
        _check_merge(ext, x, metric, mask, r, exact=False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [1, 4])
def test_merge_all_equal(ext, dtype, batch):
    tokens = 31
    x, metric, mask = _merge_inputs(batch, tokens, 48, 16, dtype, seed=7, kind="equal")
    for r in (1, 7, (tokens - 1) // 2):
        _check_merge(ext, x, metric, mask, r, exact=True)
        # every a-token ties on every b-token: a-tokens 1..r all go to b-token 0
        slots = ext.merge(x, metric, mask, r)[2]
        kept = (tokens + 1) // 2 - r
        assert bool((slots[:, 2 : 2 * r + 1 : 2] == kept).all())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens", [50, 51])
def test_merge_duplicate_rows(ext, dtype, tokens):
    x, metric, mask = _merge_inputs(2, tokens, 64, 16, dtype, seed=11, kind="duplicates")
    for r in (1, 5, 12, (tokens - 1) // 2):
        _check_merge(ext, x, metric, mask, r, exact=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens", [1, 2, 3, 4, 5])
def test_merge_tiny(ext, dtype, tokens):
    # t = 1, 2 (r = 0 only; b empty for t = 1), t = 3 (one b-token), odd C (narrow copy paths).
    x, metric, mask = _merge_inputs(2, tokens, 7, 4, dtype, seed=13)
    for r in range((tokens - 1) // 2 + 1):
        _check_merge(ext, x, metric, mask, r, exact=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels", [37, 768])
@pytest.mark.parametrize("tokens", [26, 27])
def test_merge_metric_dim_one(ext, dtype, channels, tokens):
    # D = 1: normalised rows are exactly +-1, so every similarity is +-1: massive exact ties (argmax lowest index,
    # stable order), exact in any implementation. C = 37 (odd) and 768 (ViLT).
    x, metric, mask = _merge_inputs(2, tokens, channels, 1, dtype, seed=43)
    for r in (1, 6, (tokens - 1) // 2):
        _check_merge(ext, x, metric, mask, r, exact=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_merge_small_odd_metric_dim(ext, dtype):
    x, metric, mask = _merge_inputs(3, 61, 33, 3, dtype, seed=47)
    for r in (1, 15, 30):
        _check_merge(ext, x, metric, mask, r, exact=False)


def test_merge_nan_similarity(ext):
    # A zero metric row normalises to NaN (0 / 0) in both implementations: every a-token's similarity to that
    # b-token is NaN, argmax picks it (first NaN, like torch.argmax) and NaN sorts first (like torch.sort).
    x, metric, mask = _merge_inputs(2, 21, 16, 16, torch.float32, seed=53, kind="nan")  # b-token 2 is a zero row
    for r in (1, 4, 10):
        _check_merge(ext, x, metric, mask, r, exact=True)
        slots = ext.merge(x, metric, mask, r)[2]
        kept = 11 - r
        assert bool((slots[:, 2 : 2 * r + 1 : 2] == kept + 2).all())


def test_merge_sort_fallback_beyond_shared_memory(ext):
    tokens = 8500  # 4250 a-tokens > 4096 sort keys: the counting-rank path
    x, metric, mask = _merge_inputs(1, tokens, 16, 16, torch.float32, seed=17, kind="duplicates")
    for r in (100, (tokens - 1) // 2):
        _check_merge(ext, x, metric, mask, r, exact=True)


def test_merge_rejects_r_above_cap(ext):
    x, metric, mask = _merge_inputs(1, 9, 8, 4, torch.float32, seed=19)
    with pytest.raises(RuntimeError, match="exceeds"):
        ext.merge(x, metric, mask, 5)


# --------------------------------------------------------------------------------------------------------------
# timings (printed, never asserted)
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 64])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_kernel_timings(ext, batch, dtype):
    """ViLT-B/32 sizes: text 40 + 145 image tokens, 12 heads of 64, C 768, D 64."""
    inputs = _prune_inputs(batch, 185, 40, 12, 768, 64, dtype, dtype, seed=23, head_dim=64)
    keep = 100
    t_prune = cuda_median_ms(lambda: ext.prune(*inputs, 40, keep, -1, 40, 0))
    r_prune = cuda_median_ms(lambda: reduce.prune(*inputs, keep, -1, 40, 0))
    xm, mm, km = _merge_inputs(batch, keep, 768, 64, dtype, seed=29)
    r = 30
    t_merge = cuda_median_ms(lambda: ext.merge(xm, mm, km, r))
    r_merge = cuda_median_ms(lambda: reduce.merge(xm, mm, km, r))
    print(
        f"\n[pumer kernels] B={batch} {str(dtype).removeprefix('torch.')}: "
        f"prune(N=185, keep={keep}) kernel {t_prune:.3f} ms vs torch {r_prune:.3f} ms; "
        f"merge(t={keep}, r={r}) kernel {t_merge:.3f} ms vs torch {r_merge:.3f} ms (median of 50)"
    )


# --------------------------------------------------------------------------------------------------------------
# PumerCompact (SmartTrim)
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["random", "all kept", "only token 0", "rows with different counts", "long rows"])
def test_compact_matches_the_op(ext, dtype, case):
    """The compaction kernels against the pumer::compact op: positions, alive and count exactly, values bit for
    bit."""
    from pumer_export import ops  # noqa: F401  (defines torch.ops.pumer.compact)

    generator = torch.Generator().manual_seed(len(case))
    keep = {
        "random": torch.rand(4, 65, generator=generator) < 0.4,
        "all kept": torch.ones(2, 33, dtype=torch.bool),
        "only token 0": torch.zeros(3, 50, dtype=torch.bool),
        "rows with different counts": torch.arange(16)[None, :] < torch.tensor([[1], [16], [7]]),
        "long rows": torch.rand(2, 1200, generator=generator) < 0.3,
    }[case]
    keep[:, 0] = True
    x = torch.randn(*keep.shape, 96, generator=generator).to(dtype)
    want = torch.ops.pumer.compact(keep, x)
    x_out, alive, index, count = ext.compact(keep.cuda(), x.cuda())
    assert count == int(want[3])
    assert torch.equal(index.cpu(), want[2]) and torch.equal(alive.cpu().bool(), want[1])
    assert torch.equal(x_out.cpu().view(torch.int16 if dtype != torch.float32 else torch.int32),
                       want[0].view(torch.int16 if dtype != torch.float32 else torch.int32))
