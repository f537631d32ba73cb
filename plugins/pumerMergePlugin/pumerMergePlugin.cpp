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

#include <exception>
#include <sstream>

using namespace nvinfer1;

namespace pumer
{
namespace plugin
{

namespace
{
constexpr int32_t kInputs = 3;
constexpr int32_t kOutputs = 3;
} // namespace

PumerMergePlugin::PumerMergePlugin(MergeAttrs const& attrs)
    : mAttrs(attrs)
{
    mDescription = "r=" + std::to_string(attrs.r);
}

IPluginCapability* PumerMergePlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

IPluginV3* PumerMergePlugin::clone() noexcept
{
    try
    {
        return new PumerMergePlugin(mAttrs);
    }
    catch (std::exception const& e)
    {
        logError(std::string(kMergeName) + ": clone failed: " + e.what());
    }
    return nullptr;
}

char const* PumerMergePlugin::getPluginName() const noexcept
{
    return kMergeName;
}

char const* PumerMergePlugin::getPluginVersion() const noexcept
{
    return kPluginVersion;
}

char const* PumerMergePlugin::getPluginNamespace() const noexcept
{
    return kPluginNamespace;
}

int32_t PumerMergePlugin::getNbOutputs() const noexcept
{
    return kOutputs;
}

int32_t PumerMergePlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbInputs != kInputs || nbOutputs != kOutputs)
    {
        return fail(Status::error(std::string(kMergeName) + ": expected 3 inputs and 3 outputs"));
    }
    if (!isSupportedFloat(inputTypes[0]) || inputTypes[1] != inputTypes[0])
    {
        return fail(Status::error(std::string(kMergeName)
            + ": x and metric must share one type among float32/float16/bfloat16 (type constraint T)"));
    }
    if (inputTypes[2] != DataType::kFLOAT)
    {
        return fail(Status::error(std::string(kMergeName) + ": mask must be float32"));
    }
    outputTypes[0] = inputTypes[0];
    outputTypes[1] = DataType::kFLOAT;
    outputTypes[2] = DataType::kINT64;
    return 0;
}

int32_t PumerMergePlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& exprBuilder) noexcept
{
    if (nbInputs != kInputs || nbOutputs != kOutputs)
    {
        return fail(Status::error(std::string(kMergeName) + ": expected 3 inputs and 3 outputs"));
    }
    if (inputs[0].nbDims != 3 || inputs[1].nbDims != 3 || inputs[2].nbDims != 2)
    {
        return fail(Status::error(std::string(kMergeName) + ": expected x [B,t,C], metric [B,t,D], mask [B,t]"));
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

bool PumerMergePlugin::supportsFormatCombination(
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
    case 0: return isSupportedFloat(d.type);     // x: T
    case 1: return d.type == inOut[0].desc.type; // metric: T
    case 2: return d.type == DataType::kFLOAT;   // mask: M
    case 3: return d.type == inOut[0].desc.type; // x_out: T
    case 4: return d.type == DataType::kFLOAT;   // mask_out: M
    case 5: return d.type == DataType::kINT64;   // slots: I
    default: return false;
    }
}

int32_t PumerMergePlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    if (nbInputs != kInputs || nbOutputs != kOutputs)
    {
        return fail(Status::error(std::string(kMergeName) + ": expected 3 inputs and 3 outputs"));
    }
    Status s = validateMergeShapes(mAttrs, toShape(in[0].desc.dims), toShape(in[1].desc.dims), toShape(in[2].desc.dims));
    if (s.ok)
    {
        // r <= (t - 1) // 2 must hold for the smallest t of the profile.
        s = validateMergeShapes(mAttrs, toShape(in[0].min), toShape(in[1].min), toShape(in[2].min));
    }
    return s.ok ? 0 : fail(s);
}

size_t PumerMergePlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    if (nbInputs != kInputs || inputs[0].max.nbDims != 3 || inputs[1].max.nbDims != 3 || mAttrs.r == 0)
    {
        return 0;
    }
    return mergeWorkspaceLayout(inputs[0].max.d[0], inputs[0].max.d[1], inputs[1].max.d[2]).total;
}

char const* PumerMergePlugin::getTimingCacheID() noexcept
{
    return mDescription.c_str();
}

char const* PumerMergePlugin::getMetadataString() noexcept
{
    return mDescription.c_str();
}

int32_t PumerMergePlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    if (nbInputs != kInputs || nbOutputs != kOutputs)
    {
        return fail(Status::error(std::string(kMergeName) + ": expected 3 inputs and 3 outputs"));
    }
    Status const s = validateMergeShapes(mAttrs, toShape(in[0].dims), toShape(in[1].dims), toShape(in[2].dims));
    return s.ok ? 0 : fail(s);
}

int32_t PumerMergePlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    MergeParams p;
    if (!toDType(inputDesc[0].type, p.tType))
    {
        return fail(Status::error(std::string(kMergeName) + ": unsupported tensor type at enqueue"));
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
        return fail(Status::error(std::string(kMergeName) + ": kernel launch failed: " + cudaGetErrorString(err)));
    }
    return 0;
}

IPluginV3* PumerMergePlugin::attachToContext(IPluginResourceContext* /*context*/) noexcept
{
    return clone();
}

PluginFieldCollection const* PumerMergePlugin::getFieldsToSerialize() noexcept
{
    try
    {
        mSerialViews = mergeFieldsToSerialize(mAttrs);
        mSerialFields = toPluginFields(mSerialViews);
        mSerialCollection.nbFields = static_cast<int32_t>(mSerialFields.size());
        mSerialCollection.fields = mSerialFields.data();
        return &mSerialCollection;
    }
    catch (std::exception const& e)
    {
        logError(std::string(kMergeName) + ": serialisation failed: " + e.what());
    }
    return nullptr;
}

PumerMergePluginCreator::PumerMergePluginCreator()
{
    mFields.emplace_back("r", nullptr, PluginFieldType::kINT32, 1);
    mCollection.nbFields = static_cast<int32_t>(mFields.size());
    mCollection.fields = mFields.data();
}

char const* PumerMergePluginCreator::getPluginName() const noexcept
{
    return kMergeName;
}

char const* PumerMergePluginCreator::getPluginVersion() const noexcept
{
    return kPluginVersion;
}

char const* PumerMergePluginCreator::getPluginNamespace() const noexcept
{
    return kPluginNamespace;
}

PluginFieldCollection const* PumerMergePluginCreator::getFieldNames() noexcept
{
    return &mCollection;
}

IPluginV3* PumerMergePluginCreator::createPlugin(
    char const* name, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept
{
    try
    {
        std::vector<FieldView> const views = toFieldViews(fc);
        MergeAttrs attrs;
        Status const s = parseMergeFields(views.data(), static_cast<int32_t>(views.size()), attrs);
        if (!s.ok)
        {
            logError(s.message + (name ? std::string(" (layer ") + name + ")" : std::string()));
            return nullptr;
        }
        return new PumerMergePlugin(attrs);
    }
    catch (std::exception const& e)
    {
        logError(std::string(kMergeName) + ": createPlugin failed: " + e.what());
    }
    return nullptr;
}

} // namespace plugin
} // namespace pumer
