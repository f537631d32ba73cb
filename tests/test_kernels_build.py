"""The CUDA kernel library compiles with the machine's nvcc (one architecture, via CMake) and carries the
op_spec.json hash; the plugin sources compile against TensorRT headers when some are available.

No GPU is needed: the library links the static CUDA runtime, so ctypes can load it without a driver
(``nm -D`` is the fallback). Skipped with a reason where nvcc or cmake is absent.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pumer_export import plugins
from pumer_export.ops import op_spec_hash

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = ROOT / "plugins"
TEST_ARCH = os.environ.get("PUMER_TEST_CUDA_ARCH", "87")  # one architecture keeps the build short


@pytest.fixture(scope="module")
def kernel_library(tmp_path_factory) -> Path:
    if plugins.find_nvcc() is None:
        pytest.skip("CUDA toolkit not found: nvcc is not on PATH (or CUDACXX unset)")
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not on PATH")
    build = tmp_path_factory.mktemp("kernels")
    result = plugins.build_plugins(build, cuda_archs=TEST_ARCH, tensorrt_root=None, jobs=2)
    assert result.kernel_library is not None, "libpumer_kernels.so was not built"
    return result.kernel_library


def _exported(path: Path) -> set[str]:
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm not on PATH")
    out = subprocess.run([nm, "-D", "--defined-only", str(path)], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


def test_kernel_library_exports(kernel_library):
    symbols = _exported(kernel_library)
    assert {"pumerOpSpecSha256", "pumerPluginVersion"} <= symbols
    assert any("launchPrune" in s for s in symbols) and any("launchMerge" in s for s in symbols)
    # host-side helpers stay hidden
    assert not any("parsePruneFields" in s for s in symbols)


def test_kernel_library_spec_hash(kernel_library):
    try:
        lib = ctypes.CDLL(str(kernel_library))
    except OSError as exc:  # pragma: no cover - depends on the loader environment
        strings = subprocess.run(["strings", str(kernel_library)], capture_output=True, text=True).stdout
        assert op_spec_hash() in strings, f"hash not found in the library (ctypes load failed: {exc})"
        return
    fn = lib.pumerOpSpecSha256
    fn.restype = ctypes.c_char_p
    assert fn().decode() == op_spec_hash()
    assert plugins.library_spec_hash(kernel_library) == op_spec_hash()
    plugins.check_library_spec(kernel_library)


def test_kernel_library_has_requested_architecture(kernel_library):
    cuobjdump = shutil.which("cuobjdump")
    if cuobjdump is None:
        pytest.skip("cuobjdump not on PATH")
    out = subprocess.run([cuobjdump, "--list-elf", str(kernel_library)], capture_output=True, text=True).stdout
    assert f"sm_{TEST_ARCH}" in out


def _tensorrt_include_dirs() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("PUMER_TRT_INCLUDE_DIRS", "").split(os.pathsep) if p]
    found = plugins.find_tensorrt_headers()
    if found is not None:
        dirs.append(found)
    return [d for d in dirs if (d / "NvInferRuntime.h").is_file()]


def _cuda_include(nvcc: str) -> Path | None:
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), str(Path(nvcc).resolve().parent.parent)]
    candidates += sorted((str(p) for p in Path("/usr/local").glob("cuda*")), reverse=True)
    for root in candidates:
        if root and (Path(root) / "include" / "cuda_runtime_api.h").is_file():
            return Path(root) / "include"
    return None


@pytest.mark.parametrize("source", [
    "common/pumerPluginUtils.cpp",
    "common/pumerRegistration.cpp",
    "pumerPrunePlugin/pumerPrunePlugin.cpp",
    "pumerMergePlugin/pumerMergePlugin.cpp",
    "pumerCompactPlugin/pumerCompactPlugin.cpp",
    "api/pumerPluginLibrary.cpp",
])  # fmt: skip
def test_plugin_sources_compile_against_tensorrt_headers(source):
    """Syntax-check the plugin sources against every TensorRT include folder available.

    Set PUMER_TRT_INCLUDE_DIRS=/tmp/trt/v10.3.0/include:/tmp/trt/v11.1/include to check several releases.
    """
    include_dirs = _tensorrt_include_dirs()
    if not include_dirs:
        pytest.skip("TensorRT headers not found (set TENSORRT_ROOT or PUMER_TRT_INCLUDE_DIRS)")
    cxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    nvcc = plugins.find_nvcc()
    if cxx is None or nvcc is None:
        pytest.skip("a C++ compiler and the CUDA toolkit (for cuda_runtime_api.h) are needed")
    cuda_include = _cuda_include(nvcc)
    if cuda_include is None:
        pytest.skip("cuda_runtime_api.h not found (set CUDA_HOME)")
    for include in include_dirs:
        cmd = [
            cxx, "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror",
            "-isystem", str(include), "-isystem", str(cuda_include),
            f"-I{PLUGINS / 'common'}", f"-I{PLUGINS / 'pumerPrunePlugin'}", f"-I{PLUGINS / 'pumerMergePlugin'}",
            f"-I{PLUGINS / 'pumerCompactPlugin'}",
            str(PLUGINS / source),
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, f"{include}:\n{proc.stderr}"


def test_kernel_library_is_not_taken_for_the_plugin_library(kernel_library, cli):
    """doctor / build --plugins pointed at libpumer_kernels.so say which library it is and which one to use."""
    assert plugins.library_kind(kernel_library) == "kernels"
    code, out, err = cli("doctor", "--plugins", kernel_library)
    text = out + err
    assert "is the kernel library" in text and "libpumer_plugins.so" in text
    assert "links TensorRT" not in text


def test_unsupported_cuda_arch_is_one_line(cli, tmp_path):
    if plugins.find_nvcc() is None or shutil.which("cmake") is None:
        pytest.skip("nvcc and cmake are needed")
    code, _, err = cli("build-plugins", "--cuda-arch", "35", "--build-dir", tmp_path / "b")
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1, err
    assert "Unsupported gpu architecture 'compute_35'" in lines[0] and "pumer-configure.log" in lines[0]
