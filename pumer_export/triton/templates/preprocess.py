"""Triton Python backend: raw image bytes + question -> the export's input tensors (pumer-export repository).

Written by ``pumer-export triton``. Runs the checkpoint's processor (files in ``processor/`` next to this file)
exactly as ``pumer_export.runtime.VqaPipeline`` does, on the export's fixed canvas. A bad request (no image,
an unreadable image, an empty question) gets an error response; the others in the batch are answered.
"""

import io
import json
import os
import site
from pathlib import Path

for _path in os.environ.get("PUMER_TRITON_SITE", "").split(os.pathsep):
    if _path:
        site.addsitedir(_path)

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class TritonPythonModel:
    def initialize(self, args):
        from pumer_export import models
        from pumer_export.processing import load_processor

        here = Path(__file__).parent
        manifest = json.loads((here / "manifest.json").read_text())
        self.family = models.get(manifest["family"])
        self.processor = load_processor(here / "processor")
        self.image_size = tuple(manifest["image_size"])
        self.text_length = int(manifest["text_length"])
        self.inputs = [(i["name"], i["dtype"]) for i in manifest["inputs"]]

    def _encode(self, images, questions):
        from PIL import Image

        pictures = []
        for blob in images:
            if not isinstance(blob, bytes) or not blob:
                raise ValueError("IMAGE is empty: send the image file's bytes")
            try:
                with Image.open(io.BytesIO(blob)) as img:
                    pictures.append(img.convert("RGB"))
            except Exception as exc:
                raise ValueError(f"IMAGE is not a readable image ({type(exc).__name__})") from None
        return self.family.encode(self.processor, pictures, [_text(q) for q in questions],
                                  image_size=self.image_size, text_length=self.text_length)

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                image = pb_utils.get_input_tensor_by_name(request, "IMAGE")
                question = pb_utils.get_input_tensor_by_name(request, "QUESTION")
                if image is None or question is None:
                    raise ValueError("send both IMAGE (bytes) and QUESTION (string)")
                images = image.as_numpy().reshape(-1)
                questions = question.as_numpy().reshape(-1)
                if len(images) != len(questions):
                    raise ValueError("IMAGE and QUESTION need the same batch size")
                feeds = self._encode(list(images), list(questions))
                tensors = [pb_utils.Tensor(name, np.ascontiguousarray(feeds[name].astype(dtype)))
                           for name, dtype in self.inputs]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Exception as exc:  # one bad request must not take the others down
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(exc))))
        return responses
