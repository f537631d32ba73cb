"""The thin TensorRT layer: the only module of pumer-export that imports ``tensorrt``.

Every function takes the imported module (from :func:`import_tensorrt`) and does TensorRT calls
only; decisions (which flags, which shapes, which precision) are made in plain Python by
:mod:`.prepare` and :mod:`.engine` and passed in. Version differences are handled by feature
tests (``getattr`` on enums and methods), not by version numbers.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping

from ..errors import MissingDependencyError, PumerExportError
from ..ops import op_spec
from . import INSTALL_HINT

#: Keeps loaded plugin libraries alive for the life of the process.
_LOADED_LIBRARIES: dict[str, Any] = {}


def import_tensorrt():
    """``import tensorrt`` or a one-line :class:`MissingDependencyError` saying how to install it."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        detail = "" if getattr(exc, "name", None) == "tensorrt" else f" ({exc})"
        raise MissingDependencyError(f"TensorRT is not installed{detail}: {INSTALL_HINT}") from None
    except OSError as exc:  # the wheel is there but libnvinfer / CUDA libraries are not loadable
        raise MissingDependencyError(f"TensorRT cannot be loaded ({exc}): {INSTALL_HINT}") from None
    return trt


def tensorrt_version(trt) -> str:
    return str(trt.__version__)


def make_logger(trt, verbose: bool = False):
    return trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)


# ------------------------------------------------------------------------------ plugins
@dataclasses.dataclass(frozen=True)
class CreatorInfo:
    name: str
    version: str
    namespace: str

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def expected_creators() -> list[CreatorInfo]:
    """The creators the plugin library must register (from op_spec.json)."""
    spec = op_spec()
    return [CreatorInfo(name, spec["plugin_version"], spec["plugin_namespace"]) for name in spec["ops"]]


def list_creators(trt) -> list[CreatorInfo]:
    """Every registered plugin creator (IPluginV3 and V2 ones)."""
    registry = trt.get_plugin_registry()
    creators = getattr(registry, "all_creators", None)
    if creators is None:
        creators = getattr(registry, "plugin_creator_list", [])
    result = []
    for creator in creators:
        name = getattr(creator, "name", None)
        if name is None:
            continue
        result.append(CreatorInfo(str(name), str(getattr(creator, "plugin_version", "")),
                                  str(getattr(creator, "plugin_namespace", ""))))
    return result


def has_creator(trt, creator: CreatorInfo) -> bool:
    registry = trt.get_plugin_registry()
    getter = getattr(registry, "get_creator", None) or getattr(registry, "get_plugin_creator")
    try:
        return getter(creator.name, creator.version, creator.namespace) is not None
    except Exception:  # some versions raise instead of returning None
        return False


def missing_creators(trt) -> list[CreatorInfo]:
    return [creator for creator in expected_creators() if not has_creator(trt, creator)]


def load_plugin_library(trt, path: str | os.PathLike, logger=None) -> list[CreatorInfo]:
    """Load the pumer plugin library into this process and check its creators are registered.

    The library self-registers (``REGISTER_TENSORRT_PLUGIN``) when ``ctypes``-loaded with
    ``RTLD_GLOBAL`` after ``tensorrt`` (so it binds to the libnvinfer already loaded). If that
    registered nothing, ``IPluginRegistry.load_library`` (``getCreators``) is tried. Loading twice
    is a no-op, never a double registration.
    """
    path = Path(path).resolve()
    if not missing_creators(trt):
        return expected_creators()
    if str(path) not in _LOADED_LIBRARIES:
        trt.init_libnvinfer_plugins(logger or make_logger(trt), "")
        try:
            _LOADED_LIBRARIES[str(path)] = ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            raise MissingDependencyError(
                f"cannot load the plugin library {path}: {exc}; rebuild it with pumer-export build-plugins"
            ) from None
        if missing_creators(trt) and hasattr(trt.get_plugin_registry(), "load_library"):
            handle = trt.get_plugin_registry().load_library(str(path))
            if handle is not None:
                _LOADED_LIBRARIES[str(path) + "#registry"] = handle
    missing = missing_creators(trt)
    if missing:
        names = ", ".join(f"{c.name} v{c.version} in namespace {c.namespace!r}" for c in missing)
        raise MissingDependencyError(
            f"the plugin library {path} loaded but registered no {names}; rebuild it with pumer-export build-plugins "
            "and check pumer-export doctor"
        )
    return expected_creators()


# ------------------------------------------------------------------------------- build
@dataclasses.dataclass
class BuildOutput:
    plan: bytes
    timing_cache: bytes | None
    plugin_layers: int
    io: dict[str, list[dict[str, Any]]]


def _enum(container, name: str):
    return getattr(container, name, None)


def _format_parser_errors(parser, source: str) -> str:
    messages = []
    for index in range(parser.num_errors):
        error = parser.get_error(index)
        node_name = error.node_name() if hasattr(error, "node_name") else ""
        operator = error.node_operator() if hasattr(error, "node_operator") else ""
        desc = error.desc() if hasattr(error, "desc") else str(error)
        where = f"node {node_name!r} ({operator})" if node_name or operator else f"node #{error.node()}"
        messages.append(f"{where}: {desc}")
    text = "; ".join(messages) or "no error reported"
    hint = ""
    if any(word in text for word in ("Plugin", "plugin", "Pumer")):
        hint = "; run pumer-export doctor to check the plugin library and its creators"
    return f"TensorRT could not parse {source}: {text}{hint}"


def build_serialized_engine(
    trt,
    *,
    model_bytes: bytes,
    model_path: str | os.PathLike,
    strongly_typed: bool,
    fp16_flag: bool,
    shapes: Mapping[str, Mapping[str, list[int]]],
    workspace_bytes: int | None = None,
    timing_cache: bytes | None = None,
    verbose: bool = False,
) -> BuildOutput:
    """Parse ``model_bytes`` and build a serialized engine with ONE optimization profile.

    ``shapes`` is ``{input: {"min", "opt", "max"}}``; ``timing_cache`` the bytes of an existing
    cache (``b""`` to start one, ``None`` for none); the returned ``timing_cache`` is the updated
    cache to save.
    """
    logger = make_logger(trt, verbose)
    trt.init_libnvinfer_plugins(logger, "")
    builder = trt.Builder(logger)

    flags = 0
    if strongly_typed:
        flag = _enum(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
        if flag is not None:
            flags |= 1 << int(flag)
        elif int(trt.__version__.split(".")[0]) < 11:
            raise PumerExportError(f"TensorRT {trt.__version__} has no strongly typed networks; use TensorRT 10.0+")
    network = builder.create_network(flags)

    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model_bytes, str(model_path)):
        raise PumerExportError(_format_parser_errors(parser, Path(model_path).name))

    plugin_types = {_enum(trt.LayerType, name) for name in ("PLUGIN_V3", "PLUGIN_V2", "PLUGIN")} - {None}
    plugin_layers = sum(1 for i in range(network.num_layers) if network.get_layer(i).type in plugin_types)

    config = builder.create_builder_config()
    if workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if fp16_flag:
        flag = _enum(trt.BuilderFlag, "FP16")
        if flag is None:
            raise PumerExportError(f"TensorRT {trt.__version__} has no FP16 builder flag; export a float16 model")
        config.set_flag(flag)

    profile = builder.create_optimization_profile()
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        if tensor.name not in shapes:
            raise PumerExportError(f"TensorRT network input {tensor.name!r} is not an input of the ONNX model")
        if any(dim < 0 for dim in tensor.shape):
            entry = shapes[tensor.name]
            profile.set_shape(tensor.name, tuple(entry["min"]), tuple(entry["opt"]), tuple(entry["max"]))
    config.add_optimization_profile(profile)

    cache = None
    if timing_cache is not None:
        cache = config.create_timing_cache(bytes(timing_cache))
        config.set_timing_cache(cache, ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise PumerExportError("TensorRT could not build the engine (see its log above); try pumer-export doctor")
    plan = bytes(memoryview(serialized))
    cache_bytes = bytes(memoryview(config.get_timing_cache().serialize())) if cache is not None else None

    engine = deserialize_engine(trt, plan, logger)
    return BuildOutput(plan, cache_bytes, plugin_layers, engine_io(trt, engine))


# -------------------------------------------------------------------------------- load
def deserialize_engine(trt, plan: bytes, logger=None):
    runtime = trt.Runtime(logger or make_logger(trt))
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise PumerExportError("TensorRT could not deserialize the engine (see its log above)")
    return engine


def engine_io(trt, engine) -> dict[str, list[dict[str, Any]]]:
    """``{"inputs": [...], "outputs": [...]}`` with name, dtype and shape (-1 for dynamic)."""
    result: dict[str, list[dict[str, Any]]] = {"inputs": [], "outputs": []}
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        mode = engine.get_tensor_mode(name)
        entry = {"name": name, "dtype": str(engine.get_tensor_dtype(name)).split(".")[-1].lower(),
                 "shape": [int(d) for d in engine.get_tensor_shape(name)]}
        result["inputs" if mode == trt.TensorIOMode.INPUT else "outputs"].append(entry)
    return result


def run_engine(engine, feeds: Mapping[str, Any]) -> dict[str, Any]:
    """Run ``engine`` once on numpy ``feeds`` (Polygraphy's runner: copies in and out of the GPU)."""
    from polygraphy.backend.trt import TrtRunner

    with TrtRunner(engine) as runner:
        outputs = runner.infer(feed_dict=dict(feeds))
    return {name: value.copy() for name, value in outputs.items()}
