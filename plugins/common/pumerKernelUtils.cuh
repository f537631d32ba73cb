/*
 * Device helpers shared by the PuMer kernels: type conversion, total-order sort keys, a block-level bitonic sort,
 * a block-level exclusive scan and warp reductions.
 */
#pragma once

#include "pumerHostLogic.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cstdint>

namespace pumer
{
namespace kernels
{

template <typename T>
__device__ __forceinline__ float toFloat(T v);
template <>
__device__ __forceinline__ float toFloat<float>(float v)
{
    return v;
}
template <>
__device__ __forceinline__ float toFloat<__half>(__half v)
{
    return __half2float(v);
}
template <>
__device__ __forceinline__ float toFloat<__nv_bfloat16>(__nv_bfloat16 v)
{
    return __bfloat162float(v);
}

//! float -> T with round-to-nearest-even (what torch's .to(dtype) does).
template <typename T>
__device__ __forceinline__ T fromFloat(float v);
template <>
__device__ __forceinline__ float fromFloat<float>(float v)
{
    return v;
}
template <>
__device__ __forceinline__ __half fromFloat<__half>(float v)
{
    return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 fromFloat<__nv_bfloat16>(float v)
{
    return __float2bfloat16_rn(v);
}

//! Map a float to uint32 so that unsigned order equals torch's sort order: -inf < ... < -0 == +0 < ... < +inf < NaN
//! (torch sorts NaN as the largest value; -0.0 and +0.0 compare equal).
__device__ __forceinline__ uint32_t orderedBits(float v)
{
    if (v != v)
    {
        return 0xFFFFFFFFu;
    }
    if (v == 0.0f)
    {
        v = 0.0f;
    }
    uint32_t const u = __float_as_uint(v);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

//! Unique key whose descending order is (value descending, index ascending): a stable descending sort.
//! Every real key is > 0 (the smallest, -inf, maps to 0x007FFFFF in the high word), so 0 pads.
__device__ __forceinline__ uint64_t descKey(float v, uint32_t index)
{
    return (static_cast<uint64_t>(orderedBits(v)) << 32) | static_cast<uint64_t>(0xFFFFFFFFu - index);
}

__device__ __forceinline__ uint32_t keyIndex(uint64_t key)
{
    return 0xFFFFFFFFu - static_cast<uint32_t>(key & 0xFFFFFFFFull);
}

//! In-place descending bitonic sort of `count` (a power of two) keys in shared memory by the whole block.
//! Callers synchronise before (keys written) and may read the keys right after (ends with __syncthreads).
__device__ __forceinline__ void blockBitonicSortDesc(uint64_t* keys, int32_t count)
{
    for (int32_t k = 2; k <= count; k <<= 1)
    {
        for (int32_t j = k >> 1; j > 0; j >>= 1)
        {
            for (int32_t i = threadIdx.x; i < count; i += blockDim.x)
            {
                int32_t const partner = i ^ j;
                if (partner > i)
                {
                    uint64_t const a = keys[i];
                    uint64_t const b = keys[partner];
                    // Sub-sequences with (i & k) == 0 are sorted descending, the others ascending; the last merge
                    // (k == count) leaves the whole array descending.
                    bool const swap = ((i & k) == 0) ? (a < b) : (a > b);
                    if (swap)
                    {
                        keys[i] = b;
                        keys[partner] = a;
                    }
                }
            }
            __syncthreads();
        }
    }
}

//! Block-wide exclusive prefix sum of value(i) for i in [0, n); write(i, prefix) for every i; returns the total.
//! All threads of the block must call it; `scratch` holds blockDim.x ints of shared memory.
template <typename ValueFn, typename WriteFn>
__device__ __forceinline__ int32_t blockExclusiveScan(int32_t n, ValueFn value, WriteFn write, int32_t* scratch)
{
    int32_t carry = 0;
    for (int32_t base = 0; base < n; base += blockDim.x)
    {
        int32_t const i = base + static_cast<int32_t>(threadIdx.x);
        int32_t const v = i < n ? value(i) : 0;
        scratch[threadIdx.x] = v;
        __syncthreads();
        for (int32_t off = 1; off < static_cast<int32_t>(blockDim.x); off <<= 1)
        {
            int32_t const add = static_cast<int32_t>(threadIdx.x) >= off ? scratch[threadIdx.x - off] : 0;
            __syncthreads();
            scratch[threadIdx.x] += add;
            __syncthreads();
        }
        if (i < n)
        {
            write(i, carry + scratch[threadIdx.x] - v);
        }
        int32_t const chunkTotal = scratch[blockDim.x - 1];
        __syncthreads();
        carry += chunkTotal;
    }
    return carry;
}

//! Sum over the 32 lanes of a warp; every lane gets the result (fixed butterfly order: deterministic).
__device__ __forceinline__ float warpAllReduceSum(float v)
{
#pragma unroll
    for (int32_t off = 16; off > 0; off >>= 1)
    {
        v += __shfl_xor_sync(0xFFFFFFFFu, v, off);
    }
    return v;
}

//! Whether the launch just made failed, without clearing the thread's last error: cudaGetLastError would also
//! swallow an earlier error of the application's own work on this thread.
__host__ __forceinline__ cudaError_t launchStatus()
{
    return cudaPeekAtLastError();
}

//! Number of blocks for `n` items of `per` each, at least 1.
__host__ __device__ __forceinline__ int64_t ceilDiv(int64_t n, int64_t per)
{
    return (n + per - 1) / per;
}

//! Copy `bytes` bytes (a token row) with the widest access the alignment allows; the block's threads share it.
__device__ __forceinline__ void blockCopyRow(void* dst, void const* src, size_t bytes)
{
    uintptr_t const align = reinterpret_cast<uintptr_t>(dst) | reinterpret_cast<uintptr_t>(src) | bytes;
    if ((align & 15u) == 0)
    {
        auto* d = static_cast<uint4*>(dst);
        auto const* s = static_cast<uint4 const*>(src);
        for (size_t i = threadIdx.x; i < bytes / 16; i += blockDim.x) d[i] = s[i];
    }
    else if ((align & 3u) == 0)
    {
        auto* d = static_cast<uint32_t*>(dst);
        auto const* s = static_cast<uint32_t const*>(src);
        for (size_t i = threadIdx.x; i < bytes / 4; i += blockDim.x) d[i] = s[i];
    }
    else
    {
        auto* d = static_cast<uint16_t*>(dst);
        auto const* s = static_cast<uint16_t const*>(src);
        for (size_t i = threadIdx.x; i < bytes / 2; i += blockDim.x) d[i] = s[i];
    }
}

} // namespace kernels
} // namespace pumer

//! Dispatch a runtime DType to a type alias `TYPE` (float, __half, __nv_bfloat16) and run the body.
#define PUMER_DISPATCH_DTYPE(DTYPE, TYPE, ...)                                                                        \
    [&]() -> cudaError_t {                                                                                           \
        switch (DTYPE)                                                                                               \
        {                                                                                                            \
        case ::pumer::DType::kFLOAT: { using TYPE = float; __VA_ARGS__ }                                             \
        case ::pumer::DType::kHALF: { using TYPE = __half; __VA_ARGS__ }                                             \
        case ::pumer::DType::kBF16: { using TYPE = __nv_bfloat16; __VA_ARGS__ }                                      \
        }                                                                                                            \
        return cudaErrorInvalidValue;                                                                                \
    }()
