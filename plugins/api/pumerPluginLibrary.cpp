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
 *     plugin libraries): TensorRT calls setLoggerFinder() and getCreators(). loadLibrary fails if any creator it
 *     is handed is already registered, so getCreators() returns only the creators the static registrar did not
 *     register (none when it ran, both when it is compiled out or the registry refused them).
 */
#include "NvInferRuntime.h"

#include "pumerHostLogic.h"
#include "pumerMergePlugin.h"
#include "pumerPluginUtils.h"
#include "pumerPrunePlugin.h"

#include <atomic>

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

using pumer::plugin::PumerMergePluginCreator;
using pumer::plugin::PumerPrunePluginCreator;

constexpr int32_t kNbCreators = 2;

nvinfer1::IPluginCreatorInterface* creatorAt(int32_t i)
{
    static PumerPrunePluginCreator prune;
    static PumerMergePluginCreator merge;
    return i == 0 ? static_cast<nvinfer1::IPluginCreatorInterface*>(&prune)
                  : static_cast<nvinfer1::IPluginCreatorInterface*>(&merge);
}

//! Which creators the static registrar registered successfully.
std::atomic<bool> gRegistered[kNbCreators]{};

#if PUMER_STATIC_REGISTRATION
struct PumerStaticRegistrar
{
    PumerStaticRegistrar()
    {
        nvinfer1::IPluginRegistry* registry = getPluginRegistry();
        if (registry == nullptr)
        {
            return;
        }
        for (int32_t i = 0; i < kNbCreators; ++i)
        {
            gRegistered[i].store(registry->registerCreator(*creatorAt(i), pumer::kPluginNamespace));
        }
    }
};
PumerStaticRegistrar const gStaticRegistrar{};
#endif

} // namespace

extern "C" PUMER_PLUGIN_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    pumer::plugin::setLoggerFinder(finder);
}

extern "C" PUMER_PLUGIN_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static nvinfer1::IPluginCreatorInterface* pending[kNbCreators]{};
    nbCreators = 0;
    for (int32_t i = 0; i < kNbCreators; ++i)
    {
        if (!gRegistered[i].load())
        {
            pending[nbCreators++] = creatorAt(i);
        }
    }
    return pending;
}
