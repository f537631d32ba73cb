/*
 * PuMer kernels: plain launch functions (no TensorRT dependency).
 *
 * All tensors are contiguous (linear, row-major). Scores, similarities and merge sums are computed in float32
 * whatever the input type; ties follow pumer_export/reduce.py (stable descending order, lowest index first).
 * No host synchronisation and no allocation: scratch memory comes from `workspace`, whose size is given by
 * pruneWorkspaceLayout / mergeWorkspaceLayout (pumerHostLogic.h). Launches go to `stream`.
 */
#pragma once

#include "pumerHostLogic.h"

#include <cuda_runtime_api.h>
#include <cstdint>

#if defined(_WIN32)
#define PUMER_KERNEL_API __declspec(dllexport)
#else
#define PUMER_KERNEL_API __attribute__((visibility("default")))
#endif

namespace pumer
{

//! PumerPrune: x [B,Nk,C], metric [B,Nk,D] (type T); queries [B,H,text_len,d], keys [B,H,Nk,d] (type A);
//! key_mask [B,Nk], text_mask [B,text_len] float32.
//! Outputs: x_kept [B,keep,C], metric_kept [B,keep,D] (type T), keep_idx [B,keep] int64.
struct PruneParams
{
    DType tType{DType::kFLOAT};
    DType aType{DType::kFLOAT};
    void const* x{nullptr};
    void const* metric{nullptr};
    void const* queries{nullptr};
    void const* keys{nullptr};
    float const* keyMask{nullptr};
    float const* textMask{nullptr};
    void* xOut{nullptr};
    void* metricOut{nullptr};
    int64_t* keepIdx{nullptr};
    int64_t batch{0};
    int64_t tokens{0};    //!< Nk (keys, and tokens of x)
    int64_t channels{0};  //!< C
    int64_t metricDim{0}; //!< D
    int64_t heads{0};     //!< H
    int64_t headDim{0};   //!< d
    int32_t textLen{0};
    int32_t keep{0};
    int32_t scoreHead{-1};
    int32_t imageStart{0};
    int32_t masking{0}; //!< Masking
};

//! PumerMerge: x [B,t,C], metric [B,t,D] (type T), mask [B,t] float32.
//! Outputs: x_out [B,t-r,C] (type T), mask_out [B,t-r] float32, slots [B,t] int64.
struct MergeParams
{
    DType tType{DType::kFLOAT};
    void const* x{nullptr};
    void const* metric{nullptr};
    float const* mask{nullptr};
    void* xOut{nullptr};
    float* maskOut{nullptr};
    int64_t* slots{nullptr};
    int64_t batch{0};
    int64_t tokens{0};    //!< t
    int64_t channels{0};  //!< C
    int64_t metricDim{0}; //!< D
    int32_t r{0};
};

//! PumerCompact (SmartTrim's stable compaction): keep [B,N] bool (one byte each), x [B,N,C] (type T).
//! Outputs, laid out for the batch's largest kept count n (known on the device only): x_out [B,n,C] (type T),
//! alive [B,n] int32 0/1, index [B,n] int64, count: n as one int32 (TensorRT's size tensors are int32 and a plugin
//! output cannot be bool; the ONNX node's alive / count are bool / int64, cast around the plugin). Buffers sized for
//! the upper bound n = N are enough.
struct CompactParams
{
    DType tType{DType::kFLOAT};
    uint8_t const* keep{nullptr};
    void const* x{nullptr};
    void* xOut{nullptr};
    int32_t* alive{nullptr};
    int64_t* index{nullptr};
    int32_t* count{nullptr};
    int64_t batch{0};
    int64_t tokens{0};   //!< N
    int64_t channels{0}; //!< C
};

//! Enqueue the prune kernels. Returns cudaErrorInvalidValue for inconsistent parameters or a too small workspace.
PUMER_KERNEL_API cudaError_t launchPrune(PruneParams const& p, void* workspace, size_t workspaceBytes, cudaStream_t stream);

//! Enqueue the merge kernels (r == 0: identity copy, slots = arange).
PUMER_KERNEL_API cudaError_t launchMerge(MergeParams const& p, void* workspace, size_t workspaceBytes, cudaStream_t stream);

//! Enqueue the compaction kernels (prefix sums per row, the largest count, the gather): no host synchronisation,
//! scratch from the workspace (compactWorkspaceLayout). A batch that keeps no token gives n = 0.
PUMER_KERNEL_API cudaError_t launchCompact(CompactParams const& p, void* workspace, size_t workspaceBytes, cudaStream_t stream);

} // namespace pumer
