"""Rewrite CUDA C++ sources so that they compile as host C++ against cuda_emu.h (build time only).

The kernel sources are never edited: the emulation build runs this over copies. Three rewrites, each on one line
so that line numbers (and ``#line`` directives pointing at the original file) stay right:

* ``extern __shared__ T name[];``        ->  ``T* name = ::cuemu::dynamicShared<T>();``
* ``__shared__ T name[A][B];``           ->  ``T (&name)[A][B] = ::cuemu::blockShared<T[A][B]>(&site);``
  (one object per block, keyed by a static site marker of the declaration)
* ``kernel<Args><<<grid, block, smem, stream>>>(args)``
                                          ->  ``::cuemu::launch(::cuemu::LaunchConfig(grid, block, smem, stream),
                                               kernel<Args>, args)``

Usage: ``python cu2cpp.py SRC DST`` (also importable: :func:`rewrite`).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

_TYPE = r"[A-Za-z_][\w:]*(?:\s*<[^<>;]*>)?(?:\s+const)?(?:\s*\*)*"
_DYNAMIC = re.compile(r"\bextern\s+__shared__\s+(?:__align__\(\s*\d+\s*\)\s+)?(" + _TYPE + r")\s+(\w+)\s*\[\s*\]\s*;")
_STATIC = re.compile(r"\b__shared__\s+(?:__align__\(\s*\d+\s*\)\s+)?(" + _TYPE + r")\s+(\w+)\s*((?:\[[^\]\n]*\])*)\s*;")
_LAUNCH = re.compile(r"\b([A-Za-z_]\w*(?:\s*<[^<>;(){}]*>)?)\s*<<<(.*?)>>>\s*\(\s*(\)?)", re.S)


def _dynamic(m: re.Match) -> str:
    return f"{m.group(1)}* {m.group(2)} = ::cuemu::dynamicShared<{m.group(1)}>();"


def _static(m: re.Match) -> str:
    type_, name, dims = m.group(1), m.group(2), m.group(3)
    site = f"cuemu_site_{name}"
    ref = f"(&{name}){dims}" if dims else f"&{name}"
    return (
        f"static char {site} = 0; "
        f"{type_} {ref} = ::cuemu::blockShared<{type_}{dims}>(&{site});"
    )


def _launch(m: re.Match) -> str:
    kernel, config, no_args = m.group(1), m.group(2), m.group(3)
    head = f"::cuemu::launch(::cuemu::LaunchConfig({config}), {kernel}"
    return head + (")" if no_args else ", ")


def rewrite(source: str, origin: str | None = None) -> str:
    """The emulation form of one CUDA source (``origin``: the original path for ``#line``)."""
    out = _DYNAMIC.sub(_dynamic, source)
    out = _STATIC.sub(_static, out)
    out = _LAUNCH.sub(_launch, out)
    if origin is not None:
        out = f'#line 1 "{origin}"\n' + out
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python cu2cpp.py SRC DST", file=sys.stderr)
        return 2
    src, dst = Path(argv[0]), Path(argv[1])
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(rewrite(src.read_text(), str(src.resolve())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
