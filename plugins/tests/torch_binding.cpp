/*
 * PyTorch C++/CUDA extension exposing the PuMer kernel launchers, for the GPU test harness
 * (tests/test_kernels_cuda.py builds it with torch.utils.cpp_extension.load from the same kernel sources
 * the plugins use). Outputs and workspace are allocated by PyTorch on the inputs' device; launches go to the
 * current stream.
 */
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include "pumerKernels.h"

#include <tuple>

namespace
{

pumer::DType toDType(at::ScalarType t)
{
    switch (t)
    {
    case at::kFloat: return pumer::DType::kFLOAT;
    case at::kHalf: return pumer::DType::kHALF;
    case at::kBFloat16: return pumer::DType::kBF16;
    default: TORCH_CHECK(false, "unsupported dtype ", t, " (float32, float16, bfloat16 only)");
    }
    return pumer::DType::kFLOAT;
}

void checkInput(at::Tensor const& t, char const* name, int64_t rank)
{
    TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor");
    TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
    TORCH_CHECK(t.dim() == rank, name, " must have rank ", rank);
}

at::Tensor workspace(size_t bytes, at::Tensor const& like)
{
    return at::empty({static_cast<int64_t>(bytes > 0 ? bytes : 1)}, like.options().dtype(at::kByte));
}

} // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> prune(at::Tensor x, at::Tensor metric, at::Tensor queries,
    at::Tensor keys, at::Tensor keyMask, at::Tensor textMask, int64_t textLen, int64_t keep, int64_t scoreHead,
    int64_t imageStart, int64_t masking)
{
    checkInput(x, "x", 3);
    checkInput(metric, "metric", 3);
    checkInput(queries, "queries", 4);
    checkInput(keys, "keys", 4);
    checkInput(keyMask, "key_mask", 2);
    checkInput(textMask, "text_mask", 2);
    TORCH_CHECK(metric.scalar_type() == x.scalar_type(), "x and metric must share a dtype");
    TORCH_CHECK(keys.scalar_type() == queries.scalar_type(), "queries and keys must share a dtype");
    TORCH_CHECK(keyMask.scalar_type() == at::kFloat && textMask.scalar_type() == at::kFloat,
        "key_mask and text_mask must be float32");
    pumer::PruneAttrs attrs{static_cast<int32_t>(textLen), static_cast<int32_t>(keep), static_cast<int32_t>(scoreHead),
        static_cast<int32_t>(imageStart), static_cast<int32_t>(masking)};
    auto shape = [](at::Tensor const& t) {
        pumer::Shape s;
        s.nbDims = static_cast<int32_t>(t.dim());
        for (int64_t i = 0; i < t.dim(); ++i) s.d[i] = t.size(i);
        return s;
    };
    pumer::Status st = pumer::validatePruneAttrs(attrs);
    if (st.ok)
    {
        st = pumer::validatePruneShapes(attrs, shape(x), shape(metric), shape(queries), shape(keys), shape(keyMask),
            shape(textMask));
    }
    TORCH_CHECK(st.ok, st.message);

    int64_t const b = x.size(0);
    auto xOut = at::empty({b, keep, x.size(2)}, x.options());
    auto mOut = at::empty({b, keep, metric.size(2)}, metric.options());
    auto idx = at::empty({b, keep}, x.options().dtype(at::kLong));
    pumer::PruneParams p;
    p.tType = toDType(x.scalar_type());
    p.aType = toDType(queries.scalar_type());
    p.x = x.data_ptr();
    p.metric = metric.data_ptr();
    p.queries = queries.data_ptr();
    p.keys = keys.data_ptr();
    p.keyMask = keyMask.data_ptr<float>();
    p.textMask = textMask.data_ptr<float>();
    p.xOut = xOut.data_ptr();
    p.metricOut = mOut.data_ptr();
    p.keepIdx = idx.data_ptr<int64_t>();
    p.batch = b;
    p.tokens = x.size(1);
    p.channels = x.size(2);
    p.metricDim = metric.size(2);
    p.heads = keys.size(1);
    p.headDim = keys.size(3);
    p.textLen = attrs.textLen;
    p.keep = attrs.keep;
    p.scoreHead = attrs.scoreHead;
    p.imageStart = attrs.imageStart;
    p.masking = attrs.masking;
    size_t const bytes = pumer::pruneWorkspaceLayout(p.batch, p.heads, p.textLen, p.tokens, p.imageStart).total;
    auto ws = workspace(bytes, x);
    cudaError_t err = pumer::launchPrune(p, ws.data_ptr(), bytes, c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(err == cudaSuccess, "launchPrune failed: ", cudaGetErrorString(err));
    return {xOut, mOut, idx};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> merge(at::Tensor x, at::Tensor metric, at::Tensor mask, int64_t r)
{
    checkInput(x, "x", 3);
    checkInput(metric, "metric", 3);
    checkInput(mask, "mask", 2);
    TORCH_CHECK(metric.scalar_type() == x.scalar_type(), "x and metric must share a dtype");
    TORCH_CHECK(mask.scalar_type() == at::kFloat, "mask must be float32");
    pumer::MergeAttrs attrs{static_cast<int32_t>(r)};
    pumer::Shape sx, sm, sk;
    sx.nbDims = 3;
    sm.nbDims = 3;
    sk.nbDims = 2;
    for (int i = 0; i < 3; ++i)
    {
        sx.d[i] = x.size(i);
        sm.d[i] = metric.size(i);
    }
    sk.d[0] = mask.size(0);
    sk.d[1] = mask.size(1);
    pumer::Status st = pumer::validateMergeAttrs(attrs);
    if (st.ok) st = pumer::validateMergeShapes(attrs, sx, sm, sk);
    TORCH_CHECK(st.ok, st.message);

    int64_t const b = x.size(0);
    int64_t const t = x.size(1);
    auto xOut = at::empty({b, t - r, x.size(2)}, x.options());
    auto mOut = at::empty({b, t - r}, mask.options());
    auto slots = at::empty({b, t}, x.options().dtype(at::kLong));
    pumer::MergeParams p;
    p.tType = toDType(x.scalar_type());
    p.x = x.data_ptr();
    p.metric = metric.data_ptr();
    p.mask = mask.data_ptr<float>();
    p.xOut = xOut.data_ptr();
    p.maskOut = mOut.data_ptr<float>();
    p.slots = slots.data_ptr<int64_t>();
    p.batch = b;
    p.tokens = t;
    p.channels = x.size(2);
    p.metricDim = metric.size(2);
    p.r = attrs.r;
    size_t const bytes = r == 0 ? 0 : pumer::mergeWorkspaceLayout(b, t, p.metricDim).total;
    auto ws = workspace(bytes, x);
    cudaError_t err = pumer::launchMerge(p, ws.data_ptr(), bytes, c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(err == cudaSuccess, "launchMerge failed: ", cudaGetErrorString(err));
    return {xOut, mOut, slots};
}

//! PumerCompact: outputs sized for the upper bound N (as TensorRT sizes them), returned cut to the count the kernels
//! wrote (read back after the launch: a test harness may synchronise, the kernels do not).
std::tuple<at::Tensor, at::Tensor, at::Tensor, int64_t> compact(at::Tensor keep, at::Tensor x)
{
    checkInput(x, "x", 3);
    TORCH_CHECK(keep.is_cuda() && keep.is_contiguous() && keep.dim() == 2 && keep.scalar_type() == at::kBool,
        "keep must be a contiguous CUDA bool [B, N] tensor");
    pumer::Shape sk, sx;
    sk.nbDims = 2;
    sx.nbDims = 3;
    for (int i = 0; i < 2; ++i) sk.d[i] = keep.size(i);
    for (int i = 0; i < 3; ++i) sx.d[i] = x.size(i);
    pumer::Status const st = pumer::validateCompactShapes(sk, sx);
    TORCH_CHECK(st.ok, st.message);
    int64_t const b = x.size(0);
    int64_t const n = x.size(1);
    auto xOut = at::empty({b * n * x.size(2)}, x.options());
    auto alive = at::empty({b * n}, x.options().dtype(at::kInt));
    auto index = at::empty({b * n}, x.options().dtype(at::kLong));
    auto count = at::empty({1}, x.options().dtype(at::kInt));
    pumer::CompactParams p;
    p.tType = toDType(x.scalar_type());
    p.keep = reinterpret_cast<uint8_t const*>(keep.data_ptr<bool>());
    p.x = x.data_ptr();
    p.xOut = xOut.data_ptr();
    p.alive = alive.data_ptr<int32_t>();
    p.index = index.data_ptr<int64_t>();
    p.count = count.data_ptr<int32_t>();
    p.batch = b;
    p.tokens = n;
    p.channels = x.size(2);
    size_t const bytes = pumer::compactWorkspaceLayout(b, n).total;
    auto ws = workspace(bytes, x);
    cudaError_t err = pumer::launchCompact(p, ws.data_ptr(), bytes, c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(err == cudaSuccess, "launchCompact failed: ", cudaGetErrorString(err));
    int64_t const k = count.item<int32_t>();
    return {xOut.narrow(0, 0, b * k * x.size(2)).view({b, k, x.size(2)}), alive.narrow(0, 0, b * k).view({b, k}),
        index.narrow(0, 0, b * k).view({b, k}), k};
}

std::string specHash()
{
    return pumer::opSpecSha256();
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("prune", &prune, "PumerPrune kernels");
    m.def("merge", &merge, "PumerMerge kernels");
    m.def("compact", &compact, "PumerCompact kernels");
    m.def("spec_hash", &specHash, "op_spec.json SHA-256 compiled in");
}
