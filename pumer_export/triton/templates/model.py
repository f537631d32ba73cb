"""Triton Python backend: the pumer-export runtime as the model step (pumer-export repository).

Written by ``pumer-export triton --backend python``. Loads the export folder in ``export/`` next to this file with
``pumer_export.runtime.load_backend`` (the runtime backend named in config.pbtxt: ort or trt) and runs all
requests of a dynamic batch in one call.
"""

import json
import os
import site
from pathlib import Path

for _path in os.environ.get("PUMER_TRITON_SITE", "").split(os.pathsep):
    if _path:
        site.addsitedir(_path)

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        from pumer_export.runtime import load_backend

        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        here = Path(__file__).parent
        self.backend = load_backend(here / "export", params.get("runtime_backend", "ort"),
                                    provider=params.get("provider", "cpu"))
        self.inputs = list(self.backend.info.input_names)
        self.outputs = [o["name"] for o in config["output"]]

    def execute(self, requests):
        feeds, sizes, responses = {name: [] for name in self.inputs}, [], [None] * len(requests)
        good = []
        for index, request in enumerate(requests):
            tensors = [pb_utils.get_input_tensor_by_name(request, name) for name in self.inputs]
            if any(t is None for t in tensors):
                responses[index] = pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(f"send every input: {', '.join(self.inputs)}"))
                continue
            for name, tensor in zip(self.inputs, tensors):
                feeds[name].append(tensor.as_numpy())
            sizes.append(len(tensors[0].as_numpy()))
            good.append(index)
        if good:
            try:
                outputs = self.backend.run({k: np.concatenate(v) for k, v in feeds.items()})
                start = 0
                for index, size in zip(good, sizes):
                    tensors = [pb_utils.Tensor(name, np.ascontiguousarray(outputs[name][start:start + size]))
                               for name in self.outputs]
                    responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
                    start += size
            except Exception as exc:
                for index in good:
                    responses[index] = pb_utils.InferenceResponse(
                        output_tensors=[], error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}"))
        return responses
