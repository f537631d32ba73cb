"""CPU unit test of the plugins' host-side logic (plugins/tests/host_logic_test.cpp): plain C++, no CUDA/TensorRT.

Compiles the test with the system C++ compiler (and once through CMake/CTest, which also checks that CMake
computes the same op_spec.json hash as :func:`pumer_export.ops.op_spec_hash`) into a temporary folder and runs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pumer_export.ops import op_spec_hash

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = ROOT / "plugins"


def _cxx() -> str | None:
    for candidate in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def test_host_logic_unit_test(tmp_path):
    cxx = _cxx()
    if cxx is None:
        pytest.skip("no C++ compiler (g++/c++/clang++ or $CXX) on PATH")
    digest = op_spec_hash()
    exe = tmp_path / "host_logic_test"
    cmd = [
        cxx, "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror",
        f"-I{PLUGINS / 'common'}",
        f'-DPUMER_OP_SPEC_SHA256="{digest}"', f'-DPUMER_EXPECTED_SHA256="{digest}"',
        str(PLUGINS / "tests" / "host_logic_test.cpp"),
        str(PLUGINS / "common" / "pumerHostLogic.cpp"),
        str(PLUGINS / "common" / "pumerVersion.cpp"),
        str(PLUGINS / "common" / "pumerRegistration.cpp"),
        "-o", str(exe),
    ]  # fmt: skip
    build = subprocess.run(cmd, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert ", 0 failures" in run.stdout


def test_host_logic_through_cmake_ctest(tmp_path):
    cmake = shutil.which("cmake")
    ctest = shutil.which("ctest")
    if cmake is None or ctest is None or _cxx() is None:
        pytest.skip("cmake/ctest or a C++ compiler not on PATH")
    build = tmp_path / "build"
    configure = subprocess.run(
        [cmake, "-S", str(PLUGINS), "-B", str(build), "-DPUMER_BUILD_KERNELS=OFF", "-DPUMER_BUILD_PLUGINS=OFF"],
        capture_output=True,
        text=True,
    )
    assert configure.returncode == 0, configure.stdout + configure.stderr
    assert f"SHA-256: {op_spec_hash()}" in configure.stdout
    compiled = subprocess.run([cmake, "--build", str(build), "--parallel", "2"], capture_output=True, text=True)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    tested = subprocess.run([ctest, "--output-on-failure"], cwd=build, capture_output=True, text=True, timeout=120)
    assert tested.returncode == 0, tested.stdout + tested.stderr
