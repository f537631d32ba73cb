/*
 * PumerPrune TensorRT plugin (IPluginV3): text-informed token pruning. See README.md in this folder.
 * The IPluginV3 plumbing shared with PumerMerge lives in common/pumerPluginBase.h.
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

class PumerPrunePlugin : public PumerPluginBase<PumerPrunePlugin, PruneAttrs>
{
public:
    static constexpr char const* kName = kPruneName;
    static constexpr int32_t kNbInputs = 6;  // x, metric, queries, keys, key_mask, text_mask
    static constexpr int32_t kNbOutputs = 3; // x_kept, metric_kept, keep_idx

    explicit PumerPrunePlugin(PruneAttrs const& attrs);

    // Hooks of PumerPluginBase / PumerPluginCreatorBase
    static Status parseAttrs(FieldView const* fields, int32_t nbFields, PruneAttrs& attrs);
    static std::vector<FieldView> serializeAttrs(PruneAttrs const& attrs);
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

class PumerPrunePluginCreator : public PumerPluginCreatorBase<PumerPrunePlugin, PruneAttrs>
{
public:
    PumerPrunePluginCreator();
};

} // namespace plugin
} // namespace pumer
