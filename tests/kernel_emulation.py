"""Build and drive the PuMer CUDA kernels under the CPU emulation (``plugins/emulation``).

The unmodified kernel sources (``plugins/*/pumer*Kernel.cu``, ``plugins/common/*.cuh``) are rewritten by
``plugins/emulation/cu2cpp.py`` into a build folder and compiled with the host C++ compiler against
``cuda_emu.h`` into ``libpumer_kernels_emu.so``, which this module loads with ctypes. Only numpy is needed here
(the AddressSanitizer run executes this file in a child process without torch):

    python tests/kernel_emulation.py run CASES.npz OUT.npz LIBRARY

Builds (cached under ``build/emulation/`` by a hash of sources and flags):

* ``default``: ``-O2``, the kernels as shipped;
* ``fallback``: ``-DPUMER_MAX_SHARED_SORT_KEYS=16``: the counting-rank sort fallbacks at small sizes;
* ``asan``: ``-O1 -fsanitize=address,undefined``; buffers are allocated at exact size by the library.

``PUMER_EMU_PLUGINS_DIR`` points the build at another copy of ``plugins/`` (used to show that planted bugs fail).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FLOAT, HALF, BF16 = 0, 1, 2  # pumer::DType
STORAGE = {FLOAT: np.float32, HALF: np.float16, BF16: np.uint16}  # bf16 travels as its raw bits
POLICIES = {"forward": 0, "reverse": 1, "random": 2}
#: the interleavings a child-process run uses for every case
CHILD_RUNS = (("forward", 11), ("reverse", 12), ("random", 13))

VARIANTS = {
    "default": ["-O2"],
    "fallback": ["-O2", "-DPUMER_MAX_SHARED_SORT_KEYS=16"],
    "asan": ["-O1", "-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"],
}
COMMON_FLAGS = [
    "-std=c++17", "-g", "-fPIC", "-shared", "-fno-strict-aliasing", "-ffp-contract=off",
    "-Wall", "-Wextra", "-Wno-unknown-pragmas", "-Werror",
]


class EmulationError(RuntimeError):
    """A launcher returned an error or the emulator detected a fault (deadlock, bad collective, ...)."""


def plugins_dir() -> Path:
    return Path(os.environ.get("PUMER_EMU_PLUGINS_DIR", ROOT / "plugins")).resolve()


def compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")


def _sources(plugins: Path) -> dict[str, list[Path]]:
    return {
        "kernels": sorted(plugins.glob("pumer*Plugin/pumer*Kernel.cu")),
        "headers": sorted(plugins.glob("common/*.cuh")) + sorted(plugins.glob("common/*.h")),
        "host": [plugins / "common" / "pumerHostLogic.cpp", plugins / "common" / "pumerVersion.cpp"],
        "emulation": sorted(p for p in (ROOT / "plugins" / "emulation").rglob("*") if p.is_file() and "__pycache__" not in p.parts),
    }


def build(variant: str = "default", build_root: Path | None = None) -> Path:
    """Compile the emulated kernel library (cached); returns its path. Raises on a compile error."""
    cxx = compiler()
    if cxx is None:
        raise FileNotFoundError("no host C++ compiler (g++ or clang++) on PATH")
    plugins = plugins_dir()
    emulation = ROOT / "plugins" / "emulation"
    sys.path.insert(0, str(emulation))
    try:
        import cu2cpp
    finally:
        sys.path.remove(str(emulation))
    files = _sources(plugins)
    flags = COMMON_FLAGS + VARIANTS[variant]
    digest = hashlib.sha256(" ".join([cxx] + flags).encode())
    for group in files.values():
        for path in group:
            digest.update(str(path).encode() + b"\0" + path.read_bytes())
    out_dir = (build_root or ROOT / "build" / "emulation") / f"{variant}-{digest.hexdigest()[:16]}"
    library = out_dir / "libpumer_kernels_emu.so"
    if library.exists():
        return library
    work = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    (work / "common").mkdir(parents=True)
    units = []
    for header in files["headers"]:
        if header.suffix == ".cuh":
            (work / "common" / header.name).write_text(cu2cpp.rewrite(header.read_text(), str(header)))
    for kernel in files["kernels"]:
        unit = work / (kernel.stem + ".cpp")
        unit.write_text(cu2cpp.rewrite(kernel.read_text(), str(kernel)))
        units.append(unit)
    cmd = [
        cxx, *flags, f"-I{work / 'common'}", f"-I{emulation / 'include'}", f"-I{plugins / 'common'}",
        "-o", str(work / library.name), *map(str, units), str(emulation / "cuda_emu.cpp"),
        str(emulation / "emu_api.cpp"), *map(str, files["host"]),
    ]
    result = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        raise RuntimeError(f"emulation build ({variant}) failed:\n{' '.join(cmd)}\n{result.stderr[-6000:]}")
    if out_dir.exists():  # built concurrently by another process
        shutil.rmtree(work, ignore_errors=True)
    else:
        work.rename(out_dir)
    return library


def asan_runtime(cxx: str | None = None) -> str | None:
    """Path of the compiler's AddressSanitizer runtime (to LD_PRELOAD into a Python child), or None."""
    cxx = cxx or compiler()
    if cxx is None:
        return None
    out = subprocess.run([cxx, "-print-file-name=libasan.so"], check=False, capture_output=True, text=True).stdout.strip()
    return out if out and os.path.isabs(out) and os.path.exists(out) else None


REDZONE = 4096
REDZONE_BYTE = 0xFD


class Buffer:
    """A "device" allocation made by the library (malloc).

    With ``redzone`` the buffer sits between two guard areas of ``REDZONE`` bytes that :meth:`free` checks, so an
    out-of-bounds write is reported (and does not corrupt the heap) in builds without sanitizers; without it the
    allocation has the exact size, so AddressSanitizer sees the true bounds.
    """

    def __init__(self, lib: ctypes.CDLL, nbytes: int, name: str, redzone: bool = True):
        self.lib, self.nbytes, self.name = lib, nbytes, name
        self.pad = REDZONE if redzone else 0
        self.base = lib.pumerEmuAlloc(nbytes + 2 * self.pad)
        if not self.base and nbytes + 2 * self.pad:
            raise MemoryError(nbytes)
        if self.pad:
            ctypes.memset(self.base, REDZONE_BYTE, self.pad)
            ctypes.memset(self.base + self.pad + nbytes, REDZONE_BYTE, self.pad)
        self.ptr = self.base + self.pad if self.base else None

    def write(self, array: np.ndarray) -> Buffer:
        data = np.ascontiguousarray(array)
        assert data.nbytes == self.nbytes, (data.nbytes, self.nbytes)
        if self.nbytes:
            ctypes.memmove(self.ptr, data.ctypes.data, self.nbytes)
        return self

    def garbage(self, rng: np.random.Generator) -> Buffer:
        if self.nbytes:
            noise = rng.integers(0, 256, self.nbytes, dtype=np.uint8)
            ctypes.memmove(self.ptr, noise.ctypes.data, self.nbytes)
        return self

    def read(self, dtype, shape) -> np.ndarray:
        out = np.empty(shape, dtype=dtype)
        assert out.nbytes == self.nbytes
        if self.nbytes:
            ctypes.memmove(out.ctypes.data, self.ptr, self.nbytes)
        return out

    def redzone_damage(self) -> str | None:
        """Where a write landed outside the buffer, or None."""
        if not self.pad:
            return None
        before = ctypes.string_at(self.base, self.pad)
        after = ctypes.string_at(self.base + self.pad + self.nbytes, self.pad)
        expected = bytes([REDZONE_BYTE]) * self.pad
        if before != expected:
            return f"write before the start of {self.name}"
        if after != expected:
            offset = next(i for i, b in enumerate(after) if b != REDZONE_BYTE)
            return f"write at byte {offset} past the end of {self.name} ({self.nbytes} bytes)"
        return None

    def free(self) -> None:
        if self.base:
            self.lib.pumerEmuFree(ctypes.c_void_p(self.base))
            self.base = self.ptr = None


class EmulatedKernels:
    """The real launchers (``launchPrune`` / ``launchMerge`` / ``launchCompact``) running under the emulator."""

    def __init__(self, library: Path | str, redzones: bool = True):
        self.path = Path(library)
        self.redzones = redzones
        lib = ctypes.CDLL(str(library))
        vp, i64, i32, sz = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_size_t
        lib.pumerEmuAlloc.restype = vp
        lib.pumerEmuAlloc.argtypes = [sz]
        lib.pumerEmuFree.argtypes = [vp]
        lib.pumerEmuSetSchedule.argtypes = [ctypes.c_int, ctypes.c_uint64]
        lib.pumerEmuLastFault.restype = ctypes.c_char_p
        lib.pumerEmuTakeStats.argtypes = [ctypes.POINTER(ctypes.c_uint64)]
        lib.pumerEmuPruneWorkspace.restype = sz
        lib.pumerEmuPruneWorkspace.argtypes = [i64] * 5
        lib.pumerEmuMergeWorkspace.restype = sz
        lib.pumerEmuMergeWorkspace.argtypes = [i64, i64, i64]
        lib.pumerEmuPrune.argtypes = [ctypes.c_int, ctypes.c_int] + [vp] * 9 + [i64] * 6 + [i32] * 5 + [vp, sz]
        lib.pumerEmuMerge.argtypes = [ctypes.c_int] + [vp] * 6 + [i64] * 4 + [i32, vp, sz]
        lib.pumerEmuCompactWorkspace.restype = sz
        lib.pumerEmuCompactWorkspace.argtypes = [i64, i64]
        lib.pumerEmuCompact.argtypes = [ctypes.c_int] + [vp] * 6 + [i64] * 3 + [vp, sz]
        self.lib = lib
        self.max_shared_sort_keys = lib.pumerEmuMaxSharedSortKeys()

    def take_stats(self) -> dict[str, int]:
        out = (ctypes.c_uint64 * 4)()
        self.lib.pumerEmuTakeStats(out)
        return dict(zip(("launches", "blocks", "block_barriers", "warp_collectives"), list(out)))

    def _run(self, policy: str, seed: int, fn, inputs, outputs, workspace_bytes):
        self.lib.pumerEmuClearFault()
        self.lib.pumerEmuSetSchedule(POLICIES[policy], seed)
        rng = np.random.default_rng(seed + 0x5EED)
        bufs = [Buffer(self.lib, a.nbytes, f"input {i}", self.redzones).write(a) for i, a in enumerate(inputs)]
        outs = [
            Buffer(self.lib, int(np.prod(shape)) * np.dtype(dt).itemsize, f"output {i}", self.redzones).garbage(rng)
            for i, (dt, shape) in enumerate(outputs)
        ]
        ws = Buffer(self.lib, workspace_bytes, "the workspace", self.redzones).garbage(rng)
        try:
            err = fn([b.ptr for b in bufs], [o.ptr for o in outs], ws)
            fault = self.lib.pumerEmuLastFault().decode()
            damage = [d for d in (b.redzone_damage() for b in bufs + outs + [ws]) if d]
            if err or fault or damage:
                problems = [f"launcher returned CUDA error {err}"] if err else []
                problems += [f"emulator: {fault}"] if fault else []
                problems += [f"out-of-bounds {d}" for d in damage]
                raise EmulationError("; ".join(problems))
            return tuple(o.read(dt, shape) for o, (dt, shape) in zip(outs, outputs))
        finally:
            for b in bufs + outs + [ws]:
                b.free()

    def prune(self, t_type, a_type, x, metric, queries, keys, key_mask, text_mask, keep, score_head, image_start,
              masking, *, policy, seed):
        batch, tokens, channels = x.shape
        dim = metric.shape[2]
        heads, text_len, head_dim = queries.shape[1:]
        assert x.dtype == STORAGE[t_type] and metric.dtype == STORAGE[t_type]
        assert queries.dtype == STORAGE[a_type] and keys.dtype == STORAGE[a_type]
        key_mask = np.ascontiguousarray(key_mask, dtype=np.float32)
        text_mask = np.ascontiguousarray(text_mask, dtype=np.float32)
        outputs = [
            (STORAGE[t_type], (batch, keep, channels)),
            (STORAGE[t_type], (batch, keep, dim)),
            (np.int64, (batch, keep)),
        ]
        ws_bytes = self.lib.pumerEmuPruneWorkspace(batch, heads, text_len, tokens, image_start)

        def call(ins, outs, ws):
            return self.lib.pumerEmuPrune(
                t_type, a_type, *ins, *outs, batch, tokens, channels, dim, heads, head_dim, text_len, keep,
                score_head, image_start, masking, ws.ptr, ws.nbytes,
            )

        return self._run(policy, seed, call, [x, metric, queries, keys, key_mask, text_mask], outputs, ws_bytes)

    def merge(self, t_type, x, metric, mask, r, *, policy, seed):
        batch, tokens, channels = x.shape
        dim = metric.shape[2]
        assert x.dtype == STORAGE[t_type] and metric.dtype == STORAGE[t_type]
        mask = np.ascontiguousarray(mask, dtype=np.float32)
        outputs = [
            (STORAGE[t_type], (batch, tokens - r, channels)),
            (np.float32, (batch, tokens - r)),
            (np.int64, (batch, tokens)),
        ]
        ws_bytes = self.lib.pumerEmuMergeWorkspace(batch, tokens, dim)

        def call(ins, outs, ws):
            return self.lib.pumerEmuMerge(
                t_type, *ins, *outs, batch, tokens, channels, dim, r, ws.ptr, ws.nbytes
            )

        return self._run(policy, seed, call, [x, metric, mask], outputs, ws_bytes)


    def compact(self, t_type, keep, x, *, policy, seed):
        """PumerCompact with its outputs sized for the upper bound N (as TensorRT sizes a data-dependent output);
        returns (x_out [B,n,C], alive [B,n], index [B,n], count) read at the n the kernels wrote."""
        batch, tokens, channels = x.shape
        assert x.dtype == STORAGE[t_type] and keep.shape == (batch, tokens)
        keep = np.ascontiguousarray(keep, dtype=np.uint8)
        outputs = [
            (STORAGE[t_type], (batch, tokens, channels)),
            (np.int32, (batch, tokens)),  # alive 0/1 and count in int32, as the TensorRT plugin outputs them
            (np.int64, (batch, tokens)),
            (np.int32, ()),
        ]
        ws_bytes = self.lib.pumerEmuCompactWorkspace(batch, tokens)

        def call(ins, outs, ws):
            return self.lib.pumerEmuCompact(t_type, *ins, *outs, batch, tokens, channels, ws.ptr, ws.nbytes)

        x_out, alive, index, count = self._run(policy, seed, call, [keep, x], outputs, ws_bytes)
        n = int(count)
        assert 0 <= n <= tokens, n
        return (x_out.reshape(-1)[:batch * n * channels].reshape(batch, n, channels),
                alive.reshape(-1)[:batch * n].reshape(batch, n).astype(bool),
                index.reshape(-1)[:batch * n].reshape(batch, n), count)


# ---- child-process runner (AddressSanitizer build; no torch in this process) ----------------------------------------


def save_cases(path: Path, cases: list[dict]) -> None:
    """Cases: dicts with ``op`` ("prune"/"merge"), integer attributes, dtype codes and numpy inputs."""
    flat = {}
    for i, case in enumerate(cases):
        for key, value in case.items():
            flat[f"{i}.{key}"] = np.asarray(value)
    np.savez(path, count=len(cases), **flat)


def load_cases(path: Path) -> list[dict]:
    data = np.load(path)
    cases = [{} for _ in range(int(data["count"]))]
    for key in data.files:
        if key == "count":
            continue
        idx, name = key.split(".", 1)
        value = data[key]
        cases[int(idx)][name] = value.item() if value.ndim == 0 else value
    return cases


def run_case(kernels: EmulatedKernels, case: dict, policy: str, seed: int):
    if case["op"] == "compact":
        return kernels.compact(case["t_type"], case["keep"], case["x"], policy=policy, seed=seed)
    if case["op"] == "prune":
        return kernels.prune(
            case["t_type"], case["a_type"], case["x"], case["metric"], case["queries"], case["keys"],
            case["key_mask"], case["text_mask"], case["keep"], case["score_head"], case["image_start"],
            case["masking"], policy=policy, seed=seed,
        )
    return kernels.merge(case["t_type"], case["x"], case["metric"], case["mask"], case["r"], policy=policy, seed=seed)


def _child(cases_path: str, out_path: str, library: str) -> int:
    kernels = EmulatedKernels(library, redzones=False)  # exact-size buffers: the sanitizers see the true bounds
    results = {}
    for i, case in enumerate(load_cases(Path(cases_path))):
        for policy, seed in CHILD_RUNS:
            for k, arr in enumerate(run_case(kernels, case, policy, seed)):
                results[f"{i}.{policy}.{k}"] = arr
    np.savez(out_path, **results)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "run":
        raise SystemExit(_child(*sys.argv[2:]))
    print(__doc__, file=sys.stderr)
    raise SystemExit(2)
