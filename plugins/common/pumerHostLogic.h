/*
 * PuMer TensorRT plugins: host-side logic shared by the plugins, the kernel launchers and the CPU unit test.
 *
 * Everything here is plain C++17: no CUDA runtime, no TensorRT. It covers attribute parsing and validation,
 * shape validation, output-shape arithmetic, workspace layout/size arithmetic and the (de)serialisation of the
 * plugin attributes as plugin fields. The plugin classes translate TensorRT's PluginField / Dims to the small
 * views below and call these functions, so the CPU test exercises exactly the code the plugins run.
 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace pumer
{

//! Names shared with the ONNX nodes (domain "pumer") and op_spec.json.
constexpr char const* kPluginNamespace = "pumer";
constexpr char const* kPluginVersion = "2"; //!< 2: PumerPrune reads queries and keys (op_spec.json domain 2)
constexpr char const* kPruneName = "PumerPrune";
constexpr char const* kMergeName = "PumerMerge";
constexpr char const* kCompactName = "PumerCompact"; //!< SmartTrim's data-dependent compaction

//! Tensor element types the kernels support (T and A in op_spec.json); masks are always kFLOAT, indices int64.
enum class DType : int32_t
{
    kFLOAT = 0,
    kHALF = 1,
    kBF16 = 2,
};

size_t dtypeSize(DType t) noexcept;
char const* dtypeName(DType t) noexcept;

//! Field type codes; the values equal nvinfer1::PluginFieldType (stable since TensorRT 8.x; checked by a
//! static_assert in the plugin sources).
enum class FieldType : int32_t
{
    kINT8 = 3,
    kINT16 = 4,
    kINT32 = 5,
    kCHAR = 6,
    kINT64 = 10,
};

//! A TensorRT-independent view of one nvinfer1::PluginField.
struct FieldView
{
    char const* name{nullptr};
    void const* data{nullptr};
    int32_t type{0};
    int32_t length{0};
};

//! Result of a check: ok, or a one-line message naming the problem.
struct Status
{
    bool ok{true};
    std::string message;
    static Status success() { return {}; }
    static Status error(std::string msg) { return Status{false, std::move(msg)}; }
};

//! Masking rules of PumerPrune's attention (attribute masking).
enum class Masking : int32_t
{
    kSTANDARD = 0, //!< softmax(s + log m)
    kOFFICIAL = 1, //!< PuMer's P7: (e m' + 1e-6/Nk) / (sum e m' + 1e-6), m' = m + (1 - m) [key == row]
};

//! Attributes of PumerPrune (ONNX attributes text_len, keep, score_head, image_start, masking).
struct PruneAttrs
{
    int32_t textLen{-1};
    int32_t keep{-1};
    int32_t scoreHead{-1};  //!< -1: mean over heads; k >= 0: head k only
    int32_t imageStart{-1}; //!< first image key (and token of x)
    int32_t masking{0};     //!< Masking
};

//! Attributes of PumerMerge (ONNX attribute r).
struct MergeAttrs
{
    int32_t r{-1};
};

//! Parse plugin fields (build phase: the ONNX attributes; runtime: the serialised fields). Integer fields may be
//! kINT32 (TensorRT's ONNX parser) or kINT64, length 1. plugin_namespace / plugin_version are accepted and ignored.
//! Unknown fields and missing required fields (text_len, keep / r) are errors; score_head defaults to -1.
Status parsePruneFields(FieldView const* fields, int32_t nbFields, PruneAttrs& out);
Status parseMergeFields(FieldView const* fields, int32_t nbFields, MergeAttrs& out);

//! PumerCompact has no attributes (plugin_namespace / plugin_version are accepted and ignored).
struct CompactAttrs
{
};
Status parseCompactFields(FieldView const* fields, int32_t nbFields, CompactAttrs& out);

//! Attribute ranges that do not depend on shapes.
Status validatePruneAttrs(PruneAttrs const& a);
Status validateMergeAttrs(MergeAttrs const& a);

//! Fields to serialise (all kINT32, length 1). The views point into `a`, which must outlive them.
std::vector<FieldView> pruneFieldsToSerialize(PruneAttrs const& a);
std::vector<FieldView> mergeFieldsToSerialize(MergeAttrs const& a);

//! Up to 8 dimensions; -1 marks a dimension unknown at build time (wildcard).
struct Shape
{
    int32_t nbDims{0};
    int64_t d[8]{};
};
Shape makeShape(std::initializer_list<int64_t> dims);

//! Shape checks, used at build time (with wildcards) and before every enqueue (concrete).
//! Prune inputs: x [B,Nk,C], metric [B,Nk,D], queries [B,H,text_len,d], keys [B,H,Nk,d], key_mask [B,Nk],
//! text_mask [B,text_len].
Status validatePruneShapes(PruneAttrs const& a, Shape const& x, Shape const& metric, Shape const& queries,
    Shape const& keys, Shape const& keyMask, Shape const& textMask);
//! Merge inputs: x [B,t,C], metric [B,t,D], mask [B,t].
Status validateMergeShapes(MergeAttrs const& a, Shape const& x, Shape const& metric, Shape const& mask);

//! Compact inputs: keep [B,N], x [B,N,C].
Status validateCompactShapes(Shape const& keep, Shape const& x);

//! Output shapes (wildcards propagate): prune -> [B,keep,C], [B,keep,D], [B,keep];
//! merge -> [B,t-r,C], [B,t-r], [B,t].
void pruneOutputShapes(PruneAttrs const& a, Shape const& x, Shape const& metric, Shape out[3]);
void mergeOutputShapes(MergeAttrs const& a, Shape const& x, Shape out[3]);

//! Largest batch the kernels launch (the batch is a grid's y dimension, limited to 65535 by CUDA). Shape checks
//! reject a larger batch, so a profile whose maximum batch exceeds it fails when the engine is built.
constexpr int64_t kMaxBatch = 65535;

//! Largest merge metric row (features) the match kernel holds in shared memory (two rows of float32 in 48 KiB).
constexpr int64_t kMaxMergeMetricDim = 6144;

//! Largest r accepted for t tokens: (t - 1) / 2 (0 for t <= 2).
int64_t mergeMaxR(int64_t tokens) noexcept;

//! Workspace alignment of every scratch array.
constexpr size_t kWorkspaceAlign = 256;
size_t alignUp(size_t bytes, size_t align = kWorkspaceAlign) noexcept;

//! Prune scratch: the text rows' softmax statistics (max, sum) [B, H, text_len, 2] and the scores
//! [B, Nk - image_start], float32.
struct PruneWorkspace
{
    size_t rowStats{0};
    size_t scores{0};
    size_t total{0};
};
PruneWorkspace pruneWorkspaceLayout(int64_t batch, int64_t heads, int64_t textLen, int64_t keys, int64_t imageStart) noexcept;

//! Merge scratch (byte offsets into the workspace). Every array is [B, len] contiguous.
//! na = (t + 1) / 2 a-tokens (even positions), nb = t / 2 b-tokens (odd positions).
struct MergeWorkspace
{
    size_t nodeMax{0};    //!< float [B, na]: best similarity of every a-token
    size_t nodeIdx{0};    //!< int32 [B, na]: its b-token (lowest index on ties)
    size_t order{0};      //!< int32 [B, na]: a-tokens by nodeMax descending (stable)
    size_t rank{0};       //!< int32 [B, na]: inverse of order
    size_t dstByRank{0};  //!< int32 [B, na]: b-token of the k-th merged a-token (k < r)
    size_t unmList{0};    //!< int32 [B, na]: kept a-tokens ascending (first na - r used)
    size_t srcList{0};    //!< int32 [B, na]: merged a-tokens grouped by b-token (CSR values, r used)
    size_t count{0};      //!< int32 [B, nb]: a-tokens merged into every b-token
    size_t offset{0};     //!< int32 [B, nb]: CSR row starts into srcList
    size_t total{0};
};
MergeWorkspace mergeWorkspaceLayout(int64_t batch, int64_t tokens, int64_t metricDim) noexcept;

//! Compact scratch: every row's order (kept positions first, then the dropped ones) int32 [B, N], its kept count
//! int32 [B], and the batch's largest count int32 [1].
struct CompactWorkspace
{
    size_t order{0};
    size_t counts{0};
    size_t nMax{0};
    size_t total{0};
};
CompactWorkspace compactWorkspaceLayout(int64_t batch, int64_t tokens) noexcept;

//! Threshold between the shared-memory bitonic sort and the O(n^2 / threads) counting-rank fallback.
//! A build define may lower it (the CPU emulation tests build with a small value to reach the fallback paths at
//! small sizes); it must stay a power of two whose keys fit in 48 KiB of shared memory.
#ifndef PUMER_MAX_SHARED_SORT_KEYS
#define PUMER_MAX_SHARED_SORT_KEYS 4096
#endif
constexpr int32_t kMaxSharedSortKeys = PUMER_MAX_SHARED_SORT_KEYS;
static_assert(kMaxSharedSortKeys >= 1 && kMaxSharedSortKeys <= 4096 && (kMaxSharedSortKeys & (kMaxSharedSortKeys - 1)) == 0,
    "PUMER_MAX_SHARED_SORT_KEYS must be a power of two <= 4096");
//! Smallest power of two >= n (n >= 1).
int64_t nextPow2(int64_t n) noexcept;

//! SHA-256 of op_spec.json compiled into the libraries (hex, 64 chars), and the library version.
char const* opSpecSha256() noexcept;
char const* libraryVersion() noexcept;

} // namespace pumer
