"""A Triton Inference Server model repository for an export folder.

``pumer_vqa`` (ensemble): ``IMAGE`` (the image file's bytes) and ``QUESTION`` (a string) in, ``ANSWERS`` (top-k
labels) and ``SCORES`` out, chaining

* ``pumer_preprocess`` (Python backend): the checkpoint's processor on the export's fixed canvas;
* ``pumer_model``: the model step, one of ``python`` (the pumer-export runtime inside Triton's Python backend; the
  export's own runtime backend, ONNX Runtime or TensorRT), ``onnxruntime`` (Triton's stock ``onnxruntime_onnx``
  backend runs the ONNX file as-is: the pumer function bodies need no custom library) or ``tensorrt``
  (``tensorrt_plan``, the plugin library preloaded as the repository's README says);
* ``pumer_postprocess`` (Python backend): sigmoid scores, top-k answers with their labels.

Every ``config.pbtxt`` is built as Triton's ``ModelConfig`` protobuf (the schema shipped with ``tritonclient``) and
parsed back before anything is written; the repository is written atomically.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from ..errors import MissingDependencyError, PumerExportError

MODEL_STEPS = ("python", "onnxruntime", "tensorrt")
ENSEMBLE, PRE, MODEL, POST = "pumer_vqa", "pumer_preprocess", "pumer_model", "pumer_postprocess"
TEMPLATES = Path(__file__).parent / "templates"
_TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64", "int32": "TYPE_INT32",
                 "bool": "TYPE_BOOL", "bytes": "TYPE_STRING"}


def model_config_pb2():
    """Triton's model-configuration schema (from tritonclient), or a one-line error saying how to get it."""
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise MissingDependencyError("Triton's model-config schema comes with tritonclient: pip install -e "
                                     "\".[serve]\" (or pip install \"tritonclient[grpc]\")") from None
    return model_config_pb2


@dataclasses.dataclass
class RepositoryPlan:
    step: str
    configs: dict[str, str]  # model name -> config.pbtxt text
    max_batch_size: int
    top_k: int


def _tensor(pb2, message, name: str, dtype: str, dims: list[int]):
    tensor = message.add()
    tensor.name = name
    tensor.data_type = pb2.DataType.Value(_TRITON_TYPES[dtype])
    tensor.dims.extend(dims)
    return tensor


def _dims(shape: list) -> list[int]:
    """Triton's dims without the batch dimension (it comes from max_batch_size); a symbolic dimension (SmartTrim's
    kept positions: as many as the batch keeps) is Triton's variable -1."""
    return [int(d) if isinstance(d, int) or str(d).isdigit() else -1 for d in shape[1:]]


def _batching(config, max_batch_size: int, delay_us: int) -> None:
    config.max_batch_size = max_batch_size
    config.dynamic_batching.max_queue_delay_microseconds = delay_us


def _instances(pb2, config, kind: str, count: int) -> None:
    group = config.instance_group.add()
    group.kind = pb2.ModelInstanceGroup.Kind.Value("KIND_GPU" if kind == "gpu" else "KIND_CPU")
    group.count = count


def _parameter(config, key: str, value: str) -> None:
    config.parameters[key].string_value = value


def build_configs(manifest: dict[str, Any], step: str, *, max_batch_size: int, top_k: int, instances: int = 1,
                  device: str = "cpu", delay_us: int = 2000, runtime_backend: str = "ort") -> RepositoryPlan:
    """The four ``config.pbtxt`` texts (validated against Triton's schema)."""
    from google.protobuf import text_format

    if step not in MODEL_STEPS:
        raise PumerExportError(f"unknown model step {step!r}; use one of {', '.join(MODEL_STEPS)}")
    pb2 = model_config_pb2()
    inputs, outputs = manifest["inputs"], manifest["outputs"]
    configs = {}

    pre = pb2.ModelConfig(name=PRE, backend="python")
    _batching(pre, max_batch_size, delay_us)
    _tensor(pb2, pre.input, "IMAGE", "bytes", [1])
    _tensor(pb2, pre.input, "QUESTION", "bytes", [1])
    for i in inputs:
        _tensor(pb2, pre.output, i["name"], i["dtype"], _dims(i["shape"]))
    _instances(pb2, pre, "cpu", instances)
    configs[PRE] = pre

    model = pb2.ModelConfig(name=MODEL)
    if step == "python":
        model.backend = "python"
        _parameter(model, "runtime_backend", runtime_backend)
        _parameter(model, "provider", "cuda" if device == "gpu" else "cpu")
    elif step == "onnxruntime":
        model.platform = "onnxruntime_onnx"
        model.default_model_filename = manifest["model_file"]
    else:
        model.platform = "tensorrt_plan"
        model.default_model_filename = manifest["model_file"]
        sm = ((manifest.get("tensorrt") or {}).get("gpu") or {}).get("sm")
        if sm:
            model.cc_model_filenames[str(sm)] = manifest["model_file"]
    _batching(model, max_batch_size, delay_us)
    for i in inputs:
        _tensor(pb2, model.input, i["name"], i["dtype"], _dims(i["shape"]))
    for o in outputs:
        _tensor(pb2, model.output, o["name"], o["dtype"], _dims(o["shape"]))
    _instances(pb2, model, device, instances)
    configs[MODEL] = model

    logits = next(o for o in outputs if o["name"] == "logits")
    post = pb2.ModelConfig(name=POST, backend="python")
    _batching(post, max_batch_size, delay_us)
    _tensor(pb2, post.input, "logits", logits["dtype"], _dims(logits["shape"]))
    _tensor(pb2, post.output, "ANSWERS", "bytes", [top_k])
    _tensor(pb2, post.output, "SCORES", "float32", [top_k])
    _parameter(post, "top_k", str(top_k))
    _instances(pb2, post, "cpu", instances)
    configs[POST] = post

    ensemble = pb2.ModelConfig(name=ENSEMBLE, platform="ensemble", max_batch_size=max_batch_size)
    _tensor(pb2, ensemble.input, "IMAGE", "bytes", [1])
    _tensor(pb2, ensemble.input, "QUESTION", "bytes", [1])
    _tensor(pb2, ensemble.output, "ANSWERS", "bytes", [top_k])
    _tensor(pb2, ensemble.output, "SCORES", "float32", [top_k])
    steps = ensemble.ensemble_scheduling.step
    first = steps.add(model_name=PRE, model_version=-1)
    first.input_map.update({"IMAGE": "IMAGE", "QUESTION": "QUESTION"})
    first.output_map.update({i["name"]: f"pre_{i['name']}" for i in inputs})
    second = steps.add(model_name=MODEL, model_version=-1)
    second.input_map.update({i["name"]: f"pre_{i['name']}" for i in inputs})
    second.output_map.update({"logits": "model_logits"})
    third = steps.add(model_name=POST, model_version=-1)
    third.input_map.update({"logits": "model_logits"})
    third.output_map.update({"ANSWERS": "ANSWERS", "SCORES": "SCORES"})
    configs[ENSEMBLE] = ensemble

    texts = {}
    for name, message in configs.items():
        text = text_format.MessageToString(message)
        text_format.Parse(text, pb2.ModelConfig())  # the written text parses against the schema
        texts[name] = text
    return RepositoryPlan(step, texts, max_batch_size, top_k)


def _readme(plan: RepositoryPlan, manifest: dict[str, Any]) -> str:
    lines = [
        "# Triton model repository (pumer-export)", "",
        f"Model family {manifest['family']}, image {manifest['image_size'][0]}x{manifest['image_size'][1]}, text "
        f"length {manifest['text_length']}, max batch {plan.max_batch_size}, top-{plan.top_k} answers. Model step: "
        f"`{plan.step}`.", "",
        "Send `IMAGE` (the image file's bytes, TYPE_STRING [1]) and `QUESTION` (TYPE_STRING [1]) to `pumer_vqa`; it "
        "returns `ANSWERS` and `SCORES` (sigmoid, best first).", "", "Start the server:", "", "```",
    ]
    if plan.step == "python":
        lines += ["pumer-export serve .  --http-port 8000   # sets PUMER_TRITON_SITE and the Python backend stub",
                  "# or by hand: PUMER_TRITON_SITE=<site-packages with pumer_export> tritonserver "
                  "--model-repository=$PWD"]
    elif plan.step == "onnxruntime":
        lines += ["tritonserver --model-repository=$PWD   # a server with the onnxruntime and python backends "
                  "(e.g. NGC's tritonserver image); PUMER_TRITON_SITE=<site-packages with pumer_export> for the "
                  "pre/post-processing"]
    else:
        lines += ["LD_PRELOAD=/path/to/libpumer_plugins.so tritonserver --model-repository=$PWD",
                  "# or: tritonserver --model-repository=$PWD --backend-config=tensorrt,plugins=/path/to/"
                  "libpumer_plugins.so", "# the plan only loads on the GPU and TensorRT version it was built for "
                  "(cc_model_filenames maps the compute capability to it)"]
    lines += ["```", "", "Ask it: `pumer-export ask --url 127.0.0.1:8000 --image img.png --question \"what is it?\"`",
              ""]
    return "\n".join(lines)


def write_repository(export: str | Path, repo: str | Path, *, step: str = "python", max_batch_size: int | None = None,
                     top_k: int = 5, instances: int = 1, device: str = "cpu", delay_us: int = 2000,
                     force: bool = False) -> RepositoryPlan:
    """Write the repository for the export folder ``export`` into ``repo`` (atomically)."""
    from ..fsutil import atomic_output_dir
    from ..manifest import MANIFEST_FILE, read_manifest

    manifest = read_manifest(export)
    export = Path(manifest["directory"])
    if not manifest.get("processor"):
        raise PumerExportError(f"{export} has no processor files, which the pre-processing step needs; re-export "
                               "from a checkpoint that has them (pumer-export onnx copies them)")
    if step == "onnxruntime" and manifest["backend"] != "onnx":
        raise PumerExportError(f"--backend onnxruntime needs an ONNX export folder; {export} holds an engine")
    if step == "tensorrt" and manifest["backend"] != "tensorrt":
        raise PumerExportError(f"--backend tensorrt needs an engine folder (pumer-export build); {export} holds ONNX")
    limit = int(manifest["batch"]["max"])
    max_batch_size = min(max_batch_size or min(limit, 32), limit)
    if max_batch_size < int(manifest["batch"]["min"]):
        raise PumerExportError(f"--max-batch-size {max_batch_size} is below the export's minimum batch "
                               f"{manifest['batch']['min']}")
    runtime_backend = "trt" if manifest["backend"] == "tensorrt" else "ort"
    plan = build_configs(manifest, step, max_batch_size=max_batch_size, top_k=top_k, instances=instances,
                         device=device, delay_us=delay_us, runtime_backend=runtime_backend)
    model_files = [manifest["model_file"], *manifest.get("data_files", [])]
    with atomic_output_dir(repo, force=force) as tmp:
        for name, text in plan.configs.items():
            (tmp / name / "1").mkdir(parents=True)
            (tmp / name / "config.pbtxt").write_text(text)
        pre = tmp / PRE / "1"
        shutil.copy2(TEMPLATES / "preprocess.py", pre / "model.py")
        (pre / "processor").mkdir()
        for name in manifest["processor"]:
            shutil.copy2(export / name, pre / "processor" / name)
        shutil.copy2(export / MANIFEST_FILE, pre / MANIFEST_FILE)
        post = tmp / POST / "1"
        shutil.copy2(TEMPLATES / "postprocess.py", post / "model.py")
        (post / "labels.json").write_text(json.dumps({str(k): v for k, v in manifest["id2label"].items()}))
        model = tmp / MODEL / "1"
        if step == "python":
            shutil.copy2(TEMPLATES / "model.py", model / "model.py")
            shutil.copytree(export, model / "export", ignore=shutil.ignore_patterns("*.plugins.onnx"))
        else:
            for name in model_files:
                if (export / name).is_file():
                    shutil.copy2(export / name, model / name)
        (tmp / "README.md").write_text(_readme(plan, manifest))
    return plan
