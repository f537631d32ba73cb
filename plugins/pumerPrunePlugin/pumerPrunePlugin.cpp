/*
 * PumerPrune TensorRT plugin (IPluginV3 / IPluginCreatorV3One).
 *
 * Inputs:  0 x [B,N,C] T, 1 metric [B,N,D] T, 2 attn [B,H,N,N] A, 3 text_mask [B,text_len] float32
 * Outputs: 0 x_kept [B,keep,C] T, 1 metric_kept [B,keep,D] T, 2 keep_idx [B,keep] int64
 * T, A in {float32, float16, bfloat16}, independently; linear format only.
 */
#include "pumerPrunePlugin.h"

#include "pumerKernels.h"
#include "pumerPluginUtils.h"

#include <exception>
#include <sstream>

using namespace nvinfer1;

namespace pumer
{
namespace plugin
{

namespace
{
constexpr int32_t kInputs = 4;
constexpr int32_t kOutputs = 3;
} // namespace

PumerPrunePlugin::PumerPrunePlugin(PruneAttrs const& attrs)
    : mAttrs(attrs)
{
    std::ostringstream d;
    d << "text_len=" << attrs.textLen << ";keep=" << attrs.keep << ";score_head=" << attrs.scoreHead;
    mDescription = d.str();
}

IPluginCapability* PumerPrunePlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

IPluginV3* PumerPrunePlugin::clone() noexcept
{
    try
    {
        return new PumerPrunePlugin(mAttrs);
    }
    catch (std::exception const& e)
    {
        logError(std::string(kPruneName) + ": clone failed: " + e.what());
    }
    return nullptr;
}

char const* PumerPrunePlugin::getPluginName() const noexcept
{
    return kPruneName;
}

char const* PumerPrunePlugin::getPluginVersion() const noexcept
{
    return kPluginVersion;
}

char const* PumerPrunePlugin::getPluginNamespace() const noexcept
{
    return kPluginNamespace;
}

int32_t PumerPrunePlugin::getNbOutputs() const noexcept
{
    return kOutputs;
}

int32_t PumerPrunePlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbInputs != kInputs || nbOutputs != kOutputs)
    {
        return fail(Status::error(std::string(kPruneName) + ": expected 4 inputs and 3 outputs"));
    }
    if (!isSupportedFloat(inputTypes[0]) || inputTypes[1] != inputTypes[0])
    {
        return fail(Status::error(std::string(kPruneName)
            + ": x and metric must share one type among float32/float16/bfloat16 (type constraint T)"));
    }
    if (!isSupportedFloat(inputTypes[2]))
    {
        return fail(Status::error(std::string(kPruneName) + ": attn must be float32, float16 or bfloat16"));
    }
    if (inputTypes[3] != DataType::kFLOAT)
    {
        return fail(Status::error(std::string(kPruneName) + ": text_mask must be float32"));
    }
    outputTypes[0] = inputTypes[0];
    outputTypes[1] = inputTypes[1];
    outputTypes[2] = DataType::kINT64;
    return 0;
}

int32_t PumerPrunePlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& exprBuilder) noexcept
{
    if (nbInputs != kInputs || nbOutputs != kOutputs)
    {
        return fail(Status::error(std::string(kPruneName) + ": expected 4 inputs and 3 outputs"));
    }
    if (inputs[0].nbDims != 3 || inputs[1].nbDims != 3 || inputs[2].nbDims != 4 || inputs[3].nbDims != 2)
    {
        return fail(Status::error(std::string(kPruneName)
            + ": expected x [B,N,C], metric [B,N,D], attn [B,H,N,N], text_mask [B,text_len]"));
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

bool PumerPrunePlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (nbInputs != kInputs || nbOutputs != kOutputs || pos < 0 || pos >= kInputs + kOutputs)
    {
        return false;
    }
    PluginTensorDesc const& d = inOut[pos].desc;
    if (d.format != TensorFormat::kLINEAR)
    {
        return false;
    }
    switch (pos)
    {
    case 0: return isSupportedFloat(d.type);                // x: T
    case 1: return d.type == inOut[0].desc.type;            // metric: T
    case 2: return isSupportedFloat(d.type);                // attn: A
    case 3: return d.type == DataType::kFLOAT;              // text_mask: M
    case 4: return d.type == inOut[0].desc.type;            // x_kept: T
    case 5: return d.type == inOut[0].desc.type;            // metric_kept: T
    case 6: return d.type == DataType::kINT64;              // keep_idx: I
    default: return false;
    }
}

int32_t PumerPrunePlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    if (nbInputs != kInputs || nbOutputs != kOutputs)
    {
        return fail(Status::error(std::string(kPruneName) + ": expected 4 inputs and 3 outputs"));
    }
    Status s = validatePruneShapes(
        mAttrs, toShape(in[0].desc.dims), toShape(in[1].desc.dims), toShape(in[2].desc.dims), toShape(in[3].desc.dims));
    if (s.ok)
    {
        // The largest shapes of the profile must be valid too (N - text_len >= keep is checked on the minimum).
        s = validatePruneShapes(mAttrs, toShape(in[0].min), toShape(in[1].min), toShape(in[2].min), toShape(in[3].min));
    }
    return s.ok ? 0 : fail(s);
}

size_t PumerPrunePlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    if (nbInputs != kInputs || inputs[0].max.nbDims != 3)
    {
        return 0;
    }
    return pruneWorkspaceLayout(inputs[0].max.d[0], inputs[0].max.d[1], mAttrs.textLen).total;
}

char const* PumerPrunePlugin::getTimingCacheID() noexcept
{
    return mDescription.c_str();
}

char const* PumerPrunePlugin::getMetadataString() noexcept
{
    return mDescription.c_str();
}

int32_t PumerPrunePlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    if (nbInputs != kInputs || nbOutputs != kOutputs)
    {
        return fail(Status::error(std::string(kPruneName) + ": expected 4 inputs and 3 outputs"));
    }
    Status const s
        = validatePruneShapes(mAttrs, toShape(in[0].dims), toShape(in[1].dims), toShape(in[2].dims), toShape(in[3].dims));
    return s.ok ? 0 : fail(s);
}

int32_t PumerPrunePlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    PruneParams p;
    if (!toDType(inputDesc[0].type, p.tType) || !toDType(inputDesc[2].type, p.aType))
    {
        return fail(Status::error(std::string(kPruneName) + ": unsupported tensor type at enqueue"));
    }
    Dims const& x = inputDesc[0].dims;
    Dims const& attn = inputDesc[2].dims;
    p.x = inputs[0];
    p.metric = inputs[1];
    p.attn = inputs[2];
    p.textMask = static_cast<float const*>(inputs[3]);
    p.xOut = outputs[0];
    p.metricOut = outputs[1];
    p.keepIdx = static_cast<int64_t*>(outputs[2]);
    p.batch = x.d[0];
    p.tokens = x.d[1];
    p.channels = x.d[2];
    p.metricDim = inputDesc[1].dims.d[2];
    p.heads = attn.d[1];
    p.textLen = mAttrs.textLen;
    p.keep = mAttrs.keep;
    p.scoreHead = mAttrs.scoreHead;
    size_t const wsBytes = pruneWorkspaceLayout(p.batch, p.tokens, p.textLen).total;
    cudaError_t const err = launchPrune(p, workspace, wsBytes, stream);
    if (err != cudaSuccess)
    {
        return fail(Status::error(std::string(kPruneName) + ": kernel launch failed: " + cudaGetErrorString(err)));
    }
    return 0;
}

IPluginV3* PumerPrunePlugin::attachToContext(IPluginResourceContext* /*context*/) noexcept
{
    return clone();
}

PluginFieldCollection const* PumerPrunePlugin::getFieldsToSerialize() noexcept
{
    try
    {
        mSerialViews = pruneFieldsToSerialize(mAttrs);
        mSerialFields = toPluginFields(mSerialViews);
        mSerialCollection.nbFields = static_cast<int32_t>(mSerialFields.size());
        mSerialCollection.fields = mSerialFields.data();
        return &mSerialCollection;
    }
    catch (std::exception const& e)
    {
        logError(std::string(kPruneName) + ": serialisation failed: " + e.what());
    }
    return nullptr;
}

PumerPrunePluginCreator::PumerPrunePluginCreator()
{
    mFields.emplace_back("text_len", nullptr, PluginFieldType::kINT32, 1);
    mFields.emplace_back("keep", nullptr, PluginFieldType::kINT32, 1);
    mFields.emplace_back("score_head", nullptr, PluginFieldType::kINT32, 1);
    mCollection.nbFields = static_cast<int32_t>(mFields.size());
    mCollection.fields = mFields.data();
}

char const* PumerPrunePluginCreator::getPluginName() const noexcept
{
    return kPruneName;
}

char const* PumerPrunePluginCreator::getPluginVersion() const noexcept
{
    return kPluginVersion;
}

char const* PumerPrunePluginCreator::getPluginNamespace() const noexcept
{
    return kPluginNamespace;
}

PluginFieldCollection const* PumerPrunePluginCreator::getFieldNames() noexcept
{
    return &mCollection;
}

IPluginV3* PumerPrunePluginCreator::createPlugin(
    char const* name, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept
{
    try
    {
        std::vector<FieldView> const views = toFieldViews(fc);
        PruneAttrs attrs;
        Status const s = parsePruneFields(views.data(), static_cast<int32_t>(views.size()), attrs);
        if (!s.ok)
        {
            logError(s.message + (name ? std::string(" (layer ") + name + ")" : std::string()));
            return nullptr;
        }
        return new PumerPrunePlugin(attrs);
    }
    catch (std::exception const& e)
    {
        logError(std::string(kPruneName) + ": createPlugin failed: " + e.what());
    }
    return nullptr;
}

} // namespace plugin
} // namespace pumer
