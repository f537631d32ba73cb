/*
 * CRTP bases of the PuMer TensorRT plugins: the IPluginV3 / IPluginCreatorV3One plumbing the plugins share, so
 * that every plugin file holds only what is specific to it (type and shape rules, workspace, enqueue).
 *
 * PumerPluginBase<Derived, Attrs> implements
 *   IPluginV3            getCapabilityInterface, clone (new Derived(attrs))
 *   IPluginV3OneCore     getPluginName / getPluginVersion / getPluginNamespace
 *   IPluginV3OneBuild    getNbOutputs, supportsFormatCombination (linear only; types from the plugin),
 *                        configurePlugin, getTimingCacheID, getMetadataString
 *   IPluginV3OneRuntime  onShapeChange, attachToContext (a clone), getFieldsToSerialize
 * and leaves getOutputDataTypes, getOutputShapes, getWorkspaceSize and enqueue to the plugin.
 * PumerPluginCreatorBase<Plugin, Attrs> implements the whole IPluginCreatorV3One given the field list.
 *
 * A plugin provides (public):
 *   static constexpr char const* kName;                  plugin name (the ONNX op type)
 *   static constexpr int32_t kNbInputs, kNbOutputs;
 *   static Status parseAttrs(FieldView const*, int32_t, Attrs&);      createPlugin: fields -> attributes
 *   static std::vector<FieldView> serializeAttrs(Attrs const&);       getFieldsToSerialize: attributes -> fields
 *   Status validateShapes(Shape const* inputs) const;                 kNbInputs input shapes (-1: wildcard)
 *   bool supportsType(int32_t pos, DataType, DynamicPluginTensorDesc const* inOut) const;
 *                                                                     type rule of in/out position pos
 *   explicit Derived(Attrs const&)                                    passing describe(attrs) to the base
 */
#pragma once

#include "NvInferRuntime.h"
#include "pumerHostLogic.h"
#include "pumerPluginUtils.h"

#include <exception>
#include <string>
#include <utility>
#include <vector>

namespace pumer
{
namespace plugin
{

template <typename Derived, typename Attrs>
class PumerPluginBase : public nvinfer1::IPluginV3,
                        public nvinfer1::IPluginV3OneCore,
                        public nvinfer1::IPluginV3OneBuild,
                        public nvinfer1::IPluginV3OneRuntime
{
public:
    ~PumerPluginBase() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override
    {
        switch (type)
        {
        case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
        case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
        case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }

    nvinfer1::IPluginV3* clone() noexcept override
    {
        try
        {
            return new Derived(mAttrs);
        }
        catch (std::exception const& e)
        {
            logError(std::string(Derived::kName) + ": clone failed: " + e.what());
        }
        return nullptr;
    }

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override
    {
        return Derived::kName;
    }
    char const* getPluginVersion() const noexcept override
    {
        return kPluginVersion;
    }
    char const* getPluginNamespace() const noexcept override
    {
        return kPluginNamespace;
    }

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override
    {
        return Derived::kNbOutputs;
    }

    //! Linear format only; the type of every input/output position is the plugin's rule (supportsType).
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override
    {
        if (nbInputs != Derived::kNbInputs || nbOutputs != Derived::kNbOutputs || pos < 0
            || pos >= Derived::kNbInputs + Derived::kNbOutputs)
        {
            return false;
        }
        nvinfer1::PluginTensorDesc const& d = inOut[pos].desc;
        if (d.format != nvinfer1::TensorFormat::kLINEAR)
        {
            return false;
        }
        return self().supportsType(pos, d.type, inOut);
    }

    //! Validates the shapes of the optimisation profile: the current dimensions, the profile minimum (the token
    //! count bounds keep <= N - text_len and r <= (t - 1) / 2 must hold for the smallest N or t) and the profile
    //! maximum (the batch must not exceed the kernels' grid limit, kMaxBatch).
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept override
    {
        if (nbInputs != Derived::kNbInputs || nbOutputs != Derived::kNbOutputs)
        {
            return ioCountError();
        }
        Shape dims[Derived::kNbInputs];
        Shape mins[Derived::kNbInputs];
        Shape maxs[Derived::kNbInputs];
        for (int32_t i = 0; i < Derived::kNbInputs; ++i)
        {
            dims[i] = toShape(in[i].desc.dims);
            mins[i] = toShape(in[i].min);
            maxs[i] = toShape(in[i].max);
        }
        Status s = self().validateShapes(dims);
        if (s.ok)
        {
            s = self().validateShapes(mins);
        }
        if (s.ok)
        {
            s = self().validateShapes(maxs);
        }
        return s.ok ? 0 : fail(s);
    }

    char const* getTimingCacheID() noexcept override
    {
        return mDescription.c_str();
    }
    char const* getMetadataString() noexcept override
    {
        return mDescription.c_str();
    }

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept override
    {
        if (nbInputs != Derived::kNbInputs || nbOutputs != Derived::kNbOutputs)
        {
            return ioCountError();
        }
        Shape dims[Derived::kNbInputs];
        for (int32_t i = 0; i < Derived::kNbInputs; ++i)
        {
            dims[i] = toShape(in[i].dims);
        }
        Status const s = self().validateShapes(dims);
        return s.ok ? 0 : fail(s);
    }

    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept override
    {
        return clone();
    }

    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override
    {
        try
        {
            mSerialViews = Derived::serializeAttrs(mAttrs);
            mSerialFields = toPluginFields(mSerialViews);
            mSerialCollection.nbFields = static_cast<int32_t>(mSerialFields.size());
            mSerialCollection.fields = mSerialFields.data();
            return &mSerialCollection;
        }
        catch (std::exception const& e)
        {
            logError(std::string(Derived::kName) + ": serialisation failed: " + e.what());
        }
        return nullptr;
    }

protected:
    //! `description` is returned as timing-cache ID and metadata string.
    PumerPluginBase(Attrs const& attrs, std::string description)
        : mAttrs(attrs)
        , mDescription(std::move(description))
    {
    }

    //! Log "<plugin name>: <what>" through TensorRT's logger and return the failure code for TensorRT.
    static int32_t reportError(std::string const& what) noexcept
    {
        return fail(Status::error(std::string(Derived::kName) + ": " + what));
    }

    //! TensorRT passed a number of inputs/outputs other than kNbInputs/kNbOutputs: log it, return the failure code.
    static int32_t ioCountError() noexcept
    {
        return reportError("expected " + std::to_string(Derived::kNbInputs) + " inputs and "
            + std::to_string(Derived::kNbOutputs) + " outputs");
    }

    Attrs mAttrs;

private:
    Derived const& self() const noexcept
    {
        return static_cast<Derived const&>(*this);
    }

    std::string mDescription;
    std::vector<FieldView> mSerialViews;
    std::vector<nvinfer1::PluginField> mSerialFields;
    nvinfer1::PluginFieldCollection mSerialCollection{};
};

template <typename Plugin, typename Attrs>
class PumerPluginCreatorBase : public nvinfer1::IPluginCreatorV3One
{
public:
    ~PumerPluginCreatorBase() override = default;

    char const* getPluginName() const noexcept override
    {
        return Plugin::kName;
    }
    char const* getPluginVersion() const noexcept override
    {
        return kPluginVersion;
    }
    char const* getPluginNamespace() const noexcept override
    {
        return kPluginNamespace;
    }

    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override
    {
        return &mCollection;
    }

    nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
        nvinfer1::TensorRTPhase /*phase*/) noexcept override
    {
        try
        {
            std::vector<FieldView> const views = toFieldViews(fc);
            Attrs attrs;
            Status const s = Plugin::parseAttrs(views.data(), static_cast<int32_t>(views.size()), attrs);
            if (!s.ok)
            {
                logError(s.message + (name ? std::string(" (layer ") + name + ")" : std::string()));
                return nullptr;
            }
            return new Plugin(attrs);
        }
        catch (std::exception const& e)
        {
            logError(std::string(Plugin::kName) + ": createPlugin failed: " + e.what());
        }
        return nullptr;
    }

protected:
    //! `fields`: the attributes TensorRT's ONNX parser should pass (name and type; data nullptr, length 1).
    explicit PumerPluginCreatorBase(std::vector<nvinfer1::PluginField> fields)
        : mFields(std::move(fields))
    {
        mCollection.nbFields = static_cast<int32_t>(mFields.size());
        mCollection.fields = mFields.data();
    }

private:
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mCollection{};
};

} // namespace plugin
} // namespace pumer
