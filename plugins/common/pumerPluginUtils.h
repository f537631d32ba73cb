/*
 * TensorRT-side helpers shared by the PuMer plugins: logging through the logger TensorRT provides
 * (setLoggerFinder), PluginField <-> FieldView conversion, DataType <-> DType, Dims <-> Shape.
 */
#pragma once

#include "NvInferRuntime.h"
#include "pumerHostLogic.h"

#include <string>
#include <vector>

namespace pumer
{
namespace plugin
{

static_assert(static_cast<int32_t>(nvinfer1::PluginFieldType::kINT32) == static_cast<int32_t>(FieldType::kINT32)
        && static_cast<int32_t>(nvinfer1::PluginFieldType::kINT64) == static_cast<int32_t>(FieldType::kINT64)
        && static_cast<int32_t>(nvinfer1::PluginFieldType::kCHAR) == static_cast<int32_t>(FieldType::kCHAR)
        && static_cast<int32_t>(nvinfer1::PluginFieldType::kINT8) == static_cast<int32_t>(FieldType::kINT8)
        && static_cast<int32_t>(nvinfer1::PluginFieldType::kINT16) == static_cast<int32_t>(FieldType::kINT16),
    "PluginFieldType codes changed: update pumer::FieldType");

//! Remember the logger finder TensorRT hands to the library (setLoggerFinder).
void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;

//! Log through TensorRT's logger when one is known, else to stderr ("[pumer] ...").
void log(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept;
inline void logError(std::string const& message) noexcept
{
    log(nvinfer1::ILogger::Severity::kERROR, message);
}

//! Views of the fields of a collection (nullptr-safe).
std::vector<FieldView> toFieldViews(nvinfer1::PluginFieldCollection const* fc);

//! Fields to hand to TensorRT; `views` must outlive the returned vector's use.
std::vector<nvinfer1::PluginField> toPluginFields(std::vector<FieldView> const& views);

//! DataType -> DType for the tensor types the kernels support; false for anything else.
bool toDType(nvinfer1::DataType t, DType& out) noexcept;
bool isSupportedFloat(nvinfer1::DataType t) noexcept;

Shape toShape(nvinfer1::Dims const& d) noexcept;

//! Log a failed Status and return `code` (non-zero) for TensorRT.
int32_t fail(Status const& s, int32_t code = -1) noexcept;

} // namespace plugin
} // namespace pumer
