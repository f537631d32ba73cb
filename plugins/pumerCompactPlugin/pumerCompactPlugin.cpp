/*
 * PumerCompact TensorRT plugin (IPluginV3 / IPluginCreatorV3One).
 *
 * Inputs:  0 keep [B,N] bool, 1 x [B,N,C] T
 * Outputs: 0 x_out [B,n,C] T, 1 alive [B,n] int32 (0/1), 2 index [B,n] int64, 3 count: n, a 0-D int32 size tensor
 * n = the batch's largest kept count, known on the device only: declared with IExprBuilder::declareSizeTensor
 * (auto-tuning value ceil(N / 2), upper bound N), so TensorRT sizes the outputs for N and the kernels lay them out
 * for this input's n. The ONNX node's alive / count are bool / int64: the TensorRT preparation of an export
 * (pumer_export.tensorrt.prepare) casts around the node, since a plugin output can be neither bool nor an int64 size
 * tensor. T in {float32, float16, bfloat16}; linear format only.
 */
#include "pumerCompactPlugin.h"

#include "pumerKernels.h"
#include "pumerPluginUtils.h"

using namespace nvinfer1;

namespace pumer
{
namespace plugin
{

PumerCompactPlugin::PumerCompactPlugin(CompactAttrs const& attrs)
    : PumerPluginBase(attrs, "compact")
{
}

Status PumerCompactPlugin::parseAttrs(FieldView const* fields, int32_t nbFields, CompactAttrs& attrs)
{
    return parseCompactFields(fields, nbFields, attrs);
}

std::vector<FieldView> PumerCompactPlugin::serializeAttrs(CompactAttrs const& /*attrs*/)
{
    return {};
}

Status PumerCompactPlugin::validateShapes(Shape const* in) const
{
    return validateCompactShapes(in[0], in[1]);
}

int32_t PumerCompactPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs)
    {
        return ioCountError();
    }
    if (inputTypes[0] != DataType::kBOOL)
    {
        return reportError("keep must be bool");
    }
    if (!isSupportedFloat(inputTypes[1]))
    {
        return reportError("x must be float32, float16 or bfloat16 (type constraint T)");
    }
    outputTypes[0] = inputTypes[1];
    outputTypes[1] = DataType::kINT32;
    outputTypes[2] = DataType::kINT64;
    outputTypes[3] = DataType::kINT32; // a size tensor must be kINT32
    return 0;
}

int32_t PumerCompactPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
    DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs,
    IExprBuilder& exprBuilder) noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs)
    {
        return ioCountError();
    }
    if (inputs[0].nbDims != 2 || inputs[1].nbDims != 3)
    {
        return reportError("expected keep [B,N] and x [B,N,C]");
    }
    IDimensionExpr const* tokens = inputs[1].d[1];
    IDimensionExpr const* half = exprBuilder.operation(DimensionOperation::kCEIL_DIV, *tokens, *exprBuilder.constant(2));
    IDimensionExpr const* count = half != nullptr ? exprBuilder.declareSizeTensor(3, *half, *tokens) : nullptr;
    if (count == nullptr)
    {
        return reportError("could not declare the count size tensor");
    }
    outputs[0].nbDims = 3;
    outputs[0].d[0] = inputs[1].d[0];
    outputs[0].d[1] = count;
    outputs[0].d[2] = inputs[1].d[2];
    for (int32_t i = 1; i <= 2; ++i)
    {
        outputs[i].nbDims = 2;
        outputs[i].d[0] = inputs[1].d[0];
        outputs[i].d[1] = count;
    }
    outputs[3].nbDims = 0; // a size tensor is 0-D
    return 0;
}

//! Type rule of input/output position `pos` (supportsFormatCombination: linear format is checked by the base).
bool PumerCompactPlugin::supportsType(int32_t pos, DataType type, DynamicPluginTensorDesc const* inOut) const
{
    switch (pos)
    {
    case 0: return type == DataType::kBOOL;    // keep
    case 1: return isSupportedFloat(type);     // x: T
    case 2: return type == inOut[1].desc.type; // x_out: T
    case 3: return type == DataType::kINT32;   // alive
    case 4: return type == DataType::kINT64;   // index
    case 5: return type == DataType::kINT32;   // count (size tensor)
    default: return false;
    }
}

size_t PumerCompactPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    if (nbInputs != kNbInputs || inputs[1].max.nbDims != 3)
    {
        return 0;
    }
    return compactWorkspaceLayout(inputs[1].max.d[0], inputs[1].max.d[1]).total;
}

int32_t PumerCompactPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    CompactParams p;
    if (!toDType(inputDesc[1].type, p.tType))
    {
        return reportError("unsupported tensor type at enqueue");
    }
    Dims const& x = inputDesc[1].dims;
    p.keep = static_cast<uint8_t const*>(inputs[0]);
    p.x = inputs[1];
    p.xOut = outputs[0];
    p.alive = static_cast<int32_t*>(outputs[1]);
    p.index = static_cast<int64_t*>(outputs[2]);
    p.count = static_cast<int32_t*>(outputs[3]);
    p.batch = x.d[0];
    p.tokens = x.d[1];
    p.channels = x.d[2];
    cudaError_t const err = launchCompact(p, workspace, compactWorkspaceLayout(p.batch, p.tokens).total, stream);
    if (err != cudaSuccess)
    {
        return reportError(std::string("kernel launch failed: ") + cudaGetErrorString(err));
    }
    return 0;
}

PumerCompactPluginCreator::PumerCompactPluginCreator()
    : PumerPluginCreatorBase({})
{
}

} // namespace plugin
} // namespace pumer
