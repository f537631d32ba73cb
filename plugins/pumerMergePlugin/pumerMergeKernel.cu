/*
 * PumerMerge kernels: ToMe bipartite soft matching + mean merging (pumer_export/reduce.py: merge).
 *
 *   1. mergeMatchKernel: for every a-token (even position) its most similar b-token (odd position). A block
 *      takes a tile of a-tokens, L2-normalises them (float32, warp per row) into shared memory, then streams the
 *      b-tokens in chunks, normalised the same way into shared memory; every lane computes whole dot products
 *      (no dependent chain of warp reductions per pair), and each a-token's best (value, index) is combined over
 *      lanes and chunks: the larger value wins, NaN above all (like torch.argmax), ties to the lower index.
 *      a-token 0 gets -inf (never merged).
 *   2. mergePlanKernel: one block per batch row. Sorts a-tokens by best similarity (stable descending), the first
 *      r are merged into their b-token; builds slots, the kept a-token list (ascending) and a CSR list of the
 *      a-tokens merged into every b-token (in merge-priority order, like a sequential scatter_add).
 *   3. mergeApplyKernel: one block per output token: kept a-tokens copied, b-tokens averaged with their merged
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

constexpr int32_t kMatchWarps = 8;
constexpr int32_t kMatchThreads = kMatchWarps * 32;
constexpr int32_t kPlanThreads = 512;
constexpr int32_t kApplyThreads = 128;

struct MergeScratch
{
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

//! a-tokens per match block, and b-tokens per chunk (at most one per lane), for a metric of `dim` features: the
//! normalised a-tile and one b-chunk fit in 48 KiB of shared memory (32 up to 192 features; see kMaxMergeMetricDim).
__host__ __device__ __forceinline__ int32_t matchTile(int64_t dim)
{
    int64_t const fit = (48 * 1024 / static_cast<int64_t>(sizeof(float))) / (2 * dim);
    return static_cast<int32_t>(fit >= 32 ? 32 : fit);
}

//! Whether candidate (v, j) beats (best, bestIdx): larger value, NaN above every number, ties to the lower index
//! (the order of a sequential scan with a strict '>' and torch.argmax's NaN rule).
__device__ __forceinline__ bool beats(float v, int32_t j, float best, int32_t bestIdx)
{
    bool const vNan = v != v;
    bool const bNan = best != best;
    if (vNan != bNan)
    {
        return vNan;
    }
    if (!vNan && v != best)
    {
        return v > best;
    }
    return j < bestIdx;
}

//! Row `row` of `metric` (D features), L2-normalised in float32 by one warp (lanes stride over the features,
//! butterfly sum: every lane gets the same norm), written to `out`.
template <typename T>
__device__ __forceinline__ void normaliseRow(T const* __restrict__ metric, int64_t dim, float* out)
{
    float sq = 0.0f;
    for (int64_t k = threadIdx.x % 32; k < dim; k += 32)
    {
        float const v = toFloat(metric[k]);
        sq += v * v;
    }
    float const norm = sqrtf(warpAllReduceSum(sq));
    for (int64_t k = threadIdx.x % 32; k < dim; k += 32)
    {
        out[k] = toFloat(metric[k]) / norm;
    }
}

template <typename T>
__global__ void mergeMatchKernel(T const* __restrict__ metric, float* __restrict__ nodeMax,
    int32_t* __restrict__ nodeIdx, int64_t tokens, int64_t dim, int32_t tile)
{
    extern __shared__ float shared[];
    float* aRows = shared;              // [tile][dim]
    float* bRows = shared + tile * dim; // [tile][dim]: a chunk of b-tokens, one per lane < tile
    int64_t const na = (tokens + 1) / 2;
    int64_t const nb = tokens / 2;
    int64_t const b = blockIdx.y;
    int64_t const a0 = static_cast<int64_t>(blockIdx.x) * tile;
    int32_t const warp = static_cast<int32_t>(threadIdx.x) / 32;
    int32_t const lane = static_cast<int32_t>(threadIdx.x) % 32;
    T const* base = metric + static_cast<size_t>(b) * tokens * dim;

    // the a-tile, normalised (a warp per row)
    for (int32_t r = warp; r < tile; r += kMatchWarps)
    {
        int64_t const i = a0 + r;
        if (i < na)
        {
            normaliseRow(base + static_cast<size_t>(2 * i) * dim, dim, aRows + r * dim);
        }
    }
    // every warp tracks the best b-token of its rows; lane 0 holds the combined result
    float best[4];
    int32_t bestIdx[4];
    for (int32_t q = 0; q < 4; ++q)
    {
        best[q] = -INFINITY;
        bestIdx[q] = 0;
    }
    for (int64_t c0 = 0; c0 < nb; c0 += tile)
    {
        __syncthreads(); // the a-tile is written; the previous chunk is no longer read
        for (int32_t r = warp; r < tile; r += kMatchWarps)
        {
            int64_t const j = c0 + r;
            if (j < nb)
            {
                normaliseRow(base + static_cast<size_t>(2 * j + 1) * dim, dim, bRows + r * dim);
            }
        }
        __syncthreads();
        int64_t const j = c0 + lane;
        for (int32_t q = 0; q < 4; ++q)
        {
            int32_t const r = warp + q * kMatchWarps; // the rows of this warp: warp, warp + 8, ...
            if (r >= tile)
            {
                break;
            }
            float sim = -INFINITY;
            int32_t idx = 0x7FFFFFFF;
            if (lane < tile && j < nb && a0 + r < na)
            {
                float const* av = aRows + r * dim;
                float const* bv = bRows + lane * dim;
                float dot = 0.0f;
                for (int64_t k = 0; k < dim; ++k)
                {
                    dot += av[k] * bv[k];
                }
                sim = dot;
                idx = static_cast<int32_t>(j);
            }
            // argmax over the lanes (a tree of shuffles, warp-uniform participation)
#pragma unroll
            for (int32_t off = 16; off > 0; off >>= 1)
            {
                float const otherSim = __shfl_xor_sync(0xFFFFFFFFu, sim, off);
                int32_t const otherIdx = __shfl_xor_sync(0xFFFFFFFFu, idx, off);
                if (beats(otherSim, otherIdx, sim, idx))
                {
                    sim = otherSim;
                    idx = otherIdx;
                }
            }
            if (idx != 0x7FFFFFFF && beats(sim, idx, best[q], bestIdx[q]))
            {
                best[q] = sim;
                bestIdx[q] = idx;
            }
        }
    }
    if (lane == 0)
    {
        for (int32_t q = 0; q < 4; ++q)
        {
            int32_t const r = warp + q * kMatchWarps;
            int64_t const i = a0 + r;
            if (r < tile && i < na)
            {
                // a-token 0 is never merged: its similarity row is -inf (argmax of all -inf = 0)
                nodeMax[b * na + i] = i == 0 ? -INFINITY : best[q];
                nodeIdx[b * na + i] = i == 0 ? 0 : bestIdx[q];
            }
        }
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
    int32_t const tile = matchTile(p.metricDim);
    if (tile < 1 || p.metricDim > kMaxMergeMetricDim)
    {
        return cudaErrorInvalidValue; // rejected at build time by validateMergeShapes
    }
    cudaError_t err = PUMER_DISPATCH_DTYPE(p.tType, T, {
        dim3 const grid(static_cast<uint32_t>(ceilDiv(na, tile)), batch);
        size_t const smem = 2 * static_cast<size_t>(tile) * static_cast<size_t>(p.metricDim) * sizeof(float);
        mergeMatchKernel<T><<<grid, kMatchThreads, smem, stream>>>(
            static_cast<T const*>(p.metric), s.nodeMax, s.nodeIdx, p.tokens, p.metricDim, tile);
        return launchStatus();
    });
    if (err != cudaSuccess)
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
