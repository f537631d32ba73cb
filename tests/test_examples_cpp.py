"""The C++ example application (examples/cpp): it compiles against TensorRT's headers (10.x and 11.x when
available) and its .npy reader/writer round-trips what NumPy writes. Running it needs TensorRT and a GPU."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pumer_export import plugins
from test_kernels_build import _cuda_include, _tensorrt_include_dirs

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "cpp"


def _cxx() -> str:
    cxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler on PATH")
    return cxx


def test_pumer_infer_compiles_against_tensorrt_headers():
    """Set PUMER_TRT_INCLUDE_DIRS=/tmp/trt/v10.3.0/include:/tmp/trt/v11.1/include to check several releases."""
    include_dirs = _tensorrt_include_dirs()
    if not include_dirs:
        pytest.skip("TensorRT headers not found (set TENSORRT_ROOT or PUMER_TRT_INCLUDE_DIRS)")
    nvcc = plugins.find_nvcc()
    cuda_include = _cuda_include(nvcc) if nvcc else None
    if cuda_include is None:
        pytest.skip("cuda_runtime_api.h not found (the CUDA toolkit is needed for the TensorRT headers)")
    for include in include_dirs:
        cmd = [_cxx(), "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-isystem", str(include),
               "-isystem", str(cuda_include), str(EXAMPLE / "pumer_infer.cpp")]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, f"{include}:\n{proc.stderr}"


ROUNDTRIP = r"""
#include "npy.h"
#include <iostream>
int main(int, char** argv)
{
    try { npy::write(argv[2], npy::read(argv[1])); }
    catch (std::exception const& e) { std::cerr << e.what() << "\n"; return 2; }
    return 0;
}
"""


@pytest.mark.parametrize("array", [
    np.arange(2 * 40, dtype=np.int64).reshape(2, 40),
    np.linspace(-1, 1, 2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5),
    np.array([1.5, -2.25, 3.0], dtype=np.float16),
    np.arange(7, dtype=np.int32),
    np.zeros((1, 1), dtype=np.float32),
])  # fmt: skip
def test_npy_reader_and_writer_round_trip(array, tmp_path_factory):
    build = tmp_path_factory.getbasetemp() / "npy_roundtrip"
    binary = build / "roundtrip"
    if not binary.is_file():
        build.mkdir(exist_ok=True)
        (build / "roundtrip.cpp").write_text(ROUNDTRIP)
        proc = subprocess.run([_cxx(), "-std=c++17", "-Wall", "-Wextra", "-Werror", f"-I{EXAMPLE}",
                               str(build / "roundtrip.cpp"), "-o", str(binary)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    src, dst = tmp_path_factory.mktemp("npy") / "in.npy", tmp_path_factory.mktemp("npy") / "out.npy"
    np.save(src, array)
    proc = subprocess.run([str(binary), str(src), str(dst)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    back = np.load(dst)
    assert back.dtype == array.dtype and back.shape == array.shape and np.array_equal(back, array)
