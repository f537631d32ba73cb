/*
 * PumerPrune kernels: text-informed token pruning (pumer_export/reduce.py: prune).
 *
 *   1. pruneScoresKernel: score[b, j] = sum_{t < text_len} S[b, t, text_len + j] / sum_t text_mask[b, t],
 *      S = mean over heads of attn (or head score_head), float32. One thread per (b, j, text-row group),
 *      coalesced over j; a fixed-order shared-memory reduction over the row groups.
 *   2. pruneTopkKernel: one block per batch row; keep_idx = the `keep` best scores, descending, ties by lower
 *      index (bitonic sort of unique (value, index) keys in shared memory; counting-rank fallback for > 4096
 *      image tokens).
 *   3. pruneGatherKernel: x_kept / metric_kept rows gathered by keep_idx from the image part.
 */
#include "pumerKernelUtils.cuh"
#include "pumerKernels.h"

namespace pumer
{
namespace kernels
{

constexpr int32_t kScoreColumns = 32; // image tokens per block (one warp wide)
constexpr int32_t kScoreRowGroups = 8; // text rows are split over this many thread rows
constexpr int32_t kSortThreads = 512;
constexpr int32_t kGatherThreads = 128;

template <typename A>
__global__ void pruneScoresKernel(A const* __restrict__ attn, float const* __restrict__ textMask,
    float* __restrict__ scores, int64_t tokens, int64_t heads, int32_t textLen, int32_t scoreHead, int64_t images)
{
    __shared__ float partial[kScoreRowGroups][kScoreColumns + 1];
    __shared__ float maskSum;
    int64_t const b = blockIdx.y;
    int64_t const j = static_cast<int64_t>(blockIdx.x) * kScoreColumns + threadIdx.x;
    if (threadIdx.x == 0 && threadIdx.y == 0)
    {
        float s = 0.0f;
        for (int32_t t = 0; t < textLen; ++t)
        {
            s += textMask[b * textLen + t];
        }
        maskSum = s;
    }
    float acc = 0.0f;
    if (j < images)
    {
        size_t const plane = static_cast<size_t>(tokens) * static_cast<size_t>(tokens);
        size_t const col = static_cast<size_t>(textLen) + static_cast<size_t>(j);
        A const* base = attn + static_cast<size_t>(b) * static_cast<size_t>(heads) * plane + col;
        if (scoreHead >= 0)
        {
            A const* head = base + static_cast<size_t>(scoreHead) * plane;
            for (int32_t t = threadIdx.y; t < textLen; t += kScoreRowGroups)
            {
                acc += toFloat(head[static_cast<size_t>(t) * tokens]);
            }
        }
        else
        {
            float const invHeads = 1.0f / static_cast<float>(heads);
            for (int32_t t = threadIdx.y; t < textLen; t += kScoreRowGroups)
            {
                A const* row = base + static_cast<size_t>(t) * tokens;
                float s = 0.0f;
                for (int64_t h = 0; h < heads; ++h)
                {
                    s += toFloat(row[static_cast<size_t>(h) * plane]);
                }
                acc += s * invHeads;
            }
        }
    }
    partial[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && j < images)
    {
        float total = 0.0f;
#pragma unroll
        for (int32_t g = 0; g < kScoreRowGroups; ++g)
        {
            total += partial[g][threadIdx.x];
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
    int64_t channels, int64_t metricDim, int32_t textLen, int32_t keep)
{
    int64_t const k = blockIdx.x;
    int64_t const b = blockIdx.y;
    int64_t const src = b * tokens + textLen + keepIdx[b * keep + k];
    int64_t const dst = b * keep + k;
    blockCopyRow(xOut + dst * channels, x + src * channels, static_cast<size_t>(channels) * sizeof(T));
    blockCopyRow(metricOut + dst * metricDim, metric + src * metricDim, static_cast<size_t>(metricDim) * sizeof(T));
}

} // namespace kernels

cudaError_t launchPrune(PruneParams const& p, void* workspace, size_t workspaceBytes, cudaStream_t stream)
{
    using namespace kernels;
    int64_t const images = p.tokens - p.textLen;
    if (p.batch < 0 || p.textLen < 1 || p.keep < 1 || p.keep > images || p.heads < 1 || p.scoreHead < -1
        || p.scoreHead >= p.heads || p.channels < 0 || p.metricDim < 0 || p.batch > kMaxBatch
        || images > 0x7FFFFFFF)
    {
        return cudaErrorInvalidValue;
    }
    if (p.batch == 0)
    {
        return cudaSuccess;
    }
    PruneWorkspace const ws = pruneWorkspaceLayout(p.batch, p.tokens, p.textLen);
    if (workspace == nullptr || workspaceBytes < ws.total)
    {
        return cudaErrorInvalidValue;
    }
    auto* scores = reinterpret_cast<float*>(static_cast<char*>(workspace) + ws.scores);

    cudaError_t err = PUMER_DISPATCH_DTYPE(p.aType, A, {
        dim3 const grid(static_cast<uint32_t>(ceilDiv(images, kScoreColumns)), static_cast<uint32_t>(p.batch));
        dim3 const block(kScoreColumns, kScoreRowGroups);
        pruneScoresKernel<A><<<grid, block, 0, stream>>>(static_cast<A const*>(p.attn), p.textMask, scores, p.tokens,
            p.heads, p.textLen, p.scoreHead, images);
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
            p.tokens, p.channels, p.metricDim, p.textLen, p.keep);
        return launchStatus();
    });
}

} // namespace pumer
