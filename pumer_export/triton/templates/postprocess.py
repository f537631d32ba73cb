"""Triton Python backend: logits -> top-k answers with their labels (pumer-export repository).

Written by ``pumer-export triton``. Scores are sigmoid probabilities, best first, as ``pumer-export run`` prints.
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
        config = json.loads(args["model_config"])
        self.top_k = int(config["parameters"]["top_k"]["string_value"])
        labels = json.loads((Path(__file__).parent / "labels.json").read_text())
        self.labels = {int(k): v for k, v in labels.items()}

    def execute(self, requests):
        responses = []
        for request in requests:
            logits = pb_utils.get_input_tensor_by_name(request, "logits").as_numpy().astype(np.float64)
            scores = 1.0 / (1.0 + np.exp(-logits))
            order = np.argsort(-scores, axis=1, kind="stable")[:, : self.top_k]
            answers = np.array([[self.labels.get(int(i), str(int(i))).encode() for i in row] for row in order],
                               dtype=np.object_)
            top = np.take_along_axis(scores, order, axis=1).astype(np.float32)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("ANSWERS", answers), pb_utils.Tensor("SCORES", top)]))
        return responses
