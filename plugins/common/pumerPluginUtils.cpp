/*
 * TensorRT-side helpers shared by the PuMer plugins (see pumerPluginUtils.h).
 */
#include "pumerPluginUtils.h"

#include <atomic>
#include <cstdio>

namespace pumer
{
namespace plugin
{

namespace
{
std::atomic<nvinfer1::ILoggerFinder*> gLoggerFinder{nullptr};

char const* severityName(nvinfer1::ILogger::Severity s)
{
    switch (s)
    {
    case nvinfer1::ILogger::Severity::kINTERNAL_ERROR: return "INTERNAL_ERROR";
    case nvinfer1::ILogger::Severity::kERROR: return "ERROR";
    case nvinfer1::ILogger::Severity::kWARNING: return "WARNING";
    case nvinfer1::ILogger::Severity::kINFO: return "INFO";
    case nvinfer1::ILogger::Severity::kVERBOSE: return "VERBOSE";
    }
    return "LOG";
}
} // namespace

void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    gLoggerFinder.store(finder);
}

void log(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept
{
    try
    {
        std::string const text = "[pumer] " + message;
        nvinfer1::ILoggerFinder* finder = gLoggerFinder.load();
        nvinfer1::ILogger* logger = finder != nullptr ? finder->findLogger() : nullptr;
        if (logger != nullptr)
        {
            logger->log(severity, text.c_str());
        }
        else if (severity <= nvinfer1::ILogger::Severity::kWARNING)
        {
            std::fprintf(stderr, "[%s] %s\n", severityName(severity), text.c_str());
        }
    }
    catch (...)
    {
    }
}

std::vector<FieldView> toFieldViews(nvinfer1::PluginFieldCollection const* fc)
{
    std::vector<FieldView> views;
    if (fc == nullptr || fc->fields == nullptr)
    {
        return views;
    }
    views.reserve(static_cast<size_t>(fc->nbFields));
    for (int32_t i = 0; i < fc->nbFields; ++i)
    {
        nvinfer1::PluginField const& f = fc->fields[i];
        views.push_back(FieldView{f.name, f.data, static_cast<int32_t>(f.type), f.length});
    }
    return views;
}

std::vector<nvinfer1::PluginField> toPluginFields(std::vector<FieldView> const& views)
{
    std::vector<nvinfer1::PluginField> fields;
    fields.reserve(views.size());
    for (FieldView const& v : views)
    {
        fields.emplace_back(v.name, v.data, static_cast<nvinfer1::PluginFieldType>(v.type), v.length);
    }
    return fields;
}

bool toDType(nvinfer1::DataType t, DType& out) noexcept
{
    switch (t)
    {
    case nvinfer1::DataType::kFLOAT: out = DType::kFLOAT; return true;
    case nvinfer1::DataType::kHALF: out = DType::kHALF; return true;
    case nvinfer1::DataType::kBF16: out = DType::kBF16; return true;
    default: return false;
    }
}

bool isSupportedFloat(nvinfer1::DataType t) noexcept
{
    DType unused;
    return toDType(t, unused);
}

Shape toShape(nvinfer1::Dims const& d) noexcept
{
    Shape s;
    s.nbDims = d.nbDims < 0 ? 0 : (d.nbDims > 8 ? 8 : d.nbDims);
    for (int32_t i = 0; i < s.nbDims; ++i)
    {
        s.d[i] = static_cast<int64_t>(d.d[i]);
    }
    return s;
}

int32_t fail(Status const& s, int32_t code) noexcept
{
    logError(s.message);
    return code;
}

} // namespace plugin
} // namespace pumer
