/*
 * PumerPrune TensorRT plugin (IPluginV3 / IPluginCreatorV3One).
 *
 * Inputs:  0 x [B,Nk,C] T, 1 metric [B,Nk,D] T, 2 queries [B,H,text_len,d] A, 3 keys [B,H,Nk,d] A,
 *          4 key_mask [B,Nk] float32, 5 text_mask [B,text_len] float32
 * Outputs: 0 x_kept [B,keep,C] T, 1 metric_kept [B,keep,D] T, 2 keep_idx [B,keep] int64
 * T, A in {float32, float16, bfloat16}, independently; linear format only.
 */
#include "pumerPrunePlugin.h"

#include "pumerKernels.h"
#include "pumerPluginUtils.h"

#include <sstream>

using namespace nvinfer1;

namespace pumer
{
namespace plugin
{

namespace
{
//! Timing-cache ID and metadata string.
std::string describe(PruneAttrs const& attrs)
{
    std::ostringstream d;
    d << "text_len=" << attrs.textLen << ";keep=" << attrs.keep << ";score_head=" << attrs.scoreHead
      << ";image_start=" << attrs.imageStart << ";masking=" << attrs.masking;
    return d.str();
}
} // namespace

PumerPrunePlugin::PumerPrunePlugin(PruneAttrs const& attrs)
    : PumerPluginBase(attrs, describe(attrs))
{
}

Status PumerPrunePlugin::parseAttrs(FieldView const* fields, int32_t nbFields, PruneAttrs& attrs)
{
    return parsePruneFields(fields, nbFields, attrs);
}

std::vector<FieldView> PumerPrunePlugin::serializeAttrs(PruneAttrs const& attrs)
{
    return pruneFieldsToSerialize(attrs);
}

//! Used by configurePlugin (current and minimum dimensions of the profile) and onShapeChange.
Status PumerPrunePlugin::validateShapes(Shape const* in) const
{
    return validatePruneShapes(mAttrs, in[0], in[1], in[2], in[3], in[4], in[5]);
}

int32_t PumerPrunePlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs)
    {
        return ioCountError();
    }
    if (!isSupportedFloat(inputTypes[0]) || inputTypes[1] != inputTypes[0])
    {
        return reportError("x and metric must share one type among float32/float16/bfloat16 (type constraint T)");
    }
    if (!isSupportedFloat(inputTypes[2]) || inputTypes[3] != inputTypes[2])
    {
        return reportError("queries and keys must share one type among float32/float16/bfloat16 (type constraint A)");
    }
    if (inputTypes[4] != DataType::kFLOAT || inputTypes[5] != DataType::kFLOAT)
    {
        return reportError("key_mask and text_mask must be float32");
    }
    outputTypes[0] = inputTypes[0];
    outputTypes[1] = inputTypes[1];
    outputTypes[2] = DataType::kINT64;
    return 0;
}

int32_t PumerPrunePlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& exprBuilder) noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs)
    {
        return ioCountError();
    }
    if (inputs[0].nbDims != 3 || inputs[1].nbDims != 3 || inputs[2].nbDims != 4 || inputs[3].nbDims != 4
        || inputs[4].nbDims != 2 || inputs[5].nbDims != 2)
    {
        return reportError("expected x [B,Nk,C], metric [B,Nk,D], queries [B,H,text_len,d], keys [B,H,Nk,d], "
                           "key_mask [B,Nk], text_mask [B,text_len]");
    }
    IDimensionExpr const* keep = exprBuilder.constant(mAttrs.keep);
    outputs[0].nbDims = 3;
    outputs[0].d[0] = inputs[0].d[0];
    outputs[0].d[1] = keep;
    outputs[0].d[2] = inputs[0].d[2];
    outputs[1].nbDims = 3;
    outputs[1].d[0] = inputs[0].d[0];
    outputs[1].d[1] = keep;
    outputs[1].d[2] = inputs[1].d[2];
    outputs[2].nbDims = 2;
    outputs[2].d[0] = inputs[0].d[0];
    outputs[2].d[1] = keep;
    return 0;
}

//! Type rule of input/output position `pos` (supportsFormatCombination: linear format is checked by the base).
bool PumerPrunePlugin::supportsType(int32_t pos, DataType type, DynamicPluginTensorDesc const* inOut) const
{
    switch (pos)
    {
    case 0: return isSupportedFloat(type);     // x: T
    case 1: return type == inOut[0].desc.type; // metric: T
    case 2: return isSupportedFloat(type);     // queries: A
    case 3: return type == inOut[2].desc.type; // keys: A
    case 4: return type == DataType::kFLOAT;   // key_mask: M
    case 5: return type == DataType::kFLOAT;   // text_mask: M
    case 6: return type == inOut[0].desc.type; // x_kept: T
    case 7: return type == inOut[0].desc.type; // metric_kept: T
    case 8: return type == DataType::kINT64;   // keep_idx: I
    default: return false;
    }
}

size_t PumerPrunePlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    if (nbInputs != kNbInputs || inputs[0].max.nbDims != 3 || inputs[3].max.nbDims != 4)
    {
        return 0;
    }
    return pruneWorkspaceLayout(inputs[0].max.d[0], inputs[3].max.d[1], mAttrs.textLen, inputs[0].max.d[1],
        mAttrs.imageStart).total;
}

int32_t PumerPrunePlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    PruneParams p;
    if (!toDType(inputDesc[0].type, p.tType) || !toDType(inputDesc[2].type, p.aType))
    {
        return reportError("unsupported tensor type at enqueue");
    }
    Dims const& x = inputDesc[0].dims;
    Dims const& keys = inputDesc[3].dims;
    p.x = inputs[0];
    p.metric = inputs[1];
    p.queries = inputs[2];
    p.keys = inputs[3];
    p.keyMask = static_cast<float const*>(inputs[4]);
    p.textMask = static_cast<float const*>(inputs[5]);
    p.xOut = outputs[0];
    p.metricOut = outputs[1];
    p.keepIdx = static_cast<int64_t*>(outputs[2]);
    p.batch = x.d[0];
    p.tokens = x.d[1];
    p.channels = x.d[2];
    p.metricDim = inputDesc[1].dims.d[2];
    p.heads = keys.d[1];
    p.headDim = keys.d[3];
    p.textLen = mAttrs.textLen;
    p.keep = mAttrs.keep;
    p.scoreHead = mAttrs.scoreHead;
    p.imageStart = mAttrs.imageStart;
    p.masking = mAttrs.masking;
    size_t const wsBytes = pruneWorkspaceLayout(p.batch, p.heads, p.textLen, p.tokens, p.imageStart).total;
    cudaError_t const err = launchPrune(p, workspace, wsBytes, stream);
    if (err != cudaSuccess)
    {
        return reportError(std::string("kernel launch failed: ") + cudaGetErrorString(err));
    }
    return 0;
}

PumerPrunePluginCreator::PumerPrunePluginCreator()
    : PumerPluginCreatorBase({
        {"text_len", nullptr, PluginFieldType::kINT32, 1},
        {"keep", nullptr, PluginFieldType::kINT32, 1},
        {"score_head", nullptr, PluginFieldType::kINT32, 1},
        {"image_start", nullptr, PluginFieldType::kINT32, 1},
        {"masking", nullptr, PluginFieldType::kINT32, 1},
    })
{
}

} // namespace plugin
} // namespace pumer
