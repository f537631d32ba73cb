/*
 * PumerCompact kernels: SmartTrim-style stable compaction (pumer_export/methods/smarttrim/reference.py:
 * compact_index; the pumer::compact op).
 *
 *   1. compactOrderKernel: one block per batch row. Two exclusive prefix sums over the row's keep mask place every
 *      kept position at its rank among the kept ones and every dropped position after them, at the kept count plus
 *      its rank among the dropped ones: the row's stable kept-first order, and its kept count.
 *   2. compactCountKernel: one block: n = the largest kept count of a row, written to the count output (the size
 *      tensor of a data-dependent output length) and to the workspace for the gather.
 *   3. compactGatherKernel: one block per (output slot, batch row); slots at or past n return at once. The slot's
 *      input position goes to index, slot < count to alive, and the token's values are copied (raw bits: any type).
 * No host synchronisation: the gather reads n on the device, so the outputs are laid out [B, n, ...] for the n of
 * this very input while their buffers are sized for the upper bound N.
 */
#include "pumerKernelUtils.cuh"
#include "pumerKernels.h"

namespace pumer
{
namespace kernels
{

constexpr int32_t kCompactThreads = 256;
constexpr int32_t kGatherThreads = 128;

__global__ void compactOrderKernel(uint8_t const* keep, int32_t tokens, int32_t* order, int32_t* counts)
{
    __shared__ int32_t scratch[kCompactThreads];
    int64_t const b = blockIdx.x;
    uint8_t const* row = keep + b * tokens;
    int32_t* out = order + b * tokens;
    int32_t const kept = blockExclusiveScan(
        tokens, [&](int32_t i) { return row[i] != 0 ? 1 : 0; },
        [&](int32_t i, int32_t prefix) {
            if (row[i] != 0)
            {
                out[prefix] = i;
            }
        },
        scratch);
    blockExclusiveScan(
        tokens, [&](int32_t i) { return row[i] != 0 ? 0 : 1; },
        [&](int32_t i, int32_t prefix) {
            if (row[i] == 0)
            {
                out[kept + prefix] = i;
            }
        },
        scratch);
    if (threadIdx.x == 0)
    {
        counts[b] = kept;
    }
}

__global__ void compactCountKernel(int32_t const* counts, int64_t batch, int32_t* count, int32_t* nMax)
{
    __shared__ int32_t best[kCompactThreads];
    int32_t m = 0;
    for (int64_t b = threadIdx.x; b < batch; b += blockDim.x)
    {
        m = counts[b] > m ? counts[b] : m;
    }
    best[threadIdx.x] = m;
    __syncthreads();
    for (int32_t stride = kCompactThreads / 2; stride > 0; stride >>= 1)
    {
        if (static_cast<int32_t>(threadIdx.x) < stride && best[threadIdx.x + stride] > best[threadIdx.x])
        {
            best[threadIdx.x] = best[threadIdx.x + stride];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0)
    {
        *count = best[0];
        *nMax = best[0];
    }
}

template <typename Word>
__global__ void compactGatherKernel(Word const* x, int32_t const* order, int32_t const* counts, int32_t const* nMax,
    int32_t tokens, int64_t channels, Word* xOut, int32_t* alive, int64_t* index)
{
    int32_t const n = *nMax;
    int32_t const slot = blockIdx.x;
    int64_t const b = blockIdx.y;
    if (slot >= n)
    {
        return;
    }
    int32_t const source = order[b * tokens + slot];
    int64_t const out = b * n + slot;
    if (threadIdx.x == 0)
    {
        index[out] = source;
        alive[out] = slot < counts[b] ? 1 : 0;
    }
    Word const* from = x + (b * tokens + source) * channels;
    Word* to = xOut + out * channels;
    for (int64_t c = threadIdx.x; c < channels; c += blockDim.x)
    {
        to[c] = from[c];
    }
}

} // namespace kernels

cudaError_t launchCompact(CompactParams const& p, void* workspace, size_t workspaceBytes, cudaStream_t stream)
{
    using namespace kernels;
    if (p.batch < 0 || p.tokens < 0 || p.channels < 0 || p.batch > kMaxBatch || p.tokens > 0x3FFFFFFF)
    {
        return cudaErrorInvalidValue;
    }
    CompactWorkspace const w = compactWorkspaceLayout(p.batch, p.tokens);
    if (p.batch > 0 && (workspace == nullptr || workspaceBytes < w.total))
    {
        return cudaErrorInvalidValue;
    }
    if (p.batch == 0)
    {
        return cudaMemsetAsync(p.count, 0, sizeof(int32_t), stream);
    }
    auto* base = static_cast<char*>(workspace);
    auto* order = reinterpret_cast<int32_t*>(base + w.order);
    auto* counts = reinterpret_cast<int32_t*>(base + w.counts);
    auto* nMax = reinterpret_cast<int32_t*>(base + w.nMax);
    auto const tokens = static_cast<int32_t>(p.tokens);
    compactOrderKernel<<<static_cast<uint32_t>(p.batch), kCompactThreads, 0, stream>>>(p.keep, tokens, order, counts);
    cudaError_t err = launchStatus();
    if (err != cudaSuccess)
    {
        return err;
    }
    compactCountKernel<<<1, kCompactThreads, 0, stream>>>(counts, p.batch, p.count, nMax);
    err = launchStatus();
    if (err != cudaSuccess || p.tokens == 0)
    {
        return err;
    }
    dim3 const grid(static_cast<uint32_t>(p.tokens), static_cast<uint32_t>(p.batch));
    if (dtypeSize(p.tType) == 4)
    {
        compactGatherKernel<uint32_t><<<grid, kGatherThreads, 0, stream>>>(static_cast<uint32_t const*>(p.x), order,
            counts, nMax, tokens, p.channels, static_cast<uint32_t*>(p.xOut), p.alive, p.index);
    }
    else
    {
        compactGatherKernel<uint16_t><<<grid, kGatherThreads, 0, stream>>>(static_cast<uint16_t const*>(p.x), order,
            counts, nMax, tokens, p.channels, static_cast<uint16_t*>(p.xOut), p.alive, p.index);
    }
    return launchStatus();
}

} // namespace pumer
