/*
 * C entry points of the emulated kernel library (libpumer_kernels_emu.so) for the Python test harness
 * (tests/kernel_emulation.py): the real launchers (launchPrune / launchMerge / launchCompact, compiled from the unmodified kernel
 * sources through cu2cpp.py) plus the emulator's schedule, fault and statistics controls and exact-size
 * allocations for "device" buffers.
 */
#include "cuda_emu.h"
#include "pumerKernels.h"

#include <cstdlib>

#define PUMER_EMU_API extern "C" __attribute__((visibility("default")))

namespace
{
int finish(cudaError_t err)
{
    // A launch error not returned by the launcher (it should return every one) still counts.
    cudaError_t const pending = cudaGetLastError();
    return static_cast<int>(err != cudaSuccess ? err : pending);
}
} // namespace

PUMER_EMU_API void pumerEmuSetSchedule(int policy, uint64_t seed)
{
    cuemu::setSchedule(static_cast<cuemu::Policy>(policy), seed);
}

PUMER_EMU_API char const* pumerEmuLastFault()
{
    return cuemu::lastFault();
}

PUMER_EMU_API void pumerEmuClearFault()
{
    cuemu::clearFault();
    (void) cudaGetLastError();
}

//! launches, blocks, block barriers, warp collectives since the last call.
PUMER_EMU_API void pumerEmuTakeStats(uint64_t out[4])
{
    cuemu::Stats const s = cuemu::stats();
    out[0] = s.launches;
    out[1] = s.blocks;
    out[2] = s.blockBarriers;
    out[3] = s.warpCollectives;
    cuemu::resetStats();
}

PUMER_EMU_API void* pumerEmuAlloc(size_t bytes)
{
    return std::malloc(bytes);
}

PUMER_EMU_API void pumerEmuFree(void* p)
{
    std::free(p);
}

PUMER_EMU_API int pumerEmuMaxSharedSortKeys()
{
    return pumer::kMaxSharedSortKeys;
}

PUMER_EMU_API size_t pumerEmuPruneWorkspace(int64_t batch, int64_t heads, int64_t textLen, int64_t keys, int64_t imageStart)
{
    return pumer::pruneWorkspaceLayout(batch, heads, textLen, keys, imageStart).total;
}

PUMER_EMU_API size_t pumerEmuMergeWorkspace(int64_t batch, int64_t tokens, int64_t metricDim)
{
    return pumer::mergeWorkspaceLayout(batch, tokens, metricDim).total;
}

PUMER_EMU_API int pumerEmuPrune(int tType, int aType, void const* x, void const* metric, void const* queries,
    void const* keys, float const* keyMask, float const* textMask, void* xOut, void* metricOut, int64_t* keepIdx,
    int64_t batch, int64_t tokens, int64_t channels, int64_t metricDim, int64_t heads, int64_t headDim,
    int32_t textLen, int32_t keep, int32_t scoreHead, int32_t imageStart, int32_t masking, void* workspace,
    size_t workspaceBytes)
{
    pumer::PruneParams p;
    p.tType = static_cast<pumer::DType>(tType);
    p.aType = static_cast<pumer::DType>(aType);
    p.x = x;
    p.metric = metric;
    p.queries = queries;
    p.keys = keys;
    p.keyMask = keyMask;
    p.textMask = textMask;
    p.xOut = xOut;
    p.metricOut = metricOut;
    p.keepIdx = keepIdx;
    p.batch = batch;
    p.tokens = tokens;
    p.channels = channels;
    p.metricDim = metricDim;
    p.heads = heads;
    p.headDim = headDim;
    p.textLen = textLen;
    p.keep = keep;
    p.scoreHead = scoreHead;
    p.imageStart = imageStart;
    p.masking = masking;
    return finish(pumer::launchPrune(p, workspace, workspaceBytes, nullptr));
}

PUMER_EMU_API int pumerEmuMerge(int tType, void const* x, void const* metric, float const* mask, void* xOut,
    float* maskOut, int64_t* slots, int64_t batch, int64_t tokens, int64_t channels, int64_t metricDim, int32_t r,
    void* workspace, size_t workspaceBytes)
{
    pumer::MergeParams p;
    p.tType = static_cast<pumer::DType>(tType);
    p.x = x;
    p.metric = metric;
    p.mask = mask;
    p.xOut = xOut;
    p.maskOut = maskOut;
    p.slots = slots;
    p.batch = batch;
    p.tokens = tokens;
    p.channels = channels;
    p.metricDim = metricDim;
    p.r = r;
    return finish(pumer::launchMerge(p, workspace, workspaceBytes, nullptr));
}

PUMER_EMU_API size_t pumerEmuCompactWorkspace(int64_t batch, int64_t tokens)
{
    return pumer::compactWorkspaceLayout(batch, tokens).total;
}

PUMER_EMU_API int pumerEmuCompact(int tType, uint8_t const* keep, void const* x, void* xOut, int32_t* alive,
    int64_t* index, int32_t* count, int64_t batch, int64_t tokens, int64_t channels, void* workspace,
    size_t workspaceBytes)
{
    pumer::CompactParams p;
    p.tType = static_cast<pumer::DType>(tType);
    p.keep = keep;
    p.x = x;
    p.xOut = xOut;
    p.alive = alive;
    p.index = index;
    p.count = count;
    p.batch = batch;
    p.tokens = tokens;
    p.channels = channels;
    return finish(pumer::launchCompact(p, workspace, workspaceBytes, nullptr));
}
