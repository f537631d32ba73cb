"""The ``trtexec`` and Polygraphy command lines equivalent to ``pumer-export build`` (for edge devices, CI images
and anyone who builds engines with NVIDIA's own tools). Plain Python: no TensorRT needed to print them.

What ``build`` does beyond the command line is done here ahead of time: the pumer function bodies are stripped into
``<model>.plugins.onnx`` next to the model (TensorRT 10.0-10.6, JetPack 6's 10.3 included, would otherwise run the
bodies instead of the plugins), and the precision flags follow :func:`prepare.precision_policy` for the target
TensorRT version (``--stronglyTyped`` where the engine takes the ONNX model's precision, ``--fp16`` for a float32
model built with fp16 kernels on TensorRT 10).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from pathlib import Path

import onnx

from ..errors import PumerExportError
from ..fsutil import atomic_output_file
from . import prepare

#: Placeholder when no plugin library is found here (the recipe is often printed for another machine).
PLUGINS_PLACEHOLDER = "/path/to/libpumer_plugins.so"


@dataclasses.dataclass
class Recipe:
    prepared_onnx: Path
    trtexec: list[str]
    polygraphy: list[str]
    notes: list[str]

    def render(self) -> str:
        lines = ["# trtexec", shlex.join(self.trtexec), "", "# Polygraphy", shlex.join(self.polygraphy)]
        lines += ["", *[f"# {note}" for note in self.notes]]
        return "\n".join(lines)


def _shape(shape: list[int]) -> str:
    return "x".join(str(d) for d in shape)


def plugins_for_recipe(plugins: str | os.PathLike | None) -> tuple[str, str | None]:
    """(library path to print, a note when it is a placeholder)."""
    from ..plugins import find_plugin_library

    try:
        found = find_plugin_library(plugins)
    except PumerExportError:
        found = None
    if found is not None and Path(found).is_file():
        return str(Path(found).resolve()), None
    if plugins is not None:
        return str(plugins), None
    return PLUGINS_PLACEHOLDER, ("no plugin library found here: replace " + PLUGINS_PLACEHOLDER +
                                 " with the one built on the target (pumer-export build-plugins)")


def write_prepared(model: onnx.ModelProto, path: Path) -> Path:
    """``model.plugins.onnx`` beside ``path``: the same graph without the pumer function bodies and with the casts
    the plugins need (weights stay in the external data file, which the copy references by the same relative
    name)."""
    out = path.with_name(path.stem + ".plugins.onnx")
    prepare.strip_pumer_functions(model)
    prepare.cast_around_plugins(model)
    with atomic_output_file(out) as tmp:
        onnx.save_model(model, str(tmp))
    return out


def trtexec_recipe(
    onnx_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    version: str,
    plugins: str | os.PathLike | None = None,
    batch: str | None = None,
    fp16: bool = False,
    timing_cache: str | os.PathLike | None = None,
    workspace: str | None = None,
) -> Recipe:
    """Write ``<model>.plugins.onnx`` and return the equivalent commands for TensorRT ``version``."""
    from ..onnx.files import load_onnx, resolve_onnx_path

    path = resolve_onnx_path(onnx_path)
    model = load_onnx(path)  # one line for a file that is not ONNX
    prepare.check_pumer_nodes(model)
    quantized = prepare.check_quantization(model, prepare.read_export_metadata(model), fp16)
    policy = prepare.function_policy(version)
    precision = prepare.precision_policy(version, prepare.model_dtype(model), fp16)
    inputs = prepare.graph_inputs(model)
    profile = prepare.parse_batch_profile(batch) if batch else prepare.default_batch_profile(inputs)
    shapes = prepare.profile_shapes(inputs, profile)
    library, note = plugins_for_recipe(plugins)
    prepared = write_prepared(model, path) if prepare.pumer_nodes(model) else path
    out = str(out_path)

    trtexec = ["trtexec", f"--onnx={prepared}", f"--saveEngine={out}", f"--staticPlugins={library}"]
    for kind in ("min", "opt", "max"):
        trtexec.append(f"--{kind}Shapes=" + ",".join(f"{name}:{_shape(s[kind])}" for name, s in shapes.items()))
    polygraphy = ["polygraphy", "convert", str(prepared), "--convert-to", "trt", "-o", out, "--plugins", library]
    for kind in ("min", "opt", "max"):
        polygraphy.append(f"--trt-{kind}-shapes")
        polygraphy += [f"{name}:[{','.join(map(str, s[kind]))}]" for name, s in shapes.items()]
    if precision.strongly_typed:
        trtexec.append("--stronglyTyped")
        polygraphy.append("--strongly-typed")
    if precision.fp16_flag:
        trtexec.append("--fp16")
        polygraphy.append("--fp16")
    if timing_cache:
        trtexec.append(f"--timingCacheFile={timing_cache}")
        polygraphy += ["--load-timing-cache", str(timing_cache), "--save-timing-cache", str(timing_cache)]
    if workspace:
        mib = max(prepare.parse_size(workspace) // (1 << 20), 1)
        trtexec.append(f"--memPoolSize=workspace:{mib}M")
        polygraphy += ["--pool-limit", f"workspace:{mib}M"]
    notes = [f"TensorRT {policy.version}: {policy.reason}; {prepared.name} is that model",
             f"precision: {precision.description}; batch profile {profile}"]
    if quantized:
        notes.append(f"{quantized}: explicit quantization (Q/DQ pairs from `pumer-export quantize --for tensorrt`), "
                     "built strongly typed with no precision flags")
    if note:
        notes.append(note)
    notes.append("pumer-export build also writes the engine's sidecar (OUT.json) that `validate`, `bench` and the "
                 "runtime check; an engine built with these commands has none")
    return Recipe(prepared, trtexec, polygraphy, notes)
