"""``pumer-export build-plugins``: build the CUDA kernels and TensorRT plugins with CMake."""

from __future__ import annotations

import argparse

from ..plugins import DEFAULT_BUILD_DIR


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "build-plugins",
        help="build the PuMer CUDA kernels and TensorRT plugins (libpumer_plugins.so) with CMake",
        description=(
            "Configure and build plugins/ with CMake (needs the source checkout, cmake and the CUDA toolkit). "
            "Without TensorRT headers only the kernel library is built."
        ),
    )
    parser.add_argument("--tensorrt-root", metavar="DIR", help="TensorRT install root (include/ and lib/); default: TENSORRT_ROOT or standard locations")
    parser.add_argument("--cuda-arch", metavar="LIST",
                        help="CUDA architectures, e.g. '87;90' or '87,90' (default: plugins/CMakeLists.txt's list: "
                             "75, 80, 86, 87 (Jetson Orin), 89, 90 (H100), plus 100 and 120 with CUDA >= 12.8)")
    parser.add_argument("--build-dir", metavar="DIR", default=str(DEFAULT_BUILD_DIR), help=f"CMake build folder (default: {DEFAULT_BUILD_DIR})")
    parser.add_argument("--jobs", "-j", metavar="N", type=int, default=None, help="parallel build jobs (default: all cores)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import console
    from ..errors import PumerExportError
    from ..ops import op_spec_hash
    from ..plugins import build_plugins, library_spec_hash, parse_cuda_archs

    if args.jobs is not None and args.jobs < 1:
        raise PumerExportError(f"--jobs must be >= 1, got {args.jobs}")
    parse_cuda_archs(args.cuda_arch)  # fail fast on a bad list, before any slow step

    with console.step(f"building PuMer kernels and plugins in {args.build_dir}"):
        result = build_plugins(
            args.build_dir,
            tensorrt_root=args.tensorrt_root,
            cuda_archs=args.cuda_arch,
            progress=lambda message: console.err_console.print(message, markup=False),
            jobs=args.jobs,
        )
    for note in result.notes:
        console.info(f"[yellow]note[/yellow] {note}")
    expected = op_spec_hash()
    rows = []
    for name, path in (("kernels", result.kernel_library), ("plugins", result.plugin_library)):
        if path is None:
            rows.append((name, "not built", ""))
            continue
        try:
            spec = "matches op_spec.json" if library_spec_hash(path) == expected else "MISMATCH"
        except PumerExportError as exc:
            spec = f"not checked ({exc})"
        rows.append((name, str(path), spec))
    console.out_console.print(
        console.table(f"CUDA architectures: {result.cuda_archs or 'default'}", ["library", "path", "op spec"], rows)
    )
    if result.plugin_library is not None:
        console.info(
            f"use with: trtexec --onnx=model.onnx --dynamicPlugins={result.plugin_library}  "
            f"or  polygraphy run model.onnx --trt --plugins {result.plugin_library}  "
            f"(or export PUMER_PLUGINS={result.plugin_library})"
        )
    return 0
