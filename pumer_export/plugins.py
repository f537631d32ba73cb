"""Build and locate the PuMer CUDA kernels and TensorRT plugins (``plugins/`` in the source tree).

The C++/CUDA sources live next to the package in a source checkout (``<checkout>/plugins``); a wheel
install does not carry them, so building the plugins needs the source checkout (set ``PUMER_PLUGINS_SRC``
to its ``plugins/`` folder when the package itself is installed elsewhere). :func:`build_plugins` drives
CMake (configure + build) with the ``cmake`` on ``PATH``; :func:`find_plugin_library` locates the built
``libpumer_plugins.so`` and :func:`library_spec_hash` reads the op-definition hash compiled into it, to be
compared with :func:`pumer_export.ops.op_spec_hash`.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .errors import MissingDependencyError, PumerExportError

#: Environment variable naming the plugin library (or its folder).
PLUGIN_LIBRARY_ENV = "PUMER_PLUGINS"
#: Environment variable naming the ``plugins/`` source folder (CMake project).
PLUGIN_SOURCE_ENV = "PUMER_PLUGINS_SRC"
#: Default CMake build folder, relative to the working directory.
DEFAULT_BUILD_DIR = Path("build") / "plugins"
PLUGIN_LIBRARY_NAME = "libpumer_plugins.so"
KERNEL_LIBRARY_NAME = "libpumer_kernels.so"

_ARCH_RE = re.compile(r"^(\d{2,3})([af]?)(-real|-virtual)?$")

Progress = Callable[[str], None]


@dataclass
class BuildResult:
    """What :func:`build_plugins` produced."""

    build_dir: Path
    kernel_library: Path | None
    plugin_library: Path | None
    cuda_archs: str | None
    tensorrt_found: bool
    notes: list[str] = field(default_factory=list)


def source_dir() -> Path:
    """The CMake project folder ``plugins/`` (source checkout, or ``$PUMER_PLUGINS_SRC``)."""
    env = os.environ.get(PLUGIN_SOURCE_ENV)
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parent.parent / "plugins")
    for candidate in candidates:
        if (candidate / "CMakeLists.txt").is_file():
            return candidate
    raise MissingDependencyError(
        "plugin sources not found: building the plugins needs the pumer-export source checkout "
        f"(its plugins/ folder); set {PLUGIN_SOURCE_ENV}=/path/to/checkout/plugins"
    )


def parse_cuda_archs(value: str | Sequence[str] | None) -> str | None:
    """Normalise ``"87;90"`` / ``"87,90"`` / ``"sm_87 sm_90"`` to CMake's ``"87;90"``; ``None`` keeps the default."""
    if value is None:
        return None
    if isinstance(value, str):
        items = re.split(r"[;,\s]+", value.strip())
    else:
        items = [str(v).strip() for v in value]
    archs: list[str] = []
    for item in items:
        if not item:
            continue
        token = item.lower().removeprefix("sm_").removeprefix("compute_").replace(".", "")
        if token in ("native", "all", "all-major") and len(items) == 1:
            return token
        if not _ARCH_RE.match(token):
            raise PumerExportError(
                f"invalid CUDA architecture {item!r} in --cuda-arch {value!r}: use compute capabilities "
                "without the dot, e.g. '87;90' or '87,90' (Orin = 87, H100 = 90)"
            )
        archs.append(token)
    if not archs:
        raise PumerExportError(f"--cuda-arch {value!r} names no architecture; use e.g. '87;90'")
    return ";".join(dict.fromkeys(archs))


def find_nvcc() -> str | None:
    """The CUDA compiler CMake would use: ``$CUDACXX`` if set, else ``nvcc`` on ``PATH``."""
    cudacxx = os.environ.get("CUDACXX")
    if cudacxx:
        return cudacxx if Path(cudacxx).is_file() or shutil.which(cudacxx) else None
    return shutil.which("nvcc")


def find_tensorrt_headers(tensorrt_root: str | os.PathLike | None = None) -> Path | None:
    """Folder holding ``NvInferRuntime.h`` (``tensorrt_root``/include, ``$TENSORRT_ROOT``, standard places)."""
    roots = [tensorrt_root, os.environ.get("TENSORRT_ROOT")]
    candidates: list[Path] = []
    for root in roots:
        if root:
            candidates += [Path(root) / "include", Path(root)]
    candidates += [
        Path("/usr/include"),
        Path("/usr/include/x86_64-linux-gnu"),
        Path("/usr/include/aarch64-linux-gnu"),
        Path("/usr/local/tensorrt/include"),
        Path("/opt/tensorrt/include"),
        Path("/usr/local/TensorRT/include"),
    ]
    for candidate in candidates:
        if (candidate / "NvInferRuntime.h").is_file():
            return candidate
    return None


#: What a failed build log says, most specific first: nvcc's own verdict, a compiler error, CMake's.
_ERROR_LINES = (
    re.compile(r"(nvcc fatal\s*:.*)", re.IGNORECASE),
    re.compile(r"(\berror\b:.*)", re.IGNORECASE),
    re.compile(r"(CMake Error.*)"),
)


def first_error_line(log: str) -> str | None:
    """The line of a build log that says what went wrong (nvcc first, then a compiler, then CMake)."""
    for pattern in _ERROR_LINES:
        for line in log.splitlines():
            match = pattern.search(line)
            if match:
                return match.group(1).strip()
    return None


def _run(cmd: list[str], cwd: Path | None, progress: Progress | None, what: str, log_file: Path) -> str:
    if progress:
        progress(f"{what}: {' '.join(cmd)}")
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        log_file.write_text(proc.stdout)
        reason = first_error_line(proc.stdout) or (proc.stdout.strip().splitlines() or ["no output"])[-1]
        if "Unsupported gpu architecture" in reason:
            reason += " (this nvcc cannot build that --cuda-arch; use one it supports, e.g. 87 or 90)"
        raise PumerExportError(f"{what} failed: {reason}; full log: {log_file}")
    return proc.stdout


def build_plugins(
    build_dir: str | os.PathLike = DEFAULT_BUILD_DIR,
    tensorrt_root: str | os.PathLike | None = None,
    cuda_archs: str | Sequence[str] | None = None,
    progress: Progress | None = None,
    jobs: int | None = None,
    build_type: str = "Release",
) -> BuildResult:
    """Configure and build ``plugins/`` with CMake into ``build_dir``.

    Builds the kernel library (needs the CUDA toolkit) and, when TensorRT headers and ``libnvinfer`` are
    found (``tensorrt_root``, ``$TENSORRT_ROOT`` or standard locations), ``libpumer_plugins.so``.

    Raises:
        MissingDependencyError: no ``cmake`` or no CUDA compiler.
        PumerExportError: a bad ``cuda_archs`` value or a failed configure/build (with the output's tail).
    """
    archs = parse_cuda_archs(cuda_archs)
    cmake = shutil.which("cmake")
    if cmake is None:
        raise MissingDependencyError("CMake not found: cmake is not on PATH; install CMake >= 3.18 (e.g. pip install cmake)")
    nvcc = find_nvcc()
    if nvcc is None:
        raise MissingDependencyError("CUDA toolkit not found: nvcc is not on PATH; install the CUDA toolkit or set CUDACXX")
    if tensorrt_root is not None and not Path(tensorrt_root).is_dir():
        raise PumerExportError(f"--tensorrt-root {str(tensorrt_root)!r} is not a directory")
    src = source_dir()
    build = Path(build_dir).resolve()
    build.mkdir(parents=True, exist_ok=True)

    configure = [cmake, "-S", str(src), "-B", str(build), f"-DCMAKE_BUILD_TYPE={build_type}", f"-DCMAKE_CUDA_COMPILER={nvcc}"]
    if archs:
        configure.append(f"-DCMAKE_CUDA_ARCHITECTURES={archs}")
    if tensorrt_root is not None:
        configure.append(f"-DTENSORRT_ROOT={Path(tensorrt_root).resolve()}")
    log = _run(configure, None, progress, "CMake configure", build / "pumer-configure.log")
    tensorrt_found = "plugins=ON" in log
    notes: list[str] = []
    match = re.search(r"architectures (\S+)", log)
    used_archs = match.group(1) if match else archs
    if not tensorrt_found:
        notes.append(
            "TensorRT headers/library not found: built the kernel library only; point at TensorRT with "
            "--tensorrt-root DIR (or TENSORRT_ROOT) to build libpumer_plugins.so"
        )
    cmd = [cmake, "--build", str(build), "--parallel", str(jobs or os.cpu_count() or 2)]
    _run(cmd, None, progress, "CMake build", build / "pumer-build.log")
    kernel = build / KERNEL_LIBRARY_NAME
    plugin = build / PLUGIN_LIBRARY_NAME
    return BuildResult(
        build_dir=build,
        kernel_library=kernel if kernel.is_file() else None,
        plugin_library=plugin if plugin.is_file() else None,
        cuda_archs=used_archs,
        tensorrt_found=tensorrt_found,
        notes=notes,
    )


def find_plugin_library(explicit: str | os.PathLike | None = None) -> Path:
    """The plugin library: ``explicit``, else ``$PUMER_PLUGINS``, else ``build/plugins/libpumer_plugins.so``.

    A folder is searched for ``libpumer_plugins.so``. Raises :class:`MissingDependencyError` naming where it looked.
    """
    tried: list[str] = []
    for origin, value in (("argument", explicit), (PLUGIN_LIBRARY_ENV, os.environ.get(PLUGIN_LIBRARY_ENV))):
        if not value:
            continue
        path = Path(value)
        if path.is_dir():
            path = path / PLUGIN_LIBRARY_NAME
        if path.is_file():
            if library_kind(path) == "kernels":
                raise PumerExportError(
                    f"{path} is the kernel library ({KERNEL_LIBRARY_NAME}), not the TensorRT plugin library: it has "
                    f"no plugin creators; use {PLUGIN_LIBRARY_NAME} from the same build folder (built when "
                    "TensorRT is found: pumer-export build-plugins --tensorrt-root DIR)"
                )
            return path.resolve()
        if origin == "argument":
            raise MissingDependencyError(f"plugin library not found: {path}")
        tried.append(f"{PLUGIN_LIBRARY_ENV}={value}")
    default = DEFAULT_BUILD_DIR / PLUGIN_LIBRARY_NAME
    if default.is_file():
        return default.resolve()
    tried.append(str(default))
    raise MissingDependencyError(
        f"plugin library not found (looked at {', '.join(tried)}); build it with "
        f"'pumer-export build-plugins --tensorrt-root DIR' or set {PLUGIN_LIBRARY_ENV}"
    )


def library_kind(path: str | os.PathLike) -> str:
    """``"plugins"`` (exports getCreators), ``"kernels"`` (a PuMer library without creators) or ``"unknown"``,
    read from the file's symbol names without loading it (the plugin library needs libnvinfer to load)."""
    data = Path(path).read_bytes()
    if b"pumerOpSpecSha256\0" not in data:
        return "unknown"
    return "plugins" if b"getCreators\0" in data else "kernels"


def library_spec_hash(path: str | os.PathLike) -> str:
    """The op_spec.json SHA-256 compiled into a PuMer library (``pumerOpSpecSha256`` via ctypes).

    Loading the plugin library needs its dependencies (libnvinfer) on the loader path.
    """
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        raise MissingDependencyError(f"cannot load {path}: {exc}") from None
    try:
        fn = lib.pumerOpSpecSha256
    except AttributeError:
        raise PumerExportError(f"{path} is not a PuMer library (no pumerOpSpecSha256 symbol)") from None
    fn.restype = ctypes.c_char_p
    fn.argtypes = []
    return fn().decode("ascii")


def check_library_spec(path: str | os.PathLike) -> str:
    """Raise :class:`PumerExportError` unless the library was built from this package's op_spec.json."""
    from .ops import op_spec_hash

    built = library_spec_hash(path)
    expected = op_spec_hash()
    if built != expected:
        raise PumerExportError(
            f"{path} was built for a different op_spec.json (sha256 {built[:12]}..., this package has "
            f"{expected[:12]}...); rebuild it with 'pumer-export build-plugins'"
        )
    return built
