#include "pumerRegistration.h"

namespace pumer
{

CreatorRegistrar::CreatorRegistrar(int32_t nbCreators)
    : mRegistered(static_cast<size_t>(nbCreators > 0 ? nbCreators : 0), false)
{
}

void CreatorRegistrar::registerAll(RegistryOps& registry)
{
    for (size_t i = 0; i < mRegistered.size(); ++i)
    {
        auto const index = static_cast<int32_t>(i);
        if (!mRegistered[i] && !registry.contains(index))
        {
            mRegistered[i] = registry.add(index);
        }
    }
}

std::vector<int32_t> CreatorRegistrar::pending(RegistryOps& registry) const
{
    std::vector<int32_t> out;
    for (size_t i = 0; i < mRegistered.size(); ++i)
    {
        auto const index = static_cast<int32_t>(i);
        if (!mRegistered[i] && !registry.contains(index))
        {
            out.push_back(index);
        }
    }
    return out;
}

void CreatorRegistrar::deregisterAll(RegistryOps& registry)
{
    for (size_t i = 0; i < mRegistered.size(); ++i)
    {
        if (mRegistered[i])
        {
            registry.remove(static_cast<int32_t>(i));
            mRegistered[i] = false;
        }
    }
}

bool CreatorRegistrar::registeredHere(int32_t i) const
{
    return i >= 0 && static_cast<size_t>(i) < mRegistered.size() && mRegistered[static_cast<size_t>(i)];
}

} // namespace pumer
