"""Polygraphy runners for the three backends.

* :class:`TorchRunner`: the PyTorch reference on the CPU (Polygraphy's own ``PytRunner`` moves
  everything to CUDA). It returns ``logits`` and every reduction index tensor, named like the
  ONNX outputs, and keeps what the near-tie analysis needs (pruning scores and merge
  similarities, computed in float32 by the reference itself).
* :func:`ort_runner`: Polygraphy's ``OnnxrtRunner`` on a session with the CPU or CUDA provider.
* :func:`trt_runner`: Polygraphy's ``TrtRunner`` on an engine file (TensorRT imported lazily;
  a clear error when it is missing).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from polygraphy.backend.base import BaseRunner
from polygraphy.common import TensorMetadata

from ..errors import MissingDependencyError, PumerExportError
from .onnxinfo import TensorInfo

TORCH_RUNNER_NAME = "pytorch"
ORT_RUNNER_NAME = "onnxruntime"
TRT_RUNNER_NAME = "tensorrt"

ORT_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def _normalise(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def match_output_names(reference: Sequence[str], backend: Sequence[str]) -> dict[str, str]:
    """Map reference output names to a backend's (exact match first, then ignoring punctuation)."""
    by_norm = {_normalise(name): name for name in backend}
    mapping = {}
    for name in reference:
        if name in backend:
            mapping[name] = name
        elif _normalise(name) in by_norm:
            mapping[name] = by_norm[_normalise(name)]
    return mapping


@contextlib.contextmanager
def _capture_merges(store: list) -> Iterator[None]:
    """Record the (metric, r) of every ``ops.merge`` call the reference makes, in call order."""
    from .. import ops

    original = ops.merge

    def recording(x, metric, mask, r):
        store.append((metric.detach().float().clone(), int(r)))
        return original(x, metric, mask, r)

    ops.merge = recording
    try:
        yield
    finally:
        ops.merge = original


def merge_similarities(metric, r: int) -> dict[str, np.ndarray]:
    """The reference's ToMe similarities (float32): ``sim`` [B, na, nb] with the first a-row at -inf."""
    from ..reduce import bipartite_similarity

    return {"sim": bipartite_similarity(metric).numpy(), "r": r}


def reference_run(model, inputs: dict, *, keep_details: bool = True):
    """Run the PyTorch reference once: (outputs: ``logits`` and the reduction indices as numpy arrays,
    details: per index output the reference's pruning scores or merge similarities, for the near-tie analysis)."""
    import torch

    from .. import models

    family = models.for_model(model)
    merges: list = []
    with torch.inference_mode(), _capture_merges(merges):
        out = family.reference_forward(model, inputs, output_reduction_records=keep_details)
    outputs = OrderedDict()
    outputs["logits"] = out.logits.detach().cpu().float().numpy()
    for key, value in out.reduction_indices.items():
        outputs[key] = value.detach().cpu().numpy().astype(np.int64)
    details: dict[str, dict[str, Any]] = {}
    if keep_details:
        for record in out.reduction_records or []:
            details.update(record.get("details", {}))  # methods that name their details (SmartTrim's margins)
            if "prune_scores" in record:
                details[f"layer{record['layer']}.keep_idx"] = {"scores": record["prune_scores"].float().cpu().numpy()}
        slot_keys = [key for key in out.reduction_indices if key.endswith("_slots")]
        for key, (metric, r) in zip(slot_keys, merges):
            details[key] = merge_similarities(metric.cpu(), r)
    return outputs, details


class TorchRunner(BaseRunner):
    """The PyTorch reference as a Polygraphy runner (CPU, float32 by default).

    Args:
        model: a model of any family (:mod:`pumer_export.models`) in eval mode.
        input_metadata: the inputs to declare (names, numpy dtypes, shapes): the ONNX model's, so
            one feed dict serves every runner; inputs are cast for the model.
        output_names: reference output name -> name to return it under (the ONNX names).
        keep_details: record pruning scores and merge similarities of every inference in
            :attr:`details` (one entry per inference) for the near-tie analysis.
    """

    def __init__(self, model, input_metadata: Sequence[TensorInfo], *, output_names: dict[str, str] | None = None,
                 name: str = TORCH_RUNNER_NAME, keep_details: bool = True, device: str = "cpu"):
        super().__init__(name=name)
        self.model = model
        self.input_infos = list(input_metadata)
        self.output_names = output_names
        self.keep_details = keep_details
        self.device = device
        self.details: list[dict[str, dict[str, Any]]] = []
        self._dtype = next(iter(model.parameters())).dtype

    def activate_impl(self):
        self.model.eval()

    def deactivate_impl(self):
        pass

    def get_input_metadata_impl(self):
        meta = TensorMetadata()
        for info in self.input_infos:
            dtype = np.float32 if info.dtype == "bfloat16" else info.dtype
            meta.add(info.name, dtype=dtype, shape=[d if isinstance(d, int) else None for d in info.shape])
        return meta

    def infer_impl(self, feed_dict):
        import torch

        inputs = {}
        for name, value in feed_dict.items():
            tensor = torch.from_numpy(np.ascontiguousarray(value)).to(self.device)
            if name == "pixel_values":
                tensor = tensor.to(self._dtype)
            else:
                tensor = tensor.long()
            inputs[name] = tensor
        start = time.perf_counter()
        outputs, details = reference_run(self.model, inputs, keep_details=self.keep_details)
        self.inference_time = time.perf_counter() - start
        if self.keep_details:
            self.details.append(details)
        if self.output_names is not None:
            outputs = OrderedDict((self.output_names.get(k, k), v) for k, v in outputs.items())
        return outputs


def ort_runner(path: str | Path, provider: str = "cpu", *, name: str = ORT_RUNNER_NAME):
    """Polygraphy's ONNX Runtime runner on ``path`` with the ``cpu`` or ``cuda`` execution provider."""
    import onnxruntime as ort
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    if provider not in ORT_PROVIDERS:
        raise PumerExportError(f"unknown ONNX Runtime provider {provider!r}; use {', '.join(ORT_PROVIDERS)}")
    wanted = ORT_PROVIDERS[provider]
    if wanted not in ort.get_available_providers():
        raise MissingDependencyError(
            f"ONNX Runtime has no {wanted} here (available: {', '.join(ort.get_available_providers())}); "
            "install onnxruntime-gpu for --ort-provider cuda"
        )
    return OnnxrtRunner(SessionFromOnnx(str(path), providers=[wanted]), name=name)


def tensorrt_available() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:
        return False
    return True


def load_trt_engine(path: str | Path):
    """A deserialised engine for ``path``: through :mod:`pumer_export.tensorrt` when present (it
    checks the sidecar and loads the plugins), else Polygraphy's plain loader."""
    path = Path(path)
    if not path.is_file():
        raise PumerExportError(f"{path}: no such engine file")
    if not tensorrt_available():
        from ..tensorrt import INSTALL_HINT

        raise MissingDependencyError(f"TensorRT is not installed, so the engine {path} cannot be run ({INSTALL_HINT})")
    try:
        from ..tensorrt.engine import load_engine
    except ImportError:
        load_engine = None
    if load_engine is not None:
        loaded = load_engine(path)
        return getattr(loaded, "engine", loaded)
    from polygraphy.backend.trt import BytesFromPath, EngineFromBytes

    return EngineFromBytes(BytesFromPath(str(path)))()


def trt_runner(path: str | Path, *, name: str = TRT_RUNNER_NAME):
    """Polygraphy's TensorRT runner on the engine file ``path``."""
    from polygraphy.backend.trt import TrtRunner

    engine = load_trt_engine(path)
    return TrtRunner(engine, name=name)
