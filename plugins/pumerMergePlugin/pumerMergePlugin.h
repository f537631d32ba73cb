/*
 * PumerMerge TensorRT plugin (IPluginV3): ToMe bipartite merging. See README.md in this folder.
 * The IPluginV3 plumbing shared with PumerPrune lives in common/pumerPluginBase.h.
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

class PumerMergePlugin : public PumerPluginBase<PumerMergePlugin, MergeAttrs>
{
public:
    static constexpr char const* kName = kMergeName;
    static constexpr int32_t kNbInputs = 3;  // x, metric, mask
    static constexpr int32_t kNbOutputs = 3; // x_out, mask_out, slots

    explicit PumerMergePlugin(MergeAttrs const& attrs);

    // Hooks of PumerPluginBase / PumerPluginCreatorBase
    static Status parseAttrs(FieldView const* fields, int32_t nbFields, MergeAttrs& attrs);
    static std::vector<FieldView> serializeAttrs(MergeAttrs const& attrs);
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

class PumerMergePluginCreator : public PumerPluginCreatorBase<PumerMergePlugin, MergeAttrs>
{
public:
    PumerMergePluginCreator();
};

} // namespace plugin
} // namespace pumer
