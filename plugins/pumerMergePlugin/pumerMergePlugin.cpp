/*
 * PumerMerge TensorRT plugin (IPluginV3 / IPluginCreatorV3One).
 *
 * Inputs:  0 x [B,t,C] T, 1 metric [B,t,D] T, 2 mask [B,t] float32
 * Outputs: 0 x_out [B,t-r,C] T, 1 mask_out [B,t-r] float32, 2 slots [B,t] int64
 * T in {float32, float16, bfloat16}; linear format only.
 */
#include "pumerMergePlugin.h"

#include "pumerKernels.h"
#include "pumerPluginUtils.h"

using namespace nvinfer1;

namespace pumer
{
namespace plugin
{

PumerMergePlugin::PumerMergePlugin(MergeAttrs const& attrs)
    : PumerPluginBase(attrs, "r=" + std::to_string(attrs.r))
{
}

Status PumerMergePlugin::parseAttrs(FieldView const* fields, int32_t nbFields, MergeAttrs& attrs)
{
    return parseMergeFields(fields, nbFields, attrs);
}

std::vector<FieldView> PumerMergePlugin::serializeAttrs(MergeAttrs const& attrs)
{
    return mergeFieldsToSerialize(attrs);
}

//! Used by configurePlugin (current and minimum dimensions of the profile) and onShapeChange.
Status PumerMergePlugin::validateShapes(Shape const* in) const
{
    return validateMergeShapes(mAttrs, in[0], in[1], in[2]);
}

int32_t PumerMergePlugin::getOutputDataTypes(
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
    if (inputTypes[2] != DataType::kFLOAT)
    {
        return reportError("mask must be float32");
    }
    outputTypes[0] = inputTypes[0];
    outputTypes[1] = DataType::kFLOAT;
    outputTypes[2] = DataType::kINT64;
    return 0;
}

int32_t PumerMergePlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& exprBuilder) noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs)
    {
        return ioCountError();
    }
    if (inputs[0].nbDims != 3 || inputs[1].nbDims != 3 || inputs[2].nbDims != 2)
    {
        return reportError("expected x [B,t,C], metric [B,t,D], mask [B,t]");
    }
    IDimensionExpr const* tokens = inputs[0].d[1];
    IDimensionExpr const* kept
        = exprBuilder.operation(DimensionOperation::kSUB, *tokens, *exprBuilder.constant(mAttrs.r));
    outputs[0].nbDims = 3;
    outputs[0].d[0] = inputs[0].d[0];
    outputs[0].d[1] = kept;
    outputs[0].d[2] = inputs[0].d[2];
    outputs[1].nbDims = 2;
    outputs[1].d[0] = inputs[0].d[0];
    outputs[1].d[1] = kept;
    outputs[2].nbDims = 2;
    outputs[2].d[0] = inputs[0].d[0];
    outputs[2].d[1] = tokens;
    return 0;
}

//! Type rule of input/output position `pos` (supportsFormatCombination: linear format is checked by the base).
bool PumerMergePlugin::supportsType(int32_t pos, DataType type, DynamicPluginTensorDesc const* inOut) const
{
    switch (pos)
    {
    case 0: return isSupportedFloat(type);     // x: T
    case 1: return type == inOut[0].desc.type; // metric: T
    case 2: return type == DataType::kFLOAT;   // mask: M
    case 3: return type == inOut[0].desc.type; // x_out: T
    case 4: return type == DataType::kFLOAT;   // mask_out: M
    case 5: return type == DataType::kINT64;   // slots: I
    default: return false;
    }
}

size_t PumerMergePlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    if (nbInputs != kNbInputs || inputs[0].max.nbDims != 3 || inputs[1].max.nbDims != 3 || mAttrs.r == 0)
    {
        return 0;
    }
    return mergeWorkspaceLayout(inputs[0].max.d[0], inputs[0].max.d[1], inputs[1].max.d[2]).total;
}

int32_t PumerMergePlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    MergeParams p;
    if (!toDType(inputDesc[0].type, p.tType))
    {
        return reportError("unsupported tensor type at enqueue");
    }
    Dims const& x = inputDesc[0].dims;
    p.x = inputs[0];
    p.metric = inputs[1];
    p.mask = static_cast<float const*>(inputs[2]);
    p.xOut = outputs[0];
    p.maskOut = static_cast<float*>(outputs[1]);
    p.slots = static_cast<int64_t*>(outputs[2]);
    p.batch = x.d[0];
    p.tokens = x.d[1];
    p.channels = x.d[2];
    p.metricDim = inputDesc[1].dims.d[2];
    p.r = mAttrs.r;
    size_t const wsBytes = p.r == 0 ? 0 : mergeWorkspaceLayout(p.batch, p.tokens, p.metricDim).total;
    cudaError_t const err = launchMerge(p, workspace, wsBytes, stream);
    if (err != cudaSuccess)
    {
        return reportError(std::string("kernel launch failed: ") + cudaGetErrorString(err));
    }
    return 0;
}

PumerMergePluginCreator::PumerMergePluginCreator()
    : PumerPluginCreatorBase({
        {"r", nullptr, PluginFieldType::kINT32, 1},
    })
{
}

} // namespace plugin
} // namespace pumer
