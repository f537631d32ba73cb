/*
 * Entry points of libpumer_plugins.so.
 *
 * Two ways to make the PuMer creators visible to TensorRT, both supported by this one library:
 *
 *  1. Static registration at load time (dlopen / ctypes.CDLL / Polygraphy --plugins / trtexec --staticPlugins):
 *     a registrar object, like REGISTER_TENSORRT_PLUGIN, registers both creators with getPluginRegistry().
 *     Unlike the SDK macro (which registers under namespace "" and ignores the result) it registers under the
 *     creators' own namespace "pumer" - the namespace the ONNX nodes carry in plugin_namespace - and remembers
 *     which registrations succeeded. Build with -DPUMER_STATIC_REGISTRATION=OFF to drop it.
 *  2. Dynamic registration (IPluginRegistry::loadLibrary, trtexec --dynamicPlugins, engines with serialized
 *     plugin libraries): TensorRT calls setLoggerFinder() and getCreators().
 *
 * TensorRT loads a temporary copy of a library serialised into an engine, so several copies can live in one
 * process. The rules of pumerRegistration.h keep the registry consistent: a copy registers a creator only when no
 * copy has, getCreators hands out only creators nobody has registered (loadLibrary never sees "already
 * registered"), and a copy deregisters what it registered when it is unloaded (no creator pointer outlives its
 * copy).
 */
#include "NvInferRuntime.h"

#include "pumerHostLogic.h"
#include "pumerCompactPlugin.h"
#include "pumerMergePlugin.h"
#include "pumerPluginUtils.h"
#include "pumerPrunePlugin.h"
#include "pumerRegistration.h"

#include <mutex>

#ifndef PUMER_STATIC_REGISTRATION
#define PUMER_STATIC_REGISTRATION 1
#endif

#if defined(_WIN32)
#define PUMER_PLUGIN_EXPORT __declspec(dllexport)
#else
#define PUMER_PLUGIN_EXPORT __attribute__((visibility("default")))
#endif

namespace
{

using pumer::plugin::PumerCompactPluginCreator;
using pumer::plugin::PumerMergePluginCreator;
using pumer::plugin::PumerPrunePluginCreator;

constexpr int32_t kNbCreators = 3;

nvinfer1::IPluginCreatorV3One* creatorAt(int32_t i)
{
    static PumerPrunePluginCreator prune;
    static PumerMergePluginCreator merge;
    static PumerCompactPluginCreator compact;
    switch (i)
    {
    case 0: return &prune;
    case 1: return &merge;
    default: return &compact;
    }
}

nvinfer1::IPluginRegistry* registry()
{
    return getPluginRegistry();
}

//! pumer::RegistryOps over TensorRT's global plugin registry.
class TensorRTRegistry final : public pumer::RegistryOps
{
public:
    explicit TensorRTRegistry(nvinfer1::IPluginRegistry& r)
        : mRegistry(r)
    {
    }
    bool contains(int32_t i) override
    {
        nvinfer1::IPluginCreatorV3One const* creator = creatorAt(i);
        return mRegistry.getCreator(creator->getPluginName(), creator->getPluginVersion(),
                   creator->getPluginNamespace())
            != nullptr;
    }
    bool add(int32_t i) override
    {
        return mRegistry.registerCreator(*creatorAt(i), pumer::kPluginNamespace);
    }
    bool remove(int32_t i) override
    {
        return mRegistry.deregisterCreator(*creatorAt(i));
    }

private:
    nvinfer1::IPluginRegistry& mRegistry;
};

std::mutex gMutex;
pumer::CreatorRegistrar gRegistrar(kNbCreators);

#if PUMER_STATIC_REGISTRATION
//! Registers at load time, deregisters at unload (dlclose of this copy, or process exit).
struct PumerStaticRegistrar
{
    PumerStaticRegistrar()
    {
        std::lock_guard<std::mutex> lock(gMutex);
        if (nvinfer1::IPluginRegistry* r = registry())
        {
            TensorRTRegistry ops(*r);
            gRegistrar.registerAll(ops);
        }
    }
    ~PumerStaticRegistrar()
    {
        std::lock_guard<std::mutex> lock(gMutex);
        if (nvinfer1::IPluginRegistry* r = registry())
        {
            TensorRTRegistry ops(*r);
            gRegistrar.deregisterAll(ops);
        }
    }
};
PumerStaticRegistrar gStaticRegistrar;
#endif

} // namespace

extern "C" PUMER_PLUGIN_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    pumer::plugin::setLoggerFinder(finder);
}

extern "C" PUMER_PLUGIN_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static nvinfer1::IPluginCreatorInterface* pending[kNbCreators]{};
    std::lock_guard<std::mutex> lock(gMutex);
    nbCreators = 0;
    nvinfer1::IPluginRegistry* r = registry();
    if (r == nullptr)
    {
        for (int32_t i = 0; i < kNbCreators; ++i)
        {
            pending[nbCreators++] = creatorAt(i);
        }
        return pending;
    }
    TensorRTRegistry ops(*r);
    for (int32_t i : gRegistrar.pending(ops))
    {
        pending[nbCreators++] = creatorAt(i);
    }
    return pending;
}
