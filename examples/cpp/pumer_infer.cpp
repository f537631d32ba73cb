// pumer_infer: run one batch through a pumer-export TensorRT engine from C++ (no Python).
//
//   pumer_infer --engine engines/pumer/model.plan --plugins libpumer_plugins.so
//               --input input_ids=ids.npy --input attention_mask=mask.npy ... --output-dir out/
//
// Loads the pumer plugin library into TensorRT's plugin registry, deserializes the engine, sets every input's
// shape from its .npy file (the batch dimension is dynamic, the rest fixed at export), runs once on a CUDA stream
// and writes every output as OUT_DIR/<name>.npy. Inputs are checked against the engine (names, element types,
// ranks); errors end with one line on stderr and exit status 2.
//
// Written against TensorRT's public C++ API (TensorRT 10 and 11): IRuntime, ICudaEngine's I/O tensor queries,
// IExecutionContext::setInputShape / setTensorAddress / enqueueV3, IPluginRegistry::loadLibrary.

#include "npy.h"

#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace
{

class Logger : public nvinfer1::ILogger
{
public:
    void log(Severity severity, nvinfer1::AsciiChar const* msg) noexcept override
    {
        if (severity <= Severity::kWARNING)
        {
            std::cerr << "[TensorRT] " << msg << "\n";
        }
    }
};

void check(cudaError_t status, char const* what)
{
    if (status != cudaSuccess)
    {
        throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
    }
}

struct DeviceBuffer
{
    void* ptr{nullptr};
    explicit DeviceBuffer(size_t bytes)
    {
        check(cudaMalloc(&ptr, bytes > 0 ? bytes : 1), "cudaMalloc");
    }
    ~DeviceBuffer()
    {
        cudaFree(ptr);
    }
    DeviceBuffer(DeviceBuffer const&) = delete;
    DeviceBuffer& operator=(DeviceBuffer const&) = delete;
};

std::string npyType(nvinfer1::DataType type)
{
    switch (type)
    {
    case nvinfer1::DataType::kFLOAT: return "<f4";
    case nvinfer1::DataType::kHALF: return "<f2";
    case nvinfer1::DataType::kINT32: return "<i4";
    case nvinfer1::DataType::kINT64: return "<i8";
    case nvinfer1::DataType::kBOOL: return "|b1";
    default: throw std::runtime_error("unsupported tensor type in the engine");
    }
}

struct Options
{
    std::string engine;
    std::string plugins;
    std::string outputDir{"."};
    std::map<std::string, std::string> inputs;
};

Options parse(int argc, char** argv)
{
    Options options;
    for (int i = 1; i < argc; ++i)
    {
        std::string arg = argv[i];
        auto value = [&](char const* flag) -> std::string {
            if (i + 1 >= argc)
            {
                throw std::invalid_argument(std::string(flag) + " needs a value");
            }
            return argv[++i];
        };
        if (arg == "--engine")
        {
            options.engine = value("--engine");
        }
        else if (arg == "--plugins")
        {
            options.plugins = value("--plugins");
        }
        else if (arg == "--output-dir")
        {
            options.outputDir = value("--output-dir");
        }
        else if (arg == "--input")
        {
            std::string spec = value("--input");
            auto eq = spec.find('=');
            if (eq == std::string::npos || eq == 0)
            {
                throw std::invalid_argument("--input takes NAME=FILE.npy, got " + spec);
            }
            options.inputs[spec.substr(0, eq)] = spec.substr(eq + 1);
        }
        else
        {
            throw std::invalid_argument("unknown argument " + arg + " (see the comment at the top of pumer_infer.cpp)");
        }
    }
    if (options.engine.empty() || options.plugins.empty())
    {
        throw std::invalid_argument("pass --engine FILE and --plugins libpumer_plugins.so");
    }
    return options;
}

int run(Options const& options)
{
    Logger logger;
    std::unique_ptr<nvinfer1::IRuntime> runtime{nvinfer1::createInferRuntime(logger)};
    if (!runtime)
    {
        throw std::runtime_error("cannot create the TensorRT runtime");
    }
    if (runtime->getPluginRegistry().loadLibrary(options.plugins.c_str()) == nullptr)
    {
        throw std::runtime_error("cannot load the plugin library " + options.plugins);
    }
    std::ifstream file(options.engine, std::ios::binary);
    if (!file)
    {
        throw std::runtime_error("cannot open the engine " + options.engine);
    }
    std::vector<char> plan((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    std::unique_ptr<nvinfer1::ICudaEngine> engine{runtime->deserializeCudaEngine(plan.data(), plan.size())};
    if (!engine)
    {
        throw std::runtime_error("cannot deserialize " + options.engine + " (TensorRT version or GPU differ?)");
    }
    std::unique_ptr<nvinfer1::IExecutionContext> context{engine->createExecutionContext()};
    cudaStream_t stream{};
    check(cudaStreamCreate(&stream), "cudaStreamCreate");

    std::vector<std::unique_ptr<DeviceBuffer>> buffers;
    std::vector<std::pair<std::string, nvinfer1::DataType>> outputs;
    int32_t const count = engine->getNbIOTensors();
    for (int32_t i = 0; i < count; ++i)
    {
        char const* name = engine->getIOTensorName(i);
        nvinfer1::DataType type = engine->getTensorDataType(name);
        if (engine->getTensorIOMode(name) != nvinfer1::TensorIOMode::kINPUT)
        {
            outputs.emplace_back(name, type);
            continue;
        }
        auto found = options.inputs.find(name);
        if (found == options.inputs.end())
        {
            throw std::invalid_argument(std::string("missing --input ") + name + "=FILE.npy");
        }
        npy::Array array = npy::read(found->second);
        if (array.descr != npyType(type))
        {
            throw std::invalid_argument(found->second + " holds " + array.descr + ", the engine's " + name
                + " takes " + npyType(type));
        }
        nvinfer1::Dims dims{};
        dims.nbDims = static_cast<int32_t>(array.shape.size());
        if (dims.nbDims != engine->getTensorShape(name).nbDims)
        {
            throw std::invalid_argument(found->second + " has the wrong rank for " + name);
        }
        for (int32_t d = 0; d < dims.nbDims; ++d)
        {
            dims.d[d] = array.shape[d];
        }
        if (!context->setInputShape(name, dims))
        {
            throw std::invalid_argument(std::string("shape of ") + found->second + " is outside the engine's profile");
        }
        buffers.push_back(std::make_unique<DeviceBuffer>(array.data.size()));
        check(cudaMemcpyAsync(buffers.back()->ptr, array.data.data(), array.data.size(), cudaMemcpyHostToDevice,
                  stream),
            "cudaMemcpyAsync");
        context->setTensorAddress(name, buffers.back()->ptr);
    }

    std::vector<npy::Array> results;
    std::vector<void*> outputPointers;
    for (auto const& [name, type] : outputs)
    {
        nvinfer1::Dims dims = context->getTensorShape(name.c_str());
        npy::Array array;
        array.descr = npyType(type);
        size_t elements = 1;
        for (int32_t d = 0; d < dims.nbDims; ++d)
        {
            array.shape.push_back(dims.d[d]);
            elements *= static_cast<size_t>(dims.d[d]);
        }
        array.data.resize(elements * npy::itemSize(array.descr));
        buffers.push_back(std::make_unique<DeviceBuffer>(array.data.size()));
        context->setTensorAddress(name.c_str(), buffers.back()->ptr);
        outputPointers.push_back(buffers.back()->ptr);
        results.push_back(std::move(array));
    }
    if (!context->enqueueV3(stream))
    {
        throw std::runtime_error("enqueueV3 failed (see the TensorRT log above)");
    }
    for (size_t i = 0; i < results.size(); ++i)
    {
        check(cudaMemcpyAsync(results[i].data.data(), outputPointers[i], results[i].data.size(),
                  cudaMemcpyDeviceToHost, stream),
            "cudaMemcpyAsync");
    }
    check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    cudaStreamDestroy(stream);
    for (size_t i = 0; i < results.size(); ++i)
    {
        std::string path = options.outputDir + "/" + outputs[i].first + ".npy";
        npy::write(path, results[i]);
        std::cout << "wrote " << path << "\n";
    }
    return 0;
}

} // namespace

int main(int argc, char** argv)
{
    try
    {
        return run(parse(argc, argv));
    }
    catch (std::invalid_argument const& error)
    {
        std::cerr << "error: " << error.what() << "\n";
        return 2;
    }
    catch (std::exception const& error)
    {
        std::cerr << "error: " << error.what() << "\n";
        return 1;
    }
}
