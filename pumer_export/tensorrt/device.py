"""The CUDA driver and devices, read from ``libcuda`` with ctypes (no CUDA toolkit, torch or nvidia-smi needed).

``libcuda`` comes with the NVIDIA driver on every platform TensorRT runs on (Jetson included, where
there is no ``nvidia-smi``), and it reports the compute capability that engines are tied to.
``CUDA_VISIBLE_DEVICES`` applies as usual; device 0 is the one TensorRT builds for.
"""

from __future__ import annotations

import ctypes
import dataclasses
import sys
from typing import Any

_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76
_LIBRARIES = ("nvcuda.dll",) if sys.platform == "win32" else ("libcuda.so.1", "libcuda.so")


@dataclasses.dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    sm: str  # "8.7"
    memory_bytes: int | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class CudaInfo:
    driver_version: str | None  # CUDA version the driver supports, e.g. "12.6"
    devices: tuple[GpuInfo, ...]
    error: str | None = None

    @property
    def available(self) -> bool:
        return bool(self.devices)

    def to_dict(self) -> dict[str, Any]:
        return {"driver_version": self.driver_version, "devices": [d.to_dict() for d in self.devices],
                "error": self.error}


def _load_libcuda():
    errors = []
    for name in _LIBRARIES:
        try:
            return ctypes.CDLL(name)
        except OSError as exc:
            errors.append(str(exc))
    raise OSError("; ".join(errors))


def _error_string(lib, code: int) -> str:
    text = ctypes.c_char_p()
    try:
        if lib.cuGetErrorString(code, ctypes.byref(text)) == 0 and text.value:
            return text.value.decode(errors="replace")
    except AttributeError:
        pass
    return f"CUDA error {code}"


def cuda_info() -> CudaInfo:
    """Driver version and visible devices; ``error`` says why there are none."""
    try:
        lib = _load_libcuda()
    except OSError:
        return CudaInfo(None, (), "no NVIDIA driver (libcuda not found)")
    version = ctypes.c_int()
    driver = None
    if lib.cuDriverGetVersion(ctypes.byref(version)) == 0:
        driver = f"{version.value // 1000}.{version.value % 1000 // 10}"
    code = lib.cuInit(0)
    if code != 0:
        return CudaInfo(driver, (), f"cuInit failed: {_error_string(lib, code)}")
    count = ctypes.c_int()
    code = lib.cuDeviceGetCount(ctypes.byref(count))
    if code != 0:
        return CudaInfo(driver, (), f"cuDeviceGetCount failed: {_error_string(lib, code)}")
    devices = []
    for index in range(count.value):
        device = ctypes.c_int()
        if lib.cuDeviceGet(ctypes.byref(device), index) != 0:
            continue
        name = ctypes.create_string_buffer(256)
        lib.cuDeviceGetName(name, len(name), device)
        major, minor = ctypes.c_int(), ctypes.c_int()
        lib.cuDeviceGetAttribute(ctypes.byref(major), _CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device)
        lib.cuDeviceGetAttribute(ctypes.byref(minor), _CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device)
        memory = ctypes.c_size_t()
        total = None
        try:
            if lib.cuDeviceTotalMem_v2(ctypes.byref(memory), device) == 0:
                total = int(memory.value)
        except AttributeError:
            pass
        devices.append(GpuInfo(index, name.value.decode(errors="replace"), f"{major.value}.{minor.value}", total))
    return CudaInfo(driver, tuple(devices), None if devices else "no CUDA device visible")


def current_gpu() -> GpuInfo | None:
    """Device 0 (the one TensorRT uses by default), or None."""
    info = cuda_info()
    return info.devices[0] if info.devices else None
