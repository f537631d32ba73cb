/*
 * PumerMerge kernels: ToMe bipartite soft matching + mean merging (pumer_export/reduce.py: merge).
 *
 *   1. mergeNormalizeKernel: metric rows L2-normalised in float32 (warp per row) into the workspace.
 *   2. mergeMatchKernel: for every a-token (even position) its most similar b-token (odd position): warp per
 *      a-token, max over b in ascending order with a strict '>' (lowest index on ties; NaN wins like torch.argmax).
 *      a-token 0 gets -inf (never merged).
 *   3. mergePlanKernel: one block per batch row. Sorts a-tokens by best similarity (stable descending), the first
 *      r are merged into their b-token; builds slots, the kept a-token list (ascending) and a CSR list of the
 *      a-tokens merged into every b-token (in merge-priority order, like a sequential scatter_add).
 *   4. mergeApplyKernel: one block per output token: kept a-tokens copied, b-tokens averaged with their merged
 *      a-tokens in float32 (plain mean, sizes start at 1), mask likewise.
 * r == 0 is the identity: x and mask copied, slots = arange.
 */
#include "pumerKernelUtils.cuh"
#include "pumerKernels.h"

#include <cmath>

namespace pumer
{
namespace kernels
{

constexpr int32_t kRowsPerBlock = 8; // one warp per row
constexpr int32_t kPlanThreads = 512;
constexpr int32_t kApplyThreads = 128;

struct MergeScratch
{
    float* normMetric;
    float* nodeMax;
    int32_t* nodeIdx;
    int32_t* order;
    int32_t* rank;
    int32_t* dstByRank;
    int32_t* unmList;
    int32_t* srcList;
    int32_t* count;
    int32_t* offset;
};

template <typename T>
__global__ void mergeNormalizeKernel(T const* __restrict__ metric, float* __restrict__ out, int64_t tokens, int64_t dim)
{
    int64_t const row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.y;
    int64_t const b = blockIdx.y;
    if (row >= tokens)
    {
        return;
    }
    size_t const base = (static_cast<size_t>(b) * tokens + row) * dim;
    float sq = 0.0f;
    for (int64_t k = threadIdx.x; k < dim; k += 32)
    {
        float const v = toFloat(metric[base + k]);
        sq += v * v;
    }
    float const norm = sqrtf(warpAllReduceSum(sq));
    for (int64_t k = threadIdx.x; k < dim; k += 32)
    {
        out[base + k] = toFloat(metric[base + k]) / norm;
    }
}

__global__ void mergeMatchKernel(float const* __restrict__ normMetric, float* __restrict__ nodeMax,
    int32_t* __restrict__ nodeIdx, int64_t tokens, int64_t dim)
{
    int64_t const na = (tokens + 1) / 2;
    int64_t const nb = tokens / 2;
    int64_t const i = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.y;
    int64_t const b = blockIdx.y;
    if (i >= na)
    {
        return;
    }
    float best = -INFINITY;
    int32_t bestIdx = 0;
    if (i > 0) // similarity row 0 is -inf: the first token is never merged (argmax of all -inf = 0)
    {
        float const* a = normMetric + (static_cast<size_t>(b) * tokens + 2 * i) * dim;
        for (int64_t j = 0; j < nb; ++j)
        {
            float const* bRow = normMetric + (static_cast<size_t>(b) * tokens + 2 * j + 1) * dim;
            float part = 0.0f;
            for (int64_t k = threadIdx.x; k < dim; k += 32)
            {
                part += a[k] * bRow[k];
            }
            float const sim = warpAllReduceSum(part);
            // All lanes hold the same sim, so the branch is warp-uniform.
            if (sim > best || (sim != sim && best == best))
            {
                best = sim;
                bestIdx = static_cast<int32_t>(j);
            }
        }
    }
    if (threadIdx.x == 0)
    {
        nodeMax[b * na + i] = best;
        nodeIdx[b * na + i] = bestIdx;
    }
}

__global__ void mergePlanKernel(MergeScratch s, int64_t* __restrict__ slots, int32_t tokens, int32_t r, int32_t padded)
{
    extern __shared__ uint64_t sortKeys[];
    __shared__ int32_t scanScratch[kPlanThreads];
    int32_t const na = (tokens + 1) / 2;
    int32_t const nb = tokens / 2;
    int32_t const kept = na - r;
    int64_t const b = blockIdx.x;
    float const* nodeMax = s.nodeMax + b * na;
    int32_t const* nodeIdx = s.nodeIdx + b * na;
    int32_t* order = s.order + b * na;
    int32_t* rank = s.rank + b * na;
    int32_t* dstByRank = s.dstByRank + b * na;
    int32_t* unmList = s.unmList + b * na;
    int32_t* srcList = s.srcList + b * na;
    int32_t* count = s.count + b * nb;
    int32_t* offset = s.offset + b * nb;
    int64_t* slot = slots + b * tokens;

    // 1. order = a-tokens by nodeMax descending, ties by lower index; rank = its inverse.
    if (padded > 0)
    {
        for (int32_t i = threadIdx.x; i < padded; i += blockDim.x)
        {
            sortKeys[i] = i < na ? descKey(nodeMax[i], static_cast<uint32_t>(i)) : 0ull;
        }
        __syncthreads();
        blockBitonicSortDesc(sortKeys, padded);
        for (int32_t k = threadIdx.x; k < na; k += blockDim.x)
        {
            int32_t const i = static_cast<int32_t>(keyIndex(sortKeys[k]));
            order[k] = i;
            rank[i] = k;
        }
    }
    else
    {
        for (int32_t i = threadIdx.x; i < na; i += blockDim.x)
        {
            uint64_t const key = descKey(nodeMax[i], static_cast<uint32_t>(i));
            int32_t k = 0;
            for (int32_t m = 0; m < na; ++m)
            {
                k += descKey(nodeMax[m], static_cast<uint32_t>(m)) > key ? 1 : 0;
            }
            order[k] = i;
            rank[i] = k;
        }
    }
    for (int32_t j = threadIdx.x; j < nb; j += blockDim.x)
    {
        count[j] = 0;
        slot[2 * j + 1] = kept + j; // b-tokens keep their order after the kept a-tokens
    }
    __syncthreads();

    // 2. The first r in order are merged into their best b-token.
    for (int32_t k = threadIdx.x; k < r; k += blockDim.x)
    {
        int32_t const i = order[k];
        int32_t const j = nodeIdx[i];
        dstByRank[k] = j;
        atomicAdd(&count[j], 1);
        slot[2 * i] = kept + j;
    }
    __syncthreads();

    // 3. CSR offsets over b-tokens; kept a-tokens numbered in ascending position.
    blockExclusiveScan(
        nb, [&](int32_t j) { return count[j]; }, [&](int32_t j, int32_t prefix) { offset[j] = prefix; },
        scanScratch);
    blockExclusiveScan(
        na, [&](int32_t i) { return rank[i] >= r ? 1 : 0; },
        [&](int32_t i, int32_t prefix) {
            if (rank[i] >= r)
            {
                unmList[prefix] = i;
                slot[2 * i] = prefix;
            }
        },
        scanScratch);
    __syncthreads();

    // 4. Merged a-tokens grouped by b-token, each group in merge-priority order (deterministic).
    for (int32_t k = threadIdx.x; k < r; k += blockDim.x)
    {
        int32_t const j = dstByRank[k];
        int32_t before = 0;
        for (int32_t m = 0; m < k; ++m)
        {
            before += dstByRank[m] == j ? 1 : 0;
        }
        srcList[offset[j] + before] = order[k];
    }
}

template <typename T>
__global__ void mergeApplyKernel(MergeScratch s, T const* __restrict__ x, float const* __restrict__ mask,
    T* __restrict__ xOut, float* __restrict__ maskOut, int32_t tokens, int64_t channels, int32_t r)
{
    int32_t const na = (tokens + 1) / 2;
    int32_t const nb = tokens / 2;
    int32_t const kept = na - r;
    int32_t const outTokens = tokens - r;
    int64_t const o = blockIdx.x;
    int64_t const b = blockIdx.y;
    T const* xb = x + static_cast<size_t>(b) * tokens * channels;
    T* dst = xOut + (static_cast<size_t>(b) * outTokens + o) * channels;
    if (o < kept)
    {
        int32_t const pos = 2 * s.unmList[b * na + o];
        blockCopyRow(dst, xb + static_cast<size_t>(pos) * channels, static_cast<size_t>(channels) * sizeof(T));
        if (threadIdx.x == 0)
        {
            maskOut[b * outTokens + o] = mask[b * tokens + pos];
        }
        return;
    }
    int32_t const j = static_cast<int32_t>(o) - kept;
    int32_t const pos = 2 * j + 1;
    int32_t const n = s.count[b * nb + j];
    if (n == 0)
    {
        blockCopyRow(dst, xb + static_cast<size_t>(pos) * channels, static_cast<size_t>(channels) * sizeof(T));
        if (threadIdx.x == 0)
        {
            maskOut[b * outTokens + o] = mask[b * tokens + pos];
        }
        return;
    }
    int32_t const* src = s.srcList + b * na + s.offset[b * nb + j];
    float const denom = static_cast<float>(n + 1);
    for (int64_t c = threadIdx.x; c < channels; c += blockDim.x)
    {
        float acc = toFloat(xb[static_cast<size_t>(pos) * channels + c]);
        for (int32_t q = 0; q < n; ++q)
        {
            acc += toFloat(xb[static_cast<size_t>(2 * src[q]) * channels + c]);
        }
        dst[c] = fromFloat<T>(acc / denom);
    }
    if (threadIdx.x == 0)
    {
        float acc = mask[b * tokens + pos];
        for (int32_t q = 0; q < n; ++q)
        {
            acc += mask[b * tokens + 2 * src[q]];
        }
        maskOut[b * outTokens + o] = acc / denom;
    }
}

__global__ void arangeSlotsKernel(int64_t* __restrict__ slots, int64_t tokens, int64_t total)
{
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    {
        slots[i] = i % tokens;
    }
}

} // namespace kernels

cudaError_t launchMerge(MergeParams const& p, void* workspace, size_t workspaceBytes, cudaStream_t stream)
{
    using namespace kernels;
    if (p.batch < 0 || p.tokens < 0 || p.channels < 0 || p.metricDim < 0 || p.r < 0 || p.r > mergeMaxR(p.tokens)
        || p.batch > kMaxBatch || p.tokens > 0x3FFFFFFF)
    {
        return cudaErrorInvalidValue;
    }
    if (p.batch == 0 || p.tokens == 0)
    {
        return cudaSuccess;
    }
    size_t const esize = dtypeSize(p.tType);
    if (p.r == 0)
    {
        cudaError_t err = cudaMemcpyAsync(p.xOut, p.x, static_cast<size_t>(p.batch * p.tokens * p.channels) * esize,
            cudaMemcpyDeviceToDevice, stream);
        if (err == cudaSuccess)
        {
            err = cudaMemcpyAsync(p.maskOut, p.mask, static_cast<size_t>(p.batch * p.tokens) * sizeof(float),
                cudaMemcpyDeviceToDevice, stream);
        }
        if (err != cudaSuccess)
        {
            return err;
        }
        int64_t const total = p.batch * p.tokens;
        auto const blocks = static_cast<uint32_t>(ceilDiv(total, 256) < 4096 ? ceilDiv(total, 256) : 4096);
        arangeSlotsKernel<<<blocks, 256, 0, stream>>>(p.slots, p.tokens, total);
        return launchStatus();
    }
    if (p.metricDim < 1)
    {
        return cudaErrorInvalidValue;
    }
    MergeWorkspace const ws = mergeWorkspaceLayout(p.batch, p.tokens, p.metricDim);
    if (workspace == nullptr || workspaceBytes < ws.total)
    {
        return cudaErrorInvalidValue;
    }
    char* base = static_cast<char*>(workspace);
    MergeScratch s;
    s.normMetric = reinterpret_cast<float*>(base + ws.normMetric);
    s.nodeMax = reinterpret_cast<float*>(base + ws.nodeMax);
    s.nodeIdx = reinterpret_cast<int32_t*>(base + ws.nodeIdx);
    s.order = reinterpret_cast<int32_t*>(base + ws.order);
    s.rank = reinterpret_cast<int32_t*>(base + ws.rank);
    s.dstByRank = reinterpret_cast<int32_t*>(base + ws.dstByRank);
    s.unmList = reinterpret_cast<int32_t*>(base + ws.unmList);
    s.srcList = reinterpret_cast<int32_t*>(base + ws.srcList);
    s.count = reinterpret_cast<int32_t*>(base + ws.count);
    s.offset = reinterpret_cast<int32_t*>(base + ws.offset);

    int64_t const na = (p.tokens + 1) / 2;
    auto const batch = static_cast<uint32_t>(p.batch);
    dim3 const rowBlock(32, kRowsPerBlock);
    cudaError_t err = PUMER_DISPATCH_DTYPE(p.tType, T, {
        dim3 const grid(static_cast<uint32_t>(ceilDiv(p.tokens, kRowsPerBlock)), batch);
        mergeNormalizeKernel<T><<<grid, rowBlock, 0, stream>>>(
            static_cast<T const*>(p.metric), s.normMetric, p.tokens, p.metricDim);
        return launchStatus();
    });
    if (err != cudaSuccess)
    {
        return err;
    }
    mergeMatchKernel<<<dim3(static_cast<uint32_t>(ceilDiv(na, kRowsPerBlock)), batch), rowBlock, 0, stream>>>(
        s.normMetric, s.nodeMax, s.nodeIdx, p.tokens, p.metricDim);
    if ((err = launchStatus()) != cudaSuccess)
    {
        return err;
    }
    int64_t const padded = nextPow2(na);
    bool const shared = padded <= kMaxSharedSortKeys;
    size_t const smem = shared ? static_cast<size_t>(padded) * sizeof(uint64_t) : 0;
    mergePlanKernel<<<batch, kPlanThreads, smem, stream>>>(
        s, p.slots, static_cast<int32_t>(p.tokens), p.r, shared ? static_cast<int32_t>(padded) : 0);
    if ((err = launchStatus()) != cudaSuccess)
    {
        return err;
    }
    return PUMER_DISPATCH_DTYPE(p.tType, T, {
        dim3 const grid(static_cast<uint32_t>(p.tokens - p.r), batch);
        mergeApplyKernel<T><<<grid, kApplyThreads, 0, stream>>>(s, static_cast<T const*>(p.x), p.mask,
            static_cast<T*>(p.xOut), p.maskOut, static_cast<int32_t>(p.tokens), p.channels, p.r);
        return launchStatus();
    });
}

} // namespace pumer
