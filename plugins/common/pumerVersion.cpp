/*
 * Identity of the PuMer plugin / kernel libraries: the SHA-256 of pumer_export/op_spec.json they were built
 * against (computed by CMake, passed as PUMER_OP_SPEC_SHA256) and the library version.
 */
#include "pumerHostLogic.h"

#ifndef PUMER_OP_SPEC_SHA256
#define PUMER_OP_SPEC_SHA256 "unknown"
#endif
#ifndef PUMER_LIBRARY_VERSION
#define PUMER_LIBRARY_VERSION "0.1.0"
#endif

#if defined(_WIN32)
#define PUMER_EXPORT __declspec(dllexport)
#else
#define PUMER_EXPORT __attribute__((visibility("default")))
#endif

namespace pumer
{
char const* opSpecSha256() noexcept
{
    return PUMER_OP_SPEC_SHA256;
}
char const* libraryVersion() noexcept
{
    return PUMER_LIBRARY_VERSION;
}
} // namespace pumer

extern "C" PUMER_EXPORT char const* pumerOpSpecSha256()
{
    return pumer::opSpecSha256();
}

extern "C" PUMER_EXPORT char const* pumerPluginVersion()
{
    return pumer::libraryVersion();
}
