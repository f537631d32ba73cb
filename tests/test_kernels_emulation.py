"""The CUDA kernels (PuMer's prune and merge, SmartTrim's compaction), run on the CPU under the project's emulation
of the CUDA execution model.

``plugins/emulation`` compiles the unmodified kernel sources and launchers as host C++ (``kernel_emulation.py``
builds them); every thread of a block is a fiber, ``__syncthreads`` a real barrier, warp shuffles real lane
exchanges. Every case runs under three thread interleavings (forward, reverse, seeded random; blocks in the same
orders) with outputs, workspace and shared memory pre-filled with different garbage each run. The three results
must be byte-identical (a race, a read of memory nobody wrote, or an output never written shows up as a
difference) and equal the PyTorch reference (``pumer_export.reduce``; the compaction: the ``pumer::compact`` op):
indices exactly, values within the dtype's rounding (the compaction moves values: bit for bit). A subset runs again in an AddressSanitizer + UndefinedBehaviorSanitizer build with exact-size buffers,
and planted bugs (a missing barrier, an out-of-bounds write, kernels that return at once, a flipped tie-break)
must make these checks fail.

Run just these: ``python -m pytest -m emulation``. ``PUMER_EMU_FULL=1`` adds ViLT-B/32-sized cases and more seeds.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import kernel_emulation as ke
from kernel_cases import DTYPES, check_merge, check_prune, merge_inputs, prune_inputs
from pumer_export import ops, reduce  # noqa: F401  (ops defines torch.ops.pumer.compact)

pytestmark = pytest.mark.emulation

FULL = os.environ.get("PUMER_EMU_FULL", "") not in ("", "0")
RUNS = (("forward", 101), ("reverse", 202), ("random", 303)) + ((("random", 404), ("random", 505)) if FULL else ())
CODE = {torch.float32: ke.FLOAT, torch.float16: ke.HALF, torch.bfloat16: ke.BF16}


def _library(variant: str) -> Path:
    if ke.compiler() is None:
        pytest.skip("no host C++ compiler (g++ or clang++): the kernel emulation cannot be built")
    return ke.build(variant)


@pytest.fixture(scope="session")
def emu() -> ke.EmulatedKernels:
    return ke.EmulatedKernels(_library("default"))


@pytest.fixture(scope="session")
def emu_fallback() -> ke.EmulatedKernels:
    kernels = ke.EmulatedKernels(_library("fallback"))
    assert kernels.max_shared_sort_keys == 16
    return kernels


def to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.numpy()


def to_torch(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    if dtype == torch.bfloat16:
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _same_across_runs(results: list[tuple[np.ndarray, ...]], runs=RUNS) -> None:
    first = results[0]
    for (policy, seed), other in zip(runs[1:], results[1:]):
        for k, (a, b) in enumerate(zip(first, other)):
            if a.tobytes() != b.tobytes():
                raise AssertionError(
                    f"output {k} differs between the {runs[0][0]} run and the {policy} run (seed {seed}): a race, a "
                    "read of uninitialised memory or an output that is never written"
                )


def prune_case(inputs, keep, score_head, image_start, masking) -> dict:
    x, metric, queries, keys, key_mask, text_mask = inputs
    return dict(
        op="prune", t_type=CODE[x.dtype], a_type=CODE[queries.dtype], x=to_numpy(x), metric=to_numpy(metric),
        queries=to_numpy(queries), keys=to_numpy(keys), key_mask=to_numpy(key_mask), text_mask=to_numpy(text_mask),
        keep=keep, score_head=score_head, image_start=image_start, masking=masking,
    )


def merge_case(x, metric, mask, r) -> dict:
    return dict(op="merge", t_type=CODE[x.dtype], x=to_numpy(x), metric=to_numpy(metric), mask=to_numpy(mask), r=r)


def emulated_prune(kernels, inputs, keep, score_head, image_start, masking):
    case = prune_case(inputs, keep, score_head, image_start, masking)
    results = [ke.run_case(kernels, case, policy, seed) for policy, seed in RUNS]
    _same_across_runs(results)
    got_x, got_m, got_idx = results[0]
    dtype = inputs[0].dtype
    return to_torch(got_x, dtype), to_torch(got_m, dtype), torch.from_numpy(got_idx)


def emulated_merge(kernels, x, metric, mask, r):
    case = merge_case(x, metric, mask, r)
    results = [ke.run_case(kernels, case, policy, seed) for policy, seed in RUNS]
    _same_across_runs(results)
    got_x, got_mask, got_slots = results[0]
    return to_torch(got_x, x.dtype), torch.from_numpy(got_mask), torch.from_numpy(got_slots)


def check_emulated_prune(kernels, inputs, keep, score_head, exact, image_start=None, masking=reduce.STANDARD):
    image_start = inputs[2].shape[2] if image_start is None else image_start  # default: ViLT, after the text
    got = emulated_prune(kernels, inputs, keep, score_head, image_start, masking)
    check_prune(got, *inputs, keep, score_head, image_start, masking, exact)
    return got


def check_emulated_merge(kernels, inputs, r, exact):
    got = emulated_merge(kernels, *inputs, r)
    check_merge(got, *inputs, r, exact)
    return got


# --------------------------------------------------------------------------------------------------------------
# prune
# --------------------------------------------------------------------------------------------------------------


MASKINGS = (reduce.STANDARD, reduce.OFFICIAL)


@pytest.mark.parametrize("t_dtype,a_dtype", list(itertools.product(DTYPES, DTYPES)))
def test_prune_random_all_dtypes(emu, t_dtype, a_dtype):
    inputs = prune_inputs(3, 45, 8, 4, 24, 16, t_dtype, a_dtype, seed=1)
    masking = MASKINGS[(DTYPES.index(t_dtype) + DTYPES.index(a_dtype)) % 2]  # both rules over the dtype grid
    for keep, head in ((1, -1), (18, -1), (37, 3)):
        check_emulated_prune(emu, inputs, keep, head, exact=False, masking=masking)


@pytest.mark.parametrize("masking", MASKINGS)
@pytest.mark.parametrize("mask_kind", ["ones", "padded", "fractional", "zeros"])
def test_prune_exact_ties(emu, masking, mask_kind):
    # image keys repeating three base keys: equal columns tie exactly in every implementation
    inputs = prune_inputs(2, 33, 7, 4, 20, 8, torch.float16, torch.float32, seed=2, attn_kind="levels",
                          mask_kind=mask_kind)
    for keep, head in ((1, -1), (13, -1), (26, -1), (9, 3)):
        check_emulated_prune(emu, inputs, keep, head, exact=True, masking=masking)


@pytest.mark.parametrize("batch", [1, 3])
def test_prune_all_equal_scores(emu, batch):
    inputs = prune_inputs(batch, 30, 6, 4, 16, 8, torch.bfloat16, torch.float16, seed=3, attn_kind="equal",
                          mask_kind="padded")
    got = check_emulated_prune(emu, inputs, 10, -1, exact=True)[2]
    assert torch.equal(got, torch.arange(10).expand(batch, -1))
    check_emulated_prune(emu, inputs, 24, -1, exact=True, masking=reduce.OFFICIAL)


@pytest.mark.parametrize("attn_kind", ["nan", "signed_zero"])
@pytest.mark.parametrize("a_dtype", DTYPES)
def test_prune_nan_and_signed_zero_scores(emu, attn_kind, a_dtype):
    # NaN scores sort first (torch.sort's order), -0 ties +0 (stable: lower index first).
    inputs = prune_inputs(2, 40, 5, 4, 12, 4, torch.float32, a_dtype, seed=5, attn_kind=attn_kind)
    for keep, head, masking in ((1, -1, 0), (12, -1, 1), (35, -1, 0), (12, 2, 1)):
        check_emulated_prune(emu, inputs, keep, head, exact=True, masking=masking)


@pytest.mark.parametrize("text_len", range(1, 8))
def test_prune_short_text(emu, text_len):
    # text_len 1..7 (odd and even), image tokens odd and even; keep from 1 to all image tokens.
    for images in (1, 8, 9):
        inputs = prune_inputs(2, text_len + images, text_len, 2, 8, 4, torch.float16, torch.bfloat16,
                              seed=7 + text_len, attn_kind="levels")
        for keep in sorted({1, (images + 1) // 2, images}):
            check_emulated_prune(emu, inputs, keep, -1, exact=True)
            check_emulated_prune(emu, inputs, keep, 1, exact=True, masking=reduce.OFFICIAL)


@pytest.mark.parametrize("masking", MASKINGS)
def test_prune_keys_of_another_sequence(emu, masking):
    """A cross-attention (METER): the keys are the image tokens (image_start 0), x aligned with them."""
    for kind in ("levels", "random"):
        inputs = prune_inputs(2, 21, 6, 3, 10, 6, torch.float32, torch.float16, seed=17, attn_kind=kind,
                              image_start=0, mask_kind="fractional")
        for keep in (1, 10, 21):
            check_emulated_prune(emu, inputs, keep, -1, exact=kind == "levels", image_start=0, masking=masking)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels,dim", [(37, 5), (6, 1), (1, 3)])
def test_prune_odd_row_sizes(emu, dtype, channels, dim):
    # Rows whose byte size is not a multiple of 16 (or of 4 with an odd C in fp16/bf16): the narrower copy paths;
    # an odd head size too.
    inputs = prune_inputs(2, 23, 5, 4, channels, dim, dtype, torch.float32, seed=31, attn_kind="levels", head_dim=3)
    for keep, head in ((1, -1), (9, -1), (18, -1), (7, 3)):
        check_emulated_prune(emu, inputs, keep, head, exact=True)


def test_prune_sort_fallback_beyond_shared_memory(emu):
    # 4097 image tokens > kMaxSharedSortKeys (4096) in the shipped build: the counting-rank path.
    inputs = prune_inputs(1, 4105, 8, 1, 4, 2, torch.float32, torch.float16, seed=4, attn_kind="levels", head_dim=2)
    check_emulated_prune(emu, inputs, 700, -1, exact=True)
    check_emulated_prune(emu, inputs, 4097, 0, exact=True)


@pytest.mark.parametrize("a_dtype", [torch.float32, torch.bfloat16])
def test_prune_counting_rank_at_small_sizes(emu_fallback, a_dtype):
    # The fallback build (threshold 16 keys) runs the counting-rank top-k on ordinary shapes, ties included.
    for kind in ("levels", "nan", "random"):
        inputs = prune_inputs(3, 50, 6, 4, 10, 6, torch.float16, a_dtype, seed=61, attn_kind=kind)
        for keep in (1, 17, 44):
            check_emulated_prune(emu_fallback, inputs, keep, -1, exact=kind != "random")


def test_prune_rejects_bad_attributes(emu):
    inputs = prune_inputs(1, 20, 4, 2, 8, 8, torch.float32, torch.float32, seed=5)
    for keep, head, masking in ((17, -1, 0), (3, 2, 0), (3, -1, 2)):  # keep > Nk - image_start; head; masking
        with pytest.raises(ke.EmulationError, match="CUDA error 1"):
            ke.run_case(emu, prune_case(inputs, keep, head, 4, masking), "forward", 1)


# --------------------------------------------------------------------------------------------------------------
# merge
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens", [9, 40, 41])
def test_merge_random(emu, dtype, tokens):
    inputs = merge_inputs(3, tokens, 24, 16, dtype, seed=tokens)
    cap = (tokens - 1) // 2
    for r in sorted({0, 1, cap // 2, cap}):
        check_emulated_merge(emu, inputs, r, exact=False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens", range(1, 8))
def test_merge_tiny(emu, dtype, tokens):
    # t = 1..7: r = 0 only for t <= 2 (no b-token for t = 1), r up to its cap (t - 1) // 2; odd C.
    inputs = merge_inputs(2, tokens, 7, 4, dtype, seed=13 + tokens, kind="duplicates")
    for r in range((tokens - 1) // 2 + 1):
        check_emulated_merge(emu, inputs, r, exact=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [1, 3])
def test_merge_all_equal(emu, dtype, batch):
    tokens = 31
    inputs = merge_inputs(batch, tokens, 12, 16, dtype, seed=7, kind="equal")
    for r in (1, 7, (tokens - 1) // 2):
        slots = check_emulated_merge(emu, inputs, r, exact=True)[2]
        # every a-token ties on every b-token: a-tokens 1..r all go to b-token 0
        kept = (tokens + 1) // 2 - r
        assert bool((slots[:, 2 : 2 * r + 1 : 2] == kept).all())


@pytest.mark.parametrize("kind", ["duplicates", "signed_zero"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens", [20, 21])
def test_merge_exact_ties(emu, kind, dtype, tokens):
    inputs = merge_inputs(2, tokens, 16, 16, dtype, seed=11, kind=kind)
    for r in (1, 5, (tokens - 1) // 2):
        check_emulated_merge(emu, inputs, r, exact=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_merge_nan_similarity(emu, dtype):
    # A zero metric row normalises to NaN (0 / 0): every a-token's similarity to that b-token is NaN, argmax picks
    # it (first NaN, like torch.argmax) and NaN sorts first (like torch.sort).
    inputs = merge_inputs(2, 21, 9, 16, dtype, seed=53, kind="nan")
    for r in (1, 4, 10):
        slots = check_emulated_merge(emu, inputs, r, exact=True)[2]
        assert bool((slots[:, 2 : 2 * r + 1 : 2] == 11 - r + 2).all())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens", [16, 17])
def test_merge_metric_dim_one(emu, dtype, tokens):
    # D = 1: normalised rows are exactly +-1, so every similarity is +-1: massive exact ties.
    inputs = merge_inputs(2, tokens, 37, 1, dtype, seed=43)
    for r in (1, 4, (tokens - 1) // 2):
        check_emulated_merge(emu, inputs, r, exact=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_merge_small_odd_metric_dim(emu, dtype):
    inputs = merge_inputs(3, 31, 33, 3, dtype, seed=47)
    for r in (1, 8, 15):
        check_emulated_merge(emu, inputs, r, exact=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("tokens", [35, 36, 64])
def test_merge_sort_fallback(emu_fallback, dtype, tokens):
    # The fallback build (threshold 16 keys): > 16 a-tokens sort by counting rank.
    for kind, exact in (("duplicates", True), ("random", False)):
        inputs = merge_inputs(2, tokens, 10, 16, dtype, seed=tokens, kind=kind)
        for r in (1, tokens // 4, (tokens - 1) // 2):
            check_emulated_merge(emu_fallback, inputs, r, exact=exact)


def test_merge_rejects_r_above_cap(emu):
    x, metric, mask = merge_inputs(1, 9, 8, 4, torch.float32, seed=19)
    with pytest.raises(ke.EmulationError, match="CUDA error 1"):
        ke.run_case(emu, merge_case(x, metric, mask, 5), "forward", 1)


@pytest.mark.skipif(not FULL, reason="ViLT-B/32 sizes take minutes under emulation: set PUMER_EMU_FULL=1")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_vilt_sizes(emu, dtype):
    inputs = prune_inputs(2, 185, 40, 12, 768, 64, dtype, dtype, seed=41, mask_kind="fractional", head_dim=64)
    check_emulated_prune(emu, inputs, 131, -1, exact=False)
    inputs = merge_inputs(2, 131, 768, 64, dtype, seed=29)
    check_emulated_merge(emu, inputs, 44, exact=False)


def test_emulation_really_runs_threads_and_barriers(emu):
    """Sanity of the harness itself: launches, blocks, barriers and warp collectives were executed."""
    emu.take_stats()
    inputs = merge_inputs(1, 21, 8, 16, torch.float32, seed=3)
    check_emulated_merge(emu, inputs, 5, exact=False)
    stats = emu.take_stats()
    assert stats["launches"] == 3 * len(RUNS)  # merge: match (normalisation fused), plan, apply
    assert stats["block_barriers"] > 0 and stats["warp_collectives"] > 0
    check_emulated_prune(emu, prune_inputs(1, 20, 4, 2, 8, 8, torch.float32, torch.float32, seed=3), 5, -1, False)
    assert emu.take_stats()["launches"] == 4 * len(RUNS)  # prune: row statistics, scores, top-k, gather


# --------------------------------------------------------------------------------------------------------------
# compaction (SmartTrim)
# --------------------------------------------------------------------------------------------------------------


def compact_inputs(keep: np.ndarray, channels: int, dtype: torch.dtype, seed: int = 0):
    x = torch.randn(*keep.shape, channels, generator=torch.Generator().manual_seed(seed)).to(dtype)
    return np.ascontiguousarray(keep, dtype=bool), x


def compact_case(keep, x) -> dict:
    return {"op": "compact", "t_type": CODE[x.dtype], "keep": keep.astype(np.uint8), "x": to_numpy(x)}


def check_compact(got, keep: np.ndarray, x: torch.Tensor) -> None:
    """The kernels' outputs against the pumer::compact op (the reference rule), bit for bit; a batch that keeps no
    token gives n = 0."""
    x_out, alive, index, count = got
    if not keep.any():
        assert int(count) == 0 and x_out.shape[1] == 0
        return
    want = torch.ops.pumer.compact(torch.from_numpy(keep), x)
    assert int(count) == int(want[3]), f"count {int(count)}, reference {int(want[3])}"
    np.testing.assert_array_equal(index, want[2].numpy(), err_msg="index")
    np.testing.assert_array_equal(alive, want[1].numpy(), err_msg="alive")
    assert x_out.tobytes() == to_numpy(want[0]).tobytes(), "x_out differs from the reference"


def check_emulated_compact(kernels, keep, x):
    results = [kernels.compact(CODE[x.dtype], keep, to_numpy(x), policy=policy, seed=seed) for policy, seed in RUNS]
    _same_across_runs(results)
    check_compact(results[0], keep, x)


COMPACT_KEEPS = {
    "random": lambda rng: rng.random((3, 37)) < 0.4,
    "all kept": lambda rng: np.ones((2, 19), dtype=bool),
    "only token 0": lambda rng: np.eye(1, 23, dtype=bool).repeat(4, axis=0),
    "rows with different counts": lambda rng: np.arange(16)[None, :] < np.array([[1], [16], [7], [3]]),
    "batch 1": lambda rng: rng.random((1, 50)) < 0.5,
    "nothing kept": lambda rng: np.zeros((2, 9), dtype=bool),
    "longer than a block": lambda rng: rng.random((2, 600)) < 0.3,  # the scans run in several chunks of 256
}


@pytest.mark.parametrize("case", sorted(COMPACT_KEEPS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_compact(emu, case, dtype):
    keep = COMPACT_KEEPS[case](np.random.default_rng(len(case)))
    keep, x = compact_inputs(keep, 5, dtype, seed=len(case))
    check_emulated_compact(emu, keep, x)


def test_compact_rejects_bad_sizes(emu):
    with pytest.raises(ke.EmulationError, match="CUDA error"):
        emu.compact(ke.FLOAT, np.ones((65536, 1), dtype=bool), np.zeros((65536, 1, 1), np.float32),
                    policy="forward", seed=1)


# --------------------------------------------------------------------------------------------------------------
# AddressSanitizer + UndefinedBehaviorSanitizer
# --------------------------------------------------------------------------------------------------------------


def _sanitizer_cases() -> list[tuple[dict, tuple]]:
    """(case, check arguments) pairs covering every kernel, both maskings, odd sizes, all dtypes."""
    out = []
    for t_dtype, a_dtype, kind, n, t, masking in (
        (torch.float32, torch.float16, "levels", 33, 7, reduce.STANDARD),
        (torch.float16, torch.bfloat16, "random", 45, 8, reduce.OFFICIAL),
        (torch.bfloat16, torch.float32, "nan", 12, 3, reduce.STANDARD),
    ):
        inputs = prune_inputs(2, n, t, 4, 37, 5, t_dtype, a_dtype, seed=n, attn_kind=kind, head_dim=5)
        for keep in (1, n - t):
            out.append((prune_case(inputs, keep, -1, t, masking),
                        ("prune", inputs, keep, -1, t, masking, kind != "random")))
    rng = np.random.default_rng(7)
    for keep, channels, dtype in ((rng.random((3, 45)) < 0.5, 7, torch.float32), (np.ones((2, 9), bool), 3, torch.float16),
                                  (np.eye(1, 300, dtype=bool).repeat(2, 0) | (rng.random((2, 300)) < 0.2), 2,
                                   torch.bfloat16)):
        keep, x = compact_inputs(keep, channels, dtype, seed=channels)
        out.append((compact_case(keep, x), ("compact", keep, x)))
    for dtype, tokens, kind in ((torch.float32, 41, "random"), (torch.float16, 3, "duplicates"),
                                (torch.bfloat16, 21, "nan"), (torch.float16, 20, "signed_zero")):
        inputs = merge_inputs(2, tokens, 7, 16, dtype, seed=tokens, kind=kind)
        for r in sorted({0, 1, (tokens - 1) // 2}):
            out.append((merge_case(*inputs, r), ("merge", inputs, r, kind != "random")))
    return out


def run_in_child(library: Path, cases: list[dict], tmp_path: Path, env: dict | None = None):
    """Run cases in a fresh Python (no torch) under the given library; returns (returncode, stderr, results)."""
    cases_path, out_path = tmp_path / "cases.npz", tmp_path / "out.npz"
    ke.save_cases(cases_path, cases)
    cmd = [sys.executable, str(Path(ke.__file__)), "run", str(cases_path), str(out_path), str(library)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=900)
    results = None
    if proc.returncode == 0:
        data = np.load(out_path)
        results = [[tuple(data[f"{i}.{p}.{k}"] for k in range(4) if f"{i}.{p}.{k}" in data) for p, _ in ke.CHILD_RUNS]
                   for i in range(len(cases))]
    return proc.returncode, proc.stderr, results


def _sanitizer_env() -> dict:
    runtime = ke.asan_runtime()
    if runtime is None:
        pytest.skip("the compiler has no AddressSanitizer runtime (libasan.so)")
    return {
        "LD_PRELOAD": runtime,
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=0",
        "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
    }


def _verify(pairs, results) -> list[str]:
    """Check child-process results (every run alike, the first equal to the reference); returns the failures."""
    failures = []
    for (_, check), per_run in zip(pairs, results):
        try:
            _same_across_runs(per_run, ke.CHILD_RUNS)
            if check[0] == "compact":
                _, keep, x = check
                check_compact(per_run[0], keep, x)
            elif check[0] == "prune":
                _, inputs, keep, head, start, masking, exact = check
                got_x, got_m, got_idx = per_run[0]
                dtype = inputs[0].dtype
                check_prune((to_torch(got_x, dtype), to_torch(got_m, dtype), torch.from_numpy(got_idx)),
                            *inputs, keep, head, start, masking, exact)
            else:
                _, inputs, r, exact = check
                got_x, got_mask, got_slots = per_run[0]
                check_merge((to_torch(got_x, inputs[0].dtype), torch.from_numpy(got_mask), torch.from_numpy(got_slots)),
                            *inputs, r, exact)
        except AssertionError as exc:
            failures.append(f"{check[0]}: {str(exc).splitlines()[0]}")
    return failures


def test_kernels_under_address_and_ub_sanitizer(tmp_path):
    env = _sanitizer_env()
    pairs = _sanitizer_cases()
    code, stderr, results = run_in_child(_library("asan"), [c for c, _ in pairs], tmp_path, env)
    assert code == 0, f"sanitizer run failed (exit {code}):\n{stderr[-6000:]}"
    assert _verify(pairs, results) == []


# --------------------------------------------------------------------------------------------------------------
# planted bugs: the checks above must fail on each
# --------------------------------------------------------------------------------------------------------------

PRUNE_KERNEL = "pumerPrunePlugin/pumerPruneKernel.cu"
MERGE_KERNEL = "pumerMergePlugin/pumerMergeKernel.cu"
COMPACT_KERNEL = "pumerCompactPlugin/pumerCompactKernel.cu"


def _early_return(text: str) -> str:
    out, n = re.subn(r"(__global__\s+void\s+\w+\s*\([^)]*\)\s*\{)", r"\1 return;", text)
    assert n >= 2, "no __global__ function found"
    return out


def _remove_first(needle: str, replacement: str = ""):
    def mutate(text: str) -> str:
        assert needle in text, f"planted bug no longer applies: {needle!r} not in the kernel source"
        return text.replace(needle, replacement, 1)
    return mutate


MUTANTS = {
    # the barrier between the per-row-group partial sums (and maskSum) and their reduction by thread row 0
    "missing_syncthreads": (PRUNE_KERNEL, _remove_first("    partial[threadIdx.y][threadIdx.x] = acc;\n    __syncthreads();",
                                                        "    partial[threadIdx.y][threadIdx.x] = acc;\n")),
    # one element written past the end of x_kept (by the last row's block; in-bounds rows are unchanged)
    "out_of_bounds_write": (PRUNE_KERNEL, _remove_first(
        "    int64_t const dst = b * keep + k;\n",
        "    int64_t const dst = b * keep + k;\n"
        "    if (threadIdx.x == 0 && b == gridDim.y - 1 && k == keep - 1) xOut[(dst + 1) * channels] = x[src * channels];\n")),
    "early_return": (None, _early_return),
    # a-token -> b-token argmax: ties to the higher index instead of the lower one
    "flipped_tie_break": (MERGE_KERNEL, _remove_first("    return j < bestIdx;", "    return j > bestIdx;")),
    # the compaction's prefix sum off by one: each kept token one slot early (clamped at 0, so it stays in bounds)
    "compaction_prefix_off_by_one": (COMPACT_KERNEL, _remove_first("                out[prefix] = i;",
                                                                   "                out[prefix > 0 ? prefix - 1 : 0] = i;")),
}


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_planted_bug_is_caught(mutant, tmp_path):
    """Build a mutated copy of plugins/ and run a few of the cases above: at least one check must fail."""
    if ke.compiler() is None:
        pytest.skip("no host C++ compiler")
    copy = tmp_path / "plugins"
    shutil.copytree(ke.plugins_dir(), copy, ignore=shutil.ignore_patterns("emulation"))
    target, mutate = MUTANTS[mutant]
    for path in [copy / target] if target else sorted(copy.glob("pumer*Plugin/*.cu")):
        path.write_text(mutate(path.read_text()))
    sanitize = mutant == "out_of_bounds_write"
    os.environ["PUMER_EMU_PLUGINS_DIR"] = str(copy)
    try:
        library = ke.build("asan" if sanitize else "default", build_root=tmp_path / "build")
    finally:
        del os.environ["PUMER_EMU_PLUGINS_DIR"]

    pairs = _sanitizer_cases()
    code, stderr, results = run_in_child(library, [c for c, _ in pairs], tmp_path, _sanitizer_env() if sanitize else None)
    if sanitize:
        assert code != 0 and "heap-buffer-overflow" in stderr, "AddressSanitizer did not report the planted write"
        return
    if code != 0:  # the run crashed (e.g. a gather at a position nobody wrote): caught
        assert code < 0 or "Error" in stderr, stderr[-4000:]
        return
    assert _verify(pairs, results), f"the planted bug '{mutant}' went unnoticed by every case"
