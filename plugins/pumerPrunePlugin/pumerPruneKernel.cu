/*
 * PumerPrune kernels: text-informed token pruning from the text rows' queries and the keys
 * (pumer_export/reduce.py: prune; the attention probabilities of the layer are never read).
 *
 *   1. pruneRowStatsKernel: one block per text row (b, h, t): the row's logits s_j = q.k_j / sqrt(d) over all Nk
 *      keys in float32, reduced in one pass (online softmax) to the statistics of the masking rule (standard: max
 *      and sum of exp(s + log m - max); official P7: max of s and sum of exp(s - max) m'), into the workspace.
 *   2. pruneScoresKernel: score[b, j] = sum_t S[b, t, image_start + j] / sum_t text_mask[b, t], S = mean over
 *      heads (or head score_head) of the probabilities, recomputed per (t, h) from the logit and the row
 *      statistics. One thread per (b, j, text-row group), coalesced over j; a fixed-order shared-memory
 *      reduction over the row groups.
 *   3. pruneTopkKernel: one block per batch row; keep_idx = the `keep` best scores, descending, ties by lower
 *      index (bitonic sort of unique (value, index) keys in shared memory; counting-rank fallback for > 4096
 *      image tokens).
 *   4. pruneGatherKernel: x_kept / metric_kept rows gathered by keep_idx from the image part (from image_start).
 */
#include "pumerKernelUtils.cuh"
#include "pumerKernels.h"

#include <cfloat>

namespace pumer
{
namespace kernels
{

constexpr int32_t kStatsThreads = 128;
constexpr int32_t kScoreColumns = 32; // image keys per block (one warp wide)
constexpr int32_t kScoreRowGroups = 8; // text rows are split over this many thread rows
constexpr int32_t kSortThreads = 512;
constexpr int32_t kGatherThreads = 128;

struct PruneGeometry
{
    int64_t heads;
    int64_t keys;
    int64_t headDim;
    int32_t textLen;
    int32_t imageStart;
    int32_t masking;
    float sqrtDim; //!< sqrtf(d): logits are q.k / sqrt(d), divided as the reference does
    float smooth;  //!< 1e-6 / Nk rounded once to float32 (the official rule's smoothing term)
};

//! The logit q_(b,h,t) . k_(b,h,j) / sqrt(d) in float32 (sequential order over d: deterministic).
template <typename A>
__device__ __forceinline__ float rowLogit(A const* __restrict__ q, A const* __restrict__ k, int64_t dim, float sqrtDim)
{
    float dot = 0.0f;
    for (int64_t c = 0; c < dim; ++c)
    {
        dot += toFloat(q[c]) * toFloat(k[c]);
    }
    return dot / sqrtDim;
}

//! The standard rule's biased logit: s + log(m), or float32's lowest value for a masked key (as reduce.py).
__device__ __forceinline__ float standardLogit(float s, float m)
{
    return m > 0.0f ? s + logf(fmaxf(m, 1e-30f)) : s + (-FLT_MAX);
}

//! Fold a (max, sum-of-exp) pair into another: the online softmax combine (exact for -inf maxima).
__device__ __forceinline__ void combineStats(float& m, float& sum, float m2, float sum2)
{
    if (m2 == -INFINITY)
    {
        return;
    }
    if (m == -INFINITY)
    {
        m = m2;
        sum = sum2;
        return;
    }
    float const top = fmaxf(m, m2);
    sum = sum * expf(m - top) + sum2 * expf(m2 - top);
    m = top;
}

//! rowStats[(b, h, t)] = (max, sum) of the row's softmax under the masking rule, in one pass over the keys
//! (online softmax: every thread keeps a running max and a rescaled sum, then the block combines them).
template <typename A>
__global__ void pruneRowStatsKernel(A const* __restrict__ queries, A const* __restrict__ keys,
    float const* __restrict__ keyMask, float* __restrict__ rowStats, PruneGeometry g)
{
    __shared__ float maxBuf[kStatsThreads];
    __shared__ float sumBuf[kStatsThreads];
    int64_t const row = blockIdx.x; // (b * heads + h) * textLen + t
    int64_t const t = row % g.textLen;
    int64_t const bh = row / g.textLen;
    int64_t const b = bh / g.heads;
    A const* q = queries + row * g.headDim;
    A const* kBase = keys + bh * g.keys * g.headDim;
    float const* mask = keyMask + b * g.keys;
    bool const standard = g.masking == static_cast<int32_t>(Masking::kSTANDARD);

    float localMax = -INFINITY;
    float localSum = 0.0f;
    for (int64_t j = threadIdx.x; j < g.keys; j += blockDim.x)
    {
        float const s = rowLogit(q, kBase + j * g.headDim, g.headDim, g.sqrtDim);
        // standard: max and sum over the biased logits; official: max over the raw logits, sum weighted by m'
        float const m = mask[j];
        float const v = standard ? standardLogit(s, m) : s;
        float const weight = standard ? 1.0f : m + (1.0f - m) * (j == t ? 1.0f : 0.0f);
        combineStats(localMax, localSum, v, weight);
    }
    maxBuf[threadIdx.x] = localMax;
    sumBuf[threadIdx.x] = localSum;
    __syncthreads();
    for (int32_t off = blockDim.x / 2; off > 0; off >>= 1)
    {
        if (static_cast<int32_t>(threadIdx.x) < off)
        {
            float m = maxBuf[threadIdx.x];
            float sum = sumBuf[threadIdx.x];
            combineStats(m, sum, maxBuf[threadIdx.x + off], sumBuf[threadIdx.x + off]);
            maxBuf[threadIdx.x] = m;
            sumBuf[threadIdx.x] = sum;
        }
        __syncthreads();
    }
    if (threadIdx.x == 0)
    {
        rowStats[2 * row] = maxBuf[0];
        rowStats[2 * row + 1] = sumBuf[0];
    }
}

//! The probability of key j in row (b, h, t) from its logit and the row statistics.
__device__ __forceinline__ float rowProbability(float s, float m, int64_t j, int64_t t, float rowMax, float rowSum,
    int32_t masking, float smooth)
{
    if (masking == static_cast<int32_t>(Masking::kSTANDARD))
    {
        return expf(standardLogit(s, m) - rowMax) / rowSum;
    }
    float const weight = m + (1.0f - m) * (j == t ? 1.0f : 0.0f);
    return (expf(s - rowMax) * weight + smooth) / (rowSum + 1e-6f);
}

template <typename A>
__global__ void pruneScoresKernel(A const* __restrict__ queries, A const* __restrict__ keys,
    float const* __restrict__ keyMask, float const* __restrict__ textMask, float const* __restrict__ rowStats,
    float* __restrict__ scores, PruneGeometry g, int32_t scoreHead, int64_t images)
{
    __shared__ float partial[kScoreRowGroups][kScoreColumns + 1];
    __shared__ float maskSum;
    int64_t const b = blockIdx.y;
    int64_t const j = static_cast<int64_t>(blockIdx.x) * kScoreColumns + threadIdx.x;
    if (threadIdx.x == 0 && threadIdx.y == 0)
    {
        float s = 0.0f;
        for (int32_t t = 0; t < g.textLen; ++t)
        {
            s += textMask[b * g.textLen + t];
        }
        maskSum = s;
    }
    float acc = 0.0f;
    if (j < images)
    {
        int64_t const key = g.imageStart + j;
        float const m = keyMask[b * g.keys + key];
        int64_t const h0 = scoreHead >= 0 ? scoreHead : 0;
        int64_t const h1 = scoreHead >= 0 ? scoreHead + 1 : g.heads;
        for (int32_t t = threadIdx.y; t < g.textLen; t += kScoreRowGroups)
        {
            float rowTotal = 0.0f;
            for (int64_t h = h0; h < h1; ++h)
            {
                int64_t const row = (b * g.heads + h) * g.textLen + t;
                float const s = rowLogit(queries + row * g.headDim, keys + ((b * g.heads + h) * g.keys + key) * g.headDim,
                    g.headDim, g.sqrtDim);
                rowTotal += rowProbability(s, m, key, t, rowStats[2 * row], rowStats[2 * row + 1], g.masking, g.smooth);
            }
            acc += scoreHead >= 0 ? rowTotal : rowTotal / static_cast<float>(g.heads);
        }
    }
    partial[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && j < images)
    {
        float total = 0.0f;
#pragma unroll
        for (int32_t grp = 0; grp < kScoreRowGroups; ++grp)
        {
            total += partial[grp][threadIdx.x];
        }
        scores[b * images + j] = total / maskSum;
    }
}

//! keep_idx[b, :keep] = indices of the `keep` largest scores[b, :], descending, ties by lower index.
__global__ void pruneTopkKernel(
    float const* __restrict__ scores, int64_t* __restrict__ keepIdx, int32_t images, int32_t keep, int32_t padded)
{
    extern __shared__ uint64_t sortKeys[];
    int64_t const b = blockIdx.x;
    float const* s = scores + b * images;
    int64_t* out = keepIdx + b * keep;
    if (padded > 0)
    {
        for (int32_t i = threadIdx.x; i < padded; i += blockDim.x)
        {
            sortKeys[i] = i < images ? descKey(s[i], static_cast<uint32_t>(i)) : 0ull;
        }
        __syncthreads();
        blockBitonicSortDesc(sortKeys, padded);
        for (int32_t k = threadIdx.x; k < keep; k += blockDim.x)
        {
            out[k] = static_cast<int64_t>(keyIndex(sortKeys[k]));
        }
    }
    else
    {
        // Counting rank: keys are unique, so rank(i) = #{m : key(m) > key(i)} is the sorted position.
        for (int32_t i = threadIdx.x; i < images; i += blockDim.x)
        {
            uint64_t const key = descKey(s[i], static_cast<uint32_t>(i));
            int32_t rank = 0;
            for (int32_t m = 0; m < images && rank < keep; ++m)
            {
                rank += descKey(s[m], static_cast<uint32_t>(m)) > key ? 1 : 0;
            }
            if (rank < keep)
            {
                out[rank] = i;
            }
        }
    }
}

template <typename T>
__global__ void pruneGatherKernel(T const* __restrict__ x, T const* __restrict__ metric,
    int64_t const* __restrict__ keepIdx, T* __restrict__ xOut, T* __restrict__ metricOut, int64_t tokens,
    int64_t channels, int64_t metricDim, int32_t imageStart, int32_t keep)
{
    int64_t const k = blockIdx.x;
    int64_t const b = blockIdx.y;
    int64_t const src = b * tokens + imageStart + keepIdx[b * keep + k];
    int64_t const dst = b * keep + k;
    blockCopyRow(xOut + dst * channels, x + src * channels, static_cast<size_t>(channels) * sizeof(T));
    blockCopyRow(metricOut + dst * metricDim, metric + src * metricDim, static_cast<size_t>(metricDim) * sizeof(T));
}

} // namespace kernels

cudaError_t launchPrune(PruneParams const& p, void* workspace, size_t workspaceBytes, cudaStream_t stream)
{
    using namespace kernels;
    int64_t const images = p.tokens - p.imageStart;
    if (p.batch < 0 || p.textLen < 1 || p.keep < 1 || p.imageStart < 0 || p.keep > images || p.heads < 1
        || p.headDim < 1 || p.scoreHead < -1 || p.scoreHead >= p.heads || p.channels < 0 || p.metricDim < 0
        || p.batch > kMaxBatch || images > 0x7FFFFFFF
        || (p.masking != static_cast<int32_t>(Masking::kSTANDARD) && p.masking != static_cast<int32_t>(Masking::kOFFICIAL))
        || p.batch * p.heads * p.textLen > 0x7FFFFFFF)
    {
        return cudaErrorInvalidValue;
    }
    if (p.batch == 0)
    {
        return cudaSuccess;
    }
    PruneWorkspace const ws = pruneWorkspaceLayout(p.batch, p.heads, p.textLen, p.tokens, p.imageStart);
    if (workspace == nullptr || workspaceBytes < ws.total)
    {
        return cudaErrorInvalidValue;
    }
    auto* rowStats = reinterpret_cast<float*>(static_cast<char*>(workspace) + ws.rowStats);
    auto* scores = reinterpret_cast<float*>(static_cast<char*>(workspace) + ws.scores);
    PruneGeometry const geo{p.heads, p.tokens, p.headDim, p.textLen, p.imageStart, p.masking,
        sqrtf(static_cast<float>(p.headDim)), static_cast<float>(1e-6 / static_cast<double>(p.tokens))};

    cudaError_t err = PUMER_DISPATCH_DTYPE(p.aType, A, {
        auto const* q = static_cast<A const*>(p.queries);
        auto const* k = static_cast<A const*>(p.keys);
        pruneRowStatsKernel<A><<<static_cast<uint32_t>(p.batch * p.heads * p.textLen), kStatsThreads, 0, stream>>>(
            q, k, p.keyMask, rowStats, geo);
        cudaError_t const statsErr = launchStatus();
        if (statsErr != cudaSuccess)
        {
            return statsErr;
        }
        dim3 const grid(static_cast<uint32_t>(ceilDiv(images, kScoreColumns)), static_cast<uint32_t>(p.batch));
        dim3 const block(kScoreColumns, kScoreRowGroups);
        pruneScoresKernel<A><<<grid, block, 0, stream>>>(q, k, p.keyMask, p.textMask, rowStats, scores, geo,
            p.scoreHead, images);
        return launchStatus();
    });
    if (err != cudaSuccess)
    {
        return err;
    }

    int64_t const padded = nextPow2(images);
    bool const shared = padded <= kMaxSharedSortKeys;
    size_t const smem = shared ? static_cast<size_t>(padded) * sizeof(uint64_t) : 0;
    pruneTopkKernel<<<static_cast<uint32_t>(p.batch), kSortThreads, smem, stream>>>(
        scores, p.keepIdx, static_cast<int32_t>(images), p.keep, shared ? static_cast<int32_t>(padded) : 0);
    if ((err = launchStatus()) != cudaSuccess)
    {
        return err;
    }

    return PUMER_DISPATCH_DTYPE(p.tType, T, {
        dim3 const grid(static_cast<uint32_t>(p.keep), static_cast<uint32_t>(p.batch));
        pruneGatherKernel<T><<<grid, kGatherThreads, 0, stream>>>(static_cast<T const*>(p.x),
            static_cast<T const*>(p.metric), p.keepIdx, static_cast<T*>(p.xOut), static_cast<T*>(p.metricOut),
            p.tokens, p.channels, p.metricDim, p.imageStart, p.keep);
        return launchStatus();
    });
}

} // namespace pumer
