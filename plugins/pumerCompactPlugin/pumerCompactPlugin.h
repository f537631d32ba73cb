/*
 * PumerCompact TensorRT plugin (IPluginV3): SmartTrim-style stable compaction, whose output length depends on the
 * data (a size tensor). See README.md in this folder. The IPluginV3 plumbing lives in common/pumerPluginBase.h.
 */
#pragma once

#include "NvInferRuntime.h"
#include "pumerHostLogic.h"
#include "pumerPluginBase.h"

#include <vector>

namespace pumer
{
namespace plugin
{

class PumerCompactPlugin : public PumerPluginBase<PumerCompactPlugin, CompactAttrs>
{
public:
    static constexpr char const* kName = kCompactName;
    static constexpr int32_t kNbInputs = 2;  // keep, x
    static constexpr int32_t kNbOutputs = 4; // x_out, alive, index, count (the size tensor)

    explicit PumerCompactPlugin(CompactAttrs const& attrs);

    // Hooks of PumerPluginBase / PumerPluginCreatorBase
    static Status parseAttrs(FieldView const* fields, int32_t nbFields, CompactAttrs& attrs);
    static std::vector<FieldView> serializeAttrs(CompactAttrs const& attrs);
    Status validateShapes(Shape const* inputs) const;
    bool supportsType(int32_t pos, nvinfer1::DataType type, nvinfer1::DynamicPluginTensorDesc const* inOut) const;

    // IPluginV3OneBuild
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs, nvinfer1::DataType const* inputTypes,
        int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
};

class PumerCompactPluginCreator : public PumerPluginCreatorBase<PumerCompactPlugin, CompactAttrs>
{
public:
    PumerCompactPluginCreator();
};

} // namespace plugin
} // namespace pumer
