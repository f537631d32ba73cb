// Minimal .npy (NumPy format 1.0 / 2.0) reading and writing for pumer_infer: little-endian, C order, the element
// types of pumer-export models (float32, float16, int32, int64, bool).
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace npy
{

struct Array
{
    std::string descr;          // "<f4", "<f2", "<i4", "<i8", "|b1"
    std::vector<int64_t> shape; // C order
    std::vector<char> data;     // raw little-endian bytes
};

inline size_t itemSize(std::string const& descr)
{
    if (descr == "<f4" || descr == "<i4")
    {
        return 4;
    }
    if (descr == "<i8")
    {
        return 8;
    }
    if (descr == "<f2")
    {
        return 2;
    }
    if (descr == "|b1")
    {
        return 1;
    }
    throw std::invalid_argument("unsupported .npy element type " + descr);
}

inline std::string field(std::string const& header, std::string const& key)
{
    auto at = header.find("'" + key + "'");
    if (at == std::string::npos)
    {
        throw std::invalid_argument("a .npy header without '" + key + "'");
    }
    auto colon = header.find(':', at);
    auto start = header.find_first_not_of(" ", colon + 1);
    if (header[start] == '\'')
    {
        return header.substr(start + 1, header.find('\'', start + 1) - start - 1);
    }
    if (header[start] == '(')
    {
        return header.substr(start + 1, header.find(')', start) - start - 1);
    }
    return header.substr(start, header.find_first_of(",}", start) - start);
}

inline Array read(std::string const& path)
{
    std::ifstream file(path, std::ios::binary);
    if (!file)
    {
        throw std::invalid_argument("cannot open " + path);
    }
    char magic[8];
    file.read(magic, 8);
    if (!file || std::memcmp(magic, "\x93NUMPY", 6) != 0)
    {
        throw std::invalid_argument(path + " is not a .npy file");
    }
    uint32_t headerLength = 0;
    if (magic[6] == 1)
    {
        unsigned char bytes[2];
        file.read(reinterpret_cast<char*>(bytes), 2);
        headerLength = bytes[0] | (bytes[1] << 8);
    }
    else
    {
        unsigned char bytes[4];
        file.read(reinterpret_cast<char*>(bytes), 4);
        headerLength = bytes[0] | (bytes[1] << 8) | (bytes[2] << 16) | (static_cast<uint32_t>(bytes[3]) << 24);
    }
    std::string header(headerLength, '\0');
    file.read(header.data(), headerLength);
    Array array;
    array.descr = field(header, "descr");
    if (field(header, "fortran_order").find("True") != std::string::npos)
    {
        throw std::invalid_argument(path + " is in Fortran order; save it with numpy.ascontiguousarray");
    }
    std::string shape = field(header, "shape");
    size_t elements = 1;
    for (size_t pos = 0; pos < shape.size();)
    {
        auto end = shape.find(',', pos);
        std::string part = shape.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
        if (part.find_first_of("0123456789") != std::string::npos)
        {
            array.shape.push_back(std::stoll(part));
            elements *= static_cast<size_t>(array.shape.back());
        }
        if (end == std::string::npos)
        {
            break;
        }
        pos = end + 1;
    }
    array.data.resize(elements * itemSize(array.descr));
    file.read(array.data.data(), static_cast<std::streamsize>(array.data.size()));
    if (!file)
    {
        throw std::invalid_argument(path + " is shorter than its header says");
    }
    return array;
}

inline void write(std::string const& path, Array const& array)
{
    std::string shape;
    for (auto dim : array.shape)
    {
        shape += std::to_string(dim) + ", ";
    }
    if (array.shape.size() > 1)
    {
        shape.erase(shape.size() - 2); // "(2, 40)"; a 1-D shape keeps its trailing comma: "(2,)"
    }
    else if (!shape.empty())
    {
        shape.erase(shape.size() - 1);
    }
    std::string header = "{'descr': '" + array.descr + "', 'fortran_order': False, 'shape': (" + shape + "), }";
    size_t total = 10 + header.size() + 1;
    header.append((64 - total % 64) % 64, ' ');
    header.push_back('\n');
    std::ofstream file(path, std::ios::binary);
    if (!file)
    {
        throw std::runtime_error("cannot write " + path);
    }
    char const prefix[8] = {'\x93', 'N', 'U', 'M', 'P', 'Y', 1, 0};
    file.write(prefix, 8);
    uint16_t length = static_cast<uint16_t>(header.size());
    char lengthBytes[2] = {static_cast<char>(length & 0xff), static_cast<char>(length >> 8)};
    file.write(lengthBytes, 2);
    file.write(header.data(), static_cast<std::streamsize>(header.size()));
    file.write(array.data.data(), static_cast<std::streamsize>(array.data.size()));
}

} // namespace npy
