/*
 * Which plugin creators this library registers, and when (plain C++: no TensorRT, tested on the CPU).
 *
 * The library can be loaded several times into one process: once by the application (dlopen, ctypes, Polygraphy
 * --plugins) and again by TensorRT, which loads a temporary copy of a library serialised into an engine
 * (setPluginsToSerialize / --setPluginsToSerialize) and unloads that copy with the runtime. Every copy has its own
 * creator objects. Rules, the same for every copy:
 *
 *  1. at load time a copy registers a creator only if no creator with the same (name, version, namespace) is in
 *     the registry already, and remembers which ones it registered;
 *  2. getCreators (IPluginRegistry::loadLibrary, --dynamicPlugins) hands out only creators that are in the registry
 *     under no copy's name yet, so loadLibrary never fails with "already registered";
 *  3. at unload a copy deregisters exactly the creators it registered, so the registry never keeps a pointer into
 *     an unloaded copy.
 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace pumer
{

//! The registry operations the rules need, by creator position (0 .. nbCreators-1) in this library.
//! The plugin library implements it over nvinfer1::IPluginRegistry; the CPU test over a fake registry.
class RegistryOps
{
public:
    virtual ~RegistryOps() = default;
    //! A creator with the (name, version, namespace) of creator `i` is registered (by anyone).
    virtual bool contains(int32_t i) = 0;
    //! Register this library's creator `i`; false if the registry refuses.
    virtual bool add(int32_t i) = 0;
    //! Deregister this library's creator `i`; false if it was not registered.
    virtual bool remove(int32_t i) = 0;
};

class CreatorRegistrar
{
public:
    explicit CreatorRegistrar(int32_t nbCreators);

    //! Rule 1 (load time).
    void registerAll(RegistryOps& registry);
    //! Rule 2: positions of the creators getCreators should return now.
    std::vector<int32_t> pending(RegistryOps& registry) const;
    //! Rule 3 (unload time).
    void deregisterAll(RegistryOps& registry);

    bool registeredHere(int32_t i) const;

private:
    std::vector<bool> mRegistered;
};

} // namespace pumer
